"""`--on-decision CMD`: run a command on every decision change (open a flap, light a lamp), never in the frame loop's way.

CMD is split like a shell would split it (`shlex`), but no shell runs it: `--on-decision "python3 flap.py
--pin 17"` starts python3 with three arguments; a user who wants pipes or `&&` writes `sh -c '...'`
themselves. Each run gets the decision in its environment and as one `waste-edge.decision/1` JSON line on
stdin (see `decision_event.py`):

  WASTE_EDGE_CAMERA  WASTE_EDGE_LABEL  WASTE_EDGE_DISPLAY_NAME  WASTE_EDGE_CONFIDENCE  WASTE_EDGE_PREVIOUS
  WASTE_EDGE_MODEL  WASTE_EDGE_TS  WASTE_EDGE_FRAME  WASTE_EDGE_SEQ

(PREVIOUS is empty for a camera's first decision; the rest of the environment is the service's own, less
any secret of the service, e.g. WASTE_EDGE_WEBHOOK_SECRET.)

Scheduling, per camera: at most one run at a time; a decision that arrives while the camera's command
still runs waits, and a newer one replaces it (newest wins: a flap must follow the latest decision, not
replay stale ones; the replaced one is counted as `superseded`). `on_decision` only stores the event and
wakes the camera's runner thread (one thread per camera that ever decided), so the frame loop never waits.

Each run has a timeout: past it the command's whole process group gets SIGTERM, then SIGKILL a second
later (a script that started children takes them with it). Its output (stdout and stderr together) is
read by a thread that keeps only the last 2 KB, shown in the log when the run fails. The first failure of
each kind (exit status, timeout, cannot start) is logged; later ones are counted (status, metrics), not
logged, so a broken script cannot flood the journal.

Every event offered ends as exactly one of succeeded / failed / timed_out / start_errors / superseded /
abandoned (still waiting or running when `close` ran out of time), or is still pending or running: the
counts in `HookStatus` always add up to `offered`.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import ClassVar, IO

from waste_edge._options import float_in, option
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.decision_event import DecisionEvent

log = logging.getLogger(__name__)

SECRET_ENV = ("WASTE_EDGE_WEBHOOK_SECRET",)  # the service's secrets: never handed to a hook
KILL_GRACE_S = 1.0  # between SIGTERM and SIGKILL of a timed-out run's process group
OUTPUT_TAIL = 2048  # bytes of a run's output kept for the log


@dataclass(frozen=True)
class HookStatus:
    command: str
    timeout_s: float
    offered: int  # decision changes handed to the hook
    succeeded: int  # exit status 0
    failed: int  # exit status != 0 (or killed by a signal)
    timed_out: int  # killed after timeout_s
    start_errors: int  # could not be started (missing, not executable, out of processes)
    superseded: int  # replaced by a newer decision of the same camera before it started (newest wins)
    abandoned: int  # still waiting or running when the service stopped and close() ran out of time
    running: int
    pending: int
    last_error: str

    def summary(self) -> str:
        return (f"on-decision: {self.offered} decision changes: {self.succeeded} ok, {self.failed} failed, {self.timed_out} timed out, "
                f"{self.start_errors} could not start, {self.superseded} skipped for a newer one, {self.abandoned} left at exit")


@dataclass(frozen=True)
class HookOptions:
    """--on-decision and its timeout (the `camera` and `serve` verbs)."""

    GROUP: ClassVar[tuple[str, str | None]] = ("acting on decisions", "On every change of the decided label (B, N, uncertain), run a command from a background "
                                                 "thread:\nthe loop never waits; the counts are printed at the end. See README, 'Acting on decisions'.")

    command: str | None = option(None, "--on-decision", metavar="CMD",
                                 help="run CMD (split like a shell would, run without one; write sh -c '...' for pipes) with WASTE_EDGE_CAMERA, "
                                      "_LABEL, _CONFIDENCE, _PREVIOUS, _MODEL, _TS in its environment and the decision JSON on stdin; one run at a "
                                      "time per camera, the newest decision waits (older waiting ones are skipped and counted)")
    timeout: float = option(10.0, "--on-decision-timeout", type=float_in(0.0, 3600.0, open_lo=True), metavar="S",
                            help="kill a run's process group after S seconds (default: %(default)s)")

    def argv(self) -> tuple[str, ...]:
        """The command, split (empty without --on-decision); a bad command is a one-line error."""
        return tuple(parse_command(self.command)) if self.command is not None else ()


def parse_command(cmd: str, option: str = "--on-decision") -> list[str]:
    """argv of CMD (shlex, no shell); a one-line error for an empty command or a program that is not there."""
    try:
        argv = shlex.split(cmd)
    except ValueError as e:
        raise WasteEdgeError(f"{option} {cmd!r}: {e}") from None
    if not argv:
        raise WasteEdgeError(f"{option}: the command is empty")
    prog = argv[0]
    if os.sep in prog:
        if not (os.path.isfile(prog) and os.access(prog, os.X_OK)):
            raise WasteEdgeError(f"{option}: {prog} is not an executable file (chmod +x it, or run it through its interpreter: "
                                 f"--on-decision 'python3 {prog}')")
    elif shutil.which(prog) is None:
        raise WasteEdgeError(f"{option}: {prog!r} is not on PATH")
    return argv


def decision_env(event: DecisionEvent, seq: int) -> dict[str, str]:
    return {
        "WASTE_EDGE_CAMERA": event.camera, "WASTE_EDGE_LABEL": event.label, "WASTE_EDGE_DISPLAY_NAME": event.display_name,
        "WASTE_EDGE_CONFIDENCE": f"{event.confidence:.6f}", "WASTE_EDGE_PREVIOUS": event.previous or "",
        "WASTE_EDGE_MODEL": event.model, "WASTE_EDGE_TS": f"{event.ts:.3f}", "WASTE_EDGE_FRAME": str(event.frame),
        "WASTE_EDGE_SEQ": str(seq),
    }


class _OutputTail(threading.Thread):
    """Reads a child's output to its end, keeping the last OUTPUT_TAIL bytes (a chatty script costs no memory)."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__(name="waste-edge hook output", daemon=True)
        self.stream = stream
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.start()

    def run(self) -> None:
        try:
            while chunk := self.stream.read1(4096):  # type: ignore[attr-defined]
                self.chunks.append(chunk)
                self.size += len(chunk)
                while self.size - len(self.chunks[0]) >= OUTPUT_TAIL:
                    self.size -= len(self.chunks.popleft())
        except (OSError, ValueError):
            pass
        finally:
            self.stream.close()

    def text(self) -> str:
        data = b"".join(self.chunks)[-OUTPUT_TAIL:]
        return data.decode("utf-8", "replace").strip()


class _Camera:
    """One camera's runner: the event waiting to run (newest wins) and the thread that runs them in turn."""

    def __init__(self) -> None:
        self.pending: tuple[DecisionEvent, int] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.running = False
        self.thread: threading.Thread | None = None


class DecisionHook:
    """The `--on-decision` sink (see the module docstring)."""

    def __init__(self, argv: list[str], *, timeout: float = 10.0) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.argv = list(argv)
        self.command = shlex.join(self.argv)
        self.timeout = float(timeout)
        self._base_env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
        self._cond = threading.Condition()
        self._cameras: dict[str, _Camera] = {}
        self._closing = False
        self._abort = False
        self._seq = 0
        self._counts = dict.fromkeys(("succeeded", "failed", "timed_out", "start_errors", "superseded", "abandoned"), 0)
        self._logged: set[str] = set()
        self._last_error = ""

    # -- the sink --------------------------------------------------------------------------------------------

    def on_decision(self, event: DecisionEvent) -> None:
        """Store the event as the camera's next run (replacing an older one) and return at once."""
        with self._cond:
            self._seq += 1
            if self._closing:
                self._counts["abandoned"] += 1
                return
            cam = self._cameras.get(event.camera)
            if cam is None:
                cam = self._cameras[event.camera] = _Camera()
                cam.thread = threading.Thread(target=self._runner, args=(cam,), name=f"waste-edge hook {event.camera}", daemon=True)
                cam.thread.start()
            if cam.pending is not None:
                self._counts["superseded"] += 1
            cam.pending = (event, self._seq)
            self._cond.notify_all()

    def status(self) -> HookStatus:
        with self._cond:
            running = sum(1 for c in self._cameras.values() if c.running)
            pending = sum(1 for c in self._cameras.values() if c.pending is not None)
            return HookStatus(self.command, self.timeout, self._seq, running=running, pending=pending, last_error=self._last_error, **self._counts)

    def close(self, timeout: float = 10.0) -> None:
        """Let waiting and running commands finish within `timeout` s; then kill what runs and count the rest."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while any(c.running or c.pending for c in self._cameras.values()) and time.monotonic() < deadline:
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            self._abort = True
            for cam in self._cameras.values():
                if cam.pending is not None:
                    cam.pending = None
                    self._counts["abandoned"] += 1
                if cam.proc is not None:
                    _signal_group(cam.proc, signal.SIGKILL)  # its runner thread reaps it and counts it abandoned
            self._cond.notify_all()
            threads = [c.thread for c in self._cameras.values() if c.thread is not None]
        for t in threads:
            t.join(timeout=KILL_GRACE_S + 1.0)
        s = self.status()
        if s.abandoned:
            log.warning("on-decision: %d decision(s) not acted on at exit (the command was still busy)", s.abandoned)

    # -- the runner thread of one camera ---------------------------------------------------------------------

    def _runner(self, cam: _Camera) -> None:
        while True:
            with self._cond:
                while cam.pending is None and not (self._closing or self._abort):
                    self._cond.wait()
                if cam.pending is None or self._abort:
                    return
                event, seq = cam.pending
                cam.pending = None
                cam.running = True
            try:
                outcome, detail = self._run(cam, event, seq)
            except Exception as e:  # never let one run end the runner
                outcome, detail = "start_errors", f"{type(e).__name__}: {e}"
            with self._cond:
                cam.running = False
                cam.proc = None
                if self._abort and outcome in ("failed", "timed_out"):
                    outcome = "abandoned"  # killed by close(), not by its own fault
                self._counts[outcome] += 1
                if outcome != "succeeded":
                    self._last_error = detail
                first = outcome not in ("succeeded", "abandoned", *self._logged)
                self._logged.add(outcome)
                self._cond.notify_all()
            if first:
                log.warning("on-decision: %s (camera %s, label %s); further %s runs are counted in status and metrics, not logged",
                            detail, event.camera, event.label, outcome.replace("_", " ").replace("errors", "error"))

    def _run(self, cam: _Camera, event: DecisionEvent, seq: int) -> tuple[str, str]:
        env = {**self._base_env, **decision_env(event, seq)}
        payload = (json.dumps(event.doc(seq, event.ts), separators=(",", ":")) + "\n").encode()
        try:
            proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, close_fds=True)  # its own process group: a timeout kills its children too
        except OSError as e:
            return "start_errors", f"{self.command}: cannot start: {e.strerror or e}"
        with self._cond:
            cam.proc = proc
            if self._abort:
                _signal_group(proc, signal.SIGKILL)
        assert proc.stdin is not None and proc.stdout is not None
        output = _OutputTail(proc.stdout)
        try:
            proc.stdin.write(payload)  # one short line: fits the pipe's buffer, so this never blocks
            proc.stdin.close()
        except OSError:  # the command exited without reading stdin: fine
            pass
        try:
            rc = proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc, grace=KILL_GRACE_S)
            output.join(1.0)
            tail = output.text()
            return "timed_out", f"{self.command}: still running after {self.timeout:g} s, killed" + (f"; output: {tail}" if tail else "")
        output.join(1.0)
        if rc == 0:
            return "succeeded", ""
        tail = output.text()
        why = f"exit status {rc}" if rc > 0 else f"killed by signal {-rc}"
        return "failed", f"{self.command}: {why}" + (f"; output: {tail}" if tail else "")


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the group of a session leader has the leader's pid
    except (ProcessLookupError, PermissionError):
        pass


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the run's process group, SIGKILL it after `grace` s (also children the leader left behind), reap the leader."""
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(proc, signal.SIGKILL)
    try:
        proc.wait(5.0)
    except subprocess.TimeoutExpired:  # uninterruptible sleep (a hung GPIO driver): leave it, report the timeout
        log.warning("on-decision: process %d did not die after SIGKILL", proc.pid)

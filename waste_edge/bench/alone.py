"""A target timed alone in a fresh process: the yardstick the harness's own rows are checked against.

The harness runs every target in a worker of its own and interleaves them; if that arrangement handicapped
one of them (a process-wide OpenMP setting, a neighbour's spinning threads, a shared core), its row would
drift away from what a user measures running that pipeline by itself. This module is that user: a new
interpreter that loads only the one pipeline, with nothing but the caller's environment, and times calls on
synthetic frames. It shares no code with the worker on purpose.

Why it takes its turn inside the harness's schedule instead of running once afterwards: on a shared host the
machine itself drifts by tens of percent over seconds (measured here: one process timing the same 33 ms call
read 32, 46, 51 then 38 ms over ten seconds), so a time taken after the run says more about the minute it
ran in than about the harness. Stepped, each of its rounds runs next to the reference's round, with nothing
else running, and the two are compared round by round the way speed-ups are. Between rounds it only waits on
its stdin. Like the worker, it settles its allocator after loading (`machine.settle_allocator` says why).

Protocol (one JSON object per line): start `python -m waste_edge.bench.alone '<json spec>'`; it answers
{"ready": ...} once loaded; each line "round" on stdin gets {"round_ms": mean of `iters` calls, or of `seconds` of calls}; "exit" ends it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any, Callable

from waste_edge.bench.machine import openmp_env, settle_allocator
from waste_edge.errors import WasteEdgeError


def _pipeline(spec: dict[str, Any]) -> Callable[[], Any]:
    """Load the one pipeline of `spec` and return a call on a batch of synthetic frames."""
    import numpy as np

    from waste_edge.bench.frames import synthetic_frames

    w, h = spec["frame"]
    bgr = synthetic_frames(int(spec["batch"]), w, h)
    if spec["kind"] == "reference":
        from waste_edge.train.runs import open_run

        threads = spec.get("threads")
        if not threads:
            import torch

            threads = torch.get_num_threads()
        ref = open_run(spec["path"]).reference(threads)
        rgb = [np.ascontiguousarray(f[..., ::-1]) for f in bgr]
        return lambda: ref.predict_proba(rgb)
    from waste_edge.runtime.classifier import Classifier

    clf = Classifier(spec["path"], spec.get("backend", "cpu"), threads=spec.get("threads"), session_config=spec.get("session_config") or None)
    return lambda: clf.predict_proba(bgr)


def _round(call: Callable[[], Any], iters: int | None, seconds: float | None) -> float:
    """Mean latency (ms) of `iters` calls (or of the calls that fit in `seconds`), after one untimed call: the
    same rule as every harness round, since between rounds this process slept while the others ran."""
    call()
    times: list[float] = []
    end = time.perf_counter() + seconds if seconds is not None else None
    while not times or (len(times) < (iters or 1) if end is None else time.perf_counter() < end):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return sum(times) / len(times) * 1e3


class AloneProcess:
    """The parent's handle on one stepped fresh process: `round()` times one round in it."""

    def __init__(self, spec: dict[str, Any], timeout: float = 900.0) -> None:
        import tempfile

        self.timeout = timeout
        self._stderr = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty library cannot fill it and hang us
        self.proc = subprocess.Popen([sys.executable, "-m", "waste_edge.bench.alone", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1)
        self.info = self._answer("loading")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _answer(self, what: str) -> dict[str, Any]:
        import select

        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        line = self.proc.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        self._stop()
        self._stderr.seek(0)
        last = (self._stderr.read().strip().splitlines() or [f"exit code {self.proc.returncode}"])[-1]
        self.close()
        raise WasteEdgeError(f"the fresh process failed while {what}: {last if ready else f'no answer within {self.timeout:.0f} s'}")

    def round(self) -> float:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("round\n")
            self.proc.stdin.flush()
        except OSError:
            raise WasteEdgeError(f"the fresh process exited (code {self.proc.poll()})") from None
        return float(self._answer("timing")["round_ms"])

    def _stop(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("exit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=5)

    def close(self) -> None:
        self._stop()
        for f in (self.proc.stdin, self.proc.stdout, self._stderr):
            if f is not None and not f.closed:
                try:
                    f.close()
                except BrokenPipeError:  # "exit" still buffered for a process that died meanwhile: nothing to tell it
                    pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    spec = json.loads(args[0])
    call = _pipeline(spec)
    for _ in range(int(spec.get("warmup", 3)) + 1):
        call()
    allocator = settle_allocator()
    print(json.dumps({"ready": True, "openmp_env": openmp_env(), "allocator": allocator}), flush=True)
    for line in sys.stdin:
        if line.strip() != "round":
            break
        print(json.dumps({"round_ms": _round(call, spec.get("iters"), spec.get("seconds"))}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The parent's side of the benchmark's worker processes: spawn one, send it a command, wait for its reply.

A worker is a fresh interpreter (`python -m waste_edge.bench.worker`), not a multiprocessing child: it inherits
no threads or runtimes and never re-imports the caller's main script. Commands and replies travel as pickled
messages over two pipes between these two processes of ours (numpy frames included); a worker that exits or
stops answering is a `WorkerDied` for its row, never for the run.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from waste_edge.errors import WasteEdgeError

LOAD_TIMEOUT_S = 900.0
CALL_TIMEOUT_S = 1800.0


class WorkerDied(WasteEdgeError):
    """A worker process exited (or stopped answering) in the middle of a command."""


class Worker:
    """The parent's handle on one worker process: send a command, wait for its reply.

    The worker is a fresh interpreter (`python -m waste_edge.bench.worker`), not a multiprocessing child: it
    inherits no threads or runtimes and never re-imports the caller's main script. Commands and replies travel
    as pickled messages over two pipes between these two processes of ours (numpy frames included)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        import json
        import subprocess
        from multiprocessing.connection import Connection

        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        cmd = [sys.executable, "-m", "waste_edge.bench.worker", str(to_child_r), str(from_child_w), json.dumps(spec)]
        try:
            self.process = subprocess.Popen(cmd, pass_fds=(to_child_r, from_child_w), stdout=2)  # stdout stays the report's
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._send, self._recv = Connection(to_child_w, readable=False), Connection(from_child_r, writable=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def ask(self, cmd: str, timeout: float = CALL_TIMEOUT_S, **args: Any) -> Any:
        try:
            self._send.send({"cmd": cmd, **args})
            if not self._recv.poll(timeout):
                self.kill()
                raise WorkerDied(f"worker gave no answer to {cmd!r} within {timeout:.0f} s")
            reply = self._recv.recv()
        except (EOFError, OSError):
            code = self.process.wait(timeout=5) if self.process.poll() is None else self.process.returncode
            raise WorkerDied(f"worker process exited during {cmd!r} (exit code {code})") from None
        if "error" in reply:
            raise WasteEdgeError(reply["error"])
        return reply["ok"]

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.ask("close", timeout=30)
            except WasteEdgeError:
                pass
        try:
            self.process.wait(timeout=10)
        except Exception:
            self.kill()
        self._send.close()
        self._recv.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)



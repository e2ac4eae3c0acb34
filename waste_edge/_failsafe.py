"""How a verb ends, whatever happens inside it: one line on stderr and a documented exit status, never a traceback.

The CLI runs every verb through `run_verb`. The verbs themselves raise `WasteEdgeError` for what a user can
cause, and each layer turns its own failures into those; this module is the last floor under them:

- a closed pipe (`predict ... | head -3`, `camera --jsonl - | head`) ends quietly with 141 (128 + SIGPIPE),
  as `yes | head` does, and Python's own "Exception ignored ... BrokenPipeError" at exit is silenced;
- a full disk or device (`> /dev/full`, ENOSPC, EDQUOT, EIO) is `error: <what>: No space left on device`, exit 1;
- SIGTERM (systemd, docker stop) ends a verb exactly like Ctrl-C: the verb's own KeyboardInterrupt
  handling finalises videos, JSONL and the summary; the status is 130 after SIGINT and 143 after SIGTERM
  when the verb was interrupted, 0 when the verb treats a stop as its normal end (camera, demo);
- any other exception is a bug: `error: internal error (Type: message)` and exit 1; the traceback is printed
  only when the environment sets WASTE_EDGE_DEBUG=1.

Standard library only: it wraps every verb, the torch-free ones included.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import traceback
from typing import Any, Callable

from waste_edge._outputs import is_broken_pipe
from waste_edge.errors import WasteEdgeError

DEBUG_ENV = "WASTE_EDGE_DEBUG"
EXIT_FAILURE = 1
EXIT_SIGPIPE = 128 + 13
EXIT_SIGINT = 128 + int(signal.SIGINT)
EXIT_SIGTERM = 128 + int(signal.SIGTERM)
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}

# The last stop signal received (SIGINT or SIGTERM), so the exit status can say which one it was.
_last_signal: list[int] = []


def _stop_handler(signum: int, _frame: Any) -> None:
    _last_signal.append(signum)
    raise KeyboardInterrupt


def install_stop_signals() -> dict[int, Any]:
    """SIGTERM and SIGINT both raise KeyboardInterrupt in the main thread: one clean-stop path for both.

    Returns the previous handlers, for `restore_signals` (the Python API and tests call verbs in-process)."""
    previous: dict[int, Any] = {}
    _last_signal.clear()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, _stop_handler)
        except (ValueError, OSError):  # not the main thread, or a platform without the signal
            pass
    return previous


def restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        try:
            signal.signal(sig, handler)
        except (ValueError, OSError, TypeError):
            pass


def stopped_by_signal() -> int | None:
    """The stop signal received during this run, if any (the verb's summary may want to mention it)."""
    return _last_signal[-1] if _last_signal else None


def one_line(message: object, limit: int = 300) -> str:
    """The first non-empty line of `message`, shortened: a user reads one line, not a dump."""
    text = next((ln.strip() for ln in str(message).splitlines() if ln.strip()), "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _silence_stdout() -> None:
    """If stdout is what failed (a dead pipe, a full device), point fd 1 at /dev/null so the interpreter's
    final flush says nothing; a stdout that still works is left alone."""
    try:
        sys.stdout.flush()
        return
    except (OSError, ValueError):
        pass
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def is_device_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in _FULL_ERRNOS


def describe_os_error(e: OSError) -> str:
    """`<file>: <reason>` for an OSError, without Python's `[Errno 28]` prefix."""
    reason = e.strerror or one_line(e) or type(e).__name__
    name = e.filename if e.filename is not None else None
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    return f"{name}: {reason}" if name else reason


def run_verb(func: Callable[[], int | None]) -> int:
    """Call a verb and turn every way it can end into an exit status (see the module docstring)."""
    previous = install_stop_signals()
    try:
        return _run(func)
    finally:
        restore_signals(previous)


def _run(func: Callable[[], int | None]) -> int:
    try:
        try:
            status = int(func() or 0)
        finally:
            sys.stdout.flush()  # a full device or closed pipe must show here, inside the handlers, not at exit
        return status
    except KeyboardInterrupt:
        sig = stopped_by_signal()
        _say("interrupted" if sig in (None, signal.SIGINT) else "terminated")
        return EXIT_SIGTERM if sig == signal.SIGTERM else EXIT_SIGINT
    except WasteEdgeError as e:
        _say(f"error: {e}")  # our own message: one line, or a line plus the how-to-fix lines it chose to add
        return EXIT_FAILURE
    except ImportError as e:
        _say(f"error: {e.name or one_line(e)} is not installed; install the extra that provides it, e.g. pip install 'waste-edge[train]'")
        return EXIT_FAILURE
    except OSError as e:
        if is_broken_pipe(e):
            _silence_stdout()
            return EXIT_SIGPIPE
        if is_device_full(e):
            _silence_stdout()
            where = "" if e.filename is not None else "cannot write output: "
            _say(f"error: {where}{describe_os_error(e)}")
            return EXIT_FAILURE
        _say(f"error: {describe_os_error(e)}")
        _debug_traceback()
        return EXIT_FAILURE
    except RecursionError:
        _say("error: input nested too deeply to process (a JSON bomb?)")
        _debug_traceback()
        return EXIT_FAILURE
    except MemoryError:
        _say("error: out of memory (use smaller batches or inputs)")
        return EXIT_FAILURE
    except Exception as e:  # the last resort: a bug must never dump a traceback on a user
        _say(f"error: internal error ({type(e).__name__}: {one_line(e)}); set {DEBUG_ENV}=1 for the traceback")
        _debug_traceback()
        return EXIT_FAILURE


def _debug_traceback() -> None:
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        traceback.print_exc(file=sys.stderr)

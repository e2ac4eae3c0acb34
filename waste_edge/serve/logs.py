"""The service's log: one line per event kind, rate-limited, bounded, so no client can fill a disk with it.

Under an attack of 1,100 idle connections the log once grew by 350 MB in 35 s (asyncio's accept() traceback per
attempt), and clients hanging up mid-upload left a traceback each. `OneLineLog` sits on the handlers of the
root logger (which uvicorn's and asyncio's loggers reach too): every record becomes one line (a traceback is
reduced to `Type: message at file:line`, in full only with WASTE_EDGE_DEBUG=1), at most `max_chars` long; a kind
of record (logger + its first line, numbers ignored: "fd=3" and "fd=7" are one kind, two cameras' warnings or a
hook's exit status and its timeout are two) passes at most once per `interval_s`, the next one saying how many
were held back; and all kinds together pass at most `budget` lines per interval. So the log grows by
at most `budget * max_chars` bytes per interval whatever clients do (120 lines of 1 KB a minute: 170 MB a day
under a sustained attack of every kind at once, a few KB a day in normal use).

`EventCounter` is the same for the service's own client-behaviour events (timeouts, evictions, hang-ups): it
counts each kind for /api/v1/status and logs it through the filter.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

DEBUG_ENV = "WASTE_EDGE_DEBUG"  # the same switch as the CLI's (_failsafe.py)
_DIGITS = re.compile(r"\d+")


@dataclass
class _Kind:
    last: float
    held: int = 0


class OneLineLog(logging.Filter):
    def __init__(self, interval_s: float = 60.0, budget: int = 120, max_chars: int = 1000, max_kinds: int = 512,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.clock = clock
        self.interval_s = interval_s
        self.budget = budget
        self.max_chars = max_chars
        self.max_kinds = max_kinds
        self.debug = os.environ.get(DEBUG_ENV) == "1"
        self._kinds: OrderedDict[tuple[str, str], _Kind] = OrderedDict()
        self._window_start = clock()
        self._window_lines = 0
        self._over_budget = 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        verdict = getattr(record, "_one_line", None)
        if verdict is not None:  # another handler has decided on this record already
            return bool(verdict)
        keep = self._decide(record)
        record._one_line = keep  # type: ignore[attr-defined]
        return keep

    def _decide(self, record: logging.LogRecord) -> bool:
        try:
            first = record.getMessage().split("\n", 1)[0]
        except Exception:
            first = str(record.msg)
        key = (record.name, _DIGITS.sub("#", first[:200]))
        now = self.clock()
        with self._lock:
            if now - self._window_start >= self.interval_s:
                self._window_start, self._window_lines = now, 0
            kind = self._kinds.get(key)
            if kind is not None and now - kind.last < self.interval_s:
                kind.held += 1
                return False
            if self._window_lines >= self.budget:
                self._over_budget += 1
                return False
            self._window_lines += 1
            held = kind.held if kind is not None else 0
            self._kinds[key] = _Kind(now)
            self._kinds.move_to_end(key)
            while len(self._kinds) > self.max_kinds:
                self._kinds.popitem(last=False)
            over, self._over_budget = self._over_budget, 0
        self._flatten(record, held, over)
        return True

    def _flatten(self, record: logging.LogRecord, held: int, over: int) -> None:
        try:
            msg = record.getMessage()
        except Exception as e:  # a bad format string in someone's log call must not raise here
            msg = f"{record.msg!r} (unformattable: {type(e).__name__})"
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            if self.debug:
                msg += "\n" + "".join(traceback.format_exception(exc)).rstrip()
            else:
                tb = traceback.extract_tb(exc.__traceback__)
                where = f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                msg = f"{msg.strip()} ({type(exc).__name__}{': ' + first if first else ''}{where})"
            record.exc_info = None
            record.exc_text = None
        record.stack_info = None
        if not self.debug:
            msg = " | ".join(part.strip() for part in msg.splitlines() if part.strip())
            if len(msg) > self.max_chars:
                msg = msg[: self.max_chars - 3] + "..."
        if held:
            msg += f" [{held} more like this in the last {self.interval_s:.0f} s]"
        if over:
            msg += f" [log budget: {over} lines of other kinds dropped]"
        record.msg, record.args = msg, None


def install(filt: OneLineLog | None = None) -> OneLineLog:
    """Put one `OneLineLog` on every handler of the root logger (and make one if there is none)."""
    filt = filt or OneLineLog()
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    for handler in root.handlers:
        if not any(isinstance(f, OneLineLog) for f in handler.filters):
            handler.addFilter(filt)
    return filt


class EventCounter:
    """Counts of client-behaviour events by kind (for /api/v1/status), each logged as one rate-limited line."""

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def note(self, kind: str, message: str, *args: object, level: int = logging.INFO, exc_info: BaseException | None = None) -> None:
        with self._lock:
            self._counts[kind] = self._counts.get(kind, 0) + 1
        self.log.log(level, message, *args, exc_info=exc_info)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

"""The alone check of the benchmark: is the harness fair to the reference? (`--check-alone`)

Each reference's pipeline is also timed alone in two fresh processes (`alone.AloneProcess`, no code shared
with the worker), in the same rounds as its row; see `AloneCheck` for why it is done this way.
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

from waste_edge._io import Log
from waste_edge.bench.config import BenchConfig
from waste_edge.bench.results import BenchRow
from waste_edge.bench.idle import wait_until_idle
from waste_edge.bench.targets import Target
from waste_edge.bench.worker import one_line


class AloneCheck:
    """A reference's pipeline alone in two fresh processes (`alone.py`), timed in the same rounds as its row.

    Why in the same rounds: the machine drifts by tens of percent over seconds, so a yardstick timed after the
    run measures the minute it ran in. Why two: their mean is a steadier yardstick, and the spread between two
    identical processes, reported beside the deviation, is the noise floor a reader should judge it against
    (it exposed the allocator-history effect that `machine.settle_allocator` now removes: before it, two
    fresh processes differed by up to 15-20 % and the worker ran 24-29 % faster than a fresh process on Lite0).
    The reference and its twins take turns in an order that rotates every round, so none always follows another.
    """

    def __init__(self, target: Target, cfg: BenchConfig, log: Log) -> None:
        from waste_edge.bench.alone import AloneProcess

        self.target = target
        self.batch = cfg.batches[0]
        self.rounds: list[dict[int, float]] = [{}, {}]
        self.error: str | None = None
        self.twins: list[Any] = []
        spec = {"kind": "reference", "path": str(target.path), "batch": self.batch, "frame": list(cfg.frame), "warmup": cfg.warmup,
                "iters": cfg.iters, "seconds": cfg.seconds / cfg.rounds if cfg.seconds is not None else None, "threads": cfg.threads}
        try:
            for _ in range(2):
                self.twins.append(AloneProcess(spec))
            log(f"reference {target.name} also loaded alone in fresh processes {', '.join(str(p.pid) for p in self.twins)}")
        except Exception as e:
            self.fail(e)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.twins]

    def fail(self, e: BaseException) -> None:
        self.error = self.error or one_line(e)
        self.close()

    def turn(self, r: int, reference_round: Any, pids: Sequence[int | None]) -> None:
        """The reference's round and one round of each twin, in an order rotated by the round number."""
        slots = [reference_round] + [lambda k=k: self._twin_round(k, r, pids) for k in range(len(self.twins))]
        for k in range(len(slots)):
            slots[(k + r) % len(slots)]()

    def _twin_round(self, k: int, r: int, pids: Sequence[int | None]) -> None:
        if self.error is None:
            wait_until_idle(pids)
            try:
                self.rounds[k][r] = self.twins[k].round()
            except Exception as e:
                self.fail(e)

    def close(self) -> None:
        twins, self.twins = self.twins, []
        for p in twins:
            p.close()

    def result(self, rows: list[BenchRow], log: Log) -> dict[str, Any]:
        """The reference row against the mean of its twins, round by round; and the twins against each other."""
        entry: dict[str, Any] = {"reference": self.target.name, "batch": self.batch}
        row = next((r for r in rows if r.model == self.target.name and r.variant == "reference" and r.batch == self.batch), None)
        n = len(row.round_ms) if row is not None and row.status == "ok" and row.round_ms else 0
        if self.error or not n or any(len(t) < n for t in self.rounds):
            entry["error"] = self.error or "the reference row was not measured"
            return entry
        a, b = ([t[r] for r in sorted(t)][:n] for t in self.rounds)
        alone = [(x + y) / 2 for x, y in zip(a, b)]
        entry.update(harness_ms=statistics.median(row.round_ms), alone_ms=statistics.median(alone), alone_round_ms=alone,
                     harness_over_alone=statistics.median(h / m for h, m in zip(row.round_ms, alone)),
                     twin_spread=statistics.median(x / y for x, y in zip(a, b)) - 1)  # type: ignore[union-attr]
        log(f"reference {self.target.name}: {entry['harness_ms']:.2f} ms in the harness, {entry['alone_ms']:.2f} ms alone "
            f"(round by round {(entry['harness_over_alone'] - 1) * 100:+.1f} %; the two alone processes differ by {entry['twin_spread'] * 100:+.1f} %)")
        return entry

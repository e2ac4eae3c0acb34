"""What the benchmark reports: one `BenchRow` per target x batch size, and the `BenchReport` of a run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class BenchRow:
    """One measured combination. The first fields are the JSON schema of the issue; the rest are extras."""

    model: str
    variant: str
    backend: str
    batch: int
    status: str = "ok"  # ok | failed | skipped
    error: str | None = None
    p50_ms: float | None = None  # latency of one call on `batch` frames
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    throughput: float | None = None  # images per second (median round)
    load_s: float | None = None
    size_mb: float | None = None
    peak_rss_mb: float | None = None
    speedup_vs_reference: float | None = None
    # extras
    std_ms: float | None = None
    ms_per_image: float | None = None
    fps: float | None = None  # = throughput
    accuracy: float | None = None
    gpu_mem_mb: float | None = None
    format: str = ""
    provider: str = ""
    encoder: str = ""
    path: str = ""
    reference: str | None = None  # the reference row this row's speed-up is against
    settings: dict[str, Any] = field(default_factory=dict)  # threads, OpenMP policy, ORT session options it ran with
    iters: int = 0  # timed calls, all rounds together
    rounds: int = 0
    round_ms: list[float] = field(default_factory=list)  # mean latency of each round, in order
    round_speedups: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BenchReport:
    machine: dict[str, Any]
    settings: dict[str, Any]
    rows: list[BenchRow]
    camera: list[Any] = field(default_factory=list)  # CameraOverhead dicts
    profiles: list[dict[str, Any]] = field(default_factory=list)
    reference_check: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def any_measured(self) -> bool:
        return any(r.status == "ok" for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "settings": self.settings,
            "rows": [r.to_dict() for r in self.rows],
            "camera": list(self.camera),
            "profiles": self.profiles,
            "reference_check": self.reference_check,
            "notes": self.notes,
        }

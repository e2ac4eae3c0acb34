"""What `waste-edge bench` is told (`BenchConfig`): each field also its command-line option, declared once.

The defaults are the CLI's: `models=None` is the embedded default model (none when references are given),
`iters=None` is 10 calls per round (unless `seconds`), `threads` / `torch_threads` None leave each runtime at
its own default (ONNX Runtime's, PyTorch's): a lever only where asked. Light imports only: the CLI builds
its parser from this class.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import ClassVar

from waste_edge._options import MAX_BATCH, common, float_in, int_in, like, option
from waste_edge._outputs import input_run
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.backends.select import BACKEND_NAMES
from waste_edge.runtime.classifier import MODEL_HELP, ModelOptions


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,16, got {text!r}") from None
    if not values or any(not 1 <= v <= MAX_BATCH for v in values):
        raise argparse.ArgumentTypeError(f"expected integers from 1 to {MAX_BATCH} like 1,16, got {text!r}")
    return values


def _backend_list(text: str) -> list[str]:
    values = [x.strip().lower() for x in text.split(",") if x.strip()]
    bad = [v for v in values if v not in BACKEND_NAMES]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"backends are {', '.join(BACKEND_NAMES)} (comma-separated), got {text!r}")
    return values


def _frame_size(text: str) -> tuple[int, int]:
    from waste_edge.bench.frames import parse_frame_size

    try:
        return parse_frame_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _session_entries(text: str) -> tuple[str, str]:
    try:
        return parse_session_entry(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class BenchError(WasteEdgeError):
    """The benchmark cannot start at all (no model, bad options); per-row problems never raise."""


def parse_session_entry(text: str) -> tuple[str, str]:
    """'KEY=VALUE' (an ONNX Runtime session config entry) -> (KEY, VALUE); ValueError otherwise."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--session-config takes KEY=VALUE, got {text!r}")
    return key.strip(), value


@dataclass
class BenchConfig:
    """Time frame -> probabilities for every model x backend x batch size on a real-sized uint8 frame
    (preprocessing included): p50 / p90 / p99 / mean latency, throughput, load time, size, peak RSS, and with
    --reference the study's pipeline (PIL, PyTorch, scikit-learn) of the same run, each row's speed-up against
    it. Every target runs in its own worker process at its own defaults (PyTorch's threads and OpenMP behaviour
    for the reference, ONNX Runtime's session defaults for the models); each row prints the settings it ran
    with. Rounds are interleaved (A B A B) and ratios are medians over rounds. A backend that is missing here or
    fails becomes a row with the reason; the other rows go on.

    What to measure and how (see the module docstring for the defaults)."""

    EPILOG: ClassVar[str] = (
        "examples:\n"
        "  waste-edge bench --model runs/lite0/model-fp32.onnx --model runs/lite0/model-int8.onnx --reference runs/lite0 --camera\n"
        "  waste-edge bench --model vit-int8.onnx --reference runs/vit --batches 1,16 --json out.json --md out.md --plot out.png\n"
        "  waste-edge bench --model vit-int8.onnx --reference runs/vit --data data/TEST --check-alone   # speed + accuracy\n"
        "  waste-edge bench --model vit-int8.onnx --session-config session.intra_op.allow_spinning=0      # a lever\n"
        "  waste-edge bench --model vit-fp16.onnx --backends cuda,tensorrt --batches 1,256 --seconds 10")

    models: list[Path] | None = like(ModelOptions, "model", None, action="append", help=f"{MODEL_HELP}; repeat for several")
    references: list[Path] = option(MISSING, "--reference", default_factory=list, action="append", type=input_run, metavar="RUN_DIR",
                                    help="run directory whose study pipeline is the baseline; repeatable (each model is compared with the run it was exported from)")
    backends: list[str] | None = option(None, "--backends", type=_backend_list, help="comma-separated cpu,cuda,tensorrt (default: every backend available here for each model)")
    batches: list[int] = option(MISSING, "--batches", default_factory=lambda: [1, 16], type=_int_list, metavar="1,16",
                                help="comma-separated batch sizes (default: 1,16)")
    frame: tuple[int, int] = option((640, 480), "--frame", type=_frame_size, metavar="WxH", help="input frame size (default: 640x480)")
    warmup: int = option(3, "--warmup", type=int_in(0, 10_000), metavar="N", help="untimed calls per target and batch (default: %(default)s)")
    iters: int | None = option(None, "--iters", type=int_in(1, 1_000_000), metavar="N", help="timed calls per target per round (default: 10)")
    seconds: float | None = option(None, "--seconds", type=float_in(0.0, 3600.0, open_lo=True), metavar="S",
                                   help="timing budget per target and batch, split over the rounds")
    rounds: int = option(5, "--rounds", type=int_in(1, 1000), metavar="R", help="interleaved rounds; medians are over rounds (default: %(default)s)")
    threads: int | None = like(ModelOptions, "threads", None, help="ONNX Runtime intra-op threads of every model (default: ORT's own)")
    torch_threads: int | None = common("--torch-threads", None, help="PyTorch intra-op threads of the references (default: PyTorch's own)")
    # (KEY, VALUE) pairs as the command line appends them; a dict after __post_init__
    session_config: dict[str, str] = option(MISSING, "--session-config", default_factory=list, action="append", type=_session_entries, metavar="KEY=VALUE",
                                            help="ONNX Runtime session config entry for every model, repeatable (a lever to try, e.g. session.intra_op.allow_spinning=0)")
    data: Path | None = common("--data", None, help="dataset (e.g. Kaggle layout): adds an accuracy column on its test split")
    data_limit: int | None = common("--limit", None, help="with --data: at most N images (fixed-seed sample)")
    camera: bool = option(False, "--camera", action="store_true", help="also measure the camera loop on a video file vs pure inference, per model")
    camera_frames: int = option(300, "--camera-frames", type=int_in(1, 1_000_000), metavar="N", help="frames of the camera-loop video (default: %(default)s)")
    memory: bool = option(True, "--no-memory", dest="memory", action="store_false", help="do not report each worker's peak RSS")
    profile: bool = option(False, "--profile", action="store_true", help="add an ONNX Runtime per-op profile of each ONNX model (CPU, every batch size)")
    check_alone: bool = option(False, "--check-alone", action="store_true",
                               help="also time each reference alone in two fresh processes, in the same rounds as its row (first batch size), "
                                    "and print the deviation beside the noise floor of the two")
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.session_config, list):
            self.session_config = dict(self.session_config)
        if self.models is not None:
            self.models = [Path(m) for m in self.models]
        self.references = [Path(r) for r in self.references]
        if self.models is None:
            from waste_edge.runtime.model_path import resolve_model_path

            self.models = [] if self.references else [resolve_model_path(None)]
        if self.iters is None and self.seconds is None:
            self.iters = 10
        if not self.models and not self.references:
            raise BenchError("nothing to benchmark: give --model (and optionally --reference)")
        if any(b < 1 for b in self.batches) or not self.batches:
            raise BenchError("batch sizes must be positive integers")
        if self.rounds < 1 or self.warmup < 0:
            raise BenchError("--rounds must be >= 1 and --warmup >= 0")
        if self.seconds is None and (self.iters is None or self.iters < 1):
            raise BenchError("--iters must be >= 1 (or give --seconds)")
        if self.seconds is not None and self.seconds <= 0:
            raise BenchError("--seconds must be positive")
        if self.backends is not None:
            bad = [b for b in self.backends if b not in BACKEND_NAMES]
            if bad:
                raise BenchError(f"unknown backend(s) {', '.join(bad)}: choose from {', '.join(BACKEND_NAMES)}")
        self.batches = sorted(set(self.batches))



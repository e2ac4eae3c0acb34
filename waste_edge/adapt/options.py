"""What `waste-edge adapt` is told (besides the model group): each field also its command-line option.

Standard library only: the CLI builds its parser from this class on every call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from waste_edge._options import common, option
from waste_edge._outputs import input_collection, input_path, output_model

METHODS = ("auto", "rehearsal+prior", "rehearsal", "prior", "labels-only")


@dataclass(frozen=True)
class AdaptOptions:
    """Learn at the bin: take the labelled frames of a collection folder (written by `camera --collect DIR`,
    labels in DIR/labels.csv as file,label), compute their embeddings with the model itself (ONNX Runtime, the
    model's `embedding` output), fit a new logistic head with scikit-learn on them plus what protects the old
    knowledge (the rehearsal set shipped beside the model, and regularisation toward the old head), and write a
    COPY of the model with the new head's constants (fp32 and INT8 models; the input is never modified). The new
    model's metadata records the base model's sha256, the labels per class, the method and the time."""

    EPILOG: ClassVar[str] = (
        "methods: auto (rehearsal+prior when <model>.rehearsal.npz exists, else prior), rehearsal+prior, rehearsal, prior, "
        "labels-only (forgets the old domain; for comparison).\n"
        "labels.csv: one row per frame, file,label (B, N, a display name such as biodegradable, or skip); a BOM, CRLF, "
        "spaces and comments are accepted, unusable rows are reported and skipped.\n"
        "example:\n"
        "  waste-edge camera --device 0 --model lite0-int8.onnx --collect bin-7/\n"
        "  printf 'file,label\\n20250101-120000-123-0000-0.jpg,N\\n' > bin-7/labels.csv   # or the service's Review page\n"
        "  waste-edge adapt --model lite0-int8.onnx --data bin-7/ --out lite0-int8-bin7.onnx")

    data: Path = common("--data", required=True, type=input_collection, help="collection folder with labels.csv")
    out: Path = common("--out", required=True, type=output_model, help="the adapted model to write (.onnx; never the input model)")
    method: str = option("auto", "--method", choices=METHODS, help="how the old knowledge is protected (default: %(default)s)")
    rehearsal_set: Path | None = option(None, "--rehearsal-set", type=input_path, metavar="NPZ",
                                        help="rehearsal set (default: <model stem>.rehearsal.npz beside the model, when present)")
    no_rehearsal: bool = option(False, "--no-rehearsal", action="store_true", help="ignore the rehearsal set")
    C: float | None = common("--C", None, help="inverse regularisation strength of the fit (default: 0.316, the study's)")
    batch_size: int = common("--batch-size", 32, help="frames per inference batch (default: %(default)s)")
    json: Path | None = common("--json", None, help="write the adaptation report as JSON to OUT")
    quiet: bool = common("--quiet", False, help="no progress bar")

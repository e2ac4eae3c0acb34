"""What `waste-edge export` is told (`ExportOptions`): each field also its command-line option, declared once.

Which options a format takes is the format table's business (`runtime/formats.py`, validated by
`exporter.validate_options`); the CLI adds every field here with no default (`add_options(..., unset=True)`),
so the validator can tell what the user set. Standard library only: the CLI builds its parser from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from waste_edge._options import batch_size, common, declared, float_in, int_in, option
from waste_edge._outputs import input_path

MIN_OPSET = 18  # Resize `antialias`
DEFAULT_OPSET = 18


@dataclass
class ExportOptions:
    """Build ONE graph from a raw uint8 NHWC frame (any size, BGR by default) to class probabilities: the
    encoder's own preprocessing (resize, crop, normalise), the encoder, the logistic head, softmax. Outputs
    `probabilities` [N, K] and `label` [N]; metadata (classes, preprocessing, encoder, head sha256) travels
    inside the file (or beside an engine)."""

    out: Path | None = common("--out", None, help="output file (default: <run>/model-<variant>.<suffix>)")
    opset: int = option(DEFAULT_OPSET, "--opset", type=int_in(1, 100), help=f"ONNX opset, >= {MIN_OPSET} (default: {DEFAULT_OPSET})")
    dynamic: bool = option(False, "--dynamic", action="store_true", help="dynamic batch dimension (else fixed to --batch)")
    batch: int = option(1, "--batch", type=batch_size, metavar="N",
                        help="fixed batch size, or the largest batch of a TensorRT profile with --dynamic (default: 1)")
    imgsz: tuple[int, int] | None = common("--imgsz", None, nargs=2, metavar=("H", "W"),
                                           help="fix the input frame size: the fixed-size preprocessing (Pillow's taps as constants, no "
                                                "Resize), exact and TensorRT-clean (default: any size for onnx; 480 640 for engine)")
    half: bool = option(False, "--half", action="store_true", help="FP16 variant (GPU execution providers / TensorRT)")
    int8: bool = option(False, "--int8", action="store_true", help="INT8 variant (method chosen per encoder)")
    int8_scheme: str | None = option(None, "--int8-scheme", metavar="SCHEME",
                                     help="integer types and recipe of --int8: u8s8-7bit-bc (default: 7-bit weights and bias correction; "
                                          "the same answers on every CPU tested, Arm included), u8s8-7bit (without bias correction: less "
                                          "accurate), u8s8-7bit-bc-stem (plus a float stem: more accurate, answers differ slightly between "
                                          "CPUs), u8u8, or u8s8 / s8s8 (8-bit weights: saturate on x86 CPUs without VNNI, so results depend "
                                          "on the CPU)")
    calib: Path | None = option(None, "--calib", type=input_path, help="folder of real images to calibrate --int8 (needed for conv encoders)")
    channel_order: str = option("BGR", "--channel-order", choices=["BGR", "RGB"], type=str.upper,
                                help="channel order of the input frames (default: BGR, as OpenCV decodes)")
    workspace: float | None = option(None, "--workspace", type=float_in(0.0, 1024.0, open_lo=True), help="TensorRT builder workspace in GiB (engine only)")
    with_embedding: bool = option(False, "--with-embedding", action="store_true",
                                  help="also output `embedding`, the features the head sees (what `waste-edge adapt` refits the head on; "
                                       "free when unused), and write <out stem>.rehearsal.npz beside the model")
    rehearsal: int | None = option(None, "--rehearsal", type=int_in(0, 100_000), metavar="N",
                                   help="with --with-embedding: training embeddings per class in the rehearsal set (default: 128; 0: none)")

    @property
    def variant(self) -> str:
        return "int8" if self.int8 else "fp16" if self.half else "fp32"


def formats_table() -> str:
    """The format table as `export --help` shows it: name, suffix, where it runs, the options it takes."""
    from waste_edge.runtime.formats import FORMATS

    flags = {name: spec.flags[0] for name, spec, _ in declared(ExportOptions)}
    return "\n".join(f"  {f.name:<7} {f.suffix:<8} {'CPU+GPU' if f.cpu and f.gpu else 'GPU' if f.gpu else 'CPU':<8} options: "
                     + " ".join(flags[a] for a in sorted(f.args)) for f in FORMATS)

"""INT8 variants of the encoder part, with the method chosen per encoder because it decides speed.

Measured on this project's 2-core x86 CPU (the shared environment notes; benchmarks/README.md):
- MatMul-heavy ViTs: dynamic quantisation (QInt8 weights, activations quantised on the fly) makes
  ViT-B/32 2.4x faster than fp32 and needs no calibration data.
- Conv nets: dynamic quantisation turns convolutions into `ConvInteger`, which has no fast kernel in
  ONNX Runtime (EfficientNet-Lite0: 14x SLOWER). They need static QDQ quantisation, per-channel QInt8 weights
  and QUInt8 activations calibrated on real images (Lite0: 1.7x faster, 3.5x smaller).

Only the encoder is quantised: the preprocessing must stay bit-exact and the head is tiny and sets the
probabilities, so both stay fp32. Calibration feeds the encoder what it sees in deployment: real images
through the same ONNX preprocessing graph.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnx

from waste_edge.errors import WasteEdgeError
from waste_edge.export.preprocess_graph import PIXELS

INT8_METHODS = ("dynamic", "static")
DEFAULT_CALIB_LIMIT = 200


class QuantizationError(WasteEdgeError):
    """INT8 export impossible as asked (no calibration images for a conv encoder, unreadable folder)."""


def choose_int8_method(encoder_model: onnx.ModelProto) -> str:
    """`dynamic` for MatMul-dominated graphs (transformers), `static` for convolutional ones."""
    ops = [n.op_type for n in encoder_model.graph.node]
    matmuls = sum(op in ("MatMul", "Gemm") for op in ops)
    convs = sum(op == "Conv" for op in ops)
    return "dynamic" if matmuls > convs else "static"


def quantize_dynamic_encoder(
    encoder_model: onnx.ModelProto,
    *,
    fuse: bool = True,
    patch_matmul: bool = False,
    per_channel: bool = False,
    log: Callable[[str], None] | None = None,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """QInt8 weights on the MatMuls (and fused `Attention` nodes); activations quantised per call (uint8).

    With `fuse` (the default) a ViT graph is first rewritten into ONNX Runtime's fused transformer kernels
    (`transformer_opt.py`: Attention, SkipLayerNormalization, BiasGelu, the last layer on the class token
    only; `patch_matmul` also the patch embedding as an INT8 MatMul, a lever that costs accuracy); the fusions
    are checked in fp32 before quantisation, and a graph they do not fit is quantised as it is. The
    patch-embedding Conv is never quantised as a Conv: it would become a slow ConvInteger."""
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    from waste_edge.export.transformer_opt import infer_num_heads, optimize_vit_encoder

    info: dict[str, Any] = {"int8_weights": "QInt8 per-channel" if per_channel else "QInt8 per-tensor"}
    ops = ["MatMul"]
    if fuse:
        heads = infer_num_heads(encoder_model)
        if heads is None:
            info["int8_fusions"] = "not applied: no ViT attention found"
        else:
            encoder_model, report = optimize_vit_encoder(encoder_model, heads, patch_matmul=patch_matmul, log=log)
            info["int8_fusions"] = report.fused_ops if report.applied else f"not applied: {report.reason}"
            if report.applied:
                ops.append("Attention")
            elif log:
                log(report.summary())
    with tempfile.TemporaryDirectory() as tmp:
        src, prep, dst = Path(tmp) / "encoder.onnx", Path(tmp) / "encoder-prep.onnx", Path(tmp) / "encoder-int8.onnx"
        onnx.save(encoder_model, src)
        quant_pre_process(src, prep)  # symbolic shape inference (it knows the contrib ops): the quantiser needs types
        quantize_dynamic(prep, dst, op_types_to_quantize=ops, weight_type=QuantType.QInt8, per_channel=per_channel)
        return onnx.load(dst), info


def calibration_images(calib_dir: str | Path, limit: int = DEFAULT_CALIB_LIMIT, seed: int = 0) -> list[Path]:
    """Up to `limit` image files under `calib_dir`, sampled evenly with a fixed seed (all classes appear)."""
    from waste_edge.data.decode import is_image_path

    root = Path(calib_dir)
    if not root.is_dir():
        raise QuantizationError(f"--calib {root}: not a folder of images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_path(p))
    if not files:
        raise QuantizationError(f"--calib {root}: no images found (jpg, png, ...)")
    if len(files) > limit:
        idx = np.random.default_rng(seed).choice(len(files), size=limit, replace=False)
        files = [files[i] for i in sorted(idx)]
    return files


class _PixelsReader:
    """onnxruntime CalibrationDataReader: real images -> the ONNX preprocessing graph -> `pixels` batches of 1."""

    def __init__(self, pre_model: onnx.ModelProto, files: list[Path], progress: bool, log: Callable[[str], None] | None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self._pre = ort.InferenceSession(pre_model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self._files = files
        self._progress = progress
        self._log = log
        self.skipped: list[str] = []
        self._it: Iterator[dict[str, np.ndarray]] | None = None

    def _gen(self) -> Iterator[dict[str, np.ndarray]]:
        from tqdm import tqdm

        from waste_edge.data.decode import DecodeError, load_rgb_array

        for path in tqdm(self._files, desc="calibrating", unit="img", disable=not self._progress):
            try:
                rgb = load_rgb_array(path)
            except DecodeError as e:
                self.skipped.append(f"{path}: {e}")
                continue
            yield {PIXELS: self._pre.run([PIXELS], {"image": rgb[None]})[0]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = self._gen()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None


def quantize_static_encoder(
    encoder_model: onnx.ModelProto,
    pre_model_rgb: onnx.ModelProto,
    calib_dir: str | Path,
    *,
    limit: int = DEFAULT_CALIB_LIMIT,
    progress: bool = True,
    activations: str = "QUInt8",
    log: Callable[[str], None] | None = None,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Static QDQ (per-channel QInt8 weights, QUInt8 activations, MinMax), after `quant_pre_process`.

    `pre_model_rgb` is the preprocessing graph with RGB input (images are decoded as RGB here). `activations`
    QInt8 is a lever to measure: on x86 the VNNI instructions multiply u8 by s8, so QUInt8 is the fast default.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    files = calibration_images(calib_dir, limit)
    reader = _PixelsReader(pre_model_rgb, files, progress, log)
    with tempfile.TemporaryDirectory() as tmp:
        src, prep, dst = Path(tmp) / "encoder.onnx", Path(tmp) / "encoder-prep.onnx", Path(tmp) / "encoder-int8.onnx"
        onnx.save(encoder_model, src)
        quant_pre_process(src, prep, skip_symbolic_shape=False)
        quantize_static(
            prep, dst, reader, quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
            activation_type=getattr(QuantType, activations), calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": activations == "QInt8", "WeightSymmetric": True},
        )
        model = onnx.load(dst)
    used = len(files) - len(reader.skipped)
    if used == 0:
        raise QuantizationError(f"--calib {calib_dir}: none of the {len(files)} images could be decoded")
    if log and reader.skipped:
        log(f"calibration skipped {len(reader.skipped)} unreadable image(s), e.g. {reader.skipped[0]}")
    return model, {"calibration_images": used, "calibration_dir": str(calib_dir), "calibration_skipped": len(reader.skipped)}

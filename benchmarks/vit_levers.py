"""ViT-B/32 INT8 levers, one model file each, so one interleaved `waste-edge bench` run can compare them.

Every variant is built from the same exported fp32 fused model: its encoder stage (`pixels -> embedding`) is
cut out with `onnx.utils.extract_model`, quantised one way or another with the exporter's own functions
(`waste_edge.export.quantize`), and composed with preprocessing and head built as the exporter builds them,
with the fp32 model's metadata (variant int8). So a lever row differs from the shipped export only in the lever.

    .venv/bin/python benchmarks/vit_levers.py RUN_DIR MODEL-FP32.onnx OUT_DIR [--calib DIR] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


@dataclass(frozen=True)
class Lever:
    name: str
    what: str
    build: Callable[[Any, Any, Path | None], tuple[Any, dict[str, Any]]]  # (encoder fp32, RGB preprocessing, calib) -> (encoder, info)


def _dynamic(**kw: Any) -> Callable[[Any, Any, Path | None], tuple[Any, dict[str, Any]]]:
    def build(enc: Any, _pre: Any, _calib: Path | None) -> tuple[Any, dict[str, Any]]:
        from waste_edge.export.quantize import quantize_dynamic_encoder

        return quantize_dynamic_encoder(enc, **kw)

    return build


def _static(scheme: str) -> Callable[[Any, Any, Path | None], tuple[Any, dict[str, Any]]]:
    def build(enc: Any, pre_rgb: Any, calib: Path | None) -> tuple[Any, dict[str, Any]]:
        from waste_edge.export.quantize import QuantizationError, get_int8_scheme, quantize_static_encoder

        if calib is None:
            raise QuantizationError("static QDQ needs calibration images (--calib)")
        model, info = quantize_static_encoder(enc, pre_rgb, calib, progress=False, scheme=scheme)
        return model, {**info, "int8_scheme": scheme, "int8_activations": get_int8_scheme(scheme).activations}

    return build


LEVERS = (
    Lever("int8-unfused", "the previous export: dynamic QInt8 MatMuls on the graph as exported", _dynamic(fuse=False)),
    Lever("int8-fused", "+ Attention / SkipLayerNormalization / BiasGelu fusions, last layer on the class token (the export now)", _dynamic()),
    Lever("int8-fused-patch-matmul", "fusions + the patch embedding as an INT8 MatMul instead of the fp32 Conv", _dynamic(patch_matmul=True)),
    Lever("int8-fused-per-channel", "fusions + per-channel QInt8 weights", _dynamic(per_channel=True)),
    Lever("int8-static-u8", "static QDQ calibrated on real images, QUInt8 activations, per-channel 7-bit weights (graph as exported)",
          _static("u8s8-7bit")),
    Lever("int8-static-s8", "static QDQ calibrated on real images, QInt8 activations, per-channel weights (scheme s8s8: not portable)",
          _static("s8s8")),
)


def extract_encoder(fused_fp32: Path, tmp: Path, size: int) -> Any:
    """The encoder stage (`pixels` -> `embedding`) of an exported fused model, as a model of its own.

    It gets its input shape back ([batch, 3, size, size], as the exporter writes it): inside the fused graph
    `pixels` comes out of a Resize, so its height and width are not known there."""
    import onnx
    from onnx.utils import extract_model

    from waste_edge.export.fused import EMBEDDING
    from waste_edge.export.preprocess_graph import PIXELS

    path = tmp / "encoder.onnx"
    extract_model(str(fused_fp32), str(path), [PIXELS], [EMBEDDING], check_model=False)
    enc = onnx.load(str(path))
    for d, v in zip(enc.graph.input[0].type.tensor_type.shape.dim, ("batch", 3, size, size)):
        d.Clear()
        if isinstance(v, int):
            d.dim_value = v
        else:
            d.dim_param = v
    del enc.graph.value_info[:]
    enc.producer_name = "pytorch"  # what the exporter's encoder says (ONNX Runtime's optimizer checks it)
    return enc


def build_levers(run_dir: Path, fused_fp32: Path, out_dir: Path, calib: Path | None = None, only: list[str] | None = None,
                 log: Callable[[str], None] = print) -> list[tuple[Lever, Path, dict[str, Any]]]:
    """Write one fused model per lever into `out_dir` (kept when newer than the fp32 model); returns what it wrote.

    Preprocessing and head are built as the exporter builds them (from the fp32 model's spec and the run's
    head), the encoder is the fp32 model's own, quantised per lever."""
    import json

    import onnx

    from waste_edge.export.fused import build_head_model, compose_fused, set_io_dims
    from waste_edge.export.preprocess_graph import build_preprocess_model
    from waste_edge.runtime.metadata import ModelMetadata
    from waste_edge.export.quantize import DEFAULT_INT8_SCHEME, int8_gemm_weight_peak
    from waste_edge.train.preprocess import PreprocessSpec
    from waste_edge.train.runs import LinearRun, open_run

    fp32 = onnx.load(str(fused_fp32), load_external_data=False)
    meta = ModelMetadata.from_props({p.key: p.value for p in fp32.metadata_props})
    run = open_run(run_dir)
    if not isinstance(run, LinearRun):
        raise SystemExit(f"{run_dir} is a {run.kind} run: the levers are for an encoder + logistic head (a ViT)")
    if run.head_sha256 != meta.head_sha256:
        raise SystemExit(f"{fused_fp32} was not exported from {run_dir} (head sha256 differs)")
    spec = PreprocessSpec.from_dict(meta.preprocess)
    opset = int(meta.extra.get("opset", 18))
    out_dir.mkdir(parents=True, exist_ok=True)
    built = []
    with tempfile.TemporaryDirectory() as tmp:
        enc = extract_encoder(fused_fp32, Path(tmp), spec.size)
        pre_rgb = build_preprocess_model(spec, "RGB", opset=opset)
        for lever in LEVERS:
            if only and lever.name not in only:
                continue
            path = out_dir / f"vitb32-{lever.name}.onnx"
            info_path = Path(str(path) + ".lever.json")
            if path.is_file() and info_path.is_file() and path.stat().st_mtime > fused_fp32.stat().st_mtime:
                built.append((lever, path, json.loads(info_path.read_text())))
                continue
            log(f"building {lever.name}: {lever.what}")
            try:
                q_enc, info = lever.build(enc, pre_rgb, calib)
                info.setdefault("int8_scheme", DEFAULT_INT8_SCHEME)
                info["int8_weight_peak"] = int8_gemm_weight_peak(q_enc)
                model = compose_fused(build_preprocess_model(spec, meta.channel_order, opset=opset), q_enc, build_head_model(run.head, opset=opset))
                set_io_dims(model, None, None)
                model = onnx.shape_inference.infer_shapes(model)
            except Exception as e:  # one lever that cannot be built does not stop the others
                log(f"  {lever.name} not built: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                continue
            meta.variant = "int8"
            meta.extra = {k: v for k, v in meta.extra.items() if not k.startswith("int8_")}
            meta.extra.update({"int8_lever": lever.name, **{k: v for k, v in info.items() if k.startswith("int8_")}})
            onnx.helper.set_model_props(model, meta.to_props())
            onnx.save(model, str(path))
            info = {"what": lever.what, **{k: v for k, v in info.items() if k != "calibration_dir"}}
            info_path.write_text(json.dumps(info, indent=2, default=str) + "\n")
            built.append((lever, path, info))
    return built


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path, help="the run directory the model was exported from")
    ap.add_argument("model", type=Path, help="the fp32 fused ViT model (waste-edge export --format onnx --dynamic)")
    ap.add_argument("out", type=Path, help="folder for the lever models")
    ap.add_argument("--calib", type=Path, default=None, help="calibration images for the static QDQ levers")
    ap.add_argument("--only", default=None, help="comma-separated lever names: " + ", ".join(lv.name for lv in LEVERS))
    args = ap.parse_args()
    for lever, path, info in build_levers(args.run, args.model, args.out, args.calib, args.only.split(",") if args.only else None):
        print(f"{lever.name}: {path} {info}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

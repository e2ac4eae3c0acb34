"""`export(run_dir, fmt, **options)`: the one entry point behind `waste-edge export`.

Options are validated against the format table (`runtime/formats.py`) before any work, so an option a
format does not support is a clear error instead of being silently ignored. The run is opened as its kind
(`train.runs.open_run`) and fused by that kind's row of `FUSERS`; then the format's writer runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from waste_edge import __version__
from waste_edge._io import atomic_write_bytes
from waste_edge.export.fused import ExportError, build_head_model, compose_fused, embedding_metadata, export_encoder, set_io_dims
from waste_edge.export.keras_onnx import build_keras_onnx
from waste_edge.export.options import DEFAULT_OPSET, MIN_OPSET, ExportOptions
from waste_edge.export.preprocess_graph import CHANNEL_ORDERS, build_preprocess_model
from waste_edge.runtime.backends.engine_sidecar import sidecar_path
from waste_edge.runtime.formats import ModelFormat, check_args, get_format
from waste_edge.runtime.metadata import ModelMetadata
from waste_edge.train.runs import KerasRun, LinearRun, Run, open_run

__all__ = ["DEFAULT_OPSET", "ExportOptions", "ExportResult", "export"]


@dataclass
class ExportResult:
    path: Path
    format: str
    metadata: ModelMetadata
    size_bytes: int
    details: dict[str, Any] = field(default_factory=dict)
    extra_files: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"wrote {self.path} ({self.format}, {self.metadata.variant}, {self.size_bytes / 1e6:.1f} MB)"]
        lines += [f"  {k}: {v}" for k, v in self.details.items()]
        lines += [f"  also wrote {p}" for p in self.extra_files]
        return "\n".join(lines)


def validate_options(fmt: ModelFormat, given: dict[str, Any]) -> ExportOptions:
    """Options the user set (None / False = not set) -> ExportOptions, or a FormatError / ExportError."""
    set_opts = {k for k, v in given.items() if v is not None and v is not False}
    check_args(fmt, set_opts)
    unknown = set(given) - set(ExportOptions.__dataclass_fields__)
    if unknown:
        raise ExportError(f"unknown export option(s): {', '.join(sorted(unknown))}")
    opts = ExportOptions(**{k: v for k, v in given.items() if v is not None})
    if opts.half and opts.int8:
        raise ExportError("--half and --int8 are exclusive: choose one variant")
    if opts.calib is not None and not opts.int8:
        raise ExportError("--calib only applies to --int8")
    if opts.rehearsal is not None and (not opts.with_embedding or opts.rehearsal < 0):
        raise ExportError("--rehearsal N (>= 0) only applies to --with-embedding")
    if opts.int8_scheme is not None:
        from waste_edge.export.quantize import get_int8_scheme

        if not opts.int8:
            raise ExportError("--int8-scheme only applies to --int8")
        get_int8_scheme(opts.int8_scheme)  # an unknown name fails before minutes of export
    if opts.opset < MIN_OPSET:
        raise ExportError(f"--opset {opts.opset} is too old: the fused preprocessing needs opset >= {MIN_OPSET} (Resize antialias)")
    if opts.batch < 1:
        raise ExportError("--batch must be >= 1")
    if opts.imgsz is not None:
        if len(opts.imgsz) != 2 or min(opts.imgsz) < 1:
            raise ExportError("--imgsz takes two positive integers: H W")
        opts.imgsz = (int(opts.imgsz[0]), int(opts.imgsz[1]))
    opts.channel_order = str(opts.channel_order).upper()
    if opts.channel_order not in CHANNEL_ORDERS:
        raise ExportError(f"--channel-order must be one of {', '.join(CHANNEL_ORDERS)}")
    if opts.out is not None:
        opts.out = Path(opts.out)
        if opts.out.suffix.lower() != fmt.suffix:
            raise ExportError(f"--out {opts.out}: a {fmt.name} model must end in {fmt.suffix}")
    return opts


def default_out(run_dir: Path, fmt: ModelFormat, variant: str) -> Path:
    return Path(run_dir) / f"model-{variant}{fmt.suffix}"


Fused = tuple[onnx.ModelProto, ModelMetadata, dict[str, Any]]


def build_fused_onnx(
    run: LinearRun,
    opts: ExportOptions,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Fused:
    """The fused model of a linear run (ARCHITECTURE.md, contract 2) in memory, with its metadata set and checked."""
    import torch

    check_head_range(run)
    encoder = run.encoder()  # the weights the head was trained on (sha256 checked), widths checked
    spec = encoder.spec
    details: dict[str, Any] = {"variant": opts.variant, "opset": opts.opset}
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    try:
        enc_model, norm = export_encoder(encoder, opset=opts.opset, log=log)
    finally:
        torch.set_num_threads(threads)
    details["normalization"] = norm
    if opts.int8:
        from waste_edge.export.quantize import (DEFAULT_INT8_SCHEME, QuantizationError, choose_int8_method, get_int8_scheme, int8_gemm_weight_peak,
                                                int8_integer_bounds, quantize_dynamic_encoder, quantize_static_encoder, saturating_ops)

        method = choose_int8_method(enc_model)
        scheme = get_int8_scheme(opts.int8_scheme or DEFAULT_INT8_SCHEME)
        details["int8_method"] = method
        details["int8_scheme"] = scheme.name
        if method == "dynamic":
            if opts.calib is not None and log:
                log("note: this encoder is quantised dynamically (MatMul weights); --calib is not needed and not used")
            enc_model, quant_info = quantize_dynamic_encoder(enc_model, scheme.name, log=log)
            details.update(quant_info)
        else:
            if opts.calib is None:
                raise QuantizationError(
                    f"INT8 for {encoder.id} (a convolutional encoder) needs static quantisation calibrated on real images: "
                    "pass --calib DIR (e.g. the training images)"
                )
            pre_rgb = build_preprocess_model(spec, "RGB", opset=opts.opset)  # calibration photos come in any size
            enc_model, calib_info = quantize_static_encoder(enc_model, pre_rgb, opts.calib, progress=progress, log=log, scheme=scheme.name)
            details.update(calib_info)
        details["int8_weight_peak"] = int8_gemm_weight_peak(enc_model)
        bounds = int8_integer_bounds(enc_model)
        details["int8_worst_pair_sum"] = max((b.worst_pair for b in bounds if b.kind == "gemm"), default=None)
        unsafe = saturating_ops(enc_model)
        details["int8_exact_on_every_cpu"] = not unsafe
        if scheme.portable and unsafe:
            worst = max(unsafe, key=lambda b: b.worst_pair)
            raise QuantizationError(f"INT8 scheme {scheme.name!r} left {len(unsafe)} op(s) whose integer sums can saturate (e.g. {worst.node}: "
                                    f"a pair sum up to {worst.worst_pair} > 32767): results would depend on the CPU")
    elif opts.half:
        from waste_edge.export.half import convert_encoder_fp16

        enc_model = convert_encoder_fp16(enc_model)
    pre = build_preprocess_model(spec, opts.channel_order, opset=opts.opset, imgsz=opts.imgsz)
    fused = compose_fused(pre, enc_model, build_head_model(run.head, opset=opts.opset, with_embedding=opts.with_embedding))
    if opts.int8:
        from waste_edge.export.quantize import QuantizationError, onnxruntime_quantizes_at_load

        if onnxruntime_quantizes_at_load(fused):  # e.g. a head Gemm fed by a DequantizeLinear: 8-bit weights at load time
            raise QuantizationError(f"the fused INT8 graph has float op(s) ONNX Runtime would quantise at load: {onnxruntime_quantizes_at_load(fused)[:3]}")
    set_io_dims(fused, None if opts.dynamic else opts.batch, opts.imgsz)
    fused = onnx.shape_inference.infer_shapes(fused)  # fresh intermediate shapes (tools like onnx.utils.Extractor use them)
    meta = ModelMetadata(
        classes=run.classes,
        display_names=run.display_names,
        channel_order=opts.channel_order,
        preprocess=spec.to_dict(),
        encoder=run.encoder_id,
        head_sha256=run.head_sha256,
        toolkit_version=__version__,
        variant=opts.variant,
        input_size=list(opts.imgsz) if opts.imgsz else None,
        embedding=embedding_metadata(run.head) if opts.with_embedding else None,
        model_kind=run.kind,
        extra={k: v for k, v in details.items()
               if k in ("normalization", "int8_method", "int8_scheme", "int8_recipe", "int8_weight_peak", "int8_worst_pair_sum", "int8_exact_on_every_cpu",
                        "int8_weights", "int8_fusions", "opset")}
        | {"dynamic_batch": opts.dynamic, "batch": None if opts.dynamic else opts.batch},
    )
    onnx.helper.set_model_props(fused, meta.to_props())
    fused.doc_string = f"waste-edge fused model: {run.encoder_id} + logistic head ({', '.join(run.classes)}), {opts.variant}"
    try:
        onnx.checker.check_model(fused, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the fused model fails the ONNX checker: {str(e).splitlines()[0]}") from None
    return fused, meta, details


def check_head_range(run: LinearRun) -> None:
    """The head runs in float32 inside the graph: weights beyond its range become inf and every answer NaN (a head
    with 1e300 coefficients passed `LinearHead`'s float64 checks and gave a model labelling every frame B)."""
    with np.errstate(over="ignore"):
        weights = [np.asarray(run.head.coef).astype(np.float32), np.asarray(run.head.intercept).astype(np.float32)]
    if not all(np.isfinite(w).all() for w in weights):
        biggest = max(float(np.abs(np.asarray(run.head.coef, dtype=np.float64)).max()), float(np.abs(np.asarray(run.head.intercept, dtype=np.float64)).max()))
        raise ExportError(f"{run.path}: the head's weights (largest magnitude {biggest:.3g}) overflow float32; the model would answer NaN. Retrain the head")


def write_probed(out: Path, model: onnx.ModelProto, log: Callable[[str], None] | None = None) -> Path:
    """Write `model` to `out` only once it answers probe frames with finite probabilities summing to 1
    (`runtime.model_check`), through a hidden sibling; a model that answers NaN is never written."""
    from waste_edge.runtime.classifier import Classifier
    from waste_edge.runtime.model_check import ModelCheckError, ProbeRunError, probe_classifier

    tmp = out.with_name(f".{out.name}.probe-{os.getpid()}{out.suffix}")
    atomic_write_bytes(tmp, model.SerializeToString())
    try:
        try:
            with Classifier(tmp, "cpu", threads=1) as clf:
                probe_classifier(clf, name=out.name)
        except ProbeRunError as e:  # cannot run here (not a wrong answer): the target device may run it
            if log:
                log(f"note: probe frames not run on this CPU ({e}); the model is written unchecked")
        except ModelCheckError as e:
            raise ExportError(f"not writing {out}: {e}") from None
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


@dataclass(frozen=True)
class Fuser:
    """How one kind of run becomes the fused graph of ARCHITECTURE.md, contract 2, and which variants it can be exported as."""

    build: Callable[..., Fused]  # (run, opts, *, progress, log) -> (model, metadata, details)
    variants: tuple[str, ...]
    why_not: str = ""  # said when a variant outside `variants` is asked for
    embedding: bool = False  # can carry the `embedding` output (--with-embedding: the head's input, for `adapt`)


# ONE table of fusers, keyed by run kind: a new kind of run adds a row here (and a class in train/runs.py).
FUSERS: dict[str, Fuser] = {
    LinearRun.kind: Fuser(build_fused_onnx, ("fp32", "fp16", "int8"), embedding=True),
    KerasRun.kind: Fuser(build_keras_onnx, ("fp32",), "--int8 / --half are not available for Keras baselines yet; export fp32 (TensorRT can still build FP16)"),
}


def fuser_for(run: Run, opts: ExportOptions) -> Fuser:
    fuser = FUSERS.get(run.kind)
    if fuser is None:
        raise ExportError(f"{run.path}: runs of kind {run.kind!r} cannot be exported (no fuser)")
    if opts.with_embedding and not fuser.embedding:
        raise ExportError(f"{run.path}: --with-embedding needs a linear run (encoder + logistic head); {run.kind} runs have no separable head")
    if opts.variant not in fuser.variants:
        why = fuser.why_not or f"a {run.kind} run exports as {' or '.join(fuser.variants)}, not {opts.variant}"
        raise ExportError(f"{run.path}: {why}")
    return fuser


def export(
    run_dir: str | Path,
    fmt: str = "onnx",
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> ExportResult:
    """Export a run directory (ARCHITECTURE.md, contract 1) to a fused model (ARCHITECTURE.md, contract 2) in format `fmt`."""
    f = get_format(fmt)
    opts = validate_options(f, options)
    run = open_run(run_dir)
    fuser = fuser_for(run, opts)
    out = opts.out or default_out(Path(run_dir), f, opts.variant)
    if f.name == "onnx":
        model, meta, details = fuser.build(run, opts, progress=progress, log=log)
        write_probed(out, model, log)
        extra = []
        if opts.with_embedding and opts.rehearsal != 0 and opts.half and log:
            # The set is computed by running the exported model on the CPU, and fp16 graphs are for GPU providers.
            log("note: no rehearsal set for an fp16 model; export the fp32 or INT8 variant with --with-embedding for `adapt`")
        elif opts.with_embedding and opts.rehearsal != 0:
            from waste_edge.export.rehearsal import write_rehearsal_for_run
            from waste_edge.runtime.rehearsal import DEFAULT_PER_CLASS

            rehearsal = write_rehearsal_for_run(run_dir, out, per_class=opts.rehearsal or DEFAULT_PER_CLASS, progress=progress, log=log)
            extra = [rehearsal] if rehearsal else []
        return ExportResult(out, f.name, meta, out.stat().st_size, details, extra_files=extra)
    if f.name == "engine":
        from waste_edge.export.tensorrt import DEFAULT_ENGINE_IMGSZ, build_engine, require_tensorrt
        from waste_edge.export.tensorrt_lint import TensorRTLintError, lint_model

        require_tensorrt()  # fail before minutes of ONNX export on a machine without a GPU
        # TensorRT builds from the fp32 fixed-size fused graph (the only form its parser takes) and applies FP16 / INT8 itself.
        opts.imgsz = opts.imgsz or DEFAULT_ENGINE_IMGSZ
        onnx_opts = ExportOptions(**{**opts.__dict__, "half": False, "int8": False, "calib": None, "out": None})
        model, meta, details = fuser.build(run, onnx_opts, progress=progress, log=log)
        report = lint_model(model, out.with_suffix(".onnx").name)
        if not report.passed:
            raise TensorRTLintError(f"not building the engine: TensorRT would reject or degrade this graph\n{report.summary()}")
        onnx_path = write_probed(out.with_suffix(".onnx"), model, log)
        meta.variant = opts.variant
        info = build_engine(onnx_path, out, meta, opts, progress=progress, log=log)
        details.update(info)
        details["variant"] = opts.variant
        return ExportResult(out, f.name, meta, out.stat().st_size, details, extra_files=[onnx_path, sidecar_path(out), Path(info["timing_cache"])])
    raise ExportError(f"no exporter for format {f.name!r}")  # a row was added to FORMATS without a builder

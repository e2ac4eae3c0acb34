"""`export(run_dir, fmt, **options)`: the one entry point behind `waste-edge export`.

Options are validated against the format table (`runtime/formats.py`) before any work, so an option a
format does not support is a clear error instead of being silently ignored; then the format's builder runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import onnx

from waste_edge import __version__
from waste_edge.export.fused import ExportError, build_head_model, compose_fused, embedding_metadata, export_encoder, set_io_dims
from waste_edge.export.preprocess_graph import CHANNEL_ORDERS, build_preprocess_model
from waste_edge.runtime.formats import ModelFormat, check_args, get_format
from waste_edge.runtime.metadata import ModelMetadata

MIN_OPSET = 18  # Resize `antialias`
DEFAULT_OPSET = 18


@dataclass
class ExportOptions:
    out: Path | None = None
    opset: int = DEFAULT_OPSET
    dynamic: bool = False  # dynamic batch dimension (else fixed to `batch`)
    batch: int = 1  # fixed batch, or the largest batch of a TensorRT profile with --dynamic
    imgsz: tuple[int, int] | None = None  # fixed input H, W (else any size)
    half: bool = False
    int8: bool = False
    calib: Path | None = None
    channel_order: str = "BGR"
    workspace: float | None = None  # TensorRT builder workspace, GiB
    with_embedding: bool = False  # third output `embedding`: the head's input features (for `adapt`)
    rehearsal: int | None = None  # with_embedding: training embeddings per class in <out stem>.rehearsal.npz (None: 128, 0: none)

    @property
    def variant(self) -> str:
        return "int8" if self.int8 else "fp16" if self.half else "fp32"


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


def build_fused_onnx(
    run: Any,
    opts: ExportOptions,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[onnx.ModelProto, ModelMetadata, dict[str, Any]]:
    """The fused model of a run (contract 2) in memory, with its metadata set and checked."""
    import torch

    from waste_edge.train.encoders import create_encoder

    if run.kind != "linear":
        raise ExportError(f"{run.path}: only linear runs (encoder + logistic head) can be fused, this one is {run.kind!r}")
    encoder = create_encoder(run.encoder_id)
    if encoder.dim != run.head.dim:
        raise ExportError(f"{run.path}: head expects {run.head.dim}-d features but {encoder.id} gives {encoder.dim}")
    spec = encoder.spec
    details: dict[str, Any] = {"variant": opts.variant, "opset": opts.opset}
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    try:
        enc_model, norm = export_encoder(encoder, opset=opts.opset, log=log)
    finally:
        torch.set_num_threads(threads)
    details["normalisation"] = norm
    if opts.int8:
        from waste_edge.export.quantize import QuantizationError, choose_int8_method, quantize_dynamic_encoder, quantize_static_encoder

        method = choose_int8_method(enc_model)
        details["int8_method"] = method
        if method == "dynamic":
            if opts.calib is not None and log:
                log("note: this encoder is quantised dynamically (MatMul weights); --calib is not needed and not used")
            enc_model = quantize_dynamic_encoder(enc_model)
        else:
            if opts.calib is None:
                raise QuantizationError(
                    f"INT8 for {encoder.id} (a convolutional encoder) needs static quantisation calibrated on real images: "
                    "pass --calib DIR (e.g. the training images)"
                )
            pre_rgb = build_preprocess_model(spec, "RGB", opset=opts.opset)
            enc_model, calib_info = quantize_static_encoder(enc_model, pre_rgb, opts.calib, progress=progress, log=log)
            details.update(calib_info)
    elif opts.half:
        from waste_edge.export.half import convert_encoder_fp16

        enc_model = convert_encoder_fp16(enc_model)
    pre = build_preprocess_model(spec, opts.channel_order, opset=opts.opset)
    fused = compose_fused(pre, enc_model, build_head_model(run.head, opset=opts.opset, with_embedding=opts.with_embedding))
    set_io_dims(fused, None if opts.dynamic else opts.batch, opts.imgsz)
    fused = onnx.shape_inference.infer_shapes(fused)  # fresh intermediate shapes (tools like onnx.utils.Extractor use them)
    meta = ModelMetadata(
        classes=run.classes,
        display_names=run.display_names,
        channel_order=opts.channel_order,
        preprocess=spec.to_dict(),
        encoder=encoder.id,
        head_sha256=run.head.sha256(),
        toolkit_version=__version__,
        variant=opts.variant,
        input_size=list(opts.imgsz) if opts.imgsz else None,
        embedding=embedding_metadata(run.head) if opts.with_embedding else None,
        extra={k: v for k, v in details.items() if k in ("normalisation", "int8_method", "opset")} | {"dynamic_batch": opts.dynamic, "batch": None if opts.dynamic else opts.batch},
    )
    onnx.helper.set_model_props(fused, meta.to_props())
    fused.doc_string = f"waste-edge fused model: {encoder.id} + logistic head ({', '.join(run.classes)}), {opts.variant}"
    try:
        onnx.checker.check_model(fused, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the fused model fails the ONNX checker: {str(e).splitlines()[0]}") from None
    return fused, meta, details


def _builder_for(
    run_dir: Path, opts: ExportOptions, *, progress: bool, log: Callable[[str], None] | None
) -> Callable[[ExportOptions], tuple[onnx.ModelProto, ModelMetadata, dict[str, Any]]]:
    """The fused-graph builder for the kind of model the run's card says it holds (linear head or Keras)."""
    from waste_edge.train.run import load_run, read_card

    if read_card(run_dir).get("kind") == "keras":
        from waste_edge.export.keras_onnx import build_keras_onnx
        from waste_edge.train.baselines import load_keras_run

        if opts.with_embedding:
            raise ExportError(f"{run_dir}: --with-embedding needs a linear run (encoder + logistic head); Keras baselines have no separable head")
        if opts.int8 or opts.half:
            raise ExportError(f"{run_dir}: --int8 / --half are not available for Keras baselines yet; export fp32 (TensorRT can still build FP16)")
        keras_run = load_keras_run(run_dir)
        return lambda o: build_keras_onnx(keras_run, opset=o.opset, channel_order=o.channel_order,
                                          batch=None if o.dynamic else o.batch, imgsz=o.imgsz, log=log)
    run = load_run(run_dir)
    return lambda o: build_fused_onnx(run, o, progress=progress, log=log)


def export(
    run_dir: str | Path,
    fmt: str = "onnx",
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> ExportResult:
    """Export a run directory (contract 1) to a fused model (contract 2) in format `fmt`."""
    f = get_format(fmt)
    opts = validate_options(f, options)
    build = _builder_for(Path(run_dir), opts, progress=progress, log=log)
    out = opts.out or default_out(Path(run_dir), f, opts.variant)
    out.parent.mkdir(parents=True, exist_ok=True)
    if f.name == "onnx":
        model, meta, details = build(opts)
        tmp = out.with_name(out.name + ".tmp")
        onnx.save(model, tmp)
        tmp.replace(out)
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
        from waste_edge.export.tensorrt import build_engine, require_tensorrt

        require_tensorrt()  # fail before minutes of ONNX export on a machine without a GPU
        # TensorRT builds from the fp32 fused graph and applies FP16 / INT8 itself.
        onnx_opts = ExportOptions(**{**opts.__dict__, "half": False, "int8": False, "calib": None, "out": None})
        model, meta, details = build(onnx_opts)
        onnx_path = out.with_suffix(".onnx")
        onnx.save(model, onnx_path)
        meta.variant = opts.variant
        info = build_engine(onnx_path, out, meta, opts, progress=progress, log=log)
        details.update(info)
        details["variant"] = opts.variant
        return ExportResult(out, f.name, meta, out.stat().st_size, details, extra_files=[onnx_path, Path(str(out) + ".json")])
    raise ExportError(f"no exporter for format {f.name!r}")  # a row was added to FORMATS without a builder

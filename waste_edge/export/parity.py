"""`waste-edge parity`: an exported model against the study's reference pipeline (ARCHITECTURE.md, contract 3).

Reference: decode with PIL, the encoder's own preprocessing (open_clip's transform for CLIP, the spec on PIL
otherwise), the PyTorch encoder, scikit-learn's `predict_proba` with the run's head. Exported: the model file
fed the same decoded image as uint8 NHWC in its channel order, batch 1 (images differ in size).

For ONNX models the graph's intermediate tensors (`pixels`, `embedding`) are exposed in a temporary copy, so
every disagreement can be located: preprocessing (max grey-level difference from PIL), encoder (cosine of the
embeddings) or head. Tolerances depend on the variant: fp32 must agree on every label with max |dp| <= 1e-3;
INT8 and FP16 must agree on >= 99.5 % of labels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from waste_edge._io import list_images
from waste_edge.data.sample import seeded_sample
from waste_edge.errors import WasteEdgeError
from waste_edge.runtime.metadata import INPUT_NAME, OUTPUT_LABEL, OUTPUT_PROBABILITIES, ModelMetadata
from waste_edge.train.runs import open_run


class ParityError(WasteEdgeError):
    """Parity cannot run: model and run do not belong together, no images, unreadable model."""


@dataclass(frozen=True)
class Tolerance:
    min_agreement: float
    max_abs_dp: float | None = None


TOLERANCES = {"fp32": Tolerance(1.0, 1e-3), "int8": Tolerance(0.995), "fp16": Tolerance(0.995)}


@dataclass
class ImageParity:
    path: str
    reference_label: str
    model_label: str
    max_abs_dp: float
    preprocess_max_grey: float | None = None  # exported `pixels` vs PIL crop, grey levels
    embedding_cosine: float | None = None  # exported vs PyTorch embedding
    reference_probabilities: list[float] = field(default_factory=list)
    model_probabilities: list[float] = field(default_factory=list)


@dataclass
class ParityReport:
    model: str
    run: str
    variant: str
    n: int
    agreement: float
    max_abs_dp: float
    p99_abs_dp: float
    mean_abs_dp: float
    tolerance: Tolerance
    passed: bool
    frame: list[int] | None = None  # [W, H] every photo was resized to (fixed-size models), else None
    reference_accuracy: float | None = None  # when the images' labels are known (class folders)
    model_accuracy: float | None = None
    preprocess_max_grey: float | None = None  # over all images
    embedding_cosine_min: float | None = None
    embedding_cosine_mean: float | None = None
    worst: ImageParity | None = None
    disagreements: list[ImageParity] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        tol = self.tolerance
        need = f"agreement >= {tol.min_agreement:.1%}" + (f", max |dp| <= {tol.max_abs_dp:g}" if tol.max_abs_dp is not None else "")
        lines = [
            f"parity {Path(self.model).name} ({self.variant}) vs reference pipeline of {self.run}: {self.n} images"
            + (f" as {self.frame[0]}x{self.frame[1]} frames" if self.frame else ""),
            f"  label agreement   {self.agreement:.2%} ({round(self.agreement * self.n)}/{self.n})",
            f"  |dp| max / p99 / mean   {self.max_abs_dp:.2e} / {self.p99_abs_dp:.2e} / {self.mean_abs_dp:.2e}",
        ]
        if self.reference_accuracy is not None:
            lines.append(f"  accuracy  reference {self.reference_accuracy:.2%}, model {self.model_accuracy:.2%}")
        if self.preprocess_max_grey is not None:
            lines.append(f"  preprocessing vs PIL: max {self.preprocess_max_grey:g} grey level(s) over all images")
        if self.embedding_cosine_min is not None:
            lines.append(f"  embedding cosine  min {self.embedding_cosine_min:.6f}, mean {self.embedding_cosine_mean:.6f}")
        if self.worst is not None:
            w = self.worst
            stage = []
            if w.preprocess_max_grey is not None:
                stage.append(f"preprocessing max {w.preprocess_max_grey:g} grey")
            if w.embedding_cosine is not None:
                stage.append(f"encoder cosine {w.embedding_cosine:.6f}")
            lines.append(f"  worst image {w.path}: |dp| {w.max_abs_dp:.2e}, labels {w.reference_label}/{w.model_label}"
                         + (f" ({', '.join(stage)})" if stage else ""))
        if self.skipped:
            lines.append(f"  skipped {len(self.skipped)} unreadable image(s): {self.skipped[0]}" + (" ..." if len(self.skipped) > 1 else ""))
        lines.append(f"  {'PASS' if self.passed else 'FAIL'} (needs {need})")
        return "\n".join(lines)


def parity_images(data: str | Path, limit: int | None = None, seed: int = 0) -> list[tuple[Path, str | None]]:
    """Images under `data` (`_io.list_images`), with the class folder name as label when there is one;
    `limit` takes the seeded sample (`data.sample`)."""
    root = Path(data)
    if root.is_file():
        return [(root, None)]
    if not root.is_dir():
        raise ParityError(f"--data {root}: no such folder")
    files = list_images(root)
    if not files:
        raise ParityError(f"--data {root}: no images found")
    return [(p, p.parent.name if p.parent != root else None) for p in seeded_sample(files, limit, seed)]


class _ModelUnderTest:
    """An exported model: ONNX via onnxruntime (with stage outputs), or an engine via the runtime's runner."""

    def __init__(self, path: Path, threads: int) -> None:
        self.path = path
        if path.suffix.lower() == ".onnx":
            import onnx

            from waste_edge.export.fused import with_stage_outputs
            from waste_edge.runtime.backends.onnxrt import load_session

            model = onnx.load(path)
            self.metadata = ModelMetadata.from_props({p.key: p.value for p in model.metadata_props})
            staged = with_stage_outputs(model)
            self.outputs = [o.name for o in staged.graph.output]
            self.session = load_session(staged.SerializeToString(), threads=threads, name=path.name)
            self._run = lambda x: dict(zip(self.outputs, self.session.run(self.outputs, {INPUT_NAME: x})))
        else:
            from waste_edge.runtime.backends.select import open_runner

            runner = open_runner(path)
            self.metadata = ModelMetadata.from_props(runner.custom_metadata())
            self._run = lambda x: runner.infer({INPUT_NAME: x})

    def __call__(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        x = rgb[..., ::-1] if self.metadata.channel_order == "BGR" else rgb
        return self._run(np.ascontiguousarray(x[None]))


def run_parity(
    model_path: str | Path,
    run_dir: str | Path,
    data: str | Path,
    *,
    limit: int | None = None,
    threads: int = 2,
    torch_threads: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> ParityReport:
    from tqdm import tqdm

    from waste_edge.data.decode import DecodeError, load_rgb_frame

    model_path = Path(model_path)
    if not model_path.is_file():
        raise ParityError(f"{model_path}: no such model file")
    images = parity_images(data, limit)
    # torch and ORT alternate per image: by default the reference shares the model's cores
    ref = open_run(run_dir).reference(torch_threads or max(1, threads // 2))
    try:
        model = _ModelUnderTest(model_path, threads)
        meta = model.metadata
        if meta.head_sha256 != ref.head_sha256:
            raise ParityError(f"{model_path.name} embeds head {meta.head_sha256[:12]}..., but {ref.path} has head {ref.head_sha256[:12]}...: wrong run directory?")
        if meta.encoder != ref.encoder_id:
            raise ParityError(f"{model_path.name} was exported from encoder {meta.encoder}, the run uses {ref.encoder_id}")
        classes = ref.classes
        # A fixed-size model takes frames of exactly its input size (a camera's): each photo becomes such a frame
        # first, and the reference runs on the same frame, so the comparison stays exact.
        frame = meta.frame_size
        rows: list[ImageParity] = []
        dps: list[float] = []
        skipped: list[str] = []
        truth: list[str | None] = []
        for path, label in tqdm(images, desc="parity", unit="img", disable=not progress):
            try:
                img = load_rgb_frame(path, frame)
            except DecodeError as e:
                skipped.append(f"{path}: {e}")
                continue
            rgb = np.asarray(img, dtype=np.uint8)
            p_ref, feats = ref(img)
            out = model(rgb)
            p_model = np.asarray(out[OUTPUT_PROBABILITIES], dtype=np.float64)[0]
            dp = float(np.max(np.abs(p_model - p_ref)))
            row = ImageParity(
                str(path), classes[int(np.argmax(p_ref))], classes[int(np.asarray(out[OUTPUT_LABEL]).ravel()[0])], dp,
                reference_probabilities=[float(v) for v in p_ref], model_probabilities=[float(v) for v in p_model],
            )
            if "pixels" in out:
                row.preprocess_max_grey = float(np.max(np.abs(out["pixels"][0] - ref.crop_uint8(img).astype(np.float32))))
            if "embedding" in out and feats is not None:
                a, b = np.asarray(out["embedding"][0], np.float64), feats.astype(np.float64)
                row.embedding_cosine = float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))
            rows.append(row)
            dps.append(dp)
            truth.append(label if label in classes else None)
    finally:
        ref.close()
    if not rows:
        raise ParityError(f"--data {data}: none of the {len(images)} images could be decoded")
    tol = TOLERANCES.get(meta.variant, TOLERANCES["int8"])
    agree = [r.reference_label == r.model_label for r in rows]
    agreement = float(np.mean(agree))
    d = np.asarray(dps)
    report = ParityReport(
        model=str(model_path), run=str(ref.path), variant=meta.variant, n=len(rows), agreement=agreement,
        max_abs_dp=float(d.max()), p99_abs_dp=float(np.percentile(d, 99)), mean_abs_dp=float(d.mean()), tolerance=tol, frame=list(frame) if frame else None,
        passed=agreement >= tol.min_agreement and (tol.max_abs_dp is None or float(d.max()) <= tol.max_abs_dp),
        worst=rows[int(d.argmax())], disagreements=[r for r, ok in zip(rows, agree) if not ok], skipped=skipped,
    )
    known = [(r, t) for r, t in zip(rows, truth) if t is not None]
    if known:
        report.reference_accuracy = float(np.mean([r.reference_label == t for r, t in known]))
        report.model_accuracy = float(np.mean([r.model_label == t for r, t in known]))
    greys = [r.preprocess_max_grey for r in rows if r.preprocess_max_grey is not None]
    cos = [r.embedding_cosine for r in rows if r.embedding_cosine is not None]
    if greys:
        report.preprocess_max_grey = float(max(greys))
    if cos:
        report.embedding_cosine_min, report.embedding_cosine_mean = float(min(cos)), float(np.mean(cos))
    return report

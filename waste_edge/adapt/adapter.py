"""`adapt()`: the labelled frames of a collection folder -> a new model file with a refitted head.

What `waste-edge adapt` runs, and what the service calls after a person labelled frames on its Review page:

1. the model's own `embedding` output (ONNX Runtime, the same graph that classifies) for every labelled frame;
2. a new head fitted with scikit-learn (`fit.py`), protected by the rehearsal set shipped beside the model
   and/or by regularisation toward the old head;
3. the head's two constants swapped into a copy of the graph (`graph.py`), the metadata updated with the
   adaptation's provenance, written atomically (a watcher never sees half a file), the rehearsal set copied
   beside it so the new model can be adapted again.

The input model is never modified: `out` must be another file. Nothing here imports torch or tensorflow.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from waste_edge import __version__
from waste_edge._io import atomic_write_bytes, file_sha256
from waste_edge._outputs import COLLECTION_SUFFIXES, check_output, model_sidecars
from waste_edge.adapt.fit import FitConfig, FitResult, fit_head
from waste_edge.adapt.graph import AdaptError, find_head, load_model, read_metadata, swap_head
from waste_edge.runtime.collection import read_labels
from waste_edge.runtime.embed import model_embeddings
from waste_edge.runtime.rehearsal import RehearsalSet, load_rehearsal, rehearsal_path

Log = Callable[[str], None]


@dataclass
class AdaptResult:
    out: Path
    sha256: str  # of the new model file
    base_sha256: str
    fit: FitResult
    n_labelled: int  # usable rows of labels.csv
    problems: list[str] = field(default_factory=list)  # rows / files that were skipped, with the reason
    seconds: dict[str, float] = field(default_factory=dict)  # embed, fit, write, total
    rehearsal_out: Path | None = None

    def summary(self) -> str:
        f = self.fit
        counts = ", ".join(f"{c} {n}" for c, n in f.counts.items())
        kept = f"; agrees with the old head on {f.rehearsal_agreement:.1%} of the {f.n_rehearsal} rehearsal embeddings" if f.rehearsal_agreement is not None else ""
        lines = [
            f"wrote {self.out} (sha256 {self.sha256[:12]}..., base {self.base_sha256[:12]}...)",
            f"  method {f.method}: {sum(f.counts.values())} labelled frames ({counts}) + {f.n_rehearsal} rehearsal embeddings",
            f"  on the labelled frames: old head {f.new_accuracy_before:.1%}, new head {f.new_accuracy_after:.1%}{kept}",
            f"  time: model and libraries {self.seconds.get('load', 0):.1f} s, embeddings {self.seconds.get('embed', 0):.1f} s, fit {self.seconds.get('fit', 0):.2f} s, "
            f"write {self.seconds.get('write', 0):.2f} s, total {self.seconds.get('total', 0):.1f} s",
        ]
        if self.rehearsal_out:
            lines.append(f"  also wrote {self.rehearsal_out}")
        if self.problems:
            lines.append(f"  skipped {len(self.problems)} row(s)/file(s): " + "; ".join(self.problems[:5]) + (" ..." if len(self.problems) > 5 else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        fit = {k: v for k, v in asdict(self.fit).items() if k != "head"}
        return {"out": str(self.out), "sha256": self.sha256, "base_sha256": self.base_sha256, "fit": fit,
                "n_labelled": self.n_labelled, "problems": self.problems, "seconds": self.seconds,
                "rehearsal_out": str(self.rehearsal_out) if self.rehearsal_out else None}


def check_paths(model: Path, out: Path, data: Path | None = None, rehearsal: Path | None = None) -> None:
    """Refuse what would lose data or cannot work: a missing or non-ONNX model, `out` (or the rehearsal set
    written beside it) onto any input (the model, its sidecars, the rehearsal set, what the collection folder
    holds), and an existing `out` that adapt did not write: re-running adapt to the same name replaces only
    its own earlier result."""
    if model.suffix.lower() != ".onnx":
        raise AdaptError(f"{model}: adapt works on .onnx models (rebuild a TensorRT engine from the adapted .onnx)")
    if not model.is_file():
        raise AdaptError(f"{model}: model file not found")
    if out.suffix.lower() != ".onnx":
        raise AdaptError(f"--out {out}: the adapted model must end in .onnx")
    same = out.resolve() == model.resolve() or (out.exists() and out.samefile(model))
    if same:
        raise AdaptError(f"--out {out} is the input model: write the adapted model to a new file (the input is never overwritten)")
    if rehearsal_path(out).resolve() == rehearsal_path(model).resolve():
        raise AdaptError(f"--out {out} would overwrite the input's rehearsal set")
    files = [model, *model_sidecars(model), rehearsal]
    check_output(out, files, option="--out")
    check_output(out, [data], option="--out", picked_up=COLLECTION_SUFFIXES)
    beside = rehearsal_path(out)
    if rehearsal is None or not (beside.exists() and beside.samefile(rehearsal)):  # the same file is left as it is
        check_output(beside, [*files, data], option=f"--out {out}: its rehearsal set", picked_up=frozenset())
    if out.exists():
        _check_replaceable(out)


def _check_replaceable(out: Path) -> None:
    """An existing `out` is replaced only when adapt wrote it (its metadata records an adaptation)."""
    from waste_edge.runtime.model_info import read_metadata

    try:
        adapted = read_metadata(out).adaptation is not None
    except Exception:  # not a model, or not one of ours: not ours to replace
        adapted = False
    if not adapted:
        raise AdaptError(f"--out {out}: exists and was not written by adapt (no adaptation record in its metadata); "
                         "choose a new name or remove it first")


def adapt(
    model: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    rehearsal: str | Path | None = None,
    use_rehearsal: bool = True,
    config: FitConfig | None = None,
    backend: str = "cpu",
    threads: int | None = None,
    batch_size: int = 32,
    progress: bool = False,
    log: Log | None = None,
) -> AdaptResult:
    """Refit the head of `model` on the labels in `data/labels.csv` and write the adapted model to `out`.

    `rehearsal`: a rehearsal set file (default: `<model stem>.rehearsal.npz` beside the model, when present);
    `use_rehearsal=False` ignores it. Raises `AdaptError` (one line) for anything the user must fix.
    """
    from waste_edge.runtime.classifier import Classifier

    t0 = time.perf_counter()
    model, data, out = Path(model), Path(data), Path(out)
    if not data.is_dir():
        raise AdaptError(f"--data {data}: not a collection folder")
    if use_rehearsal and rehearsal is None and rehearsal_path(model).is_file():
        rehearsal = rehearsal_path(model)
    check_paths(model, out, data, Path(rehearsal) if use_rehearsal and rehearsal is not None else None)
    say = log or (lambda _m: None)
    base_sha = file_sha256(model)
    proto = load_model(model)
    meta = read_metadata(proto)
    if not meta.embedding:
        raise AdaptError(f"{model.name} has no `embedding` output: export it with `waste-edge export RUN --with-embedding` (the default model built by scripts/build_default_model.py has it)")
    if meta.variant == "fp16" and backend == "cpu":
        raise AdaptError(f"{model.name} is an fp16 model, meant for GPU providers: adapt it with --backend cuda, or adapt the fp32 / INT8 export")
    old = find_head(proto, meta.embedding.get("output", "embedding")).constants
    classes = list(meta.classes)
    labels = read_labels(data, classes, meta.display_names)
    usable = labels.usable()
    problems = list(labels.problems)
    if not usable:
        raise AdaptError(f"{data / 'labels.csv'}: no usable labels ({len(labels.labels)} rows, {len(problems)} problems"
                         + (f"; first: {problems[0]}" if problems else "") + "): label frames as " + " / ".join(classes))
    rs = _rehearsal_for(model, rehearsal, use_rehearsal, meta, say)
    import sklearn.linear_model  # noqa: F401  (imported here, so its seconds count as loading, not fitting)

    files = list(usable)
    with Classifier(model, backend, threads=threads) as clf:
        t1 = time.perf_counter()
        feats, ok, bad = model_embeddings(clf, [data / f for f in files], batch_size=batch_size, workers=2, progress=progress)
    problems += bad
    if not ok:
        raise AdaptError(f"none of the {len(files)} labelled images could be decoded; first: {bad[0] if bad else '?'}")
    y = np.array([classes.index(usable[files[i]]) for i in ok])
    t2 = time.perf_counter()
    result = fit_head(old, classes, feats, y, rs, config)
    t3 = time.perf_counter()
    provenance = {
        "base_model_sha256": base_sha,
        "base_model": model.name,
        "base_head_sha256": meta.head_sha256,
        "labels_per_class": result.counts,
        "method": result.method,
        "rehearsal": {"n": result.n_rehearsal, "sha256": file_sha256(rs.info["path"])} if rs is not None and result.n_rehearsal else None,
        "settings": result.settings,
        "data": str(data.resolve()),
        "time": datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "toolkit_version": __version__,
        # Earlier adaptations, oldest first, flat (each without its own history).
        "previous": ([*meta.adaptation.get("previous", []), {k: v for k, v in meta.adaptation.items() if k != "previous"}] if meta.adaptation else []),
    }
    new_meta = type(meta).from_json(meta.to_json())
    new_meta.head_sha256 = result.head.sha256(classes, meta.embedding.get("normalization", "none"))
    new_meta.adaptation = provenance
    new_meta.toolkit_version = __version__
    adapted = swap_head(proto, result.head, new_meta)
    atomic_write_bytes(out, adapted.SerializeToString())
    rehearsal_out = None
    if rs is not None:
        rehearsal_out = rehearsal_path(out)
        if Path(rs.info["path"]).resolve() != rehearsal_out.resolve():
            atomic_write_bytes(rehearsal_out, Path(rs.info["path"]).read_bytes())
    t4 = time.perf_counter()
    seconds = {"load": round(t1 - t0, 3), "embed": round(t2 - t1, 3), "fit": round(t3 - t2, 3), "write": round(t4 - t3, 3), "total": round(t4 - t0, 3)}
    return AdaptResult(out, file_sha256(out), base_sha, result, len(usable), problems, seconds, rehearsal_out)


def _rehearsal_for(model: Path, given: str | Path | None, use: bool, meta: Any, say: Log) -> RehearsalSet | None:
    if not use:
        return None
    path = Path(given) if given is not None else rehearsal_path(model)
    if given is None and not path.is_file():
        say(f"note: no rehearsal set beside the model ({path.name}); the head is regularised toward the old one only")
        return None
    rs = load_rehearsal(path)
    rs.check_matches(meta.encoder, int(meta.embedding["dim"]), meta.embedding.get("normalization", "none"), meta.classes, str(path))
    rs.info["path"] = str(path)
    return rs

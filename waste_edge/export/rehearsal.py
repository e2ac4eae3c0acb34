"""The rehearsal set of an exported model, from its run's training images (what `adapt` keeps the old knowledge with).

`export --with-embedding` writes `<model stem>.rehearsal.npz` beside the model: a stratified random sample of
the run's TRAIN images (128 per class by default) through the exported model's own `embedding` output (ONNX
Runtime), so the set lives in exactly the feature space `adapt` later extracts on the device: for an INT8
model its quantised encoder's features, not the fp32 reference encoder's (which cost the INT8 model's old
domain 0.8-1.5 points in benchmarks/adapt.py). Only the sampled images are read, so a run over 250K images
costs a few hundred inferences. When the training data is no longer where the run's card says, the set is
skipped with a note: `adapt` then regularises toward the old head alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from waste_edge.runtime.rehearsal import build_rehearsal_set, rehearsal_path, save_rehearsal, select_rehearsal

Log = Callable[[str], None]


def write_rehearsal_for_run(
    run_dir: str | Path,
    model_path: str | Path,
    *,
    per_class: int,
    seed: int = 0,
    progress: bool = False,
    log: Log | None = None,
) -> Path | None:
    """Write the rehearsal set of `model_path` beside it; None (and a note) when the training data cannot be found."""
    from waste_edge.data.discovery import DatasetError, discover
    from waste_edge.runtime.classifier import Classifier
    from waste_edge.runtime.embed import model_embeddings
    from waste_edge.train.runs import LinearRun, open_run

    say = log or (lambda _m: None)
    run = open_run(run_dir)
    if not isinstance(run, LinearRun):  # export refuses --with-embedding for other kinds before it gets here
        raise TypeError(f"{run_dir}: a rehearsal set needs a linear run, not {run.kind!r}")
    data = run.card.get("data", {})
    source = data.get("source")
    try:
        if not source:
            raise DatasetError("the run's card names no training data")
        ds = discover(Path(source), seed=int(data.get("split_seed") or 0))
        train = ds.split("train")
        if not train:
            raise DatasetError("no training images")
    except (DatasetError, OSError) as e:
        say(f"note: no rehearsal set written ({e}); `adapt` will regularise toward the old head only")
        return None
    picked = [train[i] for i in select_rehearsal([s.label for s in train], per_class, seed)]
    with Classifier(model_path, "cpu") as clf:
        feats, ok, problems = model_embeddings(clf, [s.path for s in picked], batch_size=16, progress=progress)
    if problems:
        say(f"rehearsal set: skipped {len(problems)} unreadable image(s), e.g. {problems[0]}")
    if not ok:
        say("note: no rehearsal set written (none of the sampled training images could be decoded)")
        return None
    meta_norm = "l2" if run.head.l2_normalize else "none"
    rs = build_rehearsal_set(
        feats, [picked[i].label for i in ok], classes=run.classes, encoder=run.encoder_id, per_class=per_class, seed=seed,
        selected=True, normalization=meta_norm,  # the output is already normalised; normalising again changes nothing
        source={"run_head_sha256": run.head.sha256(), "from_n": len(train), "data_fingerprint": data.get("fingerprint"),
                "features": f"the model's own `embedding` output ({Path(model_path).name})"},
    )
    path = save_rehearsal(rs, rehearsal_path(model_path))
    say(f"rehearsal set: {len(rs.labels)} training embeddings ({', '.join(f'{c} {n}' for c, n in rs.counts().items())}) -> {path.name}")
    return path

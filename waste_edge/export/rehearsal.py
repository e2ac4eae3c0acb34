"""The rehearsal set of an exported model, from its run's training images (what `adapt` keeps the old knowledge with).

`export --with-embedding` writes `<model stem>.rehearsal.npz` beside the model: a stratified random sample of
the run's TRAIN images (128 per class by default), embedded by the run's own encoder (the reference
pipeline; the embedding cache answers for images training already embedded, so this usually costs no
encoder pass), normalised as the head normalises. Only the sampled images are embedded, so a run over
250K images costs a few hundred encoder calls at most. When the training data is no longer where the run's
card says, the set is skipped with a note: `adapt` then regularises toward the old head alone.
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
    """Write the rehearsal set beside `model_path`; None (and a note) when the training data cannot be found."""
    from waste_edge.data.discovery import DatasetError, discover
    from waste_edge.train.embeddings import extract_embeddings
    from waste_edge.train.encoders import create_encoder
    from waste_edge.train.run import load_run

    say = log or (lambda _m: None)
    run = load_run(run_dir)
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
    idx = select_rehearsal([s.label for s in train], per_class, seed)
    encoder = create_encoder(run.encoder_id)
    emb = extract_embeddings(encoder, [train[i] for i in idx], progress=progress, desc="rehearsal set")
    if emb.failed:
        say(f"rehearsal set: skipped {len(emb.failed)} unreadable image(s), e.g. {emb.failed[0][0].path}: {emb.failed[0][1]}")
    rs = build_rehearsal_set(
        emb.features, emb.labels, classes=run.classes, encoder=run.encoder_id, per_class=per_class, seed=seed, selected=True,
        normalization="l2" if run.head.l2_normalize else "none",
        source={"run_head_sha256": run.head.sha256(), "from_n": len(train), "data_fingerprint": data.get("fingerprint")},
    )
    path = save_rehearsal(rs, rehearsal_path(model_path))
    say(f"rehearsal set: {len(rs.labels)} training embeddings ({', '.join(f'{c} {n}' for c, n in rs.counts().items())}) -> {path.name}")
    return path

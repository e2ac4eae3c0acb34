"""The `embedding` output of a fused model over image files: what `adapt` fits on and a rehearsal set stores.

Both must come from the model itself (ONNX Runtime, the same graph that classifies): an INT8 encoder's
features differ from the fp32 reference encoder's enough to matter (benchmarks/adapt.py: a rehearsal set of
reference features cost the INT8 model's old domain 0.8-1.5 points, its own features none).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from waste_edge.runtime.classifier import Classifier


def model_embeddings(
    clf: Classifier,
    paths: Sequence[Path],
    *,
    batch_size: int = 32,
    workers: int = 2,
    progress: bool = False,
) -> tuple[np.ndarray, list[int], list[str]]:
    """The model's `embedding` output for each image: (features [n_ok, D], indices of the decoded paths, problems).

    Images are decoded (EXIF-aware RGB, the decoder `predict` and training use) in worker threads one batch
    ahead of inference; the classifier batches frames of the same size together.
    """
    from tqdm import tqdm

    from waste_edge.data.decode import DecodeError, load_rgb_array

    def decode(i: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return i, load_rgb_array(paths[i]), None
        except DecodeError as e:
            return i, None, f"{paths[i].name}: {e}"

    feats: list[np.ndarray] = []
    ok: list[int] = []
    problems: list[str] = []
    chunks = [list(range(s, min(s + batch_size, len(paths)))) for s in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, tqdm(total=len(paths), desc="embeddings", unit="img", disable=not progress, leave=False) as bar:
        pending = [pool.map(decode, c) for c in chunks[:2]]
        for n in range(len(chunks)):
            decoded = list(pending[n])
            if n + 2 < len(chunks):
                pending.append(pool.map(decode, chunks[n + 2]))
            good = [(i, img) for i, img, err in decoded if img is not None]
            problems += [err for _, img, err in decoded if err is not None]
            if good:
                _, emb = clf.predict_proba([img for _, img in good], "RGB", with_embedding=True)
                feats.append(emb)
                ok += [i for i, _ in good]
            bar.update(len(decoded))
    dim = clf.embedding_dim or 0
    return (np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)), ok, problems

"""The seeded sample: which files a limited run looks at (INT8 calibration, `parity --limit`, `bench --limit`).

One helper, because the embedded default model is rebuilt from a pinned calibration sample: every caller
must pick exactly the same files for the same inputs (numpy's `default_rng(seed).choice` without replacement,
indices sorted back into the input order).
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def seeded_sample(items: Sequence[T], limit: int | None, seed: int = 0) -> list[T]:
    """At most `limit` of `items`, drawn evenly with a fixed seed, in their original order (all when `limit` is None)."""
    if limit is None or len(items) <= limit:
        return list(items)
    idx = np.random.default_rng(seed).choice(len(items), size=limit, replace=False)
    return [items[i] for i in sorted(idx)]

"""Name-based hints of augmentation leakage, for files named like the Kaggle set.

The study's Kaggle files carry their augmentation in the name (`TRAIN.2_BIODEG_ORI_1036.jpg`,
`TEST_BIODEG_HFL_100.jpg`: original, horizontal flip, vertical flip, rotation). Files whose names differ only
in that tag (and in the split written into the name) are probably copies of one photo, so a name group that
spans splits is a leakage *hint*. It is reported separately from the pixel check and never replaces it: names
lie (renamed files, numbering restarted per split), pixels do not.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

AUG_TAGS = ("ORI", "HFL", "VFL", "ROT")
_TAG = re.compile(r"_(ORI|HFL|VFL|ROT)_", re.IGNORECASE)
# A split written into the name (TRAIN, TRAIN.1, TEST, VAL ...) as a whole "_"-separated token.
_SPLIT_TOKEN = re.compile(r"(?:(?<=_)|^)(?:train|training|test|testing|val|valid|validation)(?:[.\-]?\d+)?(?=_|$)", re.IGNORECASE)


def augmentation_tag(path: str | Path) -> str | None:
    """`ORI`, `HFL`, `VFL` or `ROT` when the file name carries one, else None."""
    m = _TAG.search(Path(path).stem)
    return m.group(1).upper() if m else None


def name_key(path: str | Path) -> str | None:
    """The name with the augmentation tag and split tokens removed (lower case); None for untagged names."""
    stem = Path(path).stem
    if not _TAG.search(stem):
        return None
    key = _TAG.sub("_", stem)
    key = _SPLIT_TOKEN.sub("", key)
    key = re.sub(r"_+", "_", key).strip("_")
    return key.lower()


def tag_counts(paths: list[str]) -> dict[str, int]:
    c = Counter(augmentation_tag(p) for p in paths)
    return {t: c.get(t, 0) for t in AUG_TAGS}


def name_groups(paths: list[str]) -> dict[str, list[int]]:
    """Indices of tagged files grouped by `name_key`, only groups of two or more."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(paths):
        key = name_key(p)
        if key is not None:
            groups[key].append(i)
    return {k: v for k, v in groups.items() if len(v) > 1}

"""What `data check` and `data split` are told: each field also its command-line option, declared once.

Standard library only: the CLI builds its parser from these classes on every call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from waste_edge._options import common, int_in, option

# Near-duplicate radii of the two perceptual hashes (data/check.py explains the numbers).
DEFAULT_RADIUS = 8
DEFAULT_FINE_RADIUS = 40


@dataclass(frozen=True)
class CheckOptions:
    """Walk a dataset (Kaggle TRAIN*/TEST* folders, class folders, or a path,label[,split] CSV) and report counts per
    split and class, unreadable files with the reason, exact duplicates (same bytes) and near duplicates in any
    of the 8 flips/rotations (perceptual hashes, robust to JPEG re-encoding and mild resizing). Pairs across
    splits are leakage; pairs with different labels are conflicts. Files named like the Kaggle set (_ORI_,
    _HFL_, _VFL_, _ROT_) are also grouped by name, reported separately. Hashes are cached per file content, so
    a second check hashes nothing. Exit status: 0 when the check ran, whatever it found, unless --fail-on asks for 1.

    How a dataset is checked for duplicates (shared by `data check` and `data split`)."""

    workers: int | None = common("--workers", None, help="hashing processes (default: all cores)")
    radius: int = option(DEFAULT_RADIUS, "--radius", type=int_in(0, 32), metavar="BITS",
                         help="near-duplicate radius in bits of the 64-bit pHash, 0-32 (default: %(default)s; planted copies are <= 4)")
    fine_radius: int = option(DEFAULT_FINE_RADIUS, "--fine-radius", type=int_in(0, 256), metavar="BITS",
                              help="confirmation radius in bits of the 256-bit pHash (default: %(default)s; planted copies <= 20, distinct photos >= 48)")
    cache: Path | None = common("--cache", None, help="hash cache folder (default: ~/.cache/waste-edge/hashes)")
    no_cache: bool = option(False, "--no-cache", action="store_true", help="neither read nor write the hash cache")

"""Human names for the dataset's class folders, recorded in every card and model so overlays read well."""

from __future__ import annotations

KNOWN_DISPLAY_NAMES = {
    "B": "biodegradable",
    "N": "non-biodegradable",
    "O": "organic",
    "R": "recyclable",
}


def display_names(classes: list[str]) -> list[str]:
    return [KNOWN_DISPLAY_NAMES.get(c, c) for c in classes]

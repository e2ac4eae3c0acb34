"""Training augmentations as one table: each entry says what it simulates and why this data needs it.

They run on the uint8 crop the edge sees (the `box_crop` preprocessing already applied on PIL, exactly as the
fused graph does), one sample at a time so every image draws its own parameters, from torch's global RNG,
which the trainer seeds per batch from (seed, epoch, batch): the same seed gives the same augmented batches.

Why these, measured on waste-sample (sizes and sources from its labels.csv):
- `flip` + `rot90` (the dihedral group): the Kaggle set was itself augmented with flips and rotations, and a
  camera above a bin sees items in any in-plane orientation; multiples of 90 degrees need no fill colour.
- `crop`: objects appear at different distances; the edge crops the centre square of the frame (448 of 480
  on a camera), so borders and scale vary. Scale 0.6-1 keeps the object in view (Kaggle photos are tight
  200x200 crops of a single item).
- `color`: the three sources differ in light and white balance (Kaggle studio-like shots, TrashNet on a white
  board under indoor light, web stock photos), and so do bin cameras. Hue moves only a little: the colour of
  food vs. plastic is a real cue.
- `blur`: sharpness is a shortcut here. Every Kaggle photo is 200x200 and is upscaled to 224 (soft), every
  TrashNet photo (all N) is 384x512 and is downscaled (sharp), web photos range from 100x100 to 3072x2048.
  Random blur keeps the network from learning "sharp means N"; it also simulates defocus and motion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from waste_edge.errors import WasteEdgeError


class AugmentError(WasteEdgeError):
    """Unknown augmentation name in --augment."""


@dataclass(frozen=True)
class Augmentation:
    name: str
    what: str  # one line for --help and the card
    build: Callable[[int], Any]  # crop side -> a torch module mapping uint8 [3, S, S] -> uint8 [3, S, S]


def _flip(size: int) -> Any:
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomHorizontalFlip(0.5), v2.RandomVerticalFlip(0.5)])


def _rot90(size: int) -> Any:
    import torch

    class RandomRot90(torch.nn.Module):
        """A multiple of 90 degrees: exact on a square crop, no interpolation, no fill."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.rot90(x, int(torch.randint(4, (1,))), dims=(-2, -1))

    return RandomRot90()


def _crop(size: int) -> Any:
    from torchvision.transforms import v2

    return v2.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(3 / 4, 4 / 3), antialias=True)


def _color(size: int) -> Any:
    from torchvision.transforms import v2

    return v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03)


def _blur(size: int) -> Any:
    from torchvision.transforms import v2

    kernel = max(3, (size // 45) | 1)  # 5 at 224: sigma up to 1.5 px, about a 2x defocus
    return v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 1.5))], p=0.3)


# Applied in this order: geometry first (crop, then orientation), then photometry.
AUGMENTATIONS: tuple[Augmentation, ...] = (
    Augmentation("crop", "random resized crop, 60-100 % of the area, aspect 3:4-4:3", _crop),
    Augmentation("flip", "horizontal and vertical flips", _flip),
    Augmentation("rot90", "rotation by a multiple of 90 degrees", _rot90),
    Augmentation("color", "brightness, contrast, saturation +-30 %, hue +-0.03", _color),
    Augmentation("blur", "Gaussian blur (sigma 0.1-1.5 px) on 30 % of the images", _blur),
)
DEFAULT_AUGMENT = tuple(a.name for a in AUGMENTATIONS)


def parse_augment(text: str) -> tuple[str, ...]:
    """'flip,rot90' -> ('flip', 'rot90') in table order; 'none' -> (); 'all' -> every augmentation."""
    words = [w.strip().lower() for w in text.split(",") if w.strip()]
    if words in (["none"], []):
        return ()
    if words == ["all"]:
        return DEFAULT_AUGMENT
    known = {a.name for a in AUGMENTATIONS}
    unknown = [w for w in words if w not in known]
    if unknown:
        raise AugmentError(f"unknown augmentation(s) {', '.join(unknown)}: use a comma list of {', '.join(DEFAULT_AUGMENT)}, or all, or none")
    return tuple(a.name for a in AUGMENTATIONS if a.name in words)


def build_augment(names: tuple[str, ...], size: int) -> Callable[[Any], Any] | None:
    """One callable over a uint8 [3, S, S] tensor applying `names` in table order; None when there are none."""
    chosen = [a.build(size) for a in AUGMENTATIONS if a.name in names]
    if not chosen:
        return None
    from torchvision.transforms import v2

    return v2.Compose(chosen)


def describe(names: tuple[str, ...]) -> dict[str, str]:
    return {a.name: a.what for a in AUGMENTATIONS if a.name in names}

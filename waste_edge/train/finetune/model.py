"""The network being fine-tuned: EfficientNet-Lite0 features + one linear layer, with a frozen trunk.

The linear layer IS the run's head: a K-logit softmax layer maps exactly onto `LinearHead` (for two classes
sklearn's binary form, coef = w1 - w0 and intercept = b1 - b0, because softmax([z0, z1])[1] =
sigmoid(z1 - z0)), so the fused graph's `Gemm` + `Softmax` reproduce the trained network's probabilities.

Freezing: `freeze_until = k` keeps the stem and blocks [0, k) fixed, in eval mode (their BatchNorm statistics
stay ImageNet's) and without gradients (their backward pass is most of the cost on a CPU: the early blocks
work at 112x112 and 56x56). `None` trains everything.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from waste_edge.errors import WasteEdgeError
from waste_edge.train.effnet_lite import EfficientNetLite
from waste_edge.train.head import LinearHead
from waste_edge.train.preprocess import PreprocessSpec


class FreezeError(WasteEdgeError):
    """--freeze-until out of range."""


def stage_starts(encoder: EfficientNetLite) -> list[int]:
    """Index of the first block of each stage (where the resolution or width changes), for --help and errors."""
    widths = [block._project_conv.out_channels for block in encoder._blocks]
    return [i for i, w in enumerate(widths) if i == 0 or w != widths[i - 1]]


def check_freeze_until(encoder: EfficientNetLite, freeze_until: int | None) -> None:
    n_blocks = len(encoder._blocks)
    if freeze_until is not None and not 0 <= freeze_until <= n_blocks:
        raise FreezeError(f"--freeze-until {freeze_until}: EfficientNet-Lite0 has blocks 0..{n_blocks - 1} "
                          f"(stages start at {', '.join(map(str, stage_starts(encoder)))}); use 0..{n_blocks} or none")


class FinetuneModel(nn.Module):
    def __init__(self, encoder: EfficientNetLite, n_classes: int, freeze_until: int | None) -> None:
        super().__init__()
        check_freeze_until(encoder, freeze_until)
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_dim, n_classes)
        self.freeze_until = freeze_until
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        for p in self.trainable_encoder_parameters():
            p.requires_grad_(True)
        self.encoder._fc.requires_grad_(False)  # the ImageNet classifier is never used

    def _frozen_modules(self) -> list[nn.Module]:
        if self.freeze_until is None:
            return []
        enc = self.encoder
        return [enc._conv_stem, enc._bn0, *enc._blocks[: self.freeze_until]]

    def trainable_encoder_parameters(self) -> list[nn.Parameter]:
        frozen = {id(p) for m in self._frozen_modules() for p in m.parameters()}
        return [p for name, p in self.encoder.named_parameters() if id(p) not in frozen and not name.startswith("_fc.")]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.trainable_encoder_parameters() + list(self.head.parameters())

    def train(self, mode: bool = True) -> "FinetuneModel":
        super().train(mode)
        for m in self._frozen_modules():
            m.eval()  # frozen BatchNorm keeps its statistics
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        k = self.freeze_until
        if k is None:
            return self.encoder(x)
        with torch.no_grad():
            trunk = self.encoder.forward_trunk(x, k)
        return self.encoder.forward_top(trunk, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    # -- the head <-> LinearHead ------------------------------------------------------------------------

    def init_head(self, head: LinearHead) -> None:
        """Start from a fitted logistic head (linear probing first keeps a random layer from wrecking the features)."""
        w, b = head.softmax_weights()  # [D, K], [K]: softmax of these logits == predict_proba
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
            self.head.bias.copy_(torch.from_numpy(b))

    def to_linear_head(self, classes: list[str], hyperparameters: dict) -> LinearHead:
        w = self.head.weight.detach().double().numpy()
        b = self.head.bias.detach().double().numpy()
        if len(classes) == 2:  # sklearn's binary form: p(classes[1]) = sigmoid(coef . x + intercept)
            return LinearHead(list(classes), (w[1] - w[0])[None, :], np.array([b[1] - b[0]]), False, hyperparameters)
        return LinearHead(list(classes), w, b, False, hyperparameters)


def normalise_batch(images: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 [N, 3, S, S] -> (x / 255 - mean) / std in float32, the same arithmetic as `preprocess.normalise`."""
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std

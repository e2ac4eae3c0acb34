"""The network being fine-tuned: EfficientNet-Lite0 features + one linear layer, with a frozen trunk.

The linear layer IS the run's head: a K-logit softmax layer maps exactly onto `LinearHead` (for two classes
sklearn's binary form, coef = w1 - w0 and intercept = b1 - b0, because softmax([z0, z1])[1] =
sigmoid(z1 - z0)), so the fused graph's `Gemm` + `Softmax` reproduce the trained network's probabilities.

Freezing: `freeze_until = k` keeps the stem and blocks [0, k) fixed, in eval mode and without gradients (their
backward pass is most of the cost on a CPU: the early blocks work at 112x112 and 56x56). `None` trains everything.

BatchNorm: `bn="frozen"` (the default) keeps every BatchNorm exactly as ImageNet left it (running statistics,
scale and shift), as detection and segmentation fine-tuning does with small batches. Measured on waste-sample
(README): with BatchNorm learning, Adam moved the small shift vectors of the stage-opening blocks by 18-28 % of
their norm in two epochs while convolution weights moved ~1 %, and validation got worse every epoch; batches of
32 augmented crops also are not the photos the model will see. `"affine"` keeps the statistics and trains
scale and shift; `"train"` is PyTorch's default (statistics re-estimated on the batches). Frozen statistics
also keep the activation ranges that INT8 calibration measures stable.

Dropout before the final layer (0.2, what EfficientNet-Lite0 was trained with) is a training-only regulariser:
at inference it is the identity, so the exported graph does not change.
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


BN_MODES = ("frozen", "affine", "train")


class FinetuneModel(nn.Module):
    def __init__(self, encoder: EfficientNetLite, n_classes: int, freeze_until: int | None, bn: str = "frozen",
                 dropout: float = 0.0) -> None:
        super().__init__()
        check_freeze_until(encoder, freeze_until)
        if bn not in BN_MODES:
            raise FreezeError(f"--bn must be one of {', '.join(BN_MODES)}, got {bn!r}")
        self.encoder = encoder
        self.head = nn.Linear(encoder.out_dim, n_classes)
        self.dropout = nn.Dropout(dropout)
        self.freeze_until = freeze_until
        self.bn = bn
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        for p in self.trainable_encoder_parameters():
            p.requires_grad_(True)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.freeze_until is None:
            return []
        enc = self.encoder
        return [enc._conv_stem, enc._bn0, *enc._blocks[: self.freeze_until]]

    def trainable_encoder_parameters(self) -> list[nn.Parameter]:
        frozen = {id(p) for m in self._frozen_modules() for p in m.parameters()}
        if self.bn == "frozen":
            frozen |= {id(p) for m in self.encoder.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
        frozen |= {id(p) for p in self.encoder._fc.parameters()}  # the ImageNet classifier is never used
        return [p for p in self.encoder.parameters() if id(p) not in frozen]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.trainable_encoder_parameters() + list(self.head.parameters())

    def train(self, mode: bool = True) -> "FinetuneModel":
        super().train(mode)
        for m in self._frozen_modules():
            m.eval()  # frozen layers keep their BatchNorm statistics
        if self.bn in ("frozen", "affine"):
            for m in self.encoder.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        k = self.freeze_until
        if k is None:
            return self.encoder(x)
        with torch.no_grad():
            trunk = self.encoder.forward_trunk(x, k)
        return self.encoder.forward_top(trunk, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))

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

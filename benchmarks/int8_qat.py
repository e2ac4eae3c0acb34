"""Quantisation-aware fine-tuning of the Lite0 encoder, as one lever of benchmarks/int8_levers.py.

What it trains: the encoder with its BatchNorms folded into the convolutions (the graph ONNX Runtime quantises),
with fake quantisation where the deployed INT8 model rounds: 7-bit per-channel weights on pointwise convolutions,
8-bit on depthwise ones, the stem float (the default recipe), uint8 activations after every ReLU6 (0..6) and on the
linear bottleneck outputs and residual sums (their MinMax ranges on the calibration images, fixed). The loss is
the distance to the ORIGINAL fp32 embeddings (distillation): the acceptance compares INT8 with the fp32 export, so
the student learns to land where the fp32 model does, not to re-learn the task. Straight-through rounding.

Then the tuned fp32 weights replace the exported encoder's, and the usual recipe (calibration, bias correction,
float stem) quantises them: the result is a deployable INT8 model, measured like every other lever.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np


def _fold(conv: Any, bn: Any) -> Any:
    """A Conv2d (or SameConv2d) with `bn` folded in: y = bn(conv(x)) exactly, as the ONNX export folds it."""
    import torch

    folded = copy.deepcopy(conv)
    std = torch.sqrt(bn.running_var.double() + bn.eps)
    g = bn.weight.double() / std
    w = conv.weight.detach().double() * g.view(-1, 1, 1, 1)
    b = (conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(g)) * g + bn.bias.double() - bn.running_mean.double() * g
    folded.weight = torch.nn.Parameter(w.float())
    folded.bias = torch.nn.Parameter(b.float())
    return folded


class _FakeQuant:
    """Straight-through fake quantisation helpers (the arithmetic of export/quantize.py's schemes)."""

    @staticmethod
    def weight(w: Any, qmax: int) -> Any:
        import torch

        scale = (w.detach().abs().amax(dim=(1, 2, 3), keepdim=True) / qmax).clamp_min(1e-12)
        q = torch.clamp(torch.round(w / scale), -qmax, qmax) * scale
        return w + (q - w).detach()

    @staticmethod
    def act(x: Any, lo: float, hi: float) -> Any:
        import torch

        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = max((hi - lo) / 255.0, 1e-12)
        zp = round(-lo / scale)
        q = (torch.clamp(torch.round(x / scale) + zp, 0, 255) - zp) * scale
        return x + (q - x).detach()


class FoldedLite0:
    """The folded Lite0 encoder on raw pixels, with optional fake quantisation; `convs` in ONNX node order."""

    def __init__(self, raw_module: Any) -> None:
        m = raw_module
        self.stem = _fold(m._conv_stem, m._bn0)
        self.blocks = []
        for blk in m._blocks:
            self.blocks.append({
                "expand": _fold(blk._expand_conv, blk._bn0) if blk.has_expand else None,
                "dw": _fold(blk._depthwise_conv, blk._bn1),
                "project": _fold(blk._project_conv, blk._bn2),
                "residual": blk.residual,
            })
        self.head = _fold(m._conv_head, m._bn1)
        self.convs = [self.stem]
        for b in self.blocks:
            self.convs += [c for c in (b["expand"], b["dw"], b["project"]) if c is not None]
        self.convs.append(self.head)
        self.ranges: dict[str, tuple[float, float]] = {}
        self.params = [p for c in self.convs[1:] for p in c.parameters()]  # the stem stays float and is not tuned

    def _conv(self, conv: Any, x: Any, qmax: int | None) -> Any:
        import math

        import torch.nn.functional as F

        if qmax is None:
            return conv(x)
        w = _FakeQuant.weight(conv.weight, qmax)
        if hasattr(conv, "pad_value"):  # SameConv2d's TF 'SAME' padding (effnet_lite.py), then the fake-quantised conv
            ih, iw = x.shape[-2:]
            kh, kw = w.shape[-2:]
            sh, sw = conv.stride
            ph, pw = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0), max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
            if ph or pw:
                x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], value=conv.pad_value)
            return F.conv2d(x, w, conv.bias, conv.stride, 0, conv.dilation, conv.groups)
        return F.conv2d(x, w, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    def forward(self, x: Any, quant: bool, record: bool = False) -> Any:
        import torch.nn.functional as F

        def act(name: str, t: Any, relu6: bool) -> Any:
            if relu6:
                t = F.relu6(t)
            if record:
                lo, hi = float(t.min()), float(t.max())
                old = self.ranges.get(name, (lo, hi))
                self.ranges[name] = (min(old[0], lo), max(old[1], hi))
            if quant:
                lo, hi = (0.0, 6.0) if relu6 else self.ranges[name]
                t = _FakeQuant.act(t, lo, hi)
            return t

        w7, w8 = (64, 127) if quant else (None, None)
        x = act("stem", self.stem(x), True)
        for i, b in enumerate(self.blocks):
            y = act(f"{i}.expand", self._conv(b["expand"], x, w7), True) if b["expand"] is not None else x
            y = act(f"{i}.dw", self._conv(b["dw"], y, w8), True)
            y = act(f"{i}.project", self._conv(b["project"], y, w7), False)
            x = act(f"{i}.add", y + x, False) if b["residual"] else y
        x = act("head", self._conv(self.head, x, w7), True)
        return x.mean(dim=(2, 3))


def qat_weights(encoder: Any, fp32_onnx: Any, fit_pixels: np.ndarray, calib_pixels: np.ndarray, *, epochs: int, batch: int = 16,
                lr: float = 1e-5, seed: int = 0, log: Any = print, timings: dict[str, float] | None = None) -> Any:
    """The fp32 ONNX encoder (after quant_pre_process) with its conv weights and biases replaced by QAT-tuned ones.
    `timings`, when given, receives the seconds spent in training steps and their count (the cost of a longer run)."""
    import time

    import onnx
    import torch
    from onnx import numpy_helper

    from waste_edge.export.fused import raw_pixel_encoder

    torch.manual_seed(seed)
    raw, _ = raw_pixel_encoder(encoder)
    student, teacher = FoldedLite0(raw), FoldedLite0(copy.deepcopy(raw))
    with torch.no_grad():
        for i in range(0, len(calib_pixels), batch):  # activation ranges of the linear tensors, like MinMax calibration
            student.forward(torch.from_numpy(calib_pixels[i : i + batch]), quant=False, record=True)
    onnx_convs = [n for n in fp32_onnx.graph.node if n.op_type == "Conv"]
    if len(onnx_convs) != len(student.convs):
        raise ValueError(f"{len(onnx_convs)} ONNX convs vs {len(student.convs)} torch convs: the encoder is not Lite0")
    inits = {t.name: t for t in fp32_onnx.graph.initializer}
    drift = max(float(np.abs(numpy_helper.to_array(inits[n.input[1]]) - c.weight.detach().numpy()).max()) for n, c in zip(onnx_convs, student.convs))
    if drift > 1e-4:
        raise ValueError(f"folded torch weights differ from the ONNX export's by {drift}: the conv order does not match")
    opt = torch.optim.Adam(student.params, lr=lr)
    rng = np.random.default_rng(seed)
    train_s, steps = 0.0, 0
    for epoch in range(epochs):
        order, losses = rng.permutation(len(fit_pixels)), []
        for i in range(0, len(order), batch):
            t0 = time.perf_counter()
            x = torch.from_numpy(fit_pixels[np.sort(order[i : i + batch])])
            with torch.no_grad():
                target = teacher.forward(x, quant=False)
            out = student.forward(x, quant=True)
            loss = ((out - target) ** 2).sum(1).mean() / (target**2).sum(1).mean()  # relative squared error
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            train_s, steps = train_s + time.perf_counter() - t0, steps + 1
        log(f"QAT epoch {epoch + 1}/{epochs}: relative embedding error {np.mean(losses[: max(1, len(losses) // 5)]):.5f} -> {np.mean(losses[-max(1, len(losses) // 5):]):.5f}")
    if timings is not None:
        timings |= {"train_seconds": train_s, "steps": steps}
    tuned = copy.deepcopy(fp32_onnx)
    inits = {t.name: t for t in tuned.graph.initializer}
    for node, conv in zip(onnx_convs, student.convs):
        for name, value in ((node.input[1], conv.weight), (node.input[2] if len(node.input) > 2 else None, conv.bias)):
            if name:
                inits[name].CopyFrom(numpy_helper.from_array(value.detach().numpy().astype(np.float32), name))
    onnx.checker.check_model(tuned)
    return tuned

"""Effective sparsity: a kept weight that no path connects to both the input and the output does nothing
(Paganini & Forde's Table 1; Vysogorets & Kempe 2023), so it counts as pruned.

The connectivity is read off one forward/backward pass of a copy of the network in float64 where every
prunable weight is replaced by its mask (scaled by 1/fan-in to keep magnitudes in range), biases are zero,
BatchNorm is the identity, max-pooling is average pooling (so every pooled unit passes gradient) and the input
is all ones. All activations are then non-negative: a unit's activation is positive iff some path reaches it
from the input, and d(sum of outputs)/d(unit) is positive iff some path leads from it to an output. A weight is
effective iff it is kept, its input unit is reached from the input and its output unit reaches the output,
which is exactly when d(sum of outputs)/d(weight) > 0. Residual additions carry paths around pruned blocks
(so a block whose convolutions are pruned away does not cut the network), and dropout is off (eval mode).
Connectivity is per pixel, for the network's input size: a convolution tap that only ever multiplies zero
padding (3x3 kernels on 1x1 maps, e.g. ResNet-18's last stage at 32 pixels) is ineffective too.
Cost: one float64 copy of the network and one forward/backward pass of one image.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from lotto.masks import Mask


@contextlib.contextmanager
def _average_pooling():
    original = F.max_pool2d

    def pool(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
        if return_indices:
            raise NotImplementedError("effective sparsity does not support max-pooling with indices")
        return F.avg_pool2d(input, kernel_size, stride, padding, ceil_mode=ceil_mode, count_include_pad=True)

    F.max_pool2d = pool
    try:
        yield
    finally:
        F.max_pool2d = original


def effective_mask(model: nn.Module, mask: Mask, in_channels: int, image_size: int) -> Mask:
    """The weights of ``mask`` that lie on some input-to-output path of ``model`` (same layout as ``mask``)."""
    net = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
    kept = {n: t.to(torch.float64) for n, t in mask.to_torch().items()}
    params = dict(net.named_parameters())
    missing = [n for n in kept if n not in params]
    if missing:
        raise ValueError(f"mask layers {missing} are not parameters of the model")
    with torch.no_grad():
        for name, p in params.items():
            p.requires_grad_(name in kept)
            if name in kept:
                p.copy_(kept[name] / max(p[0].numel(), 1))
            elif name.endswith("bias"):
                p.zero_()
            else:  # BatchNorm scale
                p.fill_(1.0)
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
    x = torch.ones(1, in_channels, image_size, image_size, dtype=torch.float64)
    with _average_pooling(), torch.enable_grad():
        net(x).sum().backward()
    out = []
    for name in mask.names:
        g = params[name].grad
        reach = torch.zeros_like(kept[name], dtype=torch.bool) if g is None else g > 0
        out.append((name, reach & kept[name].bool()))
    return Mask.from_bools(out, meta={"effective_of": mask.meta})

"""Small layer helpers shared by the architectures."""

from __future__ import annotations

import math

import torch.nn as nn


def norm_layer(norm: str | None, channels: int) -> nn.Module:
    """Normalisation after a convolution; ``None`` reproduces the paper (it has none)."""
    if norm is None or norm == "none":
        return nn.Identity()
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "group":
        groups = math.gcd(channels, 8)
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"norm must be None, 'batch', 'instance' or 'group', got {norm!r}")


def he_normal_(module: nn.Module) -> None:
    """He et al. (2015) normal initialisation, std = sqrt(2 / N).

    The U-Net paper (Sec. 3) draws initial weights "from a Gaussian distribution
    with a standard deviation of sqrt(2/N), where N denotes the number of
    incoming nodes of one neuron".  For a convolution N = k*k*C_in; for the 2x2
    stride-2 up-convolution each output pixel sees exactly one kernel tap per
    input channel, so N = C_in.
    """
    for m in module.modules():
        if isinstance(m, nn.ConvTranspose2d):
            n = m.in_channels * (m.kernel_size[0] // m.stride[0]) * (m.kernel_size[1] // m.stride[1])
            nn.init.normal_(m.weight, std=math.sqrt(2.0 / max(n, 1)))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            n = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
            nn.init.normal_(m.weight, std=math.sqrt(2.0 / n))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

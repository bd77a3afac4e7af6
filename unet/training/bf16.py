"""bfloat16 autocast on CPUs without bfloat16 kernels: the same rounding, on float32 kernels.

``train.amp: bf16`` on the CPU is oneDNN's bfloat16 convolutions, fast only where the CPU has
AVX512-BF16 or AMX. Elsewhere (AVX2 CPUs: most laptops, some cloud EPYCs) oneDNN emulates them,
and a training step of the reproduction's U-Net takes 7-12x its float32 time
(scripts/BENCHMARKS.md, "bfloat16 on a CPU without bfloat16 kernels"), so a bfloat16 profile
cannot keep its 2-hour budget there.

What bfloat16 autocast changes in the numbers is *where values are rounded*: convolutions
(and the other ops autocast lowers) see their inputs and weights rounded to bfloat16, accumulate
in float32 and round their result; everything after them (normalisation, ReLU, pooling, drop-out,
concatenation) then runs on, and returns, bfloat16 tensors; the gradients flowing back through
them are bfloat16 too. :class:`RoundedBF16` reproduces exactly those rounding points with float32
tensors and float32 kernels (accumulation order aside, which differs between native kernels as
well: scripts/probe_bf16_rounding.py measures both), at ~1.2x the float32 step. It is
the same recipe as native bfloat16, not float32 (which rounds nowhere); the trainer uses it by
itself where the CPU lacks the kernels (``train.bf16_kernels: auto``).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["RoundedBF16", "autocast", "bf16_kernels", "native_cpu_bf16", "round_bf16"]


def native_cpu_bf16() -> bool:
    """Whether this CPU has bfloat16 kernels (AVX512-BF16 or AMX) for oneDNN's convolutions."""
    probe = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    try:
        if probe is not None:
            return bool(probe())
    except RuntimeError:  # a torch built without oneDNN
        pass
    return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)())


class _Round(torch.autograd.Function):
    """Round to the nearest bfloat16 value (kept as float32), and the gradient on its way back."""

    @staticmethod
    def forward(ctx, x):
        return x.to(torch.bfloat16).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad.to(torch.bfloat16).to(grad.dtype)


def round_bf16(x):
    """``x`` rounded to bfloat16 (round to nearest even) as a float32 tensor; its gradient is rounded too.
    Anything that is not a floating-point tensor passes unchanged."""
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.bfloat16:
        return _Round.apply(x)
    return x


# The ops CPU autocast runs in bfloat16 ("lower_precision_fp"): their tensor arguments (inputs,
# weights, bias) are cast to bfloat16 and their result is bfloat16.
_LOWERED = {F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, F.linear,
            torch.conv1d, torch.conv2d, torch.conv3d, torch.conv_transpose1d, torch.conv_transpose2d,
            torch.conv_transpose3d, torch.matmul, torch.mm, torch.bmm, torch.addmm, torch.baddbmm,
            torch.Tensor.matmul, torch.Tensor.__matmul__}
# Ops that autocast leaves alone: on bfloat16 inputs they compute (in float32 inside, for the
# normalisations) and return bfloat16, so their results are rounded. Exact ops (ReLU, max-pooling,
# concatenation, cropping, padding with constants or mirrors) change no value and are left as they are.
_SAME_TYPE = {F.batch_norm, F.instance_norm, F.group_norm, F.layer_norm, F.dropout, F.dropout2d, F.interpolate,
              F.avg_pool2d, F.adaptive_avg_pool2d, torch.sigmoid, torch.tanh, F.gelu, F.silu, F.leaky_relu,
              torch.add, torch.sub, torch.mul, torch.div,
              torch.Tensor.add, torch.Tensor.sub, torch.Tensor.mul, torch.Tensor.div,
              torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__sub__, torch.Tensor.__rsub__,
              torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.__truediv__}


class RoundedBF16(TorchFunctionMode):
    """bfloat16 autocast's rounding on float32 kernels (a context manager around the forward pass).

    Inside it, the ops autocast would lower to bfloat16 get their floating-point arguments rounded
    to bfloat16 and return a rounded result; the value-changing ops that would then run on
    bfloat16 tensors return rounded results; every rounding also rounds the gradient that flows
    back through it, as bfloat16 backward kernels would. Parameters stay float32 (autocast casts
    copies), so the optimiser sees float32 weights holding bfloat16-rounded gradients, as it does
    under :func:`torch.autocast`.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _LOWERED:
            args = tuple(round_bf16(a) for a in args)
            kwargs = {k: round_bf16(v) for k, v in kwargs.items()}
            return round_bf16(func(*args, **kwargs))
        if func in _SAME_TYPE:
            return round_bf16(func(*args, **kwargs))
        return func(*args, **kwargs)


def bf16_kernels(setting: str = "auto", device: torch.device | str = "cpu", *, native: bool | None = None) -> str:
    """How ``train.amp: bf16`` runs here: ``"native"`` (torch.autocast) or ``"rounded"`` (:class:`RoundedBF16`).

    ``setting`` is ``train.bf16_kernels``: ``auto`` takes native kernels on a GPU and on a CPU
    that has them, rounding on float32 kernels elsewhere; ``native`` and ``rounded`` force one.
    ``native`` is whether this CPU has bfloat16 kernels (default: :func:`native_cpu_bf16`).
    """
    if setting not in ("auto", "native", "rounded"):
        raise ValueError(f"train.bf16_kernels must be auto, native or rounded, not {setting!r}")
    if setting != "auto":
        return setting
    if torch.device(device).type != "cpu":
        return "native"
    return "native" if (native_cpu_bf16() if native is None else native) else "rounded"


def autocast(device: torch.device, dtype: torch.dtype | None, *, kernels: str = "native"):
    """The forward pass's mixed-precision context: nothing for ``dtype=None``; :class:`RoundedBF16` for
    bfloat16 with ``kernels="rounded"``; :func:`torch.autocast` otherwise."""
    if dtype is None:
        return contextlib.nullcontext()
    if dtype == torch.bfloat16 and kernels == "rounded":
        return RoundedBF16()
    return torch.autocast(device.type, dtype=dtype)

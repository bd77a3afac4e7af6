"""How close bfloat16's rounding on float32 kernels (unet.training.bf16) comes to native bfloat16 autocast.

One training step's forward and backward of the `unet reproduce` CPU profile's network (U-Net width 16,
depth 4, valid convolutions, batch normalisation; drop-out off so that every variant sees the same
network) on one random tile, under: float32; native bfloat16 autocast (oneDNN) in NCHW and in
channels_last (other kernels and summation order: the yardstick of how far native bfloat16 is from
itself); and RoundedBF16 in both layouts. For each pair it prints the mean and largest absolute
difference of the logits and the relative difference of the convolution weights' gradients.

Usage:  python scripts/probe_bf16_rounding.py [--tile 188] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import platform

import torch

import unet
from unet.training.bf16 import autocast, native_cpu_bf16
from unet.training.loss import weighted_cross_entropy

KINDS = ("float32", "native", "native_cl", "rounded", "rounded_cl")
PAIRS = (("native_cl", "native"), ("rounded", "native"), ("rounded_cl", "native"), ("float32", "native"))


def step(kind: str, *, seed: int, tile: int):
    torch.manual_seed(seed)
    model = unet.create_model("unet", base_channels=16, depth=4, padding="valid", norm="batch", dropout=0.0)
    out = unet.output_size(model, tile)
    g = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn(1, 1, tile, tile, generator=g)
    y = torch.randint(0, 2, (1, out, out), generator=g)
    w = torch.rand(1, out, out, generator=g) + 0.5
    if kind.endswith("_cl"):
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = None if kind == "float32" else torch.bfloat16
    with autocast(torch.device("cpu"), dtype, kernels="rounded" if kind.startswith("rounded") else "native"):
        logits = model(x)
    weighted_cross_entropy(logits.float(), y, w).backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.dim() > 1])
    return logits.float().detach(), grads


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tile", type=int, default=188)
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args(argv)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"CPU {torch.backends.cpu.get_cpu_capability()}, bfloat16 kernels: {'yes' if native_cpu_bf16() else 'no'}")
    print("| pair | seed | mean abs logit diff | max abs logit diff | gradient rel. diff |")
    print("|---|---|---|---|---|")
    for seed in map(int, args.seeds.split(",")):
        res = {k: step(k, seed=seed, tile=args.tile) for k in KINDS}
        for a, b in PAIRS:
            d = (res[a][0] - res[b][0]).abs()
            rel = ((res[a][1] - res[b][1]).norm() / res[b][1].norm()).item()
            print(f"| {a} vs {b} | {seed} | {d.mean().item():.4f} | {d.max().item():.4f} | {rel:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

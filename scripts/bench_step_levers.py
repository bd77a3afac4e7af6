"""CPU step-time levers for the reproduction's training step (issue 11, item 4).

One training step of the `unet reproduce` CPU profile's network (U-Net width 16, depth 4, valid
convolutions, batch normalisation, drop-out 0.5; one 380 px tile -> 196 px output; weighted
cross-entropy; Adam), on a synthetic tile so that only the model's cost is measured, under each
lever: channels_last memory format, `torch.compile`, bfloat16 autocast (oneDNN's kernels, or
bfloat16's rounding on float32 kernels: unet.training.bf16), oneDNN (`torch.backends.mkldnn`) off, two
316 px tiles per batch, no normalisation layers, 1 or 2 intra-op threads, and two 1-thread
processes side by side (how two experiments share the 2 cores). Each variant runs in its own
process, so thread settings and compiled graphs do not leak between them. The median over the
steps after the first 3 is reported; the first step (compilation included) is listed apart.

Usage:  python scripts/bench_step_levers.py [--steps 20] [--variants base,cl,compile,...]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time

VARIANTS = {
    # name: (what it is, threads, processes side by side)
    "base": ("batch norm, 1 x 380 px, contiguous (NCHW)", 2, 1),
    "cl": ("channels_last", 2, 1),
    "compile": ("torch.compile (default mode)", 2, 1),
    "cl+compile": ("channels_last + torch.compile", 2, 1),
    "nomkldnn": ("oneDNN off (torch.backends.mkldnn.enabled = False)", 2, 1),
    "b2": ("2 x 316 px tiles per step (132 px output each)", 2, 1),
    "nonorm": ("no normalisation layers", 2, 1),
    "base@1": ("1 thread", 1, 1),
    "base@1x2": ("1 thread, two processes side by side", 1, 2),
    "cl@1x2": ("channels_last, 1 thread, two processes side by side", 1, 2),
    "compile@1x2": ("torch.compile, 1 thread, two processes side by side", 1, 2),
    "cl+bf16": ("channels_last + bfloat16 autocast (oneDNN bf16 kernels)", 2, 1),
    "cl@1": ("channels_last, 1 thread", 1, 1),
    "cl+bf16@1": ("channels_last + bfloat16 autocast, 1 thread", 1, 1),
    "cl+bf16@1x2": ("channels_last + bfloat16 autocast, 1 thread, two processes side by side", 1, 2),
    "cl+bf16r": ("channels_last + bfloat16's rounding on float32 kernels (unet.training.bf16)", 2, 1),
    "cl+bf16r@1": ("channels_last + bfloat16's rounding on float32 kernels, 1 thread", 1, 1),
    "cl+bf16r@1x2": ("channels_last + bfloat16's rounding on float32 kernels, 1 thread, two processes", 1, 2),
}


def one(variant: str, threads: int, steps: int) -> None:
    """Run the step ``steps + 3`` times in this process; print 'first median'."""
    import torch

    import unet
    from unet.training.loss import weighted_cross_entropy

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = unet.create_model("unet", base_channels=16, depth=4, padding="valid",
                              norm=None if variant == "nonorm" else "batch", dropout=0.5)
    batch, tile = (2, 316) if variant == "b2" else (1, 380)
    out = unet.output_size(model, tile)
    if variant == "nomkldnn":
        torch.backends.mkldnn.enabled = False
    x = torch.randn(batch, 1, tile, tile)
    y = torch.randint(0, 2, (batch, out, out))
    w = torch.rand(batch, out, out) + 0.5
    if "cl" in variant:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    run = torch.compile(model) if "compile" in variant else model
    model.train()
    times = []
    from unet.training.bf16 import autocast

    dtype = torch.bfloat16 if "bf16" in variant else None
    kernels = "rounded" if "bf16r" in variant else "native"
    for _ in range(steps + 3):
        t = time.perf_counter()
        with autocast(torch.device("cpu"), dtype, kernels=kernels):
            logits = run(x)
        loss = weighted_cross_entropy(logits.float(), y, w)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    # per output pixel, so that the 2 x 316 px batch compares with one 380 px tile
    print(times[0], statistics.median(times[3:]), batch * out * out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--_one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._one:
        one(args._one[0], int(args._one[1]), args.steps)
        return 0
    print(f"{platform.processor() or platform.machine()}, {platform.python_version()}; {args.steps} steps each\n")
    print("| lever | s/step (median) | first step | output px/s | vs base |")
    print("|---|---|---|---|---|")
    base_rate = None
    for name in args.variants.split(","):
        what, threads, procs = VARIANTS[name]
        variant = name.split("@")[0]
        cmd = [sys.executable, __file__, "--steps", str(args.steps), "--_one", variant, str(threads)]
        outs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(procs)]
        rows = [tuple(float(v) for v in p.communicate()[0].split()) for p in outs]
        first = max(r[0] for r in rows)
        step = statistics.mean(r[1] for r in rows)
        rate = procs * rows[0][2] / step  # output pixels per second over all processes
        base_rate = base_rate or rate
        print(f"| {what} | {step:.3f} | {first:.1f} s | {rate / 1e3:.0f} k | {rate / base_rate:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput: labelled output pixels/s, model FLOP/s, and the data pipeline's share of a step.

Trains for a few steps on real ISBI 2012 slices (../shared/data/isbi2012) through the same
TileDataset + DataLoader + loss + optimiser as `unet train`, for the paper's network (width 64,
572 -> 388 tiles) and a small one (width 16), and reports:

- step time, split into waiting for data (the DataLoader, with its worker processes) and the model
  (forward + loss + backward + SGD step),
- labelled output pixels per second,
- FLOP/s of the model (forward + backward FLOPs counted by torch.utils.flop_counter).

Target (issue 6): data pipeline <= 10 % of the step time on CPU.

Usage:  python scripts/bench_train.py [--steps 8] [--workers 1] [--threads 2] [--models paper,small]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import unet
from unet import data as D
from unet.training.loss import weighted_cross_entropy

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isbi2012"
MODELS = {"paper": dict(base_channels=64), "small": dict(base_channels=16)}


def bench(name, kwargs, samples, *, steps, workers, tile):
    torch.manual_seed(0)
    model = unet.create_model("unet", **kwargs)
    size = unet.nearest_valid_input_sizes(model, tile)[1]
    out = unet.output_size(model, size)
    ds = D.TileDataset(samples, input_size=size, output_size=out, augment=D.Augmentation(), length=steps + 2,
                       seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=workers,
                                         worker_init_fn=lambda _: torch.set_num_threads(1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.99)
    it = iter(loader)
    b = next(it)  # warm-up step (worker start, allocator)
    with FlopCounterMode(display=False) as fc:
        weighted_cross_entropy(model(b["image"]), b["target"], b["weight"]).backward()
    flops = fc.get_total_flops()
    opt.zero_grad()
    t_data = t_model = 0.0
    for _ in range(steps):
        t0 = time.perf_counter()
        b = next(it)
        t1 = time.perf_counter()
        loss = weighted_cross_entropy(model(b["image"]), b["target"], b["weight"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        t_data += t1 - t0
        t_model += time.perf_counter() - t1
    step = (t_data + t_model) / steps
    return {"model": name, "tile": f"{size}->{out}", "step_s": step, "data_pct": 100 * t_data / (t_data + t_model),
            "mpx_s": out * out / step / 1e6, "gflop_s": flops / step / 1e9, "gflop_step": flops / 1e9}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tile", type=int, default=572)
    ap.add_argument("--models", default="paper,small")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs = D.isbi2012_pairs(ROOT)[:5]
    samples = [D.load_sample(p) for p in pairs]
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'model':<6} {'tile':>9} {'s/step':>7} {'data %':>7} {'Mpx/s':>7} {'GFLOP/s':>8} {'GFLOP/step':>10}")
    for name in args.models.split(","):
        r = bench(name, MODELS[name], samples, steps=args.steps, workers=args.workers, tile=args.tile)
        print(f"{r['model']:<6} {r['tile']:>9} {r['step_s']:7.3f} {r['data_pct']:7.1f} {r['mpx_s']:7.3f} "
              f"{r['gflop_s']:8.1f} {r['gflop_step']:10.1f}")


if __name__ == "__main__":
    main()

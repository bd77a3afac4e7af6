#!/usr/bin/env python
"""Benchmark of the data pipeline (issue 3, item 7).  Not a test: prints a Markdown table.

Measures, pinned to one CPU core with one thread, the median CPU time of the
process per call (not inflated when other jobs share the core) and the
wall-clock median and 90th percentile:

* ms per 572x572 training sample (388x388 target and weight crop) of the full
  pipeline: elastic deformation + flips/turns/rotation + gray values + weight-map
  crop (``TileDataset.sample`` with the paper's augmentation, DIC-HeLa frames);
* the same through ``TileDataset.__getitem__`` (adds the torch tensors);
* elasticdeform alone on a 572x572 image + label tile (the reference implementation);
* the weight map (paper eq. 2) per 512x512 DIC-HeLa and ISBI 2012 frame.

Targets (issue 3): full sample <= 20 ms, weight map <= 50 ms per 512x512 frame.

    python scripts/bench_data.py [--data ../shared/data] [--samples 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _times(fn, n, warmup=3):
    """Wall-clock and CPU (process) milliseconds per call; CPU time is robust to other jobs on the core."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        fn()
        cpu.append((time.process_time() - c) * 1000)
        wall.append((time.perf_counter() - t) * 1000)
    return wall, cpu


def _row(name, times, target=""):
    wall, cpu = (sorted(x) for x in times)
    p90 = wall[int(0.9 * (len(wall) - 1))]
    return (f"| {name} | {statistics.median(cpu):.1f} | {statistics.median(wall):.1f} | {p90:.1f} | {len(wall)} "
            f"| {target} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="folder with isbi2012/ and dic-hela/")
    ap.add_argument("--samples", type=int, default=200, help="training samples to time (default 200)")
    ap.add_argument("--reference", type=int, default=10, help="elasticdeform runs to time (default 10)")
    args = ap.parse_args(argv)

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import elasticdeform

    from unet.data import Augmentation, TileDataset, ctc_pairs, isbi2012_pairs, load_sample, weight_map
    from unet.data.elastic import random_displacement

    data = Path(args.data)
    hela = [load_sample(p) for p in ctc_pairs(data / "dic-hela")]
    isbi = [load_sample(p) for p in isbi2012_pairs(data / "isbi2012")[:10]]

    rows = []
    ds = TileDataset(hela, input_size=572, output_size=388, augment=Augmentation(), length=10**6, seed=0)
    it = iter(range(10**6))
    rows.append(_row("full sample 572->388 (elastic + flips/turns/rotation + gray values + weight crop), NumPy",
                     _times(lambda: ds.sample(next(it)), args.samples), "<= 20"))
    rows.append(_row("same through `TileDataset[i]` (torch tensors)", _times(lambda: ds[next(it)], args.samples),
                     "<= 20"))
    val = TileDataset(hela, input_size=572, output_size=388, augment=Augmentation.none(), length=10**6, seed=0)
    rows.append(_row("validation sample (no augmentation: mirrored crop)", _times(lambda: val[next(it)], args.samples)))

    rng = np.random.default_rng(0)
    img = np.pad(hela[0].image[0], 30, mode="symmetric")
    lab = np.pad(hela[0].labels, 30, mode="symmetric").astype(np.int32)
    rows.append(_row("elasticdeform.deform_grid alone, 572x572 image (cubic) + labels (nearest)",
                     _times(lambda: elasticdeform.deform_grid([img, lab], random_displacement(rng), order=[3, 0],
                                                              mode="reflect"), args.reference, warmup=1), "(~150)"))

    rows.append(_row("weight map (eq. 2), DIC-HeLa 512x512 frame, 3-14 cells",
                     _times(lambda s=iter(hela * 100): weight_map(next(s).labels), len(hela) * 2), "<= 50"))
    rows.append(_row("weight map (eq. 2), ISBI 2012 512x512 slice, ~130 cells",
                     _times(lambda s=iter(isbi * 100): weight_map(next(s).labels), len(isbi) * 2), ""))

    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, pinned to 1 core, "
          f"torch threads 1; Python {sys.version.split()[0]}, NumPy {np.__version__}, torch {torch.__version__}")
    print()
    print("| what | median CPU ms | median wall ms | p90 wall ms | runs | target ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())

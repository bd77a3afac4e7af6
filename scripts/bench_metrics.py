"""Benchmark the evaluation metrics: seconds per 512x512 slice and peak memory.

Inputs: the golden-vector cases r01 (real ISBI 2012 label + blurred noisy
proposal) and r02 (same label with membrane gaps and spurious membranes) from
``../shared/oracle/isbi``; without them, ISBI train label 0 and its blurred
version from ``../shared/data``.  Each metric runs its full official threshold
sweep.  Peak memory is the largest NumPy/Python allocation seen by
``tracemalloc`` during one ``isbi_errors`` call, for images of growing size
(tiled copies of the 512x512 case) to show that it grows linearly.

Usage::

    python scripts/bench_metrics.py [--repeats 3]

The official Java implementation takes about 55-100 s per 512x512 slice for the
warping error alone (shared/oracle/README.md).
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def load_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    oracle = SHARED / "oracle" / "isbi"
    cases = {}
    for name in ("r01_isbi_train0_blur", "r02_isbi_train0_gaps_lines"):
        path = oracle / f"{name}.npz"
        if path.is_file():
            with np.load(path) as z:
                cases[name] = (z["labels"], z["proposal"])
    if not cases:
        from scipy import ndimage

        from unet.io import read_image

        labels = read_image(SHARED / "data" / "isbi2012" / "train" / "labels" / "0.png")
        rng = np.random.default_rng(0)
        prop = ndimage.gaussian_filter(labels / 255.0, 1.5) + rng.normal(0, 0.1, labels.shape)
        cases["isbi_train0_blur"] = (labels, np.clip(prop, 0, 1).astype(np.float32))
    return cases


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_bytes(fn) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per metric (median reported)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    import unet.metrics as M

    labels0, prop0 = next(iter(load_cases().values()))
    M.isbi_errors(labels0[:64, :64], prop0[:64, :64])  # numba compile or cache load
    print(f"import + first call (JIT compile / cache load): {time.perf_counter() - t0:.2f} s")

    print(f"\n{'case':<28} {'pixel':>7} {'rand':>7} {'warping':>8} {'all 3':>7}   (s per 512x512 slice, median of {args.repeats})")
    for name, (labels, prop) in load_cases().items():
        slices = labels.size / (512 * 512)
        row = [timed(lambda f=f: f(labels, prop), args.repeats) / slices
               for f in (M.pixel_error, M.rand_error, M.warping_error, M.isbi_errors)]
        print(f"{name:<28} {row[0]:7.3f} {row[1]:7.3f} {row[2]:8.3f} {row[3]:7.3f}")

    print("\npeak traced memory of isbi_errors (tiles of the first case):")
    for reps in (1, 2, 4):
        labels, prop = np.tile(labels0, (reps, 1)), np.tile(prop0, (reps, 1))
        peak = peak_bytes(lambda: M.isbi_errors(labels, prop))
        print(f"  {labels.shape[0]}x{labels.shape[1]} ({labels.size / 1e6:.2f} Mpx): {peak / 2**20:7.1f} MiB"
              f" = {peak / labels.size:5.1f} bytes/pixel")
    stack = np.stack([labels0] * 3), np.stack([prop0] * 3)
    t = timed(lambda: M.isbi_errors(*stack), 1)
    print(f"\n3-slice stack, isbi_errors: {t:.2f} s ({t / 3:.3f} s per slice)")


if __name__ == "__main__":
    main()

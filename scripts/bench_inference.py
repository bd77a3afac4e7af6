#!/usr/bin/env python
"""Benchmark of overlap-tile inference: throughput (Mpx/s) and peak RSS.

Compares, on one machine in one run (each measurement in a fresh subprocess so
that its peak RSS is its own):

* ``tiled``  - :func:`unet.predict_tiled` (valid U-Net, tile size from the memory budget)
* ``whole``  - one forward pass over the whole mirror-padded image (where it fits)
* ``monai``  - MONAI's ``sliding_window_inference`` (roi 512, overlap 0.25, its
  defaults otherwise) with a same-padded U-Net of equal width and depth
* ``file``   - ``unet.inference.predict_file``: uint8 TIFF -> float32 probability
  TIFF, out of core (the peak-RSS target: <= 1.5 GB for 16384 x 16384)

and, for the small net on 2048 x 2048, the agreement with a whole-image pass:
tiled valid net vs whole pass (should be ~1e-6), and MONAI's sliding window /
our blended tiles of the same-padded net vs its whole pass.

Networks (random He initialisation, seed 0): ``paper`` (64 channels, depth 4,
31 M parameters) and ``small`` (8 channels, depth 3).

Usage::

    python scripts/bench_inference.py                     # everything below
    python scripts/bench_inference.py --quick             # 512 and 1024 px only, small net
    python scripts/bench_inference.py --large-monai       # also MONAI on 16384 x 16384

Needs ``monai`` (``pip install monai``) for the MONAI rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NETS = {"paper": dict(base_channels=64, depth=4), "small": dict(base_channels=8, depth=3)}


def synthetic(size: int, seed: int = 0):
    """A cell-like grey-value pattern (blobs and ridges), uint8, computed band by band."""
    import numpy as np

    rng = np.random.default_rng(seed)
    fy, fx, ph = rng.uniform(0.01, 0.08, 6), rng.uniform(0.01, 0.08, 6), rng.uniform(0, 6.28, 6)
    out = np.empty((size, size), np.uint8)
    x = np.arange(size, dtype=np.float32)
    for y0 in range(0, size, 1024):
        y = np.arange(y0, min(size, y0 + 1024), dtype=np.float32)[:, None]
        v = sum(np.sin(fy[i] * y + fx[i] * x + ph[i]) for i in range(6))
        out[y0 : y0 + len(y)] = np.clip(127 + 20 * v, 0, 255).astype(np.uint8)
    return out


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(spec: dict) -> dict:
    """Run one measurement in this process; return its figures."""
    import numpy as np
    import torch

    import unet
    from unet.data.normalize import intensity_range, normalize
    from unet.inference.tiling import MIRROR_MODE

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    padding = "same" if spec["method"] in ("monai", "whole_same", "tiled_same") else "valid"
    model = unet.create_model("unet", padding=padding, **NETS[spec["net"]]).eval()
    size = spec["size"]
    res = {}
    with torch.inference_mode():  # warm-up: the first call of each conv shape is slower
        s0 = unet.models.geometry.input_size_for_output(model, 64)
        model(torch.zeros(1, 1, s0, s0))
    if spec["method"] == "file":
        from unet.inference import predict_file

        out = Path(spec["out"])
        t = time.perf_counter()
        predict_file(model, spec["input"], out, memory_limit=spec.get("memory_limit"), overwrite=True)
        res["seconds"] = time.perf_counter() - t
        out.unlink()
    else:
        raw = synthetic(size)
        img = normalize(raw, value_range=intensity_range(raw))
        del raw
        t = time.perf_counter()
        if spec["method"] in ("tiled", "tiled_same"):
            p = unet.predict_tiled(model, img, memory_limit=spec.get("memory_limit"))
        elif spec["method"] in ("whole", "whole_same"):
            with torch.inference_mode():
                h = unet.halo(model)
                s = unet.models.geometry.input_size_for_output(model, size)
                x = np.pad(img, ((h, s - size - h),) * 2, mode=MIRROR_MODE) if padding == "valid" else img
                p = torch.softmax(model(torch.from_numpy(np.ascontiguousarray(x))[None, None]), 1)[0, :, :size, :size].numpy()
        elif spec["method"] == "monai":
            from monai.inferers import sliding_window_inference

            with torch.inference_mode():
                logits = sliding_window_inference(torch.from_numpy(img)[None, None], roi_size=(512, 512),
                                                  sw_batch_size=1, predictor=model, overlap=0.25)
                p = torch.softmax(logits, 1)[0].numpy()
        res["seconds"] = time.perf_counter() - t
        if spec.get("save"):
            np.save(spec["save"], p[1].astype(np.float32))
    res["mpx_s"] = size * size / 1e6 / res["seconds"]
    res["peak_rss_mb"] = _peak_rss_mb()
    return res


def run_sub(spec: dict, log) -> dict:
    cmd = [sys.executable, __file__, "--measure", json.dumps(spec)]
    t = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        res = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    else:
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update(spec)
    res["wall"] = time.time() - t
    print(json.dumps(res), file=log, flush=True)
    return res


def write_tiff(path: Path, size: int) -> None:
    """uint8 test image as a tiled, zlib-compressed BigTIFF, written band by band."""
    import numpy as np
    import tifffile

    img = synthetic(size)
    tile = 512

    def tiles():
        for y in range(0, size, tile):
            for x in range(0, size, tile):
                t = np.zeros((tile, tile), np.uint8)
                b = img[y : y + tile, x : x + tile]
                t[: b.shape[0], : b.shape[1]] = b
                yield t

    tifffile.imwrite(path, tiles(), shape=(size, size), dtype=np.uint8, tile=(tile, tile), compression="zlib",
                     bigtiff=True, photometric="minisblack")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="small sizes, small net (a smoke run)")
    ap.add_argument("--large-monai", action="store_true", help="also MONAI on the 16384 image (slow, needs RAM)")
    ap.add_argument("--file-memory-limit", default="512M", help="--memory-limit of the out-of-core run (default 512M)")
    ap.add_argument("--memory-limits", default="1G,4G",
                    help="memory budgets of the 2048 px tiled runs, comma separated (default 1G,4G)")
    ap.add_argument("--nets", default="small,paper", help="networks to run (default small,paper)")
    ap.add_argument("--methods", default="tiled,whole,monai,whole_same,tiled_same",
                    help="2048 px methods to run (default: all)")
    ap.add_argument("--skip-large", action="store_true", help="skip the 16384 px out-of-core run")
    ap.add_argument("--log", default=None, help="JSON lines log (default: stdout)")
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return 0

    import numpy as np

    log = open(args.log, "a") if args.log else sys.stdout
    big, mid = (1024, 512) if args.quick else (16384, 2048)
    try:
        import monai  # noqa: F401

        have_monai = True
    except ImportError:
        have_monai = False
    tmp = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    rows = []
    nets = ["small"] if args.quick else args.nets.split(",")
    methods = args.methods.split(",")
    limits = args.memory_limits.split(",")
    for net in nets:
        saves = {}
        for method in ["tiled", "whole"] + (["monai"] if have_monai else []) + \
                (["whole_same", "tiled_same"] if net == "small" else []):
            if method not in methods:
                continue
            for limit in (limits if method == "tiled" else [None]):
                spec = {"net": net, "size": mid, "method": method, "memory_limit": limit}
                if net == "small" and limit in (None, limits[0]):
                    spec["save"] = saves[method] = str(tmp / f"{net}_{method}.npy")
                rows.append(run_sub(spec, log))
        if net == "small" and {"tiled", "whole", "whole_same", "tiled_same"} <= set(saves):
            ref, ref_same = np.load(saves["whole"]), np.load(saves["whole_same"])
            inner = (slice(256, -256),) * 2  # away from the image border (mirror vs zero padding)
            acc = {"tiled_vs_whole": float(np.abs(np.load(saves["tiled"]) - ref).max())}
            for name in ("tiled_same", "monai"):
                if name in saves:
                    d = np.abs(np.load(saves[name]) - ref_same)
                    acc[f"{name}_vs_whole_same"] = float(d.max())
                    acc[f"{name}_vs_whole_same_interior"] = float(d[inner].max())
            print(json.dumps({"accuracy_small_%d" % mid: acc}), file=log, flush=True)
    if not args.skip_large:
        src = tmp / f"in_{big}.tif"
        write_tiff(src, big)
        rows.append(run_sub({"net": "small", "size": big, "method": "file", "input": str(src),
                             "out": str(tmp / "out.tif"), "memory_limit": args.file_memory_limit}, log))
        if args.large_monai and have_monai:
            rows.append(run_sub({"net": "small", "size": big, "method": "monai"}, log))
        src.unlink()
    print(json.dumps({"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                                 f"python {platform.python_version()}"}), file=log, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

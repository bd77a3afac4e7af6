"""Is every committed checkpoint seamless?  Probabilities for several tile sizes on a real 512x512 image.

For each checkpoint under ``results/`` (or the ones given) this predicts one
real image with output tiles of {smallest valid, about 128 px, the whole
image} (``unet.inference.consistency_tile_sizes``) and prints the largest
probability difference from the first tile size and the share of pixels whose
class changes, beside ``unet.tile_dependence``'s verdict.  A seamless U-Net
stays below 1e-4 (issue 11).  Exit status 1 if a U-Net checkpoint does not.

    python scripts/check_seamless.py                       # every results/**/checkpoints/*.pt
    python scripts/check_seamless.py results/isbi2012/checkpoints/unet-fold1.pt --crop 256

The smallest tile makes ~1000 tiles of a 512x512 image: minutes per checkpoint
on 2 CPU cores; ``--crop`` predicts the central part only.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO / "unet" / "sample_data" / "isbi2012" / "train" / "images" / "5.png"
TOLERANCE = 1e-4


def check(path, image: np.ndarray, *, tile_sizes=None, batch_size: int = 8) -> dict:
    """One checkpoint: its verdict, and the differences of each tile size from the first."""
    import unet
    from unet.data.normalize import DEFAULT_NORMALIZE
    from unet.inference import TileDependenceWarning, consistency_tile_sizes, predict_tiled

    model, meta = unet.load_checkpoint(path, with_metadata=True)
    settings = meta.get("normalize") or DEFAULT_NORMALIZE
    sizes = list(tile_sizes) if tile_sizes else consistency_tile_sizes(model, image.shape)
    probs = []
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TileDependenceWarning)
        for t in sizes:
            probs.append(predict_tiled(model, image, tile_size=max(image.shape) if t is None else t,
                                       batch_size=batch_size, normalize=settings))
    ref = probs[0]
    rows = [{"tile": "whole" if t is None else t, "max_abs_diff": float(np.abs(p - ref).max()),
             "class_changed": float(np.mean(p.argmax(0) != ref.argmax(0)))} for t, p in zip(sizes[1:], probs[1:])]
    return {"checkpoint": str(path), "model": model.model_name, "tile_dependence": unet.tile_dependence(model),
            "reference_tile": "whole" if sizes[0] is None else sizes[0], "rows": rows,
            "max_abs_diff": max(r["max_abs_diff"] for r in rows), "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="*", help="default: every results/**/checkpoints/*.pt")
    p.add_argument("--image", default=str(DEFAULT_IMAGE), help="a real grey image (default: ISBI 2012 slice 5)")
    p.add_argument("--crop", type=int, default=None, help="predict only the central CROP x CROP pixels")
    p.add_argument("--tiles", default=None, help="comma-separated output tile sizes, 'whole' for one tile "
                                                 "(default: smallest valid, ~128, whole)")
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args(argv)

    import torch

    from unet.io import read_image

    torch.set_num_threads(max(1, torch.get_num_threads()))
    paths = [Path(c) for c in args.checkpoints] or sorted((REPO / "results").glob("**/checkpoints/*.pt"))
    image = np.asarray(read_image(args.image), np.float32)
    if image.ndim == 3:
        image = image[..., 0]
    if args.crop:
        y0, x0 = (max(0, (s - args.crop) // 2) for s in image.shape)
        image = image[y0 : y0 + args.crop, x0 : x0 + args.crop]
    tiles = None
    if args.tiles:
        tiles = [None if t.strip() == "whole" else int(t) for t in args.tiles.split(",")]
    print(f"image {args.image} ({image.shape[0]}x{image.shape[1]}); tolerance {TOLERANCE:g}\n")
    print("| checkpoint | model | seamless (unet.tile_dependence) | reference tile | tile: max abs diff, "
          "pixels changing class | verdict |")
    print("|---|---|---|---|---|---|")
    failed = 0
    for path in paths:
        r = check(path, image, tile_sizes=tiles, batch_size=args.batch_size)
        ok = r["max_abs_diff"] <= TOLERANCE
        if r["model"] == "unet" and not ok:
            failed += 1
        cells = "; ".join(f"{row['tile']}: {row['max_abs_diff']:.2g}, {100 * row['class_changed']:.1f} %"
                          for row in r["rows"])
        name = str(Path(r["checkpoint"]).resolve().relative_to(REPO)) if Path(r["checkpoint"]).resolve().is_relative_to(REPO) else r["checkpoint"]
        verdict = "seamless" if ok else ("approximate (same padding)" if r["model"] != "unet" else "NOT seamless")
        print(f"| {name} | {r['model']} | {'yes' if r['tile_dependence'] is None else 'no: ' + r['tile_dependence']} "
              f"| {r['reference_tile']} | {cells} | {verdict} |", flush=True)
    print(f"\n{failed} U-Net checkpoint(s) not seamless" if failed else "\nevery U-Net checkpoint is seamless")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

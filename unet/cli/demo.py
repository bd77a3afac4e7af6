"""``unet demo``: the main job on the built-in sample, end to end, in a few minutes on a CPU.

Trains a small U-Net (configs/demo.yaml) on 8 ISBI 2012 slices shipped in
``unet/sample_data``, predicts the 2 held-out slices with overlap-tile
inference from the saved checkpoint (the same path as ``unet predict``),
evaluates them with the challenge's pixel, Rand and warping errors and IoU, and
writes overlay PNGs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from unet.cli.train import CONFIG_DIR, add_run_options, overrides_from
from unet.errors import UserError


def register(sub):
    p = sub.add_parser("demo", help="train, predict and evaluate on the built-in ISBI 2012 sample (a few minutes)")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo run in --out")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo run in --out")
    add_run_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    # imported here: `unet --help` imports every CLI module and must not load torch, scipy or numpy
    from unet.io import write_text_atomic
    from unet.training.config import load_config
    from unet.training.trainer import Trainer

    out = Path(args.out)
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    if (out / "metrics.json").exists() and not args.overwrite:
        raise UserError(f"{out}: holds a finished demo run; pass --overwrite to run it again, or --out elsewhere")
    t0 = time.time()
    cfg = load_config(CONFIG_DIR / "demo.yaml", overrides=overrides_from(args))
    arch = (f"U-Net (width {cfg.model.unet.base_channels}, depth {cfg.model.unet.depth})" if cfg.model.name == "unet"
            else f"{cfg.model.name.upper()} (width {cfg.model.fcn.base_channels})")
    print(f"[1/3] training a {arch} for {cfg.train.steps} steps on ISBI 2012 slices {cfg.data.train} -> {out}")
    trainer = Trainer(cfg, out, resume=args.resume, overwrite=args.overwrite, quiet=args.quiet)
    trainer.fit()
    t_train = time.time() - t0

    print(f"[2/3] overlap-tile prediction of the held-out slices from {out / 'last.pt'}")
    pred_dir = out / "predictions"
    names, probs, labels = _predict_held_out(trainer, out / "last.pt", pred_dir)
    print("[3/3] evaluation (ISBI 2012 challenge measures; lower is better, IoU higher is better)")
    rows = _scores(names, probs, labels)
    print(f"{'slice':<12} {'pixel':>8} {'Rand':>8} {'warping':>9} {'IoU':>7}")
    for n, r in rows.items():
        print(f"{n:<12} {r['pixel_error']:8.4f} {r['rand_error']:8.4f} {r['warping_error']:9.6f} {r['iou']:7.4f}")
    print("paper (U-Net, ISBI test set, full-size network and schedule): pixel 0.0611, Rand 0.0382, warping 0.000353")
    summary = {"per_slice": rows, "train_seconds": round(t_train, 1), "total_seconds": round(time.time() - t0, 1),
               "config": str(out / "config.yaml"), "checkpoint": str(out / "last.pt")}
    write_text_atomic(out / "metrics.json", json.dumps(summary, indent=2), overwrite=True)
    print(f"wrote {out / 'metrics.json'}, {pred_dir}/*.tif, {out / 'overlays'}/*.png, {out / 'curves.png'} "
          f"in {summary['total_seconds']:.0f} s")
    return 0


def _predict_held_out(trainer, checkpoint: Path, pred_dir: Path):
    """Predict each validation slice from ``checkpoint`` as ``unet predict`` would; names, probabilities, masks."""
    import numpy as np  # lazy: see run()

    from unet.inference import predict_file
    from unet.io import read_image

    names, probs, labels = [], [], []
    for s in trainer.val_samples:
        name = str(s.name).replace("/", "_")
        target = pred_dir / f"{name}.tif"
        predict_file(checkpoint, _pair_of(trainer, s.name).image, target, output="prob", overwrite=True)
        names.append(name)
        probs.append(np.asarray(read_image(target), dtype=np.float64))
        labels.append(((s.labels > 0) * 255).astype(np.uint8))
    return names, probs, labels


def _scores(names, probs, labels) -> dict:
    """The ISBI errors and IoU of each slice and of the stack of all of them."""
    import numpy as np  # lazy: see run()

    from unet import metrics as M

    rows = {}
    for n, p, g in zip(names, probs, labels):
        r = M.isbi_errors(g, p)
        rows[n] = {"pixel_error": r["pixel_error"], "rand_error": r["rand_error"],
                   "warping_error": r["warping_error"], "iou": float(M.iou(g > 0, p > 0.5))}
    stack = M.isbi_errors(np.stack(labels), np.stack(probs))
    rows["all (stack)"] = {"pixel_error": stack["pixel_error"], "rand_error": stack["rand_error"],
                           "warping_error": stack["warping_error"],
                           "iou": float(M.iou(np.stack(labels) > 0, np.stack(probs) > 0.5))}
    return rows


def _pair_of(trainer, name):
    from unet.data import dataset_pairs  # lazy: see run()
    from unet.data.selection import resolve_path

    cfg = trainer.cfg
    for p in dataset_pairs(cfg.data.dataset, resolve_path(cfg, cfg.data.root)):
        if p.name == name:
            return p
    raise KeyError(name)

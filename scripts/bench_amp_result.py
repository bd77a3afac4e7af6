"""Does bfloat16 autocast (``train.amp: bf16``) train as well as float32, at what step time? (issue 11, item 4)

A speed lever is adopted only "at equal result". This trains the CPU profile's U-Net recipe
(``selection.default`` of the experiment's nested selection) exactly as one search candidate is
trained, on each fold's search split (its training images minus the validation images that nested
selection carves), in float32 and in bfloat16, and scores the validation images (plain
prediction, which always runs in float32). Float32 with another seed measures how far a result
moves by chance, the yardstick for the bfloat16 difference. Held-out images are not read.

A variant may also name its own number of steps (``bf16:0:3000``): the faster step buys more steps
in the same time, and the validation images tell whether they help (the steps are chosen there too).

Each (variant, fold) is one training folder under ``--runs-dir``; finished ones are reused, so two
invocations with different ``--variants`` can share the 2 cores and a table of everything finished
is printed at the end of each.

Usage:  python scripts/bench_amp_result.py isbi2012 --variants fp32:0,bf16:0,fp32:1,bf16:0:3000
            [--folds 1,2,3] [--steps 1000] [--runs-dir runs/bench_amp] [--set train.threads=1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
from pathlib import Path

from unet.reproduce.experiment import load_experiment
from unet.reproduce.folds import carve_validation, resolve_folds, select_folds
from unet.reproduce.runner import _pairs, build_config, run_fold

AMP = {"fp32": "none", "bf16": "bf16"}


def _measures(kind: str) -> tuple[str, ...]:
    return ("rand_error", "warping_error", "pixel_error") if kind == "isbi" else ("seg",)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment")
    ap.add_argument("--variants", default="fp32:0,bf16:0,fp32:1", help="PRECISION:SEED[:STEPS], comma-separated")
    ap.add_argument("--folds", default=None, help="1-based indices or names (default: all)")
    ap.add_argument("--steps", type=int, default=None, help="default: the selection's search steps")
    ap.add_argument("--runs-dir", default="runs/bench_amp")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="runtime overrides only, e.g. train.threads=1")
    args = ap.parse_args(argv)

    exp = load_experiment(args.experiment)
    sel = exp.selection("cpu")
    if not sel:
        sys.exit(f"{exp.path}: profiles.cpu has no selection (nothing defines the search split)")
    run = exp.run(sel["runs"][0])
    default = next(c for c in sel["candidates"] if c["name"] == sel.get("default", sel["candidates"][0]["name"]))
    steps = args.steps or int(sel["steps"])
    # scored like a search candidate, on every measure of the kind: plain maps, no post-processing
    ev_exp = dataclasses.replace(exp, evaluation=dict(exp.evaluation, tta=[False], membrane_watershed=False))
    base = build_config(exp, run, profile="cpu", overrides=args.set)
    pairs = list(_pairs(base))
    by_name = {p.name: p for p in pairs}
    folds = select_folds(resolve_folds(exp.folds, pairs), args.folds)
    variants = [v.split(":") for v in args.variants.split(",")]
    root = Path(args.runs_dir) / exp.name
    for precision, seed, *own in variants:
        n = int(own[0]) if own else steps
        for fold in folds:
            search = carve_validation(fold, int(sel["validation"]), pick=sel.get("pick", "last"))
            extra = dict(default.get("set") or {}, **{"train.steps": n, "train.amp": AMP[precision],
                                                      "seed": int(seed)})
            cfg = build_config(exp, run, profile="cpu", overrides=args.set, fold=search, extra_set=extra)
            print(f"{precision} seed {seed}, {n} steps / {fold.name}: {search.description}", flush=True)
            run_fold(ev_exp, cfg, search, [by_name[k] for k in search.test],
                     root / f"{precision}-s{seed}-{n}steps" / fold.name, resume=True, quiet=True,
                     train_pairs=[by_name[k] for k in search.train])

    measures = _measures(exp.evaluation["kind"])
    print(f"\n{exp.name}: recipe {default['name']!r}, validation images of nested selection; "
          f"{platform.machine()}, {platform.python_version()}\n")
    print("| precision, seed, steps | fold | " + " | ".join(measures) + " | s/step |")
    print("|---|---|" + "---|" * (len(measures) + 1))
    by_variant: dict[str, list[dict]] = {}
    for result in sorted(root.glob("*/*/result.json")):
        r = json.loads(result.read_text())
        m = r["metrics"]["plain"]
        by_variant.setdefault(result.parent.parent.name, []).append(r)
        print(f"| {result.parent.parent.name} | {r['fold']} | " + " | ".join(f"{m[k]:.4g}" for k in measures)
              + f" | {r['train_seconds'] / r['steps']:.3f} |")
    for name, rs in by_variant.items():
        mean = {k: statistics.mean(r["metrics"]["plain"][k] for r in rs) for k in measures}
        print(f"| {name} | mean of {len(rs)} | " + " | ".join(f"{mean[k]:.4g}" for k in measures)
              + f" | {statistics.mean(r['train_seconds'] / r['steps'] for r in rs):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

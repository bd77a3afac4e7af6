"""Step time of the `unet reproduce` CPU profile, and the 2-hour budget it implies (issue 7).

For each run of an experiment (configs/reproduce/NAME.yaml, profile cpu) this trains the fold-1
config through the real Trainer (TileDataset, DataLoader worker, loss, optimiser, checkpoints) for a
few dozen steps. The time of each step is taken between consecutive calls of the loss function (a
timing hook around the trainer's `get_loss`; it covers waiting for data, forward, backward and the
optimiser step); the median over the steps after the first `--warm` is the step time, robust to the
other jobs on a shared machine. The start-up (data loading, class weights, worker start) is the time
until the first step. Then it predicts fold 1's held-out images from the run's checkpoint exactly as
the experiment does (overlap-tile, with and without TTA as configured) and scores them.

From these it prints the wall time of the whole experiment at the profile's step count and the
largest step count that fits the budget (default 2 h, minus a 10 % margin).

Usage:  python scripts/bench_reproduce.py isbi2012 [--steps 30] [--warm 5] [--budget-hours 2]
Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warm", type=int, default=5)
    ap.add_argument("--budget-hours", type=float, default=2.0)
    ap.add_argument("--runs", default=None, help="only these runs (comma-separated)")
    ap.add_argument("--no-eval", action="store_true")
    args = ap.parse_args(argv)

    from unet.reproduce import load_experiment, resolve_folds
    from unet.reproduce.evaluate import evaluate_fold
    from unet.reproduce.runner import _pairs, build_config
    import statistics

    import unet.training.trainer as trainer_module
    from unet.training.trainer import Trainer

    stamps: list = []
    real_get_loss = trainer_module.get_loss

    def timed_get_loss(name):
        fn = real_get_loss(name)

        def loss(*a, **kw):
            stamps.append(time.perf_counter())
            return fn(*a, **kw)

        return loss

    trainer_module.get_loss = timed_get_loss

    exp = load_experiment(args.experiment)
    runs = [exp.run(r) for r in args.runs.split(",")] if args.runs else exp.runs
    cfg0 = build_config(exp, runs[0], profile=args.profile)
    pairs = _pairs(cfg0)
    folds = resolve_folds(exp.folds, pairs)
    fold = folds[0]
    by_name = {p.name: p for p in pairs}
    print(f"# {exp.name}, profile {args.profile}: {len(runs)} runs x {len(folds)} folds; "
          f"fold 1 trains on {len(fold.train)} images, tests {len(fold.test)}")
    print(f"# machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_reproduce_"))
    try:
        for run in runs:
            n = args.steps
            cfg = build_config(exp, run, profile=args.profile, fold=fold,
                               overrides=[f"train.steps={n}", f"train.checkpoint_every={n}", f"train.log_every={n}"])
            stamps.clear()
            t0 = time.perf_counter()
            Trainer(cfg, tmp / run.name / str(n), quiet=True).fit()
            gaps = [b - a for a, b in zip(stamps, stamps[1:])][args.warm:]
            per_step = statistics.median(gaps)
            startup = stamps[0] - t0
            t_eval = 0.0
            if not args.no_eval:
                t0 = time.perf_counter()
                evaluate_fold(tmp / run.name / str(args.steps) / "last.pt", [by_name[n] for n in fold.test],
                              tmp / run.name / "eval", kind=exp.evaluation["kind"], variants=exp.variants,
                              tile_size=cfg.eval.tile_size, min_size=cfg.eval.min_size)
                t_eval = time.perf_counter() - t0
            full = build_config(exp, run, profile=args.profile, fold=fold)
            rows.append((run.name, full, per_step, startup, t_eval))
            q = statistics.quantiles(gaps, n=4)
            print(f"{run.name:<10} input tile {full.train.tile_size}: {per_step:.3f} s/step (quartiles {q[0]:.3f}-{q[2]:.3f}, "
                  f"{len(gaps)} steps), start-up {startup:.1f} s, "
                  f"evaluation of one fold ({'+'.join(exp.variants)}) {t_eval:.1f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    k = len(folds)
    fixed = sum(k * (startup + t_eval) for _, _, _, startup, t_eval in rows)
    per_step_all = sum(k * per_step for _, _, per_step, _, _ in rows)
    steps_cfg = rows[0][1].train.steps
    total = fixed + per_step_all * steps_cfg
    budget = args.budget_hours * 3600 * 0.9
    print(f"\nwhole experiment at {steps_cfg} steps per training: {total / 60:.0f} min "
          f"({k} folds x {len(rows)} runs; fixed {fixed / 60:.1f} min + training {per_step_all * steps_cfg / 60:.0f} min)")
    print(f"largest step count within {args.budget_hours:g} h minus 10 %: {int((budget - fixed) / per_step_all)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``unet reproduce``: re-run a table of the paper (configs/reproduce/) and write its report."""

from __future__ import annotations

import shlex

from unet.errors import UserError


def register(sub):
    p = sub.add_parser(
        "reproduce", help="reproduce a table of the paper (ISBI 2012, DIC-HeLa, PhC-U373) and write a report",
        description="Train every run of an experiment (configs/reproduce/NAME.yaml) on every fold, predict the "
                    "held-out images once from the final checkpoint with overlap-tile inference, evaluate them "
                    "with the challenge's measures and write OUT/report.md + OUT/report.json (the paper's "
                    "numbers beside ours, targets met or missed, command, git commit, machine, wall time, seeds) "
                    "and the final weights OUT/checkpoints/*.pt. Training folders go to runs/reproduce/.")
    p.add_argument("experiment", nargs="?", help="experiment name (see --list) or YAML file")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--profile", default="cpu",
                   help="cpu: small network sized for 2 h on a 2-core CPU (default); paper: the paper-size "
                        "network and schedule (GPU); or another profile of the experiment file (--list shows them)")
    p.add_argument("--out", default=None,
                   help="report folder (default results/NAME, or results/NAME-PROFILE for another profile)")
    p.add_argument("--runs-dir", default=None, help="training folders (default runs/reproduce/<out name>)")
    p.add_argument("--folds", default=None, help="only these folds: 1-based indices or names, e.g. 1,2")
    p.add_argument("--runs", default=None, help="only these runs, e.g. unet,fcn8s")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field for every run, e.g. --set train.steps=500 (repeatable; "
                        "not data.train/data.val, which the folds decide)")
    p.add_argument("--overwrite", action="store_true", help="retrain everything and replace the report")
    p.add_argument("--resume", action="store_true",
                   help="keep finished folds, continue interrupted ones from their checkpoint, rewrite the report")
    p.add_argument("--no-search", dest="search", action="store_false",
                   help="skip the profile's nested selection (profiles.P.selection): train a fixed recipe, the "
                        "run's settings plus the candidate named selection.default")
    p.add_argument("--plan", action="store_true",
                   help="train nothing: list the nested selection's search trainings that --resume would run, "
                        "resume or reuse, with their steps, and exit")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args) -> int:
    # imported here: `unet --help` imports every CLI module and must not load scipy (experiment files are
    # read with the training config's YAML loader) or torch (the runner trains)
    from unet.reproduce.experiment import list_experiments, load_experiment

    if args.list:
        for name in list_experiments():
            exp = load_experiment(name)
            runs = ", ".join(r.name for r in exp.runs)
            print(f"{name:<12} {exp.title}  [runs: {runs}; profiles: {', '.join(exp.profiles)}]")
        return 0
    if not args.experiment:
        raise UserError("name an experiment (see `unet reproduce --list`)")
    if args.plan:
        return _print_plan(args)
    from unet.reproduce.runner import run_experiment

    command = shlex.join(_command_line(args))
    report = run_experiment(args.experiment, profile=args.profile, out=args.out, runs_dir=args.runs_dir,
                            overrides=args.overrides, folds=args.folds, runs=args.runs, overwrite=args.overwrite,
                            resume=args.resume, quiet=args.quiet, command=command, search=args.search)
    if not args.quiet:
        for t in report["targets"] + report["comparisons"]:
            print(" ", t["statement"])
    return 0


def _print_plan(args) -> int:
    from unet.reproduce.runner import plan_search

    if not args.search:
        print(f"{args.experiment}: --no-search trains a fixed recipe, no nested selection to plan")
        return 0
    rows = plan_search(args.experiment, profile=args.profile, out=args.out, runs_dir=args.runs_dir,
                       overrides=args.overrides, folds=args.folds, runs=args.runs)
    if not rows:
        print(f"{args.experiment} (profile {args.profile}): no nested selection to run")
        return 0
    print("| run | fold | candidate | search steps | with --resume |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['fold']} | {r['candidate']} | {r['steps']} | {r['status']} |")
    todo = [r for r in rows if r["status"] not in ("done", "reported")]
    print(f"\n{len(todo)} of {len(rows)} search trainings to run ({sum(r['steps'] for r in todo)} steps); then the "
          "confirmation reruns and final trainings that their scores decide (reused where already done)")
    return 0


def _command_line(args) -> list[str]:
    """The command as typed, rebuilt from the parsed options (canonical spelling, for the report)."""
    cmd = ["unet", "reproduce", args.experiment, "--profile", args.profile]
    for opt in ("out", "runs_dir", "folds", "runs"):
        if getattr(args, opt):
            cmd += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    for item in args.overrides:
        cmd += ["--set", item]
    cmd += [f"--{flag}" for flag in ("overwrite", "resume", "quiet") if getattr(args, flag)]
    cmd += ["--no-search"] * (not args.search)
    return cmd

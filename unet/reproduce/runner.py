"""Run an experiment: every run on every fold (resumable), then the report.

Layout::

    runs/reproduce/NAME/RUN/FOLD/      trainer run folder (config.yaml, last.pt, log.csv, ...)
        predictions/{plain,tta}/*.tif  held-out probabilities the metrics were computed from
        result.json                    the fold's metrics and timings (marks the fold finished)
    results/NAME/report.md, report.json
    results/NAME/checkpoints/RUN-FOLD.pt   final weights (no optimiser state), for `unet predict`

``runs/`` is git-ignored; ``results/`` is committed.  With ``--resume``, work
whose training folder is gone (a fresh clone, a new machine) is taken from the
committed report when it was made with the same config: a search candidate's
score (keyed by its config), a final training's metrics (keyed by the config
stored in its committed checkpoint, whose weights are then the fold's weights).
Only what changed is trained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

from unet.checkpoint import read_checkpoint
from unet.data.selection import config_pairs, select_pairs
from unet.errors import UserError
from unet.io import atomic_path, write_text_atomic
from unet.reproduce.evaluate import choose_postprocessing, evaluate_fold, postprocessing_grid, predict_saved
from unet.reproduce.experiment import LOWER_IS_BETTER, WATERSHED_SUFFIX, Experiment, load_experiment
from unet.reproduce.figures import comparison_rows, plot_comparison
from unet.reproduce.folds import Fold, carve_validation, check_no_leak, resolve_folds, select_folds
from unet.reproduce.report import (PROTOCOL, check_comparisons, check_targets, git_commit, machine_info, summarize,
                                   write_report)
from unet.scoring import METRIC_ALIASES
from unet.training.config import KEYS_ADDED_LATER, flatten_config, load_config, parse_overrides
from unet.training.trainer import Trainer, pick_device, warn_if_slow_bf16

#: largest checkpoint copied into results/ (issue 7: each <= 10 MB)
MAX_CHECKPOINT_BYTES = 10 * 1000 * 1000
#: config keys that do not change what is trained (where and how fast only)
#: how a training runs, not what it trains (bf16_kernels: the same rounding on either kernels, unet.training.bf16)
_RUNTIME_KEYS = ("base_dir", "train.device", "train.threads", "train.num_workers", "eval.overlays",
                 "train.bf16_kernels")
_HINT = "pass --resume to keep finished work and continue, or --overwrite to start over"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def config_key(cfg_dict: dict) -> str:
    """A hash of what a config trains (ignoring device, threads, workers, paths of the config file).

    Metric names are hashed by their canonical name, so a config that still
    uses a deprecated alias (``rand`` for ``rand_error``) keeps its key.
    """
    flat = {k: v for k, v in flatten_config(cfg_dict).items()
            if k not in _RUNTIME_KEYS and not (k in KEYS_ADDED_LATER and v == KEYS_ADDED_LATER[k])}
    if isinstance(flat.get("eval.metrics"), list):
        flat["eval.metrics"] = [METRIC_ALIASES.get(m, m) for m in flat["eval.metrics"]]
    if flat.get("eval.monitor") in METRIC_ALIASES:
        flat["eval.monitor"] = METRIC_ALIASES[flat["eval.monitor"]]
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_config(exp: Experiment, run, *, profile: str, overrides=(), fold: Fold | None = None,
                 extra_set: dict | None = None):
    """The training config of ``run`` (and ``fold``): base -> profile -> run -> ``extra_set`` (a
    candidate of nested selection) -> ``--set`` -> fold data."""
    for key, _ in parse_overrides(list(overrides)):
        if key in ("data.train", "data.val"):
            raise UserError(f"--set {key}: the experiment's folds decide which images train and test; "
                            "change `folds:` in the experiment file instead")
    extra = dict(exp.overrides(run, profile))
    extra.update(extra_set or {})
    extra["experiment"] = f"{exp.name}/{run.name}" + (f"/{fold.name}" if fold else "")
    if fold is not None:
        # only the fold's training part; no validation set at all (nothing held out may select anything)
        extra["data.train"] = list(fold.train)
        extra["data.val"] = "none"
    cfg = load_config(exp.base, extra=extra, overrides=list(overrides))
    if fold is not None:
        check_no_leak(fold.train, fold.test, val=cfg.data.val)
    return cfg


def _pairs(cfg):
    return config_pairs(cfg)


def short_steps(steps: int, *, recipe_steps: int, profile_steps: int) -> int:
    """Steps of a short training (search candidate, post-processing model) of a recipe.

    A recipe (a candidate setting ``train.steps``) whose final training takes
    ``recipe_steps`` instead of the profile's ``profile_steps`` has its short
    training scaled by the same factor, so that the validation images see what
    the longer schedule (cosine decay included) buys, at a search cost in
    proportion.

    Examples
    --------
    >>> short_steps(1000, recipe_steps=10000, profile_steps=5000)
    2000
    >>> short_steps(1000, recipe_steps=5000, profile_steps=5000)
    1000
    """
    return max(1, round(int(steps) * int(recipe_steps) / int(profile_steps)))


def _recipe_short_steps(steps: int, exp: Experiment, run, *, profile: str, overrides, fold: Fold,
                        recipe: dict) -> int:
    """:func:`short_steps` of ``recipe`` (a candidate's set) in ``fold``; ``--set train.steps`` wins over both."""
    def final(extra):
        return build_config(exp, run, profile=profile, overrides=overrides, fold=fold, extra_set=extra).train.steps

    return short_steps(steps, recipe_steps=final(recipe), profile_steps=final({}))


def _candidate_config(exp: Experiment, run, sel: dict, cand: dict, *, profile: str, overrides, search: Fold,
                      seed: int | None = None):
    """The config of one search training: the candidate's settings, ``sel["steps"]`` (scaled by
    :func:`short_steps` for a candidate that sets ``train.steps``), another ``seed`` for a confirmation."""
    extra = dict(cand.get("set") or {})
    if sel.get("steps"):
        extra["train.steps"] = _recipe_short_steps(int(sel["steps"]), exp, run, profile=profile,
                                                   overrides=overrides, fold=search, recipe=extra)
    if seed is not None:
        extra["seed"] = int(seed)
    return build_config(exp, run, profile=profile, overrides=overrides, fold=search, extra_set=extra)


def _check_selection(cfg, pairs, fold: Fold):
    """The trainer will see exactly the fold's training images (its name patterns could match more)."""
    chosen = [p.name for p in select_pairs(pairs, cfg.data.train, what="train")]
    if sorted(chosen) != sorted(fold.train):
        raise UserError(f"fold {fold.name}: image names select {len(chosen)} training images instead of "
                        f"{len(fold.train)} (names containing fnmatch wildcards?)")
    check_no_leak(chosen, fold.test, val=cfg.data.val)


# ------------------------------------------------------------------------------- one fold
def run_fold(exp: Experiment, cfg, fold: Fold, test_pairs, fold_dir, *, resume=False, overwrite=False,
             quiet=False, train_pairs=None, postprocessing: dict | None = None) -> dict:
    """Train ``cfg`` on the fold (or resume / reuse it), predict the held-out images, score them.

    With ``resume``, a finished fold is reused as it is, unless its result
    lacks a measure the evaluation now reports, or was post-processed with
    other parameters than ``postprocessing``: then its final checkpoint is
    scored again (the training time of the result is kept).
    """
    fold_dir = Path(fold_dir)
    result_path, last = fold_dir / "result.json", fold_dir / "last.pt"
    key = config_key(cfg.to_dict())

    def score():
        return _score(exp, cfg, last, test_pairs, fold_dir, train_pairs=train_pairs, postprocessing=postprocessing)

    if overwrite and fold_dir.exists():
        _remove_fold(fold_dir)
    if result_path.exists():
        return _reuse_finished(exp, result_path, key, score, resume=resume, postprocessing=postprocessing)
    t0 = time.perf_counter()
    resumed = _train(cfg, fold_dir, key, resume=resume, quiet=quiet)
    t1 = time.perf_counter()
    step = int(read_checkpoint(last)["step"])
    if step != cfg.train.steps:
        raise UserError(f"{last}: stopped at step {step} of {cfg.train.steps}")
    metrics = score()
    t2 = time.perf_counter()
    res = {"fold": fold.name, "train": list(fold.train), "test": list(fold.test), "metrics": metrics,
           "steps": step, "seed": cfg.seed, "config_key": key, "resumed": resumed,
           "train_seconds": round(t1 - t0, 1), "eval_seconds": round(t2 - t1, 1),
           "checkpoint_path": str(last), "predictions": str(fold_dir / "predictions"), "finished": _now()}
    write_text_atomic(result_path, json.dumps(res, indent=2) + "\n", overwrite=True)
    return res


def _score(exp: Experiment, cfg, last: Path, test_pairs, fold_dir: Path, *, train_pairs,
           postprocessing: dict | None = None) -> dict:
    """The held-out images predicted once from ``last`` and scored (:func:`unet.reproduce.evaluate.evaluate_fold`)."""
    return evaluate_fold(last, test_pairs, fold_dir, kind=exp.evaluation["kind"], variants=exp.variants,
                         tile_size=cfg.eval.tile_size, device=pick_device(cfg.train.device),
                         min_size=cfg.eval.min_size, train_pairs=train_pairs,
                         membrane_watershed=bool(exp.evaluation.get("membrane_watershed")),
                         postprocessing=postprocessing)


def _remove_fold(fold_dir: Path) -> None:
    """``--overwrite``: delete a fold's training folder, never a folder this runner did not write."""
    marks = ("config.yaml", "last.pt", "result.json", "log.csv", "predictions")
    if any(fold_dir.iterdir()) and not any((fold_dir / m).exists() for m in marks):
        raise UserError(f"{fold_dir}: not a training folder of unet reproduce; refusing to delete it")
    shutil.rmtree(fold_dir)


def _has_every_metric(exp: Experiment, metrics: dict, postprocessing: dict | None = None) -> bool:
    """Whether a fold's stored metrics hold every measure the evaluation now reports, post-processed with the
    parameters of ``postprocessing`` (chosen on validation images) if given."""
    if not all(set(exp.metrics) <= set(metrics.get(v, {})) for v in exp.variants):
        return False
    return all(metrics.get(k) == v for k, v in (postprocessing or {}).items())


def _reuse_finished(exp: Experiment, result_path: Path, key: str, score, *, resume: bool,
                    postprocessing: dict | None = None) -> dict:
    """A finished fold's result; scored again when it lacks a measure the evaluation now reports."""
    if not resume:
        raise UserError(f"{result_path.parent}: holds a finished run; {_HINT}")
    res = json.loads(result_path.read_text())
    # the key of the config the weights were trained with, recomputed (not the key stored beside the result),
    # so that refinements of config_key apply to finished folds too
    last = result_path.parent / "last.pt"
    trained = config_key(read_checkpoint(last)["metadata"]["config"]) if last.exists() else res.get("config_key")
    if trained != key:
        raise UserError(f"{result_path.parent}: was trained with another config; pass --overwrite to retrain it")
    res["reused"] = True
    if _has_every_metric(exp, res["metrics"], postprocessing):
        return res
    t1 = time.perf_counter()
    res["metrics"] = score()
    res.update(eval_seconds=round(time.perf_counter() - t1, 1), rescored=_now())
    write_text_atomic(result_path, json.dumps(res, indent=2) + "\n", overwrite=True)
    return res


def _train(cfg, fold_dir: Path, key: str, *, resume: bool, quiet: bool) -> bool:
    """Train the fold to ``cfg.train.steps`` (continuing ``last.pt`` with ``resume``); True if it was resumed."""
    last = fold_dir / "last.pt"
    if not last.exists():
        Trainer(cfg, fold_dir, quiet=quiet).fit()
        return False
    if not resume:
        raise UserError(f"{fold_dir}: holds an unfinished run; {_HINT}")
    payload = read_checkpoint(last)
    if config_key(payload["metadata"]["config"]) != key:
        raise UserError(f"{last}: was trained with another config; pass --overwrite to retrain it")
    if int(payload["step"]) < cfg.train.steps:
        Trainer(cfg, fold_dir, resume=True, quiet=quiet).fit()
        return True
    return False


def select_in_fold(exp: Experiment, run, fold: Fold, sel: dict, *, profile: str, overrides, pairs, by_name,
                   runs_dir: Path, resume: bool, overwrite: bool, quiet: bool, previous: dict | None = None) -> dict:
    """Nested selection inside one fold: choose a candidate on validation images carved from its training images.

    Every candidate of ``sel["candidates"]`` is trained for ``sel["steps"]`` (scaled
    by :func:`short_steps` for a candidate that sets ``train.steps``)
    steps on the fold's training images minus ``sel["validation"]`` of them
    (:func:`unet.reproduce.folds.carve_validation`), predicted once on those
    validation images and scored with ``sel["measure"]``; the best (ties: the
    first listed) is returned.  The fold's test images are not read.  Each
    candidate lives in ``runs_dir/RUN/_search/FOLD/CANDIDATE`` and is resumable
    like a fold (:func:`run_fold`); with ``resume``, a candidate whose folder is
    gone is taken from ``previous`` (this fold's selection in the report being
    replaced) if it was scored there with the same config on the same images.

    With ``sel["confirm"] = {"top": K, "seeds": [S, ...]}`` the K best
    candidates are trained and scored again with each seed S (folders
    ``CANDIDATE@seedS``) and the choice is the best mean score over the run's
    own seed and these.

    Returns
    -------
    dict
        ``validation`` (names), ``measure``, ``variant``, ``candidates`` (name,
        overrides, score, seconds), ``chosen``, ``chosen_set``, ``search_seconds``;
        with ``confirm``, also ``confirmation`` (the reruns, each with its
        ``seed``) and ``confirm`` (``top``, ``seeds``, ``means`` per leader).
    """
    search = carve_validation(fold, int(sel["validation"]), pick=sel.get("pick", "last"))
    measure, variant = sel["measure"], sel.get("variant", "plain")
    # the search is scored on its measure only: one variant, the post-processing only when it is measured
    ev = dict(exp.evaluation, tta=[variant == "tta"],
              membrane_watershed=bool(exp.evaluation.get("membrane_watershed")) and measure.endswith(WATERSHED_SUFFIX))
    search_exp = dataclasses.replace(exp, evaluation=ev)
    confirm = sel.get("confirm")
    if confirm:  # refused before any training: a rerun with the runs' own seed would confirm nothing
        base_seed = build_config(exp, run, profile=profile, overrides=overrides, fold=search).seed
        for seed in confirm["seeds"]:
            got = build_config(exp, run, profile=profile, overrides=overrides, fold=search,
                               extra_set={"seed": int(seed)}).seed
            if int(seed) == int(base_seed) or int(got) != int(seed):
                raise UserError(f"{exp.path}: selection.confirm.seeds: seed {seed} is the runs' own seed (or a "
                                "--set seed=... replaces it); a confirmation needs other seeds")

    def score(cand: dict, seed: int | None, listed: str) -> dict:
        """Train and score one candidate (with another ``seed`` for the confirmation), or take it from the report."""
        name = str(cand["name"])
        cfg = _candidate_config(exp, run, sel, cand, profile=profile, overrides=overrides, search=search, seed=seed)
        _check_selection(cfg, pairs, search)
        folder = name if seed is None else f"{name}@seed{seed}"
        cand_dir = runs_dir / run.name / "_search" / fold.name / folder
        old = (_reported_candidate(previous, search, name, config_key(cfg.to_dict()), listed=listed)
               if resume and not cand_dir.exists() else None)
        if old is not None:
            return dict(old, reused="report")
        if not quiet:
            print(f"[{exp.name}] {run.name} / {fold.name} / search {folder}: {search.description}", flush=True)
        res = run_fold(search_exp, cfg, search, [by_name[n] for n in search.test], cand_dir, resume=resume,
                       overwrite=overwrite, quiet=quiet, train_pairs=[by_name[n] for n in search.train])
        rec = {"name": name, "set": dict(cand.get("set") or {}), "steps": int(res["steps"]),
               "score": float(res["metrics"][variant][measure]), "config_key": res["config_key"],
               "train_seconds": res["train_seconds"], "eval_seconds": res["eval_seconds"],
               "reused": bool(res.get("reused"))}
        return rec if seed is None else dict(rec, seed=int(seed))

    tried = [score(cand, None, "candidates") for cand in sel["candidates"]]
    lower = LOWER_IS_BETTER[measure]
    order = [c["name"] for c in tried]

    def rank(name: str, value: float):
        return (value if lower else -value, order.index(name))

    best = min(tried, key=lambda c: rank(c["name"], c["score"]))
    record = {"validation": list(search.test), "search_train": list(search.train), "measure": measure,
              "variant": variant, "candidates": tried}
    if confirm:
        # A single short training per candidate ranks them with the noise of one seed: on DIC-HeLa two
        # candidates came out 0.0004 SEG apart.  The leaders are trained again with other seeds and the
        # choice goes to the best mean over all seeds.
        top = sorted(tried, key=lambda c: rank(c["name"], c["score"]))[:int(confirm["top"])]
        by_cand = {str(c["name"]): c for c in sel["candidates"]}
        reruns = [score(by_cand[c["name"]], s, "confirmation") for s in confirm["seeds"] for c in top]
        means = {}
        for c in top:
            scores = [c["score"]] + [r["score"] for r in reruns if r["name"] == c["name"]]
            means[c["name"]] = sum(scores) / len(scores)
        name = min(means, key=lambda n: rank(n, means[n]))
        best = next(c for c in tried if c["name"] == name)
        # A candidate added later can push a leader out of the top K after its reruns were trained: they are
        # still configurations tried, so they stay in the record (and the search cost), outside the choice.
        search_dir = runs_dir / run.name / "_search" / fold.name
        former = [dict(score(by_cand[c["name"]], s, "confirmation"), left_top=True)
                  for s in confirm["seeds"] for c in tried
                  if c not in top and _has_earlier_rerun(search_dir, previous, search, c["name"], int(s),
                                                         resume=resume and not overwrite)]
        record.update(confirmation=reruns + former,
                      confirm={"top": int(confirm["top"]), "seeds": [int(s) for s in confirm["seeds"]],
                               "means": means})
    done = tried + record.get("confirmation", [])
    return dict(record, chosen=best["name"], chosen_set=best["set"],
                search_seconds=round(sum(c["train_seconds"] + c["eval_seconds"] for c in done), 1))


def _has_earlier_rerun(search_dir: Path, previous: dict | None, search: Fold, name: str, seed: int, *,
                       resume: bool) -> bool:
    """Whether a finished confirmation rerun of ``name`` with ``seed`` exists: its folder has a result, or the
    previous report lists it on the same split (never without ``resume``)."""
    if not resume:
        return False
    if (search_dir / f"{name}@seed{seed}" / "result.json").exists():
        return True
    same_split = bool(previous) and previous.get("validation") == list(search.test) \
        and previous.get("search_train") == list(search.train)
    return same_split and any(r.get("name") == name and r.get("seed") == seed
                              for r in previous.get("confirmation", []))


def _reported_candidate(previous: dict | None, search: Fold, name: str, key: str, *,
                        listed: str = "candidates") -> dict | None:
    """The candidate ``name`` of a previous report's selection in this fold, if scored with config ``key`` on
    the same split (a report without config keys, from before they were stored, is never reused); ``listed``:
    the record's list to look in (``confirmation`` for the seed reruns)."""
    if not previous or previous.get("validation") != list(search.test) \
            or previous.get("search_train") != list(search.train):
        return None
    return next((dict(c) for c in previous.get(listed, [])
                 if c.get("name") == name and c.get("config_key") == key), None)


def copy_checkpoint(src, dst, *, note: dict, limit: int = MAX_CHECKPOINT_BYTES) -> str | None:
    """Copy a trainer checkpoint's weights (no optimiser state) to ``dst``; None if over ``limit`` bytes."""
    payload = read_checkpoint(src)
    slim = {k: payload[k] for k in ("format", "version", "model", "model_kwargs", "state_dict", "metadata")}
    slim["metadata"] = dict(slim["metadata"], reproduce=note)
    size = sum(t.numel() * t.element_size() for t in slim["state_dict"].values())
    if size > limit:
        return None
    with atomic_path(dst, overwrite=True) as tmp:
        torch.save(slim, tmp)
    if Path(dst).stat().st_size > limit:
        Path(dst).unlink()
        return None
    return str(dst)


def _model_text(cfg) -> str:
    if cfg.model.name == "unet":
        u = cfg.model.unet
        return f"U-Net width {u.base_channels}, depth {u.depth}, {u.padding}"
    f = cfg.model.fcn
    return f"{cfg.model.name.upper()} width {f.base_channels}, fc {f.fc_channels}"


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def default_out(exp: Experiment, profile: str) -> Path:
    return Path("results") / (exp.name if profile == "cpu" else f"{exp.name}-{profile}")


# ------------------------------------------------------------------------ the experiment
@dataclass(frozen=True)
class _Plan:
    """What one :func:`run_experiment` call trains (experiment, profile, ``--set``, images) and where."""

    exp: Experiment
    profile: str
    overrides: tuple
    out: Path
    runs_dir: Path
    pairs: list
    resume: bool
    overwrite: bool
    quiet: bool
    #: ``--resume``: the report being replaced (``out/report.json``), whose finished work may be reused
    previous: dict = dataclasses.field(default_factory=dict)

    @property
    def by_name(self) -> dict:
        return {p.name: p for p in self.pairs}

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"[{self.exp.name}] {text}", flush=True)

    def previous_run(self, name: str) -> dict:
        return next((r for r in self.previous.get("runs", []) if r.get("name") == name), {})


def run_experiment(experiment, *, profile: str = "cpu", out=None, runs_dir=None, overrides=(), folds=None,
                   runs=None, overwrite: bool = False, resume: bool = False, quiet: bool = False,
                   command: str | None = None, search: bool = True) -> dict:
    """Train, predict, evaluate every run on every fold of ``experiment``; write the report.

    Parameters
    ----------
    experiment : str, Path or Experiment
        A name in ``configs/reproduce/`` or a YAML path.
    profile : {"cpu", "paper"}
        Compute budget (``profiles:`` in the experiment file).
    out : path, optional
        Report folder (default ``results/NAME``, ``results/NAME-paper`` for the paper profile).
    runs_dir : path, optional
        Training folders (default ``runs/reproduce/<out's name>``; large, not committed).
    overrides : list of str
        ``--set key=value`` for every run (not ``data.train`` / ``data.val``).
    folds, runs : str or list, optional
        Subsets (``--folds 1,2``; ``--runs unet``); the report then says it is partial.
    overwrite : bool
        Retrain everything and replace the report.
    resume : bool
        Reuse finished folds, continue interrupted ones from ``last.pt``, replace the report.
    search : bool
        Run the profile's nested selection (``profiles.P.selection``) in every
        fold; False (``--no-search``): a fixed recipe, the run's settings plus
        the candidate named ``selection.default`` if any.

    Returns
    -------
    dict
        The report (also written to ``out/report.json`` and ``out/report.md``).
    """
    if overwrite and resume:
        raise UserError("--resume and --overwrite exclude each other")
    exp, out, runs_dir, chosen_runs = _resolve(experiment, profile=profile, out=out, runs_dir=runs_dir, runs=runs)
    _refuse_old_report(out, replace=overwrite or resume)
    if command is None:  # called from Python: the equivalent command line
        command = _equivalent_command(
            exp.path if isinstance(experiment, Experiment) else experiment, profile=profile, out=out,
            runs_dir=runs_dir, folds=folds, runs=runs, overrides=overrides, overwrite=overwrite, resume=resume,
            search=search)
    started, t_start = _now(), time.perf_counter()
    # the code that trains, not whatever is checked out when the last fold ends: the repository the command
    # runs in, else the one holding the experiment file (never the enclosing repository of an installed wheel)
    git = git_commit(Path.cwd(), exp.path)
    base_cfg = _common_data_config(exp, chosen_runs, profile=profile, overrides=overrides)
    plan = _Plan(exp=exp, profile=profile, overrides=tuple(overrides), out=out, runs_dir=runs_dir,
                 pairs=list(_pairs(base_cfg)), resume=resume, overwrite=overwrite, quiet=quiet,
                 previous=_previous_report(out) if resume else {})
    all_folds = resolve_folds(exp.folds, plan.pairs)
    fold_list = select_folds(all_folds, folds)
    _warn_if_slow_bf16(exp, profile, base_cfg)
    run_reports, searched = [], {}
    for run in chosen_runs:
        run_reports.append(_run_all_folds(plan, run, fold_list, search=search, searched=searched))
    report = _assemble_report(plan, run_reports, fold_list, partial=_partial(exp, fold_list, all_folds, chosen_runs),
                              device=str(base_cfg.train.device), command=command, git=git,
                              started=started, t_start=t_start)
    report["figure"] = _write_figure(exp, fold_list, run_reports, plan.by_name, out)
    write_report(out, report, overwrite=overwrite or resume)
    if not quiet:
        print(f"wrote {out / 'report.md'} and {out / 'report.json'}")
    return report


def _resolve(experiment, *, profile: str, out, runs_dir, runs):
    """The experiment, its report and training folders (defaults filled in) and the runs asked for."""
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    if profile not in exp.profiles:
        raise UserError(f"--profile {profile}: {exp.path} defines {', '.join(exp.profiles)}")
    out = Path(out) if out is not None else default_out(exp, profile)
    runs_dir = Path(runs_dir) if runs_dir is not None else Path("runs") / "reproduce" / out.name
    chosen_runs = exp.runs if not runs else [exp.run(r.strip()) for r in
                                              (runs.split(",") if isinstance(runs, str) else runs)]
    return exp, out, runs_dir, chosen_runs


def plan_search(experiment, *, profile: str = "cpu", out=None, runs_dir=None, overrides=(), folds=None,
                runs=None) -> list[dict]:
    """What ``unet reproduce ... --resume`` would do in the nested selection, without training anything.

    One row per candidate of every searched run and fold: ``run``, ``fold``,
    ``candidate``, ``steps`` (of its search training) and ``status``:
    ``"done"`` (its folder holds a result), ``"reported"`` (the report being
    replaced scored it with the same config on the same split), ``"resume at
    step N"`` or ``"train"``.  What comes after these (the confirmation reruns
    of the leaders, the final trainings of the choices) depends on their
    scores, so it is not listed.
    """
    exp, out, runs_dir, chosen_runs = _resolve(experiment, profile=profile, out=out, runs_dir=runs_dir, runs=runs)
    base_cfg = _common_data_config(exp, chosen_runs, profile=profile, overrides=overrides)
    pairs = list(_pairs(base_cfg))
    _warn_if_slow_bf16(exp, profile, base_cfg)  # where a plan is made, the cost of the steps matters most
    previous = _previous_report(out)
    rows = []
    for run in chosen_runs:
        sel = exp.selection(profile, run.name)
        if not sel or ((sel.get("follow") or {}).get(run.name)):
            continue
        old_run = next((r for r in previous.get("runs", []) if r.get("name") == run.name), {})
        for fold in select_folds(resolve_folds(exp.folds, pairs), folds):
            search = carve_validation(fold, int(sel["validation"]), pick=sel.get("pick", "last"))
            old = (old_run.get("selection") or {}).get(fold.name)
            for cand in sel["candidates"]:
                cfg = _candidate_config(exp, run, sel, cand, profile=profile, overrides=overrides, search=search)
                folder = runs_dir / run.name / "_search" / fold.name / str(cand["name"])
                if (folder / "result.json").exists():
                    status = "done"
                elif not folder.exists() and _reported_candidate(old, search, str(cand["name"]),
                                                                 config_key(cfg.to_dict())):
                    status = "reported"
                elif (folder / "last.pt").exists():
                    status = f"resume at step {int(read_checkpoint(folder / 'last.pt')['step'])}"
                else:
                    status = "train"
                rows.append({"run": run.name, "fold": fold.name, "candidate": str(cand["name"]),
                             "steps": int(cfg.train.steps), "status": status})
    return rows


def _previous_report(out: Path) -> dict:
    """The report that ``--resume`` replaces ({} if none): the record of work whose folders may be gone."""
    path = out / "report.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e}); move it aside, or pass --overwrite to redo everything") from e


def _refuse_old_report(out: Path, *, replace: bool) -> None:
    for name in ("report.json", "report.md"):
        if (out / name).exists() and not replace:
            raise UserError(f"{out / name}: already exists; pass --overwrite to redo the experiment, "
                            "--resume to finish it and rewrite the report, or --out elsewhere")


def _equivalent_command(experiment, *, profile, out, runs_dir, folds, runs, overrides, overwrite, resume,
                        search) -> str:
    """The ``unet reproduce`` command line that does what a Python call of :func:`run_experiment` does."""
    cmd = ["unet", "reproduce", str(experiment), "--profile", profile, "--out", str(out), "--runs-dir", str(runs_dir)]
    if folds:
        cmd += ["--folds", folds if isinstance(folds, str) else ",".join(map(str, folds))]
    if runs:
        cmd += ["--runs", runs if isinstance(runs, str) else ",".join(runs)]
    for item in overrides:
        cmd += ["--set", item]
    cmd += ["--overwrite"] * overwrite + ["--resume"] * resume + ["--no-search"] * (not search)
    return shlex.join(cmd)


def _warn_if_slow_bf16(exp: Experiment, profile: str, cfg) -> bool:
    """Before any training: say how a bfloat16 profile runs on a CPU without bfloat16 kernels (rounded on
    float32 kernels, or, forced onto oneDNN's emulated kernels, many times its stated budget: then name the
    way out, and the experiment's float32 profile ``PROFILE-float32`` where it has one)."""
    twin = f"{profile}-float32"
    remedy = ("Leave train.bf16_kernels at auto (bfloat16's rounding on float32 kernels, the same recipe)"
              + (f"; its float32 recipe is --profile {twin} (another recipe, its own report)." if twin in exp.profiles
                 else "; or train in float32 with --set train.amp=none (another recipe: nothing is reused from a "
                      "bfloat16 report, and the numbers differ)."))
    return warn_if_slow_bf16(cfg.train.amp, pick_device(cfg.train.device), kernels=cfg.train.bf16_kernels,
                             remedy=f"Every training of profile {profile!r} is affected. {remedy}")


def _common_data_config(exp: Experiment, chosen_runs, *, profile: str, overrides):
    """The config of the first run; every run must train on the same data (the folds come from it)."""
    base_cfgs = {r.name: build_config(exp, r, profile=profile, overrides=overrides) for r in chosen_runs}
    data_keys = {(c.data.dataset, str(c.data.root), c.base_dir) for c in base_cfgs.values()}
    if len(data_keys) != 1:
        raise UserError(f"{exp.path}: the runs use different data; a table compares models on the same folds")
    return next(iter(base_cfgs.values()))


def _run_all_folds(plan: _Plan, run, fold_list, *, search: bool, searched: dict) -> dict:
    """Train and score ``run`` on every fold (after its nested selection, if any); the run's report entry.

    ``searched`` maps each run whose selection has run to its per-fold choices (a
    run that follows another's selection takes them from there); this run's are added.
    """
    exp = plan.exp
    sel = exp.selection(plan.profile, run.name)
    lead = ((sel or {}).get("follow") or {}).get(run.name)
    if lead and search and lead not in searched:
        raise UserError(f"run {run.name} takes the choices of run {lead} (selection.follow): run both "
                        f"(--runs {lead},{run.name}) or pass --no-search")
    fixed = {}
    if sel and not search and sel.get("default") is not None:
        fixed = next(dict(c.get("set") or {}) for c in sel["candidates"] if str(c["name"]) == str(sel["default"]))
    fold_results, selections, cfg = {}, {}, None
    for fold in fold_list:
        if lead and search:
            selections[fold.name] = dict(searched[lead][fold.name], followed=lead)
        elif sel and search:
            selections[fold.name] = select_in_fold(
                exp, run, fold, sel, profile=plan.profile, overrides=plan.overrides, pairs=plan.pairs,
                by_name=plan.by_name, runs_dir=plan.runs_dir, resume=plan.resume, overwrite=plan.overwrite,
                quiet=plan.quiet, previous=(plan.previous_run(run.name).get("selection") or {}).get(fold.name))
            plan.say(f"{run.name} / {fold.name}: chose {selections[fold.name]['chosen']} on "
                     f"{', '.join(selections[fold.name]['validation'])}")
        chosen = selections[fold.name]["chosen_set"] if fold.name in selections else fixed
        if lead:  # an ablation keeps what it ablates (unet-w0's loss.w0 = 0 against a chosen loss.w0 = 30)
            kept = {k: run.set[k] for k in chosen if k in run.set}
            chosen = {k: v for k, v in chosen.items() if k not in run.set}
            if kept and fold.name in selections:
                selections[fold.name] = dict(selections[fold.name], kept=kept)
        cfg, fold_results[fold.name] = _final_training(plan, run, fold, chosen, selections.get(fold.name))
    entry = _run_entry(plan, run, cfg, fold_list, fold_results, fixed)
    if lead and search:
        entry["selection_followed"] = lead
        entry["selected"] = {f: s["chosen"] for f, s in selections.items()}
        entry["selection_keeps"] = {k: v for s in selections.values() for k, v in (s.get("kept") or {}).items()}
    elif sel and search:
        searched[run.name] = selections
        entry["selection"] = selections
        entry["search_seconds"] = float(sum(s["search_seconds"] for s in selections.values()))
    elif sel:
        entry["selection_off"] = (f"--no-search: fixed recipe, candidate {sel['default']}"
                                  if sel.get("default") is not None else "--no-search: fixed recipe, the run's settings")
    return entry


def _final_training(plan: _Plan, run, fold: Fold, chosen: dict, selection: dict | None):
    """Train ``run`` with the ``chosen`` settings on the fold's training images, score the held-out ones, copy
    the final weights to ``out/checkpoints/``; ``(config, the fold's result)``."""
    cfg = build_config(plan.exp, run, profile=plan.profile, overrides=plan.overrides, fold=fold, extra_set=chosen)
    _check_selection(cfg, plan.pairs, fold)
    plan.say(f"{run.name} / {fold.name}: {fold.description}")
    by_name = plan.by_name
    post = _postprocessing_choice(plan, run, fold, chosen)
    reported = _reported_final(plan, run.name, fold, cfg, post)
    if reported is not None:
        return cfg, dict(reported, **({"selected": _selected_text(selection)} if selection else {}))
    res = run_fold(plan.exp, cfg, fold, [by_name[n] for n in fold.test], plan.runs_dir / run.name / fold.name,
                   resume=plan.resume, overwrite=plan.overwrite, quiet=plan.quiet,
                   train_pairs=[by_name[n] for n in fold.train],
                   postprocessing=post["chosen"] if post else None)
    if post:
        res = dict(res, postprocessing=post["record"])
    dst = _checkpoint_dst(plan, run.name, fold)
    note = {"experiment": plan.exp.name, "run": run.name, "fold": fold.name, "profile": plan.profile,
            "trained_on": list(fold.train), "held_out": list(fold.test),
            **({"selected": _selected_text(selection), "validation": selection["validation"]} if selection else {})}
    copied = copy_checkpoint(res["checkpoint_path"], dst, note=note)
    res = dict(res)
    if selection:
        res["selected"] = _selected_text(selection)
    if copied:
        res["checkpoint"] = str(Path(copied).relative_to(plan.out))
    else:
        res["checkpoint"] = None
        res["checkpoint_note"] = f"over {MAX_CHECKPOINT_BYTES / 1e6:.0f} MB, not copied; see {res['checkpoint_path']}"
    return cfg, res


def _selected_text(selection: dict) -> str:
    """The choice a final training took: the candidate's name, and what a following run kept of its own."""
    kept = selection.get("kept") or {}
    return selection["chosen"] + "".join(f", {k}={v} kept" for k, v in kept.items())


def _checkpoint_dst(plan: _Plan, run_name: str, fold: Fold) -> Path:
    return plan.out / "checkpoints" / f"{run_name}-{fold.name.replace('>', '').replace('/', '_')}.pt"


def _postprocessing_choice(plan: _Plan, run, fold: Fold, chosen: dict) -> dict | None:
    """``profiles.P.postprocess``: the post-processing parameters of ``run`` in ``fold``, chosen on validation images.

    The run's final recipe (``chosen`` included) is trained for
    ``postprocess.steps`` on the fold's training images minus
    ``postprocess.validation`` of them (the carve of nested selection), predicts
    those once, and the parameters with the best score there are the ones the
    held-out images get (:func:`unet.reproduce.evaluate.choose_postprocessing`),
    each evaluation variant's chosen on validation maps of that variant.
    The model lives in ``runs_dir/RUN/_postprocess/FOLD``; a search candidate
    trained with the same config is used instead of training it again, and with
    ``resume`` the previous report's choice is reused when its folder is gone.

    Returns
    -------
    dict or None
        ``{"chosen": {...} (for evaluate_fold), "record": {...} (for the report)}``;
        None without ``postprocess`` or with nothing to choose.
    """
    exp = plan.exp
    pp = (exp.profiles.get(plan.profile) or {}).get("postprocess")
    kind = exp.evaluation["kind"]
    grid = postprocessing_grid(kind, membrane_watershed=bool(exp.evaluation.get("membrane_watershed")))
    if not pp or not grid:
        return None
    search = carve_validation(fold, int(pp["validation"]), pick=pp.get("pick", "last"))
    pp_steps = _recipe_short_steps(int(pp["steps"]), exp, run, profile=plan.profile, overrides=plan.overrides,
                                   fold=search, recipe=chosen)
    cfg = build_config(exp, run, profile=plan.profile, overrides=plan.overrides, fold=search,
                       extra_set=dict(chosen, **{"train.steps": pp_steps}))
    _check_selection(cfg, plan.pairs, search)
    key = config_key(cfg.to_dict())
    folder = plan.runs_dir / run.name / "_postprocess" / fold.name
    old = ((plan.previous_run(run.name).get("folds") or {}).get(fold.name) or {}).get("postprocessing")
    variants = list(exp.variants)  # each variant's parameters are chosen on its own kind of maps

    def same_choice(rec: dict) -> bool:  # a record from before per-variant choices chose for plain maps only
        return (rec.get("config_key"), rec.get("grid"), rec.get("variants", ["plain"])) == (key, grid, variants)

    if plan.resume and not folder.exists() and old and same_choice(old) \
            and old.get("validation") == list(search.test) and old.get("search_train") == list(search.train):
        return {"chosen": old["chosen"], "record": dict(old, reused="report")}
    done = folder / "choice.json"
    if done.exists() and not plan.overwrite:
        rec = json.loads(done.read_text())
        if same_choice(rec):
            return {"chosen": rec["chosen"], "record": dict(rec, reused=True)}
    last, t0 = _search_twin(plan.runs_dir / run.name / "_search" / fold.name, key), time.perf_counter()
    trained = 0.0  # a search candidate's training is counted in the search
    if last is None:
        if plan.overwrite and folder.exists():
            _remove_fold(folder)
        last = folder / "last.pt"
        earlier = last.exists() and int(read_checkpoint(last)["step"]) >= cfg.train.steps
        if not earlier:
            plan.say(f"{run.name} / {fold.name}: post-processing model, {search.description}")
        _train(cfg, folder, key, resume=plan.resume, quiet=plan.quiet)
        step = int(read_checkpoint(last)["step"])
        if step != cfg.train.steps:
            raise UserError(f"{last}: stopped at step {step} of {cfg.train.steps}")
        # trained by an earlier invocation: its cost as the folder's files record it (config written at the start)
        trained = (last.stat().st_mtime - (folder / "config.yaml").stat().st_mtime if earlier
                   else time.perf_counter() - t0)
    t1 = time.perf_counter()
    chosen_pp = choose_postprocessing(last, [plan.by_name[n] for n in search.test], folder, kind=kind,
                                      tile_size=cfg.eval.tile_size, device=pick_device(cfg.train.device),
                                      min_size=cfg.eval.min_size,
                                      membrane_watershed=bool(exp.evaluation.get("membrane_watershed")),
                                      variants=variants)
    rec = {"validation": list(search.test), "search_train": list(search.train), "steps": pp_steps,
           "config_key": key, "grid": grid, "variants": variants, "model": str(last), "predictions": str(folder / "predictions" / "validation"),
           "chosen": chosen_pp, "train_seconds": round(max(trained, 0.0), 1),
           "eval_seconds": round(time.perf_counter() - t1, 1)}
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(done, json.dumps(rec, indent=2) + "\n", overwrite=True)
    return {"chosen": chosen_pp, "record": rec}


def _search_twin(search_dir: Path, key: str) -> Path | None:
    """The final checkpoint of a finished search candidate trained with config ``key`` (the post-processing
    model of a run whose recipe is that candidate), or None."""
    for result in sorted(search_dir.glob("*/result.json")):
        if json.loads(result.read_text()).get("config_key") == key and (result.parent / "last.pt").exists():
            return result.parent / "last.pt"
    return None


def _reported_final(plan: _Plan, run_name: str, fold: Fold, cfg, post: dict | None = None) -> dict | None:
    """``--resume`` with the fold's training folder gone: the previous report's result of this fold, if its
    committed checkpoint was trained with ``cfg`` on the same images (its weights are then this fold's).

    The held-out image of the figure is predicted again from that checkpoint
    (into the fold's folder, which is not marked finished: the report stays the
    record), and the fold scored again if the evaluation now reports a measure
    that the previous report lacks.
    """
    fold_dir = plan.runs_dir / run_name / fold.name
    old = (plan.previous_run(run_name).get("folds") or {}).get(fold.name)
    if not plan.resume or (fold_dir / "result.json").exists() or (fold_dir / "last.pt").exists() \
            or not old or not old.get("checkpoint"):
        return None
    ckpt = plan.out / old["checkpoint"]
    key = config_key(cfg.to_dict())
    if (old.get("train"), old.get("test")) != (list(fold.train), list(fold.test)) or not ckpt.is_file() \
            or ckpt.resolve() != _checkpoint_dst(plan, run_name, fold).resolve() \
            or config_key(read_checkpoint(ckpt)["metadata"]["config"]) != key:
        return None
    plan.say(f"{run_name} / {fold.name}: reused from {plan.out / 'report.json'} and {ckpt}")
    by_name, exp = plan.by_name, plan.exp
    res = dict(old, reused="report", config_key=key, checkpoint_path=str(ckpt),
               predictions=str(fold_dir / "predictions"))
    if post:
        res["postprocessing"] = post["record"]
    if not _has_every_metric(exp, old["metrics"], post["chosen"] if post else None):
        t1 = time.perf_counter()
        res["metrics"] = _score(exp, cfg, ckpt, [by_name[n] for n in fold.test], fold_dir,
                                train_pairs=[by_name[n] for n in fold.train],
                                postprocessing=post["chosen"] if post else None)
        res.update(eval_seconds=round(time.perf_counter() - t1, 1), rescored=_now())
    else:
        variant = exp.variants[-1]  # the figure's (runner._write_figure)
        predict_saved(ckpt, [by_name[fold.test[len(fold.test) // 2]]], fold_dir, variant=variant,
                      tile_size=cfg.eval.tile_size, device=pick_device(cfg.train.device))
    return res


def _run_entry(plan: _Plan, run, cfg, fold_list, fold_results: dict, fixed: dict) -> dict:
    """A run's part of the report: its fold results, their summary, its (last fold's) config."""
    exp = plan.exp
    summary = {v: {m: summarize(fold_results[f.name]["metrics"][v][m] for f in fold_list) for m in exp.metrics}
               for v in exp.variants}
    conf = cfg.to_dict()
    conf["data"]["train"] = "(per fold, see folds)"
    return {
        "name": run.name, "label": run.label, "model": _model_text(cfg), "steps": cfg.train.steps,
        "overrides": {**exp.overrides(run, plan.profile), **fixed, **dict(parse_overrides(list(plan.overrides)))},
        "config": conf, "summary": summary, "folds": fold_results,
        "wall_seconds": float(sum(r["train_seconds"] + r["eval_seconds"] for r in fold_results.values())),
    }


def _partial(exp: Experiment, fold_list, all_folds, chosen_runs) -> str:
    """What a ``--folds`` / ``--runs`` subset left out ("" for the whole experiment)."""
    partial = []
    if len(fold_list) < len(all_folds):
        partial.append(f"{len(fold_list)} of {len(all_folds)} folds ({', '.join(f.name for f in fold_list)})")
    if len(chosen_runs) < len(exp.runs):
        partial.append(f"{len(chosen_runs)} of {len(exp.runs)} runs ({', '.join(r.name for r in chosen_runs)})")
    return "; ".join(partial)


def _assemble_report(plan: _Plan, run_reports, fold_list, *, partial: str, device: str, command: str, git: dict,
                     started: str, t_start: float) -> dict:
    """The report dict (``report.json``): results, targets, protocol and how the numbers were made."""
    exp = plan.exp
    summaries = {r["name"]: r["summary"] for r in run_reports}
    prof = exp.profiles[plan.profile] or {}
    if device == "auto":
        device = str(pick_device("auto"))
    return {
        "experiment": exp.name, "title": exp.title, "experiment_file": _rel(exp.path), "base_config": _rel(exp.base),
        "profile": plan.profile, "profile_description": str(prof.get("description", "")).strip(),
        "kind": exp.evaluation["kind"], "metrics": list(exp.metrics), "variants": exp.variants,
        "partial": partial, "n_folds": len(fold_list),
        "folds": [{"name": f.name, "description": f.description, "train": list(f.train), "test": list(f.test)}
                  for f in fold_list],
        "runs": run_reports, "paper": exp.paper,
        "targets": check_targets(exp.targets, summaries, exp.variants),
        "comparisons": check_comparisons(exp.compare, summaries, exp.metrics, exp.variants),
        "protocol": PROTOCOL, "notes": exp.notes,
        "command": command, "git": git, "machine": machine_info(device),
        "started": started, "finished": _now(), "wall_seconds": round(time.perf_counter() - t_start, 1),
        "runs_dir": str(plan.runs_dir),
    }


def _write_figure(exp: Experiment, fold_list, run_reports, by_name, out: Path) -> str | None:
    """``out/comparison.png`` (one held-out image per fold, every run beside the truth); its name, or None."""
    variant = exp.variants[-1]  # TTA where the experiment has it: the paper's way for ISBI
    rows = comparison_rows(fold_list, run_reports, by_name, variant=variant)
    if not rows:
        return None
    out.mkdir(parents=True, exist_ok=True)
    plot_comparison(rows, kind=exp.evaluation["kind"], path=out / "comparison.png")
    return "comparison.png"

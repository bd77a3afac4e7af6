"""Experiment definitions: ``configs/reproduce/NAME.yaml``.

An experiment file reads as the whole protocol of one table of the paper::

    name: isbi2012
    title: ...
    base: ../isbi2012.yaml            # training config (relative to this file)
    folds: {contiguous: 3}            # or a list of {name, train, test}
    evaluation: {kind: isbi, tta: [false, true]}   # membrane_watershed: true adds the gap-closing rows
    runs:                             # model variants, each trained on every fold
      - {name: unet, label: "U-Net", set: {model.name: unet}}
      - {name: fcn8s, label: "FCN-8s", set: {model.name: fcn8s}}
    profiles:                         # compute budgets: overrides for all runs, and per run
      cpu: {description: ..., set: {...}, runs: {fcn8s: {...}},
            selection: {runs: [unet], validation: 3, steps: 1000, measure: rand_error,
                        candidates: [{name: bn, set: {...}}, ...]}}   # nested validation, optional
      paper: {description: ..., set: {...}}
      cpu-bf16: {extends: cpu, set: {...}}   # cpu's settings, then these (set and runs merged)
    paper:                            # the paper's numbers, shown beside ours
      - {name: "u-net (paper, test set)", warping_error: 0.000353, ...}
    targets:                          # what this reproduction must reach
      - {run: unet, metric: pixel_error, op: "<=", value: 0.07}
      - {run: unet, metric: seg, op: ">=", value: 0.75, per_fold: true}
    compare:                          # run A must beat run B on every metric
      - {better: unet, worse: fcn8s}

Overrides are applied in this order: base config, ``profiles.P.set``,
``profiles.P.runs.RUN``, the run's own ``set``, the user's ``--set``; the
fold's data selection comes last and may not be overridden
(:func:`unet.reproduce.folds.check_no_leak`).  A candidate of nested
selection (:func:`unet.reproduce.runner.select_in_fold`) applies after the
run's ``set`` and before ``--set``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from unet.errors import UserError
from unet.resources import CONFIG_DIR
from unet.training.config import load_yaml

#: ``unet/configs/reproduce/`` (the repository's ``configs/reproduce/``), shipped in the wheel
EXPERIMENT_DIR = CONFIG_DIR / "reproduce"

#: metrics of each evaluation kind, and whether lower is better
METRICS = {
    "isbi": ("warping_error", "rand_error", "pixel_error"),  # paper Table 1 column order
    # paper Table 2 ("IOU" there; the challenge's SEG measure), with the paper's instances (components)
    # and with seeded-watershed instances (ours; unet.inference.cell_instances)
    "seg": ("seg", "seg_watershed"),
}
#: extra ISBI metrics of the gap-closing post-processing (``evaluation.membrane_watershed: true``)
WATERSHED_SUFFIX = "_watershed"
LOWER_IS_BETTER = {"warping_error": True, "rand_error": True, "pixel_error": True, "seg": False,
                   "seg_watershed": False, **{m + WATERSHED_SUFFIX: True for m in METRICS["isbi"]}}
OPS = ("<=", ">=", "<", ">")
PROFILES = ("cpu", "paper")


class ExperimentError(UserError):
    """An invalid experiment file."""


@dataclass
class Run:
    """One model variant, trained on every fold."""

    name: str
    label: str
    set: dict = field(default_factory=dict)


@dataclass
class Experiment:
    name: str
    title: str
    path: Path
    base: Path
    folds: object  # {"contiguous": k} or a list of {"name", "train", "test"}
    evaluation: dict
    runs: list
    profiles: dict
    paper: list = field(default_factory=list)
    targets: list = field(default_factory=list)
    compare: list = field(default_factory=list)
    notes: str = ""

    @property
    def metrics(self) -> tuple:
        extra = ()
        if self.evaluation["kind"] == "isbi" and self.evaluation.get("membrane_watershed"):
            extra = tuple(m + WATERSHED_SUFFIX for m in METRICS["isbi"])
        return METRICS[self.evaluation["kind"]] + extra

    @property
    def variants(self) -> list:
        """Evaluation variants: ``"plain"`` and/or ``"tta"`` (test-time augmentation)."""
        return ["tta" if t else "plain" for t in self.evaluation.get("tta", [False])]

    def run(self, name: str) -> Run:
        for r in self.runs:
            if r.name == name:
                return r
        raise ExperimentError(f"{self.path}: no run named {name!r} (runs: {', '.join(r.name for r in self.runs)})")

    def selection(self, profile: str, run_name: str | None = None) -> dict | None:
        """``profiles.PROFILE.selection`` (nested validation), or None; with ``run_name``: None unless it applies."""
        sel = (self.profiles.get(profile) or {}).get("selection")
        if not sel:
            return None
        if run_name is not None and sel.get("runs") and run_name not in sel["runs"] \
                and run_name not in (sel.get("follow") or {}):
            return None
        return sel

    def overrides(self, run: Run, profile: str) -> dict:
        """Flat ``{dotted.key: value}`` for ``run`` under ``profile`` (before the user's ``--set``)."""
        if profile not in self.profiles:
            raise UserError(f"{self.path}: no profile {profile!r} (profiles: {', '.join(self.profiles)})")
        p = self.profiles[profile] or {}
        out = dict(p.get("set") or {})
        out.update((p.get("runs") or {}).get(run.name) or {})
        out.update(run.set)
        return out


def list_experiments(folder=EXPERIMENT_DIR) -> list[str]:
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def find_experiment(name_or_path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ExperimentError(f"{p}: experiment file not found")
        return p
    candidate = EXPERIMENT_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise ExperimentError(f"unknown experiment {name_or_path!r} (known: {', '.join(list_experiments())}; "
                              "or pass a YAML file)")
    return candidate


def load_experiment(name_or_path) -> Experiment:
    """Read and validate an experiment: a name in ``configs/reproduce/`` or a YAML path."""
    path = find_experiment(name_or_path)
    try:
        d = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ExperimentError(f"{path}: invalid YAML ({err})") from err
    known = {"name", "title", "base", "folds", "evaluation", "runs", "profiles", "paper", "targets", "compare",
             "notes"}
    unknown = set(d) - known
    if unknown:
        raise ExperimentError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (valid: {', '.join(sorted(known))})")
    for key in ("base", "folds", "evaluation", "runs", "profiles"):
        if key not in d:
            raise ExperimentError(f"{path}: missing key {key!r}")
    base = Path(d["base"])
    if not base.is_absolute():
        base = (path.parent / base).resolve()
    if not base.is_file():
        raise ExperimentError(f"{path}: base config {base} not found")
    ev, runs = _evaluation(path, d["evaluation"]), _runs(path, d["runs"])
    _check_folds(path, d["folds"])
    exp = Experiment(name=str(d.get("name", path.stem)), title=str(d.get("title", path.stem)), path=path, base=base,
                     folds=d["folds"], evaluation=ev, runs=runs, profiles=_extended(path, d["profiles"]),
                     paper=list(d.get("paper") or []), targets=list(d.get("targets") or []),
                     compare=list(d.get("compare") or []), notes=str(d.get("notes") or ""))
    _check_targets(exp)
    _check_profiles(exp)
    return exp


def _extended(path: Path, profiles) -> dict:
    """``profiles:`` with each ``extends: P`` resolved: profile P's settings, then this one's.

    ``set`` and ``runs.RUN`` are merged key by key (this profile's values win); ``description``,
    ``selection`` and ``postprocess`` are P's unless given.  One level only: P may not extend.
    """
    if not isinstance(profiles, dict) or not profiles:
        raise ExperimentError(f"{path}: profiles must be a non-empty mapping")
    out = {}
    for name, prof in profiles.items():
        if not isinstance(prof, dict) or "extends" not in prof:
            out[name] = prof
            continue
        parent_name = prof["extends"]
        parent = profiles.get(parent_name)
        if not isinstance(parent, dict) or "extends" in parent:
            raise ExperimentError(f"{path}: profiles.{name}.extends: {parent_name!r} must name another profile "
                                  f"that extends none (profiles: {', '.join(profiles)})")
        own = {k: v for k, v in prof.items() if k != "extends"}
        merged = dict(parent, **{k: v for k, v in own.items() if k not in ("set", "runs")})
        merged["set"] = {**(parent.get("set") or {}), **(own.get("set") or {})}
        runs = {r: dict(v or {}) for r, v in (parent.get("runs") or {}).items()}
        for r, v in (own.get("runs") or {}).items():
            runs[r] = {**runs.get(r, {}), **(v or {})}
        if runs:
            merged["runs"] = runs
        merged["extends"] = parent_name
        out[name] = merged
    return out


def _evaluation(path: Path, evaluation) -> dict:
    """``evaluation:`` checked, with its defaults (no gap closing, no TTA)."""
    ev = dict(evaluation)
    if ev.get("kind") not in METRICS:
        raise ExperimentError(f"{path}: evaluation.kind must be one of {', '.join(METRICS)}, got {ev.get('kind')!r}")
    if not isinstance(ev.setdefault("membrane_watershed", False), bool) or \
            (ev["membrane_watershed"] and ev["kind"] != "isbi"):
        raise ExperimentError(f"{path}: evaluation.membrane_watershed must be true or false, and only for kind isbi")
    tta = ev.setdefault("tta", [False])
    if not isinstance(tta, list) or not tta or not all(isinstance(t, bool) for t in tta):
        raise ExperimentError(f"{path}: evaluation.tta must be a list of booleans, e.g. [false, true]")
    return ev


def _runs(path: Path, items) -> list[Run]:
    runs = []
    for r in items or []:
        if not isinstance(r, dict) or "name" not in r:
            raise ExperimentError(f"{path}: each run needs a name, got {r!r}")
        runs.append(Run(name=str(r["name"]), label=str(r.get("label", r["name"])), set=dict(r.get("set") or {})))
    if not runs or len({r.name for r in runs}) != len(runs):
        raise ExperimentError(f"{path}: runs must be a non-empty list with distinct names")
    return runs


def _check_folds(path: Path, folds) -> None:
    if isinstance(folds, dict):
        k = folds.get("contiguous")
        if set(folds) != {"contiguous"} or not isinstance(k, int) or k < 2:
            raise ExperimentError(f"{path}: folds must be {{contiguous: K}} (K >= 2) or a list of {{name, train, test}}")
    elif isinstance(folds, list) and folds:
        for f in folds:
            if not isinstance(f, dict) or set(f) != {"name", "train", "test"}:
                raise ExperimentError(f"{path}: each fold needs exactly name, train and test, got {f!r}")
    else:
        raise ExperimentError(f"{path}: folds must be {{contiguous: K}} or a non-empty list")


def _check_targets(exp: Experiment) -> None:
    """``targets:`` and ``compare:`` name runs and metrics of the experiment."""
    names = {r.name for r in exp.runs}
    for t in exp.targets:
        if t.get("run") not in names or t.get("metric") not in exp.metrics or t.get("op") not in OPS \
                or not isinstance(t.get("value"), (int, float)):
            raise ExperimentError(f"{exp.path}: bad target {t!r} (needs run in {sorted(names)}, metric in "
                                  f"{list(exp.metrics)}, op in {list(OPS)}, numeric value)")
    for c in exp.compare:
        if c.get("better") not in names or c.get("worse") not in names:
            raise ExperimentError(f"{exp.path}: bad comparison {c!r} (better/worse must name runs)")


def _check_profiles(exp: Experiment) -> None:
    names = {r.name for r in exp.runs}
    for name, prof in exp.profiles.items():
        if prof is not None and not isinstance(prof, dict):
            raise ExperimentError(f"{exp.path}: profiles.{name} must be a mapping")
        if (prof or {}).get("selection"):
            _check_selection(exp, (prof or {})["selection"], f"{exp.path}: profiles.{name}.selection")
        if (prof or {}).get("postprocess") is not None:
            _check_postprocess(prof["postprocess"], f"{exp.path}: profiles.{name}.postprocess")
        for rn in ((prof or {}).get("runs") or {}):
            if rn not in names:
                raise ExperimentError(f"{exp.path}: profiles.{name}.runs.{rn}: no such run")


def _check_postprocess(pp, where: str) -> None:
    """``profiles.P.postprocess: {validation, pick, steps}`` (see :func:`unet.reproduce.runner._postprocessing_choice`)."""
    if not isinstance(pp, dict) or not set(pp) <= {"validation", "pick", "steps"} or not {"validation", "steps"} <= set(pp):
        raise ExperimentError(f"{where}: a mapping {{validation: N, steps: S, pick: last}} (post-processing "
                              "parameters chosen on N validation images, predicted by the run's recipe trained S steps)")
    for key in ("validation", "steps"):
        if not isinstance(pp[key], int) or isinstance(pp[key], bool) or pp[key] < 1:
            raise ExperimentError(f"{where}.{key} must be an integer >= 1, got {pp[key]!r}")
    if pp.get("pick", "last") not in ("last", "spread"):
        raise ExperimentError(f"{where}.pick must be 'last' or 'spread'")


#: keys of ``profiles.P.selection`` (nested validation; see :func:`unet.reproduce.runner.select_in_fold`)
SELECTION_KEYS = {"runs", "validation", "pick", "steps", "measure", "variant", "candidates", "default", "follow",
                  "confirm"}


def _check_selection(exp: Experiment, sel, where: str) -> None:
    if not isinstance(sel, dict):
        raise ExperimentError(f"{where} must be a mapping")
    unknown = set(sel) - SELECTION_KEYS
    if unknown:
        raise ExperimentError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                              f"(valid: {', '.join(sorted(SELECTION_KEYS))})")
    names = {r.name for r in exp.runs}
    if not set(sel.get("runs") or []) <= names:
        raise ExperimentError(f"{where}.runs: {sorted(set(sel['runs']) - names)} are not runs ({sorted(names)})")
    if not isinstance(sel.get("validation"), int) or isinstance(sel.get("validation"), bool) or sel["validation"] < 1:
        raise ExperimentError(f"{where}.validation: the number of validation images per fold (an integer >= 1)")
    if sel.get("pick", "last") not in ("last", "spread"):
        raise ExperimentError(f"{where}.pick must be 'last' or 'spread'")
    steps = sel.get("steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise ExperimentError(f"{where}.steps: training steps of each search training (an integer >= 1)")
    if sel.get("measure") not in exp.metrics:
        raise ExperimentError(f"{where}.measure must be one of {', '.join(exp.metrics)}, got {sel.get('measure')!r}")
    if sel.get("variant", "plain") not in ("plain", "tta"):
        raise ExperimentError(f"{where}.variant must be 'plain' or 'tta'")
    cands = sel.get("candidates")
    if not isinstance(cands, list) or not cands or not all(
            isinstance(c, dict) and set(c) <= {"name", "set"} and "name" in c and isinstance(c.get("set") or {}, dict)
            for c in cands):
        raise ExperimentError(f"{where}.candidates: a non-empty list of {{name, set: {{key: value}}}}")
    cnames = [str(c["name"]) for c in cands]
    if len(set(cnames)) != len(cnames) or any(not n or "/" in n for n in cnames):
        raise ExperimentError(f"{where}.candidates: names must be distinct and contain no '/'")
    for c in cands:
        bad = {"data.train", "data.val"} & set(c.get("set") or {})
        if bad:
            raise ExperimentError(f"{where}.candidates.{c['name']}: may not set {', '.join(sorted(bad))}")
        n = (c.get("set") or {}).get("train.steps")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ExperimentError(f"{where}.candidates.{c['name']}: train.steps is the final training's step count "
                                  f"(an integer >= 1; its search training is scaled alike), got {n!r}")
    confirm = sel.get("confirm")
    if confirm is not None:
        def whole(v, low):
            return isinstance(v, int) and not isinstance(v, bool) and v >= low
        seeds = confirm.get("seeds") if isinstance(confirm, dict) else None
        if not isinstance(confirm, dict) or set(confirm) != {"top", "seeds"} or not whole(confirm["top"], 2) \
                or not isinstance(seeds, list) or not seeds or not all(whole(s, 0) for s in seeds) \
                or len(set(seeds)) != len(seeds):
            raise ExperimentError(f"{where}.confirm: {{top: K, seeds: [S, ...]}}, the K >= 2 best candidates "
                                  "trained again with each of these distinct seeds (integers >= 0)")
    if sel.get("default") is not None and str(sel["default"]) not in cnames:
        raise ExperimentError(f"{where}.default must name a candidate ({', '.join(cnames)})")
    follow = sel.get("follow") or {}
    searched = list(sel.get("runs") or names)
    order = [r.name for r in exp.runs]
    if not isinstance(follow, dict) or any(
            f not in names or f in searched or lead not in searched or order.index(lead) > order.index(f)
            for f, lead in follow.items()):
        raise ExperimentError(f"{where}.follow: {{RUN: SEARCHED_RUN}}: a run outside selection.runs takes, fold by "
                              "fold, the choice of a searched run listed before it")


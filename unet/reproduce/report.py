"""Report of a reproduction: summary statistics, targets, Markdown + JSON.

``report.json`` holds everything (per fold numbers, configs, timings,
environment); ``report.md`` renders it for people: our mean ± std over folds
beside the paper's numbers, each target met or missed with its margin, and how
the numbers were made (command, git commit, machine, wall time, seeds).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

from unet.errors import UserError
from unet.io import write_text_atomic
from unet.reproduce.experiment import LOWER_IS_BETTER

METRIC_TITLES = {"warping_error": "warping error", "rand_error": "Rand error", "pixel_error": "pixel error",
                 "seg": "SEG", "seg_watershed": "SEG, watershed", "warping_error_watershed": "warping error, gaps closed",
                 "rand_error_watershed": "Rand error, gaps closed", "pixel_error_watershed": "pixel error, gaps closed"}
PROTOCOL = (
    "Held-out images never influence training: inside a fold the trainer has no validation set "
    "(`data.val: none`), so no checkpoint, step count or threshold is chosen on them; each run is "
    "trained for a fixed number of steps and the held-out fold is predicted once, at the end, from the "
    "final checkpoint (`last.pt`). The ISBI errors are minimised over thresholds inside the metric, as "
    "the challenge's own script does. Targets were fixed before any run and were not tuned on test folds."
)


# ------------------------------------------------------------------------- statistics
def summarize(values) -> dict:
    """``{"mean", "std", "min", "max", "n", "values"}``; ``std`` is the sample std (ddof=1), 0 for one fold."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values to summarize")
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size), "values": [float(x) for x in v]}


def _cmp(x: float, op: str, y: float) -> bool:
    return {"<=": x <= y, ">=": x >= y, "<": x < y, ">": x > y}[op]


def check_targets(targets, summaries, variants) -> list[dict]:
    """Evaluate each target on our numbers.

    Parameters
    ----------
    targets : list of dict
        ``{run, metric, op, value}`` and optionally ``per_fold: true`` (every
        fold must meet it; judged on the worst fold) and ``variant`` (default:
        every evaluation variant).
    summaries : dict
        ``{run: {variant: {metric: summarize(...)}}}``.

    Returns
    -------
    list of dict
        One entry per target and variant: ``ours`` (the mean, or the worst fold),
        ``met``, ``margin`` (how far inside the target, >= 0, or by how much it
        is missed, > 0 in ``missed_by``) and a sentence ``statement``.
    """
    out = []
    for t in targets:
        for variant in ([t["variant"]] if t.get("variant") else variants):
            s = summaries.get(t["run"], {}).get(variant, {}).get(t["metric"])
            if s is None:
                continue
            per_fold = bool(t.get("per_fold"))
            lower = t["op"] in ("<=", "<")
            ours = (max(s["values"]) if lower else min(s["values"])) if per_fold else s["mean"]
            met = _cmp(ours, t["op"], t["value"])
            gap = abs(ours - t["value"])
            what = f"{t['run']} {METRIC_TITLES.get(t['metric'], t['metric'])} ({variant})"
            agg = "worst fold" if per_fold else f"mean of {s['n']} fold{'s' if s['n'] != 1 else ''}"
            if met:
                statement = f"met: {what} {agg} {ours:.6g} {t['op']} {t['value']:g} (margin {gap:.3g})"
            else:
                statement = f"MISSED: {what} {agg} {ours:.6g} is not {t['op']} {t['value']:g} (missed by {gap:.3g})"
            out.append({"run": t["run"], "metric": t["metric"], "variant": variant, "op": t["op"],
                        "target": float(t["value"]), "per_fold": per_fold, "ours": float(ours), "met": bool(met),
                        "margin": float(gap) if met else 0.0, "missed_by": 0.0 if met else float(gap),
                        "statement": statement})
    return out


def check_comparisons(compare, summaries, metrics, variants) -> list[dict]:
    """``{better: A, worse: B}``: A's fold mean beats B's on every metric and variant."""
    out = []
    for c in compare:
        a, b = c["better"], c["worse"]
        for variant in variants:
            for m in metrics:
                sa = summaries.get(a, {}).get(variant, {}).get(m)
                sb = summaries.get(b, {}).get(variant, {}).get(m)
                if sa is None or sb is None:
                    continue
                lower = LOWER_IS_BETTER[m]
                met = sa["mean"] < sb["mean"] if lower else sa["mean"] > sb["mean"]
                word = "lower" if lower else "higher"
                statement = (f"{'met' if met else 'MISSED'}: {a} {METRIC_TITLES[m]} ({variant}) {sa['mean']:.6g} "
                             f"vs {b} {sb['mean']:.6g} ({word} is better; difference {abs(sa['mean'] - sb['mean']):.3g})")
                out.append({"better": a, "worse": b, "metric": m, "variant": variant, "ours_better": sa["mean"],
                            "ours_worse": sb["mean"], "met": bool(met), "statement": statement})
    return out


# ------------------------------------------------------------------------ environment
def git_commit(*places) -> dict:
    """The commit of the first git repository that holds one of ``places`` (default: the current directory).

    ``{"commit": HEAD, "dirty": bool, "repository": top folder, "dirty_in": what was checked}``, or
    ``{"commit": "unknown", "dirty": None}`` when no place is in a repository (or git is missing).  A
    repository that ignores the place does not count: a wheel installed in a repository's ignored
    virtual environment is not that repository's code.  ``dirty``: uncommitted changes to ``unet/`` or
    ``configs/`` in a checkout of this package, anywhere in the repository otherwise.
    """
    for place in places or (Path.cwd(),):
        place = Path(place).resolve()
        folder = place if place.is_dir() else place.parent
        top = _git(["rev-parse", "--show-toplevel"], folder)
        if top is None or top.returncode != 0:
            continue
        ignored = _git(["check-ignore", "-q", str(place)], folder)
        head = _git(["rev-parse", "HEAD"], folder)
        if ignored is None or ignored.returncode == 0 or head is None or head.returncode != 0:
            continue
        root = Path(top.stdout.strip())
        scope = ["unet", "configs"] if (root / "unet" / "reproduce" / "report.py").is_file() else []
        diff = _git(["diff", "--quiet", "HEAD", "--", *scope], root)
        return {"commit": head.stdout.strip(), "dirty": None if diff is None else diff.returncode == 1,
                "repository": str(root), "dirty_in": "unet/ or configs/" if scope else "the repository"}
    return {"commit": "unknown", "dirty": None}


def _git(args: list, cwd: Path):
    """``git ARGS`` in ``cwd`` (its CompletedProcess), or None when git cannot run."""
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(device: str = "cpu") -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "device": str(device), "torch_threads": torch.get_num_threads()}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# ---------------------------------------------------------------------------- render
def _fmt(x: float, metric: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.6f}" if metric.startswith("warping_error") else f"{x:.4f}"


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def render_markdown(report: dict) -> str:
    """The human-readable report of ``report`` (the dict written to ``report.json``)."""
    lines = [f"# {report['title']}", ""]
    lines += [f"Experiment `{report['experiment']}`, profile `{report['profile']}`: {report['profile_description']}", ""]
    if report.get("partial"):
        lines += [f"**Partial run**: {report['partial']}", ""]
    lines += _results_lines(report)
    lines += _postprocessing_lines(report)
    lines += _reading_lines(report)
    lines += _selection_lines(report)
    lines += _target_lines(report)
    lines += ["## Protocol", "", report["protocol"], ""]
    for f in report["folds"]:
        lines.append(f"- **{f['name']}**: {f['description']}")
    lines += [""]
    if report.get("notes"):
        lines += [report["notes"].strip(), ""]
    lines += _provenance_lines(report)
    lines += _run_table_lines(report)
    return "\n".join(lines)


def _results_lines(report: dict) -> list[str]:
    """The results table: each run's mean ± std per variant and its per-fold numbers, then the paper's rows."""
    metrics = report["metrics"]
    lines = ["## Results", ""]
    head = "| | TTA | " + " | ".join(METRIC_TITLES[m] for m in metrics) + " | per fold |"
    lines += [head, "|" + "---|" * (len(metrics) + 3)]
    for run in report["runs"]:
        for variant, ms in run["summary"].items():
            cells = [f"{_fmt(ms[m]['mean'], m)} ± {_fmt(ms[m]['std'], m)}" for m in metrics]
            per_fold = "; ".join(
                f"{fold}" + (f" ({run['folds'][fold]['selected']})" if run["folds"][fold].get("selected") else "")
                + ": " + ", ".join(_fmt(run["folds"][fold]["metrics"][variant][m], m) for m in metrics)
                for fold in run["folds"])
            lines.append(f"| **{run['label']}** (ours, {run['name']}) | {'yes' if variant == 'tta' else 'no'} | "
                         + " | ".join(cells) + f" | {per_fold} |")
    for row in report["paper"]:
        cells = [_fmt(row[m], m) if isinstance(row.get(m), (int, float)) else "-" for m in metrics]
        lines.append(f"| {row['name']} | {row.get('tta', '-')} | " + " | ".join(cells) + f" | {row.get('note', '')} |")
    return lines


def _postprocessing_lines(report: dict) -> list[str]:
    """How the post-processing parameters (watershed seeds, gap closing) were chosen, fold by fold."""
    lines = []
    folds = [(run["name"], fold, r) for run in report["runs"] for fold, r in run["folds"].items()]
    seeds = [f"{name} {fold}: {_parameters_text(r['metrics']['seed_selection'])}" + _chosen_on(r, "seed_selection")
             + _chosen_on(r, "seed_selection", "tta")
             for name, fold, r in folds if "seed_selection" in r["metrics"]]
    if seeds:
        lines += ["", "SEG uses the paper's instances, the connected components of probability > 0.5; "
                      "\"SEG, watershed\" uses a seeded watershed (`unet.inference.cell_instances`) whose seed "
                      "threshold (and, where given, the foreground threshold that bounds its cells, \"cells > f\") "
                      "was chosen in each fold on its training frames (where marked: on validation frames "
                      "carved from them), never on its test frames: " + "; ".join(seeds) + "."]
    closed = [f"{name} {fold}: {_parameters_text(r['metrics']['watershed_selection'])}"
              + _chosen_on(r, "watershed_selection") + _chosen_on(r, "watershed_selection", "tta")
              for name, fold, r in folds if "watershed_selection" in r["metrics"]]
    if closed:
        lines += ["", "\"Gaps closed\" (beyond the paper) scores the same maps after a seeded watershed of the cell "
                      "probability that draws one-pixel boundaries between confident cell cores "
                      "(`unet.inference.membrane_watershed`); its parameters were chosen in each fold by Rand error "
                      "on its training slices (where marked: on validation slices carved from them; the smallest "
                      "cell region kept, where given, then by warping error, or by Rand error x warping error "
                      "where a Rand error after it is listed), never on its test slices: "
                  + "; ".join(closed) + "."]
    posts = [r["postprocessing"] for _, _, r in folds if r.get("postprocessing")]
    if posts:
        cost = sum(p.get("train_seconds", 0) + p.get("eval_seconds", 0) for p in posts)
        lines += ["", f"Post-processing chosen on validation images (`profiles.{report['profile']}.postprocess`): "
                      f"in every fold, the run's final recipe was trained for {posts[0]['steps']} steps on the fold's "
                      "training images minus the validation images of nested selection (a search candidate trained "
                      "with the same config was used as it is) and predicted those once; the parameters with the "
                      "best score there were applied to the held-out images"
                  + (", those of TTA maps chosen on TTA maps of the validation images"
                     if any("tta" in p.get("variants", []) for p in posts) else "") + ". Cost: "
                  + str(timedelta(seconds=round(cost))) + " (not part of the final trainings' time)."]
    return lines


def _chosen_on(fold_result: dict, key: str, variant: str = "plain") -> str:
    """`` (on train/27, ...: Rand error 0.081, unprocessed 0.095)`` for parameters chosen on validation
    images; with ``variant``, ``, on TTA maps 0.8 (SEG 0.79)`` for those chosen on that variant's maps, if any."""
    top = fold_result["metrics"][key]
    if top.get("chosen_on") != "validation":
        return ""
    if variant == "plain":
        return f" (on {', '.join(top['images'])}: {_validation_scores(top)})"
    sel = top.get(variant)
    if not isinstance(sel, dict):
        return ""
    return f", on {variant.upper()} maps {_parameters_text(sel)} ({_validation_scores(sel)})"


def _parameters_text(sel: dict) -> str:
    """The chosen parameters: the watershed's seed threshold, or the gap closing's seeds and smallest cell."""
    if "threshold" in sel:  # a record from before session 12 chose the seeds only, on cells > 0.5
        return f"{sel['threshold']:g}" + (f", cells > {sel['foreground_threshold']:g}"
                                          if "foreground_threshold" in sel else "")
    return (f"seed threshold {sel['seed_threshold']:g}, min. seed {sel['min_seed_size']} px"
            + (f", min. cell {sel['min_cell_size']} px" if "min_cell_size" in sel else ""))


def _validation_scores(sel: dict) -> str:
    """The chosen parameters' validation score (and the unprocessed maps', the largest cell kept's)."""
    if "seed_threshold" in sel:  # the gap-closing watershed: Rand error, keyed "threshold/min. seed"
        scores = sel["validation_rand_error"]
        best = f"{scores[format(sel['seed_threshold'], 'g') + '/' + str(sel['min_seed_size'])]:.4f}"
        none = f", unprocessed {scores['none']:.4f}" if "none" in scores else ""
        warping = sel.get("validation_warping_error") or {}
        rand = sel.get("validation_cell_rand_error") or {}  # since session 17 (with the min. cell's criterion)
        k = str(sel.get("min_cell_size"))
        cells = (f"; warping error {warping[k]:.6f}, keeping every cell {warping['0']:.6f}"
                 if "min_cell_size" in sel and "0" in warping else "")
        if cells and k in rand and "0" in rand:
            cells += f"; Rand error after the min. cell {rand[k]:.4f}, keeping every cell {rand['0']:.4f}"
        return f"Rand error {best}{none}{cells}"
    # the seeded watershed of cell instances: SEG, keyed by seed threshold, then by foreground threshold
    seeds = sel["validation_seg_watershed"][str(sel["threshold"])]
    if "foreground_threshold" not in sel:
        return f"SEG {seeds:.3f}"
    return f"SEG {sel['validation_seg_foreground'][str(sel['foreground_threshold'])]:.3f}, cells > 0.5 {seeds:.3f}"


def _reading_lines(report: dict) -> list[str]:
    """How to read the table (what ours and the paper's numbers are) and the comparison figure."""
    lines = ["", f"Ours: mean ± sample standard deviation over {report['n_folds']} fold(s) "
                 f"({', '.join(f['name'] for f in report['folds'])}). "
                 + ("Lower is better for every error. " if report["kind"] == "isbi" else "Higher SEG is better. ")
                 + "The paper's numbers are on the challenge's own test set and are shown for scale, not as a "
                   "like-for-like comparison.", ""]
    if report.get("figure"):
        what = ("the cell probability in grey; red: membrane predicted as cell (the gaps that merge cells), "
                "blue: cell predicted as membrane, at threshold 0.5; the central 256x256 pixels, scores of "
                "the whole image" if report["kind"] == "isbi" else
                "the cells as the paper takes them (components of probability > 0.5), SEG of the frame")
        lines += [f"![one held-out image per fold]({report['figure']})", "",
                  f"One held-out image per fold (the middle one), ground truth and every run: {what}.", ""]
    return lines


def _target_lines(report: dict) -> list[str]:
    checks = report["targets"] + report["comparisons"]
    if not checks:
        return []
    lines = ["## Targets", ""] + [f"- {t['statement']}" for t in checks]
    n_missed = sum(not t["met"] for t in checks)
    return lines + ["", f"{n_missed} of {len(checks)} target checks missed." if n_missed else "Every target is met.", ""]


def _provenance_lines(report: dict) -> list[str]:
    """How the numbers were made: command, git commit, machine, times, reused trainings."""
    lines = ["## How these numbers were made", "", "```", report["command"], "```", ""]
    g = report["git"]
    lines.append(f"- git commit: `{g['commit']}`" + (f" (with uncommitted changes in {g.get('dirty_in', 'unet/ or configs/')})"
                                                      if g.get("dirty") else ""))
    m = report["machine"]
    lines.append(f"- machine: {m['platform']}, {m['cpu_count']} CPU(s), torch {m['torch']}, device {m['device']}"
                 + (f" ({m['gpu']})" if m.get("gpu") else ""))
    lines.append(f"- started {report['started']}, finished {report['finished']}, wall time {_hms(report['wall_seconds'])}")
    final = _hms(sum(r["wall_seconds"] for r in report["runs"]))
    searched = [r for r in report["runs"] if "search_seconds" in r]
    if searched:
        lines.append("- nested selection (search trainings, reported apart from the final trainings and their "
                     "budget): " + "; ".join(f"{r['name']} {_hms(r['search_seconds'])}" for r in searched)
                     + f"; final trainings and predictions: {final}")
    folds = [f for run in report["runs"] for f in run["folds"].values()]
    reused = [f for f in folds if f.get("reused")]
    if reused:
        rescored = sum(1 for f in reused if f.get("rescored"))
        from_report = sum(1 for f in reused if f.get("reused") == "report")
        lines.append(f"- {len(reused)} of {len(folds)} trainings were finished by earlier invocations and reused"
                     + (f" ({from_report} of them taken from the previous report and its committed checkpoints, "
                        "their training folders gone)" if from_report else "")
                     + (f" ({rescored} of them scored again with the current evaluation)" if rescored else "")
                     + f"; all trainings and evaluations together: {final}")
    return lines


def _steps_text(run: dict) -> str:
    """The final trainings' step count, per fold where a choice (a candidate's ``train.steps``) made them differ."""
    per_fold = {name: f.get("steps", run["steps"]) for name, f in run["folds"].items()}
    if len(set(per_fold.values())) <= 1:
        return str(next(iter(per_fold.values()), run["steps"]))
    return ", ".join(f"{name}: {n}" for name, n in per_fold.items())


def _run_table_lines(report: dict) -> list[str]:
    """One row per run (model, steps, seeds, time, checkpoints), then each run's overrides of the base config."""
    lines = ["", "| run | model | steps | seed | wall time (train + predict) | checkpoints |", "|---|---|---|---|---|---|"]
    for run in report["runs"]:
        cks = ", ".join(f"[{Path(f['checkpoint']).name}]({f['checkpoint']})" if f.get("checkpoint") else
                        f"({f.get('checkpoint_note', 'not copied')})" for f in run["folds"].values())
        seeds = sorted({f["seed"] for f in run["folds"].values()})
        lines.append(f"| {run['name']} | {run['model']} | {_steps_text(run)} | {', '.join(map(str, seeds))} | "
                     f"{_hms(run['wall_seconds'])} | {cks} |")
    lines += ["", "Overrides of each run on top of the base config "
                  f"`{report['base_config']}` (full resolved configs in report.json):", ""]
    for run in report["runs"]:
        ov = ", ".join(f"{k}={v}" for k, v in run["overrides"].items()) or "(none)"
        lines.append(f"- {run['name']}: {ov}")
    lines.append("")
    return lines


def _selection_lines(report: dict) -> list[str]:
    """The nested selection of each run: every candidate per fold with its validation score, and the choice."""
    lines = []
    for run in report["runs"]:
        if run.get("selection_off"):
            lines += [f"Nested selection of {run['name']}: off ({run['selection_off']}).", ""]
        if run.get("selection_followed"):
            lines += [f"**{run['label']}** ({run['name']}) takes, in every fold, the settings chosen for "
                      f"{run['selection_followed']}: " + "; ".join(f"{f}: {c}" for f, c in run["selected"].items())
                      + " (no search of its own)"
                      + ("; its own " + ", ".join(f"{k}={v}" for k, v in run["selection_keeps"].items())
                         + " stays where a choice sets it too" if run.get("selection_keeps") else "") + ".", ""]
        sel = run.get("selection")
        if not sel:
            continue
        first = next(iter(sel.values()))
        m = first["measure"]
        word = "lower" if LOWER_IS_BETTER[m] else "higher"
        lines += [f"**{run['label']}** ({run['name']}): inside every fold, candidates trained for "
                  f"{first['candidates'][0]['steps']} steps on the fold's training images minus its validation "
                  f"images, scored by {METRIC_TITLES.get(m, m)} ({first['variant']}; {word} is better) on those "
                  f"validation images; the chosen one was then trained on all of the fold's training images "
                  f"({_steps_text(run)} steps) and predicted the held-out images once. Held-out images chose nothing. "
                  f"Search cost: {_hms(run['search_seconds'])} (not part of the final trainings' time).", "",
                  "| fold | validation images | candidate | settings | validation score | search time | |",
                  "|---|---|---|---|---|---|---|"]
        for fold, s in sel.items():
            means = (s.get("confirm") or {}).get("means", {})
            for c in s["candidates"] + s.get("confirmation", []):
                ov = ", ".join(f"{k}={v}" for k, v in c["set"].items()) or "(the run's settings)"
                rerun = "seed" in c
                marks = [] if rerun or c["name"] not in means else [f"mean over seeds {_fmt(means[c['name']], m)}"]
                marks += ["**chosen**"] * (c["name"] == s["chosen"] and not rerun)
                if c.get("left_top"):
                    marks.append(f"no longer among the {s['confirm']['top']} best: not in the mean")
                if c.get("steps") != first["candidates"][0].get("steps"):  # a candidate's own train.steps, scaled
                    marks.append(f"search training {c['steps']} steps")
                name = f"{c['name']} (seed {c['seed']})" if rerun else c["name"]
                lines.append(f"| {fold} | {', '.join(s['validation'])} | {name} | {ov} | {_fmt(c['score'], m)} "
                             f"| {_hms(c['train_seconds'] + c['eval_seconds'])} | {'; '.join(marks)} |")
        confirms = [s["confirm"] for s in sel.values() if s.get("confirm")]
        if confirms:
            # a blank line first: a line right after a Markdown table would render as one of its rows
            lines += ["", f"The {confirms[0]['top']} best candidates of each fold were trained again with seed(s) "
                         f"{', '.join(map(str, confirms[0]['seeds']))} and the choice is the best mean over seeds "
                         "(one short training ranks candidates with the noise of its seed)."]
        lines.append("")
    return ["## Nested selection", ""] + lines if lines else []


def write_report(out_dir, report: dict, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` to ``out_dir`` atomically.

    Both files are checked before either is written: an existing report is
    only replaced with ``overwrite=True`` (:class:`UserError` otherwise).
    """
    out = Path(out_dir)
    js, md = out / "report.json", out / "report.md"
    if not overwrite:
        for p in (js, md):
            if p.exists():
                raise UserError(f"{p}: already exists (pass --overwrite to replace the report)")
    text_md = render_markdown(report)
    text_js = json.dumps(report, indent=2, sort_keys=False) + "\n"
    write_text_atomic(js, text_js, overwrite=overwrite)
    write_text_atomic(md, text_md, overwrite=overwrite)
    return js, md

"""Folds, leakage guard, experiment files, SEG instances, targets and report writing (no training)."""

import json
from pathlib import Path

import numpy as np
import pytest

from unet.data import ImagePair
from unet.errors import UserError
from unet.reproduce import (
    check_no_leak,
    choose_cell_watershed,
    choose_seed_threshold,
    check_targets,
    contiguous_folds,
    fold_metrics,
    list_experiments,
    load_experiment,
    resolve_folds,
    summarize,
    write_report,
)
from unet.reproduce.folds import select_folds
from unet.reproduce.report import check_comparisons
from unet.reproduce.runner import build_config


def _pairs(names):
    return [ImagePair(Path(f"{n}.png"), Path(f"{n}_mask.png"), n) for n in names]


# ------------------------------------------------------------------------------ folds
def test_contiguous_folds_are_contiguous_disjoint_and_cover_all_30():
    folds = contiguous_folds(30, 3)
    assert len(folds) == 3
    tests = [te for _, te in folds]
    for train, test in folds:
        assert len(test) == 10 and len(train) == 20
        assert test == list(range(test[0], test[0] + 10))  # contiguous
        assert sorted(train + test) == list(range(30))  # train is exactly the rest
        assert not set(train) & set(test)
    assert sorted(i for te in tests for i in te) == list(range(30))  # disjoint and covering
    assert [te[0] for te in tests] == [0, 10, 20]


@pytest.mark.parametrize("n, k", [(30, 4), (30, 1), (2, 3)])
def test_unequal_or_degenerate_folds_are_refused(n, k):
    with pytest.raises(ValueError):
        contiguous_folds(n, k)


def test_isbi_folds_follow_slice_order_not_name_order():
    # names sorted as strings would put train/10 before train/2; the pairs come in slice order
    pairs = _pairs([f"train/{i}" for i in range(30)])
    folds = resolve_folds({"contiguous": 3}, pairs)
    assert [f.name for f in folds] == ["fold1", "fold2", "fold3"]
    assert folds[0].test == tuple(f"train/{i}" for i in range(10))
    assert folds[1].train == tuple(f"train/{i}" for i in list(range(10)) + list(range(20, 30)))
    assert select_folds(folds, "3,fold1") == [folds[2], folds[0]]
    with pytest.raises(UserError, match="no such fold"):
        select_folds(folds, "4")


def test_sequence_folds_of_dic_hela(dic_hela):
    from unet.data import dataset_pairs

    exp = load_experiment("dic-hela")
    folds = resolve_folds(exp.folds, dataset_pairs("dic-hela", dic_hela))
    assert [f.name for f in folds] == ["01->02", "02->01"]
    assert all(n.startswith("01/") for n in folds[0].train) and all(n.startswith("02/") for n in folds[0].test)
    assert folds[0].train == folds[1].test and folds[0].test == folds[1].train
    assert len(folds[0].train) == len(list((dic_hela / "01" / "masks").glob("man_seg*.tif"))) in (3, 9)
    assert len(folds[0].test) == len(list((dic_hela / "02" / "masks").glob("man_seg*.tif"))) in (2, 9)


def test_leak_guard():
    check_no_leak(["a", "b"], ["c"], val="none")
    with pytest.raises(UserError, match="leaks"):
        check_no_leak(["a", "b"], ["b", "c"])
    with pytest.raises(UserError, match="must not validate"):
        check_no_leak(["a"], ["c"], val=["c"])


# ------------------------------------------------------------------- experiment files
@pytest.mark.parametrize("name", ["isbi2012", "dic-hela", "phc-u373"])
def test_shipped_experiments_build_valid_configs_for_every_run_and_profile(name):
    exp = load_experiment(name)
    assert name in list_experiments()
    assert {"cpu", "paper"} <= set(exp.profiles)
    pairs = _pairs([f"x{i}" for i in range(6)])
    fold = resolve_folds({"contiguous": 3}, pairs)[0]
    for run in exp.runs:
        for profile in exp.profiles:
            cfg = build_config(exp, run, profile=profile, fold=fold)  # validates every key and value
            assert cfg.data.val == "none" and cfg.data.train == list(fold.train)
            if profile == "paper" and cfg.model.name == "unet":
                assert cfg.model.unet.base_channels == 64 and cfg.train.tile_size == 572  # paper Fig. 1
            if profile == "cpu":
                assert cfg.train.device != "cuda"
    # the CPU profile's models fit the 10 MB checkpoint limit of results/
    from unet.models import create_model

    for run in exp.runs:
        cfg = build_config(exp, run, profile="cpu", fold=fold)
        n = sum(p.numel() for p in create_model(cfg.model.name, **cfg.model_kwargs()).parameters())
        assert n * 4 < 10e6, (run.name, n)


def test_a_profile_that_extends_another_takes_its_settings_then_its_own(tmp_path):
    import yaml

    from unet.reproduce.experiment import ExperimentError

    real = yaml.safe_load((Path(load_experiment("isbi2012").path)).read_text())
    real["base"] = str(Path(load_experiment("isbi2012").base))
    real["profiles"]["next"] = {"extends": "cpu", "set": {"train.steps": 7, "train.amp": "fp16"},
                                "runs": {"fcn8s": {"model.fcn.fc_channels": 64}}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(real, sort_keys=False))
    exp = load_experiment(str(path))
    cpu, nxt = exp.profiles["cpu"], exp.profiles["next"]
    assert nxt["selection"] == cpu["selection"] and nxt["postprocess"] == cpu["postprocess"]
    assert nxt["description"] == cpu["description"]
    fold = resolve_folds({"contiguous": 3}, _pairs([f"x{i}" for i in range(6)]))[0]
    by = {r.name: r for r in exp.runs}
    a = build_config(exp, by["fcn8s"], profile="cpu", fold=fold)
    b = build_config(exp, by["fcn8s"], profile="next", fold=fold)
    assert (a.train.steps, a.train.amp, b.train.steps, b.train.amp) == (5000, "bf16", 7, "fp16")
    assert (a.model.fcn.fc_channels, b.model.fcn.fc_channels) == (128, 64)
    assert b.model.fcn.base_channels == a.model.fcn.base_channels == 16  # the parent's run settings stay
    assert a.train.tile_size == b.train.tile_size == 380
    for bad in ("nope", "next"):  # a missing profile; a chain
        real["profiles"]["again"] = {"extends": bad}
        path.write_text(yaml.safe_dump(real, sort_keys=False))
        with pytest.raises(ExperimentError, match="profiles.again.extends"):
            load_experiment(str(path))


def test_user_cannot_override_the_fold_selection():
    exp = load_experiment("isbi2012")
    fold = resolve_folds({"contiguous": 3}, _pairs([f"x{i}" for i in range(6)]))[0]
    for item in ("data.val=20:30", "data.train=0:30"):
        with pytest.raises(UserError, match="folds decide"):
            build_config(exp, exp.runs[0], profile="cpu", overrides=[item], fold=fold)


def test_paper_numbers_of_the_issue_are_in_the_experiment_files():
    isbi = {r["name"]: r for r in load_experiment("isbi2012").paper}
    unet = next(r for n, r in isbi.items() if n.startswith("u-net"))
    idsia = next(r for n, r in isbi.items() if n.startswith("IDSIA"))
    assert (unet["warping_error"], unet["rand_error"], unet["pixel_error"]) == (0.000353, 0.0382, 0.0611)
    assert (idsia["warping_error"], idsia["rand_error"], idsia["pixel_error"]) == (0.000420, 0.0504, 0.0613)
    assert [r["seg"] for r in load_experiment("dic-hela").paper] == [0.7756, 0.46]
    assert load_experiment("phc-u373").paper[0]["seg"] == 0.9203


# ----------------------------------------------------------------------- SEG instances
def test_seg_counts_separated_touching_cells_as_two():
    gt = np.zeros((20, 40), np.int32)
    gt[2:18, 2:20] = 1
    gt[2:18, 20:38] = 2  # two touching cells
    merged = (gt > 0).astype(np.float32)
    separated = merged.copy()
    separated[:, 19:21] = 0.1  # a thin background line between them, as the border-weighted loss teaches
    # each cell loses one of its 18 columns to the line: Jaccard 17/18 for both
    assert fold_metrics("seg", [separated], [gt])["seg"] == pytest.approx(17 / 18)
    # merged: one component covers both cells, Jaccard = |R| / |R1 u R2| = 1/2 for each
    assert fold_metrics("seg", [merged], [gt])["seg"] == pytest.approx(0.5)


def test_watershed_seg_divides_weak_borders_and_its_seed_is_chosen_on_training_images():
    gt = np.zeros((20, 40), np.int32)
    gt[2:18, 2:20] = 1
    gt[2:18, 20:38] = 2
    prob = np.where(gt > 0, 0.97, 0.02)
    prob[2:18, 19:21] = 0.75  # a weak border: above the mask threshold and above a 0.7 seed threshold
    m = fold_metrics("seg", [prob], [gt], seed_threshold=0.9)
    assert m["seg"] == pytest.approx(0.5) and m["seg_watershed"] > 0.9 and m["seed_threshold"] == 0.9
    # seeds at 0.6 or 0.7 join the two cores through the border; 0.8 and up separate them
    best, scores = choose_seed_threshold([prob], [gt], grid=(0.6, 0.7, 0.8, 0.9))
    assert best == 0.8 and scores[0.6] == pytest.approx(0.5) and scores[0.8] == scores[0.9] > 0.9


def test_watershed_foreground_is_chosen_after_the_seeds_and_ties_keep_the_papers():
    gt = np.zeros((20, 40), np.int32)
    gt[2:18, 2:20] = 1
    gt[2:18, 20:38] = 2
    prob = np.where(gt > 0, 0.97, 0.02)
    prob[2:18, 19:21] = 0.75  # a weak border that only seeds above 0.8 divide
    assert choose_cell_watershed([prob], [gt], seed_grid=(0.7, 0.9))[0] == {"threshold": 0.9, "foreground_threshold": 0.5}
    rim = prob.copy()
    rim[[2, 17], 2:38] = 0.35  # each cell's first and last row, which the network half-called background
    best, scores = choose_cell_watershed([rim], [gt], seed_grid=(0.7, 0.9), foreground_grid=(0.5, 0.4, 0.3))
    assert best == {"threshold": 0.9, "foreground_threshold": 0.3}
    assert scores["foreground"][0.5] == scores["foreground"][0.4] < scores["foreground"][0.3]
    m = fold_metrics("seg", [rim], [gt], seed_threshold=0.9, foreground_threshold=0.3)
    assert m["seg_watershed"] == pytest.approx(scores["foreground"][0.3]) and m["foreground_threshold"] == 0.3
    assert m["seg"] == fold_metrics("seg", [rim], [gt], seed_threshold=0.9)["seg"]  # the paper's cells: > 0.5


# ---------------------------------------------------------------------- targets, report
def test_summary_and_target_statements_agree_with_the_numbers():
    s = {"unet": {"plain": {"pixel_error": summarize([0.06, 0.08]), "seg": summarize([0.80, 0.70])}},
         "fcn8s": {"plain": {"pixel_error": summarize([0.05, 0.05]), "seg": summarize([0.5, 0.5])}}}
    assert s["unet"]["plain"]["pixel_error"]["mean"] == pytest.approx(0.07)
    assert s["unet"]["plain"]["pixel_error"]["std"] == pytest.approx(np.std([0.06, 0.08], ddof=1))
    targets = [{"run": "unet", "metric": "pixel_error", "op": "<=", "value": 0.065},
               {"run": "unet", "metric": "seg", "op": ">=", "value": 0.75},
               {"run": "unet", "metric": "seg", "op": ">=", "value": 0.75, "per_fold": True}]
    pix, seg_mean, seg_fold = check_targets(targets, s, ["plain"])
    assert not pix["met"] and pix["missed_by"] == pytest.approx(0.005) and "MISSED" in pix["statement"]
    assert seg_mean["met"] and seg_mean["margin"] == pytest.approx(0.0) and seg_mean["statement"].startswith("met")
    assert not seg_fold["met"] and seg_fold["ours"] == pytest.approx(0.70)  # judged on the worst fold
    assert seg_fold["missed_by"] == pytest.approx(0.05)
    comp = {c["metric"]: c for c in check_comparisons([{"better": "unet", "worse": "fcn8s"}], s,
                                                       ["pixel_error", "seg"], ["plain"])}
    assert not comp["pixel_error"]["met"]  # 0.07 is a larger error than 0.05
    assert comp["seg"]["met"]  # 0.75 > 0.5


def _minimal_report():
    return {"title": "T", "experiment": "e", "profile": "cpu", "profile_description": "", "partial": "",
            "metrics": ["seg"], "kind": "seg", "runs": [], "paper": [{"name": "u-net (paper)", "seg": 0.7756}],
            "n_folds": 0, "folds": [], "targets": [], "comparisons": [], "protocol": "P", "notes": "",
            "command": "unet reproduce e", "git": {"commit": "abc", "dirty": False},
            "machine": {"platform": "p", "cpu_count": 2, "torch": "t", "device": "cpu"},
            "started": "s", "finished": "f", "wall_seconds": 1.0, "base_config": "b"}


def test_report_is_written_atomically_and_never_overwritten_silently(tmp_path):
    report = _minimal_report()
    js, md = write_report(tmp_path, report)
    assert json.loads(js.read_text())["paper"][0]["seg"] == 0.7756
    assert "0.7756" in md.read_text() and "unet reproduce e" in md.read_text()
    before = (js.read_text(), md.read_text())
    with pytest.raises(UserError, match="--overwrite"):
        write_report(tmp_path, dict(report, title="CHANGED"))
    assert (js.read_text(), md.read_text()) == before
    # only report.md present still blocks both files
    js.unlink()
    with pytest.raises(UserError):
        write_report(tmp_path, dict(report, title="CHANGED"))
    assert not js.exists()
    write_report(tmp_path, dict(report, title="CHANGED"), overwrite=True)
    assert md.read_text().startswith("# CHANGED")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md"]  # no temp files left


def test_phc_u373_without_its_data_stops_with_a_clear_message(tmp_path, capsys):
    from unet.cli import main
    from unet.reproduce.runner import build_config

    exp = load_experiment("phc-u373")
    cfg = build_config(exp, exp.runs[0], profile="cpu")
    from unet.training.config import resolve_path

    if resolve_path(cfg, cfg.data.root).exists():
        pytest.skip("PhC-U373 data present")
    assert main(["reproduce", "phc-u373", "--out", str(tmp_path / "r"), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "phc-u373" in err and "data folder not found" in err and "unet data fetch" in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()  # nothing half-written


def test_an_unknown_profile_is_refused_before_any_work(tmp_path, capsys):
    from unet.cli import main

    assert main(["reproduce", "isbi2012", "--profile", "nope", "--out", str(tmp_path / "out"),
                 "--runs-dir", str(tmp_path / "runs")]) != 0
    err = capsys.readouterr().err
    assert "--profile nope" in err and "cpu, cpu-float32, paper" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()

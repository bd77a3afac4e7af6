"""Nested selection in `unet reproduce`: candidates chosen inside every fold on validation images carved from
its training images; held-out images choose nothing; resumable; --no-search uses a fixed recipe."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import skimage.io
import yaml

from unet import metrics as M
from unet.cli import main
from unet.errors import UserError
from unet.io import read_image
from unet.reproduce.experiment import ExperimentError, load_experiment
from unet.reproduce.folds import Fold, carve_validation, check_no_leak

SELECTION = {
    "runs": ["unet"], "validation": 1, "steps": 2, "measure": "rand_error",
    "candidates": [{"name": "lr-tiny", "set": {"optim.lr": 1.0e-6}},
                   {"name": "bn", "set": {"model.unet.norm": "batch", "train.bn_recalibration_tiles": 2}}],
    "default": "bn",
}


def _experiment(path, data_root, make_tiny_experiment, selection=SELECTION, **evaluation):
    make_tiny_experiment(path, data_root)
    d = yaml.safe_load(path.read_text())
    d["runs"] = [r for r in d["runs"] if r["name"] == "unet"]
    d["targets"], d["compare"] = [], []
    d["evaluation"].update(tta=[False], **evaluation)
    d["profiles"]["cpu"]["selection"] = selection
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def searched(tiny_isbi_stack, tmp_path_factory, make_tiny_experiment):
    tmp = tmp_path_factory.mktemp("select")
    exp = _experiment(tmp / "sel.yaml", tiny_isbi_stack, make_tiny_experiment, membrane_watershed=True)
    out, runs = tmp / "results", tmp / "runs"
    argv = ["reproduce", str(exp), "--out", str(out), "--runs-dir", str(runs), "--folds", "1,2", "--quiet"]
    assert main(argv) == 0
    return {"exp": exp, "out": out, "runs": runs, "argv": argv, "data": tiny_isbi_stack,
            "report": json.loads((out / "report.json").read_text()), "md": (out / "report.md").read_text()}


def test_every_fold_searches_on_its_own_training_images(searched):
    rep, runs = searched["report"], searched["runs"]
    run = rep["runs"][0]
    assert set(run["selection"]) == {"fold1", "fold2"}
    for fold in rep["folds"]:
        sel = run["selection"][fold["name"]]
        assert sel["validation"] == fold["train"][-1:]  # the last training image, never a test image
        assert not set(sel["validation"]) & set(fold["test"])
        assert sorted(sel["search_train"] + sel["validation"]) == sorted(fold["train"])
        for cand in sel["candidates"]:
            folder = runs / "unet" / "_search" / fold["name"] / cand["name"]
            cfg = yaml.safe_load((folder / "config.yaml").read_text())
            assert cfg["data"]["train"] == sel["search_train"] and cfg["data"]["val"] == "none"
            assert cfg["train"]["steps"] == 2
            for key, value in cand["set"].items():
                section, name = key.rsplit(".", 1)
                node = cfg
                for part in section.split("."):
                    node = node[part]
                assert node[name] == value
            # the score is the Rand error of the saved predictions of the validation images
            probs = np.stack([read_image(folder / "predictions/plain" / f"{n}.tif") for n in sel["validation"]])
            gt = np.stack([skimage.io.imread(searched["data"] / "masks" / f"{n}.png") for n in sel["validation"]])
            assert cand["score"] == pytest.approx(M.rand_error(gt, probs.astype(np.float64)), abs=1e-12)
            assert not (folder / "predictions/plain" / f"{fold['test'][0]}.tif").exists()
        scores = [c["score"] for c in sel["candidates"]]
        assert sel["chosen"] == sel["candidates"][int(np.argmin(scores))]["name"]
        # the final training: the fold's whole training set, the chosen settings, the full step count
        final = yaml.safe_load((runs / "unet" / fold["name"] / "config.yaml").read_text())
        assert final["data"]["train"] == fold["train"] and final["train"]["steps"] == 4
        chosen_set = sel["chosen_set"]
        assert final["optim"]["lr"] == chosen_set.get("optim.lr", 0.01)
        assert final["model"]["unet"]["norm"] == chosen_set.get("model.unet.norm")
        assert run["folds"][fold["name"]]["selected"] == sel["chosen"]


def test_report_lists_every_candidate_and_the_search_cost_apart(searched):
    rep, md = searched["report"], searched["md"]
    run = rep["runs"][0]
    assert "## Nested selection" in md and "Search cost" in md
    n_rows = sum(len(s["candidates"]) for s in run["selection"].values())
    assert n_rows == 4 and md.count("| fold1 | ") == 2 and md.count("**chosen**") == 2
    assert run["search_seconds"] == pytest.approx(sum(s["search_seconds"] for s in run["selection"].values()))
    assert run["search_seconds"] > 0 and "nested selection (search trainings" in md
    # wall time of the run is the final trainings only
    assert run["wall_seconds"] == pytest.approx(sum(f["train_seconds"] + f["eval_seconds"]
                                                    for f in run["folds"].values()))
    # the gap-closing rows are there, with parameters chosen on training slices
    assert "Rand error, gaps closed" in md and "rand_error_watershed" in run["summary"]["plain"]
    assert all("watershed_selection" in f["metrics"] for f in run["folds"].values())


def test_resume_keeps_finished_candidates(searched):
    runs = searched["runs"]
    marks = sorted((runs / "unet" / "_search").glob("*/*/result.json"))
    assert len(marks) == 4
    before = {p: p.stat().st_mtime_ns for p in marks}
    assert main(searched["argv"] + ["--resume"]) == 0
    rep = json.loads((searched["out"] / "report.json").read_text())
    assert all(c["reused"] for s in rep["runs"][0]["selection"].values() for c in s["candidates"])
    assert {p: p.stat().st_mtime_ns for p in marks} == before
    old = searched["report"]["runs"][0]["selection"]
    for fold, s in rep["runs"][0]["selection"].items():
        assert s["chosen"] == old[fold]["chosen"]
        assert [c["score"] for c in s["candidates"]] == [c["score"] for c in old[fold]["candidates"]]


def _spy_trainings(monkeypatch) -> list:
    """The folders that :class:`Trainer` trains from now on (appended as each training starts)."""
    from unet.training.trainer import Trainer

    trained, fit = [], Trainer.fit

    def spy(self, *args, **kwargs):
        trained.append(self.out)
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", spy)
    return trained


def test_resume_without_training_folders_takes_finished_work_from_the_report(searched, own_copy, monkeypatch):
    """A fresh clone has results/ but no runs/: --resume reuses what the report and its committed checkpoints
    record, keyed by config, and trains only what is new or changed."""
    import shutil

    from unet.reproduce.evaluate import prediction_path

    mine = own_copy(searched)
    out, runs, argv = mine["out"], mine["runs"], mine["argv"] + ["--resume"]
    shutil.rmtree(runs)
    before = json.loads((out / "report.json").read_text())
    weights = {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()}
    trained = _spy_trainings(monkeypatch)
    assert main(argv) == 0
    assert trained == []
    rep = json.loads((out / "report.json").read_text())
    run, old = rep["runs"][0], before["runs"][0]
    assert run["summary"] == old["summary"]
    assert {f["reused"] for f in run["folds"].values()} == {"report"}
    for name, sel in run["selection"].items():
        assert [(c["name"], c["score"], c["reused"]) for c in sel["candidates"]] == \
               [(c["name"], c["score"], "report") for c in old["selection"][name]["candidates"]]
    assert {p.name: p.read_bytes() for p in (out / "checkpoints").iterdir()} == weights  # not rewritten
    assert "taken from the previous report" in (out / "report.md").read_text()
    # the figure's image was predicted again from the committed weights: the same map as the first run's
    for fold in rep["folds"]:
        middle = fold["test"][len(fold["test"]) // 2]
        again = read_image(prediction_path(runs / "unet" / fold["name"], "plain", middle))
        first = read_image(prediction_path(searched["runs"] / "unet" / fold["name"], "plain", middle))
        np.testing.assert_allclose(again, first, atol=1e-6)

    # a final training whose committed weights are gone is trained again, and only that one
    (out / "checkpoints" / "unet-fold2.pt").unlink()
    assert main(argv) == 0
    assert [d.name for d in trained] == ["fold2"] and (out / "checkpoints" / "unet-fold2.pt").is_file()
    trained.clear()
    # a new candidate trains in every fold and nothing else does: the same settings as bn under another name,
    # so it ties with bn, which is listed first, and no choice changes (in a copy of the shared experiment file)
    exp = yaml.safe_load(mine["exp"].read_text())
    bn = next(c for c in exp["profiles"]["cpu"]["selection"]["candidates"] if c["name"] == "bn")
    exp["profiles"]["cpu"]["selection"]["candidates"].append({"name": "bn-again", "set": bn["set"]})
    changed = out.parent / "sel-again.yaml"
    changed.write_text(yaml.safe_dump(exp, sort_keys=False))
    assert main([str(changed) if a == str(mine["exp"]) else a for a in argv]) == 0
    assert sorted((d.parent.name, d.name) for d in trained) == [("fold1", "bn-again"), ("fold2", "bn-again")]
    for name, sel in json.loads((out / "report.json").read_text())["runs"][0]["selection"].items():
        scores = {c["name"]: c["score"] for c in sel["candidates"]}
        assert scores["bn-again"] == scores["bn"] and sel["chosen"] == old["selection"][name]["chosen"]


def test_no_search_trains_the_default_candidate(tiny_isbi_stack, tmp_path, make_tiny_experiment):
    exp = _experiment(tmp_path / "fixed.yaml", tiny_isbi_stack, make_tiny_experiment)
    out, runs = tmp_path / "results", tmp_path / "runs"
    assert main(["reproduce", str(exp), "--out", str(out), "--runs-dir", str(runs), "--folds", "1", "--quiet",
                 "--no-search"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert "selection" not in rep["runs"][0] and "--no-search" in rep["command"]
    assert not (runs / "unet" / "_search").exists()
    final = yaml.safe_load((runs / "unet/fold1/config.yaml").read_text())
    assert final["model"]["unet"]["norm"] == "batch" and final["train"]["bn_recalibration_tiles"] == 2
    assert "Nested selection of unet: off" in (out / "report.md").read_text()


def test_a_following_run_takes_the_choice_of_its_lead(tiny_isbi_stack, tmp_path, make_tiny_experiment):
    # every candidate sets the learning rate, and so does the follower itself: its own value must stay
    cands = [{**c, "set": {"optim.lr": 0.01, **c["set"]}} for c in SELECTION["candidates"]]
    exp = _experiment(tmp_path / "follow.yaml", tiny_isbi_stack, make_tiny_experiment,
                      selection={**SELECTION, "candidates": cands, "follow": {"unet-gap": "unet"}})
    d = yaml.safe_load(exp.read_text())
    d["runs"].append({"name": "unet-gap", "label": "U-Net, thin-membrane weight",
                      "set": {"loss.gap_weight": 5.0, "optim.lr": 0.02}})
    exp.write_text(yaml.safe_dump(d, sort_keys=False))
    out, runs = tmp_path / "results", tmp_path / "runs"
    base = ["reproduce", str(exp), "--out", str(out), "--runs-dir", str(runs), "--folds", "1", "--quiet"]
    assert main(base + ["--runs", "unet-gap"]) == 2  # its lead must run too
    assert main(base) == 0
    rep = json.loads((out / "report.json").read_text())
    lead, follower = rep["runs"]
    chosen = lead["selection"]["fold1"]["chosen"]
    assert follower["selected"] == {"fold1": chosen} and not (runs / "unet-gap" / "_search").exists()
    assert follower["folds"]["fold1"]["selected"] == f"{chosen}, optim.lr=0.02 kept"
    cfg = yaml.safe_load((runs / "unet-gap/fold1/config.yaml").read_text())
    assert cfg["loss"]["gap_weight"] == 5.0 and cfg["optim"]["lr"] == 0.02  # what the ablation ablates stays
    assert cfg["model"]["unet"]["norm"] == lead["selection"]["fold1"]["chosen_set"].get("model.unet.norm")
    lead_cfg = yaml.safe_load((runs / "unet/fold1/config.yaml").read_text())
    assert lead_cfg["optim"]["lr"] == lead["selection"]["fold1"]["chosen_set"]["optim.lr"] != 0.02
    md = (out / "report.md").read_text()
    assert "takes, in every fold, the settings chosen for unet" in md and "its own optim.lr=0.02 stays" in md


def test_confirmation_trains_the_leaders_again_with_other_seeds_and_chooses_by_their_mean(
        tiny_isbi_stack, tmp_path, make_tiny_experiment, capsys):
    cands = SELECTION["candidates"] + [{"name": "bn-lr", "set": {**SELECTION["candidates"][1]["set"],
                                                                  "optim.lr": 3.0e-3}}]
    exp = _experiment(tmp_path / "confirm.yaml", tiny_isbi_stack, make_tiny_experiment,
                      selection={**SELECTION, "candidates": cands, "confirm": {"top": 2, "seeds": [1, 2]}})
    out, runs = tmp_path / "results", tmp_path / "runs"
    argv = ["reproduce", str(exp), "--out", str(out), "--runs-dir", str(runs), "--folds", "1", "--quiet"]
    assert main(argv) == 0
    sel = json.loads((out / "report.json").read_text())["runs"][0]["selection"]["fold1"]
    leaders = sorted(sel["candidates"], key=lambda c: (c["score"], [x["name"] for x in cands].index(c["name"])))[:2]
    names = {c["name"] for c in leaders}
    assert {(r["name"], r["seed"]) for r in sel["confirmation"]} == {(n, s) for n in names for s in (1, 2)}
    for r in sel["confirmation"]:
        cfg = yaml.safe_load((runs / "unet/_search/fold1" / f"{r['name']}@seed{r['seed']}" / "config.yaml").read_text())
        assert cfg["seed"] == r["seed"] and cfg["train"]["steps"] == 2
    for c in leaders:
        scores = [c["score"]] + [r["score"] for r in sel["confirmation"] if r["name"] == c["name"]]
        assert sel["confirm"]["means"][c["name"]] == pytest.approx(np.mean(scores))
    assert sel["chosen"] == min(sel["confirm"]["means"], key=lambda n: (sel["confirm"]["means"][n],
                                                                          [x["name"] for x in cands].index(n)))
    assert set(sel["confirm"]["means"]) == names
    assert sel["search_seconds"] == pytest.approx(
        sum(c["train_seconds"] + c["eval_seconds"] for c in sel["candidates"] + sel["confirmation"]), abs=0.2)
    md = (out / "report.md").read_text()
    assert all(f"{n} (seed 2)" in md for n in names) and "best mean over seeds" in md
    # the sentence stands apart from the selection table (a line right after a table renders as its row)
    lines = md.splitlines()
    said = next(i for i, line in enumerate(lines) if "best mean over seeds" in line)
    assert lines[said - 1] == "" and lines[said - 2].startswith("|")

    # with the training folders gone, --resume takes the reruns from the report instead of training them
    import shutil
    shutil.rmtree(runs / "unet" / "_search")
    assert main(argv + ["--resume"]) == 0
    again = json.loads((out / "report.json").read_text())["runs"][0]["selection"]["fold1"]
    assert all(r["reused"] == "report" for r in again["confirmation"] + again["candidates"])
    assert again["chosen"] == sel["chosen"] and not (runs / "unet" / "_search").exists()

    # a candidate added later that ties the best (the same settings, listed last) pushes the second leader out
    # of the top 2: its reruns were tried, so they stay in the record and the search cost, outside the means
    first, second = (c["name"] for c in leaders)
    d = yaml.safe_load(exp.read_text())
    d["profiles"]["cpu"]["selection"]["candidates"].append({"name": "copy", "set": dict(leaders[0]["set"])})
    exp.write_text(yaml.safe_dump(d, sort_keys=False))
    assert main(argv + ["--resume"]) == 0
    later = json.loads((out / "report.json").read_text())["runs"][0]["selection"]["fold1"]
    assert set(later["confirm"]["means"]) == {first, "copy"}
    left = [r for r in later["confirmation"] if r.get("left_top")]
    assert {(r["name"], r["seed"]) for r in left} == {(second, 1), (second, 2)}
    assert all(r["reused"] == "report" for r in left)  # taken from the report, not trained again
    assert later["search_seconds"] == pytest.approx(
        sum(c["train_seconds"] + c["eval_seconds"] for c in later["candidates"] + later["confirmation"]), abs=0.2)
    assert "no longer among the 2 best: not in the mean" in (out / "report.md").read_text()

    # the runs' own seed cannot confirm anything
    d = yaml.safe_load(exp.read_text())
    d["profiles"]["cpu"]["selection"]["confirm"]["seeds"] = [0]
    exp.write_text(yaml.safe_dump(d, sort_keys=False))
    capsys.readouterr()
    assert main(["reproduce", str(exp), "--out", str(tmp_path / "other"), "--runs-dir", str(tmp_path / "r2"),
                 "--folds", "1", "--quiet"]) == 2
    assert "seed 0 is the runs' own seed" in capsys.readouterr().err
    assert not (tmp_path / "r2" / "unet" / "_search").exists()  # refused before any search training


def test_carve_validation_takes_training_images_only():
    fold = Fold("f", train=("a", "b", "c", "d", "e"), test=("x", "y"))
    last = carve_validation(fold, 2)
    assert last.test == ("d", "e") and last.train == ("a", "b", "c")
    spread = carve_validation(fold, 2, pick="spread")
    assert set(spread.test) <= set(fold.train) and len(spread.test) == 2 and not set(spread.test) & set(spread.train)
    with pytest.raises(UserError, match="cannot carve"):
        carve_validation(fold, 5)
    with pytest.raises(UserError, match="held out"):
        check_no_leak(fold.train, fold.test, validation=["a", "x"])
    with pytest.raises(UserError, match="validation images must be training images"):
        check_no_leak(fold.train, fold.test, validation=["zz"])


@pytest.mark.parametrize("change,message", [
    ({"measure": "seg"}, "measure must be one of"),
    ({"validation": 0}, "validation"),
    ({"candidates": []}, "candidates"),
    ({"candidates": [{"name": "a", "set": {"data.train": "0:2"}}]}, "may not set data.train"),
    ({"default": "nope"}, "default must name a candidate"),
    ({"runs": ["resnet"]}, "are not runs"),
    ({"budget": 3}, "unknown key"),
    ({"follow": {"unet": "unet"}}, "follow"),
    ({"confirm": {"top": 1, "seeds": [1]}}, "confirm"),
    ({"confirm": {"top": 2, "seeds": []}}, "confirm"),
    ({"confirm": {"top": 2, "seeds": [1, 1]}}, "confirm"),
    ({"confirm": {"top": 2}}, "confirm"),
    ({"candidates": [{"name": "a", "set": {"train.steps": 0}}]}, "train.steps"),
    ({"candidates": [{"name": "a", "set": {"train.steps": 2.5}}]}, "train.steps"),
])
def test_bad_selection_is_a_clear_error(tiny_isbi_stack, tmp_path, make_tiny_experiment, change, message):
    exp = _experiment(tmp_path / "bad.yaml", tiny_isbi_stack, make_tiny_experiment, selection={**SELECTION, **change})
    with pytest.raises(ExperimentError, match=message):
        load_experiment(exp)


@pytest.mark.parametrize("name", ["isbi2012", "dic-hela", "phc-u373"])
def test_shipped_cpu_recipes_and_candidates_are_seamless(name):
    """Issue 11: every network a shipped CPU profile trains, with every candidate of its selection, computes a
    function of its receptive field only (the FCN is same-padded, but has no per-tile statistics either)."""
    from unet.models import create_model
    from unet.models.seamless import tile_dependence
    from unet.reproduce.runner import build_config

    exp = load_experiment(name)
    fold = Fold("f", train=("a", "b", "c"), test=("x",))
    sel = exp.selection("cpu")
    assert sel and sel["candidates"]
    for run in exp.runs:
        sets = [{}] + [c.get("set") or {} for c in sel["candidates"]]
        for extra in sets:
            cfg = build_config(exp, run, profile="cpu", fold=fold, extra_set=extra)
            kwargs = {**cfg.model_kwargs(), "base_channels": 4}
            if cfg.model.name != "unet":
                kwargs["fc_channels"] = 8
            reason = tile_dependence(create_model(cfg.model.name, **kwargs))
            if cfg.model.name == "unet":
                assert reason is None, (name, run.name, extra, reason)
            else:
                assert reason is not None and "per-sample" not in reason, (name, run.name, reason)


def test_postprocessing_chosen_on_validation_images(tiny_isbi_stack, tmp_path, make_tiny_experiment, monkeypatch):
    """``profiles.P.postprocess``: the gap-closing parameters come from predictions of validation images by the
    run's recipe trained without them, not from the final model's own training images; adding it to a finished
    experiment re-scores the final trainings without training them again."""
    from unet import scoring as S
    from unet.inference.labels import membrane_watershed
    from unet.reproduce.evaluate import prediction_path

    exp = _experiment(tmp_path / "pp.yaml", tiny_isbi_stack, make_tiny_experiment, membrane_watershed=True,
                      selection={**SELECTION, "follow": {"unet-gap": "unet"}})
    d = yaml.safe_load(exp.read_text())
    d["runs"].append({"name": "unet-gap", "label": "U-Net, thin-membrane weight", "set": {"loss.gap_weight": 5.0}})
    exp.write_text(yaml.safe_dump(d, sort_keys=False))
    out, runs = tmp_path / "results", tmp_path / "runs"
    argv = ["reproduce", str(exp), "--out", str(out), "--runs-dir", str(runs), "--folds", "1", "--quiet"]
    assert main(argv) == 0
    before = json.loads((out / "report.json").read_text())
    assert all(f["metrics"]["watershed_selection"].get("chosen_on") is None
               for r in before["runs"] for f in r["folds"].values())

    d["profiles"]["cpu"]["postprocess"] = {"validation": 1, "steps": 2}
    exp.write_text(yaml.safe_dump(d, sort_keys=False))
    trained = _spy_trainings(monkeypatch)
    assert main(argv + ["--resume"]) == 0
    # the lead's model is its chosen search candidate (same config): only the follower's is trained
    assert [(p.parent.parent.name, p.name) for p in trained] == [("unet-gap", "fold1")]
    rep = json.loads((out / "report.json").read_text())
    lead, follower = rep["runs"]
    val = lead["selection"]["fold1"]["validation"]
    masks = [skimage.io.imread(tiny_isbi_stack / "masks" / f"{n}.png") for n in val]
    for run in (lead, follower):
        res = run["folds"]["fold1"]
        ws, post = res["metrics"]["watershed_selection"], res["postprocessing"]
        assert ws["chosen_on"] == "validation" and ws["images"] == val == post["validation"]
        assert not set(val) & set(res["test"]) and set(val) <= set(res["train"])
        grid = {k: v for k, v in ws["validation_rand_error"].items() if k != "none"}
        assert ws["validation_rand_error"][f"{ws['seed_threshold']:g}/{ws['min_seed_size']}"] == min(grid.values())
        # then the smallest cell region kept, by Rand error x warping error with those seeds
        product = {k: ws["validation_warping_error"][k] * ws["validation_cell_rand_error"][k]
                   for k in ws["validation_warping_error"]}
        assert set(product) == set(ws["validation_cell_rand_error"])
        assert product[str(ws["min_cell_size"])] == min(product.values())
        assert post["grid"]["min_cell_by"] == "rand_error*warping_error"
        # the scores are those of the saved validation predictions of the post-processing model
        probs = [read_image(Path(post["predictions"]) / f"{n}.tif") for n in val]
        assert ws["validation_rand_error"]["none"] == pytest.approx(
            S.isbi_scores(probs, masks, errors=("rand_error",))["rand_error"], abs=1e-12)
        # and the held-out maps were post-processed with the chosen parameters
        fold_dir = runs / run["name"] / "fold1"
        held = [read_image(prediction_path(fold_dir, "plain", n)) for n in res["test"]]
        gt = [skimage.io.imread(tiny_isbi_stack / "masks" / f"{n}.png") for n in res["test"]]
        closed = [membrane_watershed(p, seed_threshold=ws["seed_threshold"], min_seed_size=ws["min_seed_size"],
                                     min_cell_size=ws["min_cell_size"]) for p in held]
        assert res["metrics"]["plain"]["rand_error_watershed"] == pytest.approx(
            S.isbi_scores(closed, gt)["rand_error"], abs=1e-12)
    assert "_search" in lead["folds"]["fold1"]["postprocessing"]["model"]
    # its training is counted in the search; the follower's model is an extra cost, reported
    assert lead["folds"]["fold1"]["postprocessing"]["train_seconds"] == 0
    assert follower["folds"]["fold1"]["postprocessing"]["train_seconds"] > 0
    cfg = yaml.safe_load((runs / "unet-gap/_postprocess/fold1/config.yaml").read_text())
    assert cfg["data"]["train"] == lead["selection"]["fold1"]["search_train"] and cfg["train"]["steps"] == 2
    assert cfg["loss"]["gap_weight"] == 5.0
    assert "Post-processing chosen on validation images" in (out / "report.md").read_text()
    # resumed again: nothing trains and nothing changes
    trained.clear()
    assert main(argv + ["--resume"]) == 0
    assert trained == [] and json.loads((out / "report.json").read_text())["runs"][0]["summary"] == lead["summary"]
    # another grid is another choice: made again from the same models, nothing trains
    import unet.reproduce.evaluate as E

    monkeypatch.setattr(E, "MEMBRANE_MIN_CELL_GRID", (0, 7))
    assert main(argv + ["--resume"]) == 0
    assert trained == []
    for run in json.loads((out / "report.json").read_text())["runs"]:
        ws = run["folds"]["fold1"]["metrics"]["watershed_selection"]
        assert run["folds"]["fold1"]["postprocessing"]["grid"]["min_cell_size"] == [0, 7]
        assert set(ws["validation_warping_error"]) == {"0", "7"} and ws["min_cell_size"] in (0, 7)


def test_tta_maps_get_postprocessing_chosen_on_tta_maps(tiny_isbi_stack, tmp_path, make_tiny_experiment,
                                                         monkeypatch):
    """With TTA among the evaluation's variants, the gap-closing parameters applied to held-out TTA maps are
    chosen on TTA maps of the validation images (the plain row keeps the plain choice); a choice made for
    plain maps only is made again from the same post-processing model, which does not train again."""
    from unet import scoring as S
    from unet.inference.labels import membrane_watershed
    from unet.reproduce.evaluate import prediction_path

    exp = _experiment(tmp_path / "tta.yaml", tiny_isbi_stack, make_tiny_experiment, membrane_watershed=True)
    d = yaml.safe_load(exp.read_text())
    d["profiles"]["cpu"]["postprocess"] = {"validation": 1, "steps": 2}
    exp.write_text(yaml.safe_dump(d, sort_keys=False))
    out, runs = tmp_path / "results", tmp_path / "runs"
    argv = ["reproduce", str(exp), "--out", str(out), "--runs-dir", str(runs), "--folds", "1", "--quiet"]
    assert main(argv) == 0
    ws = json.loads((out / "report.json").read_text())["runs"][0]["folds"]["fold1"]["metrics"]["watershed_selection"]
    assert "tta" not in ws

    d["evaluation"]["tta"] = [False, True]
    exp.write_text(yaml.safe_dump(d, sort_keys=False))
    trained = _spy_trainings(monkeypatch)
    assert main(argv + ["--resume"]) == 0
    assert trained == []
    res = json.loads((out / "report.json").read_text())["runs"][0]["folds"]["fold1"]
    ws, post = res["metrics"]["watershed_selection"], res["postprocessing"]
    assert post["variants"] == ["plain", "tta"]
    val = ws["images"]
    masks = [skimage.io.imread(tiny_isbi_stack / "masks" / f"{n}.png") for n in val]
    folder = Path(post["predictions"]).parent
    plain = [read_image(folder / "validation" / f"{n}.tif") for n in val]
    tta = [read_image(folder / "validation-tta" / f"{n}.tif") for n in val]
    assert not np.allclose(plain[0], tta[0])  # two kinds of maps, so two choices
    for maps, sel in ((plain, ws), (tta, ws["tta"])):
        assert sel["validation_rand_error"]["none"] == pytest.approx(
            S.isbi_scores(maps, masks, errors=("rand_error",))["rand_error"], abs=1e-12)
        grid = {k: v for k, v in sel["validation_rand_error"].items() if k != "none"}
        assert sel["validation_rand_error"][f"{sel['seed_threshold']:g}/{sel['min_seed_size']}"] == min(grid.values())
    gt = [skimage.io.imread(tiny_isbi_stack / "masks" / f"{n}.png") for n in res["test"]]
    for variant, sel in (("plain", ws), ("tta", ws["tta"])):
        params = {k: sel[k] for k in ("seed_threshold", "min_seed_size", "min_cell_size")}
        assert res["metrics"][variant]["membrane_watershed"] == params
        held = [read_image(prediction_path(runs / "unet" / "fold1", variant, n)) for n in res["test"]]
        assert res["metrics"][variant]["rand_error_watershed"] == pytest.approx(
            S.isbi_scores([membrane_watershed(p, **params) for p in held], gt)["rand_error"], abs=1e-12)
    assert "on TTA maps seed threshold" in (out / "report.md").read_text()


@pytest.mark.parametrize("pp,message", [({"validation": 1}, "mapping"), ({"validation": 0, "steps": 2}, "validation"),
                                        ({"validation": 1, "steps": 2, "pick": "first"}, "pick")])
def test_bad_postprocess_is_a_clear_error(tiny_isbi_stack, tmp_path, make_tiny_experiment, pp, message):
    exp = _experiment(tmp_path / "bad.yaml", tiny_isbi_stack, make_tiny_experiment)
    d = yaml.safe_load(exp.read_text())
    d["profiles"]["cpu"]["postprocess"] = pp
    exp.write_text(yaml.safe_dump(d, sort_keys=False))
    with pytest.raises(ExperimentError, match=message):
        load_experiment(exp)


def test_short_steps_scale_with_a_candidates_own_step_count():
    from unet.reproduce.runner import short_steps

    assert short_steps(1000, recipe_steps=10000, profile_steps=5000) == 2000
    assert short_steps(1000, recipe_steps=2500, profile_steps=5000) == 500
    assert short_steps(1000, recipe_steps=5000, profile_steps=5000) == 1000
    assert short_steps(2, recipe_steps=1, profile_steps=4000) == 1  # never zero


def test_set_train_steps_wins_over_a_candidates_step_count():
    """``--set train.steps=N`` (a quick trial) sets every final training to N: a candidate's own count no longer
    applies, so its short trainings are not scaled by it either (1000 x 10000 / 10 would be a million steps)."""
    from unet.reproduce.runner import _recipe_short_steps

    exp = load_experiment("dic-hela")
    run = exp.run("unet")
    recipe = {"loss.w0": 70.0, "train.steps": 10000}
    fold = Fold(name="f", train=["01/t000", "01/t001", "01/t002", "01/t003"], test=["02/t000"])
    assert _recipe_short_steps(1000, exp, run, profile="cpu", overrides=[], fold=fold, recipe=recipe) == 2000
    assert _recipe_short_steps(1000, exp, run, profile="cpu", overrides=["train.steps=10"], fold=fold,
                               recipe=recipe) == 1000


def test_candidate_with_its_own_step_count_is_searched_and_trained_in_proportion(
        tiny_isbi_stack, tmp_path, make_tiny_experiment):
    """A recipe setting ``train.steps`` (a longer final training, issue 11 item 3) is searched with its search
    training scaled alike (final 4 steps, search 2: a final of 8 is searched with 4), its final training takes
    the longer count, and its post-processing model is the search candidate itself (the same config)."""
    bn = SELECTION["candidates"][1]
    sel = {**SELECTION, "candidates": [{"name": "bn-long", "set": {**bn["set"], "train.steps": 8}}],
           "default": "bn-long", "follow": {"unet-gap": "unet"}}
    exp = _experiment(tmp_path / "long.yaml", tiny_isbi_stack, make_tiny_experiment, membrane_watershed=True,
                      selection=sel)
    d = yaml.safe_load(exp.read_text())
    d["runs"].append({"name": "unet-gap", "label": "U-Net, thin-membrane weight", "set": {"loss.gap_weight": 5.0}})
    d["profiles"]["cpu"]["postprocess"] = {"validation": 1, "steps": 2}
    exp.write_text(yaml.safe_dump(d, sort_keys=False))
    out, runs = tmp_path / "results", tmp_path / "runs"
    assert main(["reproduce", str(exp), "--out", str(out), "--runs-dir", str(runs), "--folds", "1", "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    lead, follower = rep["runs"]
    cand = lead["selection"]["fold1"]["candidates"][0]
    assert cand["steps"] == 4
    search_cfg = yaml.safe_load((runs / "unet/_search/fold1/bn-long/config.yaml").read_text())
    assert search_cfg["train"]["steps"] == 4
    for name in ("unet", "unet-gap"):
        final = yaml.safe_load((runs / name / "fold1" / "config.yaml").read_text())
        assert final["train"]["steps"] == 8
    assert lead["folds"]["fold1"]["steps"] == 8 and lead["folds"]["fold1"]["postprocessing"]["steps"] == 4
    assert "_search" in lead["folds"]["fold1"]["postprocessing"]["model"]
    pp_cfg = yaml.safe_load((runs / "unet-gap/_postprocess/fold1/config.yaml").read_text())
    assert pp_cfg["train"]["steps"] == 4
    md = (out / "report.md").read_text()
    assert "(8 steps) and predicted the held-out images once" in md
    assert "| unet | " in md and any(line.startswith("| unet |") and "| 8 |" in line for line in md.splitlines())


def test_report_marks_candidates_and_folds_with_their_own_step_count():
    """A candidate whose search training took another step count says so, and so does a run whose folds' final
    trainings differ (rendered from the committed DIC-HeLa report: first made uniform, then changed as a
    train.steps choice would)."""
    import copy

    from unet.reproduce.report import render_markdown

    report = json.loads((Path(__file__).parents[2] / "results/dic-hela/report.json").read_text())
    uniform = copy.deepcopy(report)
    unet_run = next(r for r in uniform["runs"] if r["name"] == "unet")
    for s in unet_run["selection"].values():
        for c in s["candidates"] + s.get("confirmation", []):
            c["steps"] = 1000
    for run in uniform["runs"]:
        for f in run["folds"].values():
            f["steps"] = 5000
    md = render_markdown(uniform)
    assert not re.search(r"search training \d+ steps", md) and "(5000 steps)" in md and ": 10000" not in md
    changed = copy.deepcopy(uniform)
    unet_run = next(r for r in changed["runs"] if r["name"] == "unet")
    fold = next(iter(unet_run["selection"]))
    unet_run["selection"][fold]["candidates"][-1]["steps"] = 2000
    unet_run["folds"][fold]["steps"] = 10000
    md = render_markdown(changed)
    assert md.count("search training 2000 steps") == 1 and "search training 1000 steps" not in md
    others = [f"{name}: {f['steps']}" for name, f in unet_run["folds"].items() if name != fold]
    assert f"| {fold}: 10000, {others[0]} |" in md and f"({fold}: 10000, {others[0]} steps)" in md
    # the committed report itself: one mark per candidate (or seed rerun) searched with its own step count
    real = next(r for r in report["runs"] if r["name"] == "unet")
    own = sum(c["steps"] != s["candidates"][0]["steps"] for s in real["selection"].values()
              for c in s["candidates"] + s.get("confirmation", []))
    assert own > 0 and len(re.findall(r"search training \d+ steps", render_markdown(report))) == own


def test_plan_lists_what_resume_would_train_and_trains_nothing(searched, tmp_path, capsys):
    """``unet reproduce --plan``: every search training of the nested selection, done / reported / to train, with
    its steps; nothing trains and nothing is written."""
    from unet.reproduce.runner import plan_search

    exp, out, runs = searched["exp"], searched["out"], searched["runs"]
    rows = plan_search(exp, out=out, runs_dir=runs, folds="1,2")
    assert [(r["fold"], r["candidate"]) for r in rows] == [(f, c["name"]) for f in ("fold1", "fold2")
                                                           for c in SELECTION["candidates"]]
    assert {r["status"] for r in rows} == {"done"} and {r["steps"] for r in rows} == {2}
    # the folders gone (another machine): the report's scores are reused
    empty = tmp_path / "no-runs"
    assert {r["status"] for r in plan_search(exp, out=out, runs_dir=empty, folds="1,2")} == {"reported"}
    # a candidate added later (with a longer final training): only it trains, its search scaled (4 / 4 x 2)
    d = yaml.safe_load(exp.read_text())
    d["profiles"]["cpu"]["selection"]["candidates"].append({"name": "bn-8", "set": {"train.steps": 8}})
    more = tmp_path / "more.yaml"
    more.write_text(yaml.safe_dump(d, sort_keys=False))
    rows = plan_search(more, out=out, runs_dir=empty, folds="1,2")
    assert [(r["candidate"], r["steps"]) for r in rows if r["status"] == "train"] == [("bn-8", 4), ("bn-8", 4)]
    # the search of a changed recipe is not the one reported: it trains again
    d["runs"][0]["set"] = dict(d["runs"][0].get("set") or {}, **{"loss.w0": 3.0})
    more.write_text(yaml.safe_dump(d, sort_keys=False))
    assert {r["status"] for r in plan_search(more, out=out, runs_dir=empty, folds="1,2")} == {"train"}
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["reproduce", str(more), "--out", str(out), "--runs-dir", str(empty), "--folds", "1,2", "--plan"]) == 0
    said = capsys.readouterr().out
    assert "| unet | fold1 | bn-8 | 4 | train |" in said and "6 of 6 search trainings to run (16 steps)" in said
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before and not empty.exists()
    assert main(["reproduce", str(more), "--out", str(out), "--plan", "--no-search"]) == 0
    assert "no nested selection to plan" in capsys.readouterr().out


@pytest.mark.parametrize("kernels,said_what", [("auto", "bfloat16's rounding (unet.training.bf16"),
                                               ("native", "--set train.amp=none")])
def test_plan_says_how_bfloat16_runs_where_the_cpu_lacks_its_kernels(searched, tmp_path, monkeypatch, kernels,
                                                                     said_what):
    import warnings

    import unet.training.trainer as T
    from unet.errors import UnetWarning
    from unet.reproduce.runner import plan_search

    monkeypatch.setattr(T, "native_cpu_bf16", lambda: False)
    monkeypatch.setattr(T, "_BF16_SAID", False)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        plan_search(searched["exp"], out=searched["out"], runs_dir=tmp_path / "r", folds="1",
                    overrides=["train.amp=bf16", "train.device=cpu", f"train.bf16_kernels={kernels}"])
    said = [str(w.message) for w in got if issubclass(w.category, UnetWarning)]
    assert len(said) == 1 and "bfloat16 kernels" in said[0] and said_what in said[0]

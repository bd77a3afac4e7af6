"""The Cell Tracking protocol end to end on real DIC-HeLa crops: SEG with the paper's instances and
with the seeded watershed, whose seed threshold is chosen on the training frames only."""

import copy
import json

import numpy as np
import pytest
import tifffile
import yaml

from unet.cli import main
from unet.reproduce.evaluate import FOREGROUND_GRID, SEED_GRID

CROP = (slice(40, 136), slice(40, 136))  # of the shipped 256 x 256 crops


@pytest.fixture(scope="module")
def tiny_dic_hela(tmp_path_factory, dic_hela_crops):
    """Two 96x96 crops of annotated frames of each sequence, in the dataset's own layout."""
    root = tmp_path_factory.mktemp("tiny_dic_hela")
    for seq, frames in (("01", ("002", "021")), ("02", ("006", "014"))):
        for sub in ("images", "masks"):
            (root / seq / sub).mkdir(parents=True)
        for t in frames:
            src = dic_hela_crops / seq
            tifffile.imwrite(root / seq / "images" / f"t{t}.tif", tifffile.imread(src / "images" / f"t{t}.tif")[CROP])
            tifffile.imwrite(root / seq / "masks" / f"man_seg{t}.tif",
                             tifffile.imread(src / "masks" / f"man_seg{t}.tif")[CROP])
    return root


@pytest.fixture(scope="module")
def finished(tiny_dic_hela, tmp_path_factory, tiny_settings):
    REPO, TINY = tiny_settings
    tmp = tmp_path_factory.mktemp("repro_seg")
    real = yaml.safe_load((REPO / "configs/reproduce/dic-hela.yaml").read_text())
    real["base"] = str(REPO / "configs/dic-hela.yaml")
    tiny = {k: v for k, v in TINY.items() if k != "data.dataset"}
    real["profiles"] = {"cpu": {"description": "tiny", "set": {**tiny, "data.root": str(tiny_dic_hela)}}}
    exp = tmp / "tiny-dic.yaml"
    exp.write_text(yaml.safe_dump(real, sort_keys=False))
    out, runs = tmp / "results", tmp / "runs"
    argv = ["reproduce", str(exp), "--out", str(out), "--runs-dir", str(runs), "--folds", "1", "--runs", "unet",
            "--quiet"]
    assert main(argv) == 0
    return {"argv": argv, "out": out, "runs": runs, "fold": runs / "unet" / "01->02"}


def test_seed_threshold_is_chosen_on_the_training_frames_only(finished):
    res = json.loads((finished["fold"] / "result.json").read_text())
    sel = res["metrics"]["seed_selection"]
    assert sel["threshold"] in SEED_GRID and set(map(float, sel["train_seg_watershed"])) == set(SEED_GRID)
    assert sel["train_seg_watershed"][str(sel["threshold"])] == max(sel["train_seg_watershed"].values())
    # then the foreground, with those seeds; its 0.5 is the seeds' own score
    fg = sel["train_seg_foreground"]
    assert set(map(float, fg)) == set(FOREGROUND_GRID) and fg[str(sel["foreground_threshold"])] == max(fg.values())
    assert fg["0.5"] == sel["train_seg_watershed"][str(sel["threshold"])]
    plain = res["metrics"]["plain"]
    assert plain["seed_threshold"] == sel["threshold"] and 0 <= plain["seg_watershed"] <= 1
    assert plain["foreground_threshold"] == sel["foreground_threshold"]
    # the frames it was chosen on are the training sequence's, the scored ones the test sequence's
    assert sorted(p.name for p in (finished["fold"] / "predictions/train").iterdir()) == ["01_t002.tif", "01_t021.tif"]
    assert sorted(p.name for p in (finished["fold"] / "predictions/plain").iterdir()) == ["02_t006.tif", "02_t014.tif"]
    md = (finished["out"] / "report.md").read_text()
    assert "SEG, watershed" in md and f"unet 01->02: {sel['threshold']:g}" in md


def test_resume_rescores_a_finished_fold_that_lacks_a_measure(finished, own_copy):
    finished = own_copy(finished)
    path = finished["fold"] / "result.json"
    res = json.loads(path.read_text())
    old = copy.deepcopy(res)
    res["metrics"].pop("seed_selection")
    res["metrics"]["plain"] = {"seg": res["metrics"]["plain"]["seg"]}  # as written before seg_watershed
    path.write_text(json.dumps(res))
    assert main(finished["argv"] + ["--resume"]) == 0
    new = json.loads(path.read_text())
    assert "rescored" in new and new["train_seconds"] == old["train_seconds"]
    assert new["metrics"]["plain"] == pytest.approx(old["metrics"]["plain"])
    report = json.loads((finished["out"] / "report.json").read_text())
    assert report["runs"][0]["summary"]["plain"]["seg_watershed"]["n"] == 1
    md = (finished["out"] / "report.md").read_text()
    assert "1 of 1 trainings were finished by earlier invocations and reused (1 of them scored again" in md

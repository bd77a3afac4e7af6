"""PhC-U373 is not available offline; its experiment must still run as shipped once data are present.

A stand-in in the official Cell Tracking Challenge layout (``PhC-C2DH-U373/SEQ/tTTT.tif`` +
``SEQ_GT/SEG/man_segTTT.tif``, what `unet data fetch phc-u373` unpacks) is cut from real DIC-HeLa frames,
non-square as PhC-U373's 520x696 frames are.
"""

import json

import numpy as np
import pytest
import tifffile
import yaml

from unet.cli import main
from unet.io import read_image

CROP = (slice(20, 100), slice(40, 152))  # of the shipped 256 x 256 DIC-HeLa crops
CROP_SHAPE = (80, 112)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, dic_hela_crops, tiny_settings):
    REPO, TINY = tiny_settings
    tmp = tmp_path_factory.mktemp("repro_phc")
    root = tmp / "data" / "PhC-C2DH-U373"
    for seq, frames in (("01", ("002", "021")), ("02", ("006", "014"))):
        (root / seq).mkdir(parents=True)
        (root / f"{seq}_GT" / "SEG").mkdir(parents=True)
        for t in frames:
            src = dic_hela_crops / seq
            tifffile.imwrite(root / seq / f"t{t}.tif", tifffile.imread(src / "images" / f"t{t}.tif")[CROP])
            tifffile.imwrite(root / f"{seq}_GT" / "SEG" / f"man_seg{t}.tif",
                             tifffile.imread(src / "masks" / f"man_seg{t}.tif")[CROP])
    real = yaml.safe_load((REPO / "configs/reproduce/phc-u373.yaml").read_text())
    real["base"] = str(REPO / "configs/phc-u373.yaml")
    shipped = real["profiles"]["cpu"]["set"]
    tiny = {k: v for k, v in TINY.items() if k != "data.dataset"}
    real["profiles"]["cpu"]["set"] = {**shipped, **tiny, "data.root": str(tmp / "data")}
    # the shipped nested selection, scaled to the stand-in: 1 of its 2 training frames, 2 steps
    real["profiles"]["cpu"]["selection"].update(validation=1, steps=2)
    real["profiles"]["cpu"]["postprocess"].update(validation=1, steps=2)
    exp = tmp / "phc.yaml"
    exp.write_text(yaml.safe_dump(real, sort_keys=False))
    out, runs = tmp / "results", tmp / "runs"
    assert main(["reproduce", str(exp), "--out", str(out), "--runs-dir", str(runs), "--folds", "1", "--quiet"]) == 0
    return {"out": out, "runs": runs, "root": root, "shipped": shipped,
            "report": json.loads((out / "report.json").read_text())}


def test_phc_u373_runs_as_shipped_once_its_data_are_present(finished, reference):
    rep, runs, root = finished["report"], finished["runs"], finished["root"]
    assert [r["name"] for r in rep["runs"]] == ["unet", "fcn8s"]
    assert rep["folds"][0]["train"] == ["01/t002", "01/t021"] and rep["folds"][0]["test"] == ["02/t006", "02/t014"]
    gt = np.stack([tifffile.imread(root / "02_GT/SEG" / f"man_seg{t}.tif") for t in ("006", "014")])
    from unet.inference import cell_instances

    for run in rep["runs"]:
        probs = [read_image(runs / run["name"] / "01->02/predictions/plain" / f"02_t{t}.tif") for t in ("006", "014")]
        assert probs[0].shape == CROP_SHAPE
        expected = reference.seg(gt, np.stack([cell_instances(p) for p in probs]))
        assert run["folds"]["01->02"]["metrics"]["plain"]["seg"] == pytest.approx(expected, abs=1e-12)
        # the watershed's seed threshold: chosen on the validation frame, by a model that did not train on it
        seeds = run["folds"]["01->02"]["metrics"]["seed_selection"]
        assert seeds["chosen_on"] == "validation" and seeds["images"] == ["01/t021"]
        assert seeds["validation_seg_watershed"][str(seeds["threshold"])] == max(seeds["validation_seg_watershed"].values())
        assert run["folds"]["01->02"]["postprocessing"]["search_train"] == ["01/t002"]
        # the shipped profile's recipe, not only the tiny test sizes
        assert run["config"]["optim"]["schedule"] == finished["shipped"]["optim.schedule"]
        assert run["config"]["data"]["normalize"]["mode"] == "meanstd"
    assert {(c["metric"], c["better"], c["worse"]) for c in rep["comparisons"]} == {
        ("seg", "unet", "fcn8s"), ("seg_watershed", "unet", "fcn8s")}
    assert (finished["out"] / "comparison.png").is_file()

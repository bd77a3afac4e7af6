import json

import numpy as np
import pytest

import unet.metrics as M
from unet.cli import main
from unet.io import read_image


@pytest.mark.slow
def test_demo_end_to_end_reports_what_its_predictions_score(tmp_path, capsys, reference):
    out = tmp_path / "demo"
    # the shipped sample only (no ../shared needed); 3 steps keep it to seconds
    assert main(["demo", "--out", str(out), "--steps", "3", "--quiet"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary["per_slice"]) == {"train_28", "train_29", "all (stack)"}
    sample = __import__("unet").__file__.replace("__init__.py", "sample_data/isbi2012/train/labels/")
    for name in ("train_28", "train_29"):
        prob = read_image(out / "predictions" / f"{name}.tif")
        labels = read_image(sample + name.split("_")[1] + ".png")
        assert prob.shape == labels.shape == (512, 512)  # original geometry
        got = summary["per_slice"][name]
        # pixel, Rand and IoU from independent implementations of their definitions; the warping
        # error (no second implementation) is checked against the official values in tests/metrics
        assert got["pixel_error"] == pytest.approx(reference.pixel_error(labels, prob), abs=1e-12)
        assert got["rand_error"] == pytest.approx(reference.rand_error(labels, prob), abs=1e-12)
        assert got["iou"] == pytest.approx(reference.iou(labels > 0, prob > 0.5), abs=1e-12)
        assert got["warping_error"] == M.isbi_errors(labels, prob.astype(np.float64))["warping_error"]
    assert (out / "overlays" / "train_28.png").exists() and (out / "curves.png").exists()
    # a finished demo is not overwritten without the flag
    assert main(["demo", "--out", str(out), "--steps", "3", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err

import json

import numpy as np
import pytest

import unet.metrics as M
from unet.cli import main
from unet.io import read_image


@pytest.mark.slow
def test_demo_end_to_end_reports_what_its_predictions_score(tmp_path, capsys):
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
        expected = M.isbi_errors(labels, prob.astype(np.float64))
        got = summary["per_slice"][name]
        for key in ("pixel_error", "rand_error", "warping_error"):
            assert got[key] == pytest.approx(expected[key], abs=1e-12)
    assert (out / "overlays" / "train_28.png").exists() and (out / "curves.png").exists()
    # a finished demo is not overwritten without the flag
    assert main(["demo", "--out", str(out), "--steps", "3", "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err

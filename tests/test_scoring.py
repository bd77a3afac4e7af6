"""One scoring (unet.scoring) behind the three former paths: the trainer's validation metrics, the reproduce
fold metrics and ``unet evaluate`` give identical numbers on the same files (issue 14)."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from unet.cli import main
from unet.data import ctc_pairs, labels_from_mask, load_sample, training_target
from unet.io import read_image, write_image
from unet.metrics import MetricInputError
from unet.reproduce.evaluate import fold_metrics
from unet.scoring import METRIC_NAMES, isbi_scores, metric_name, score_probabilities
from unet.training.trainer import evaluate_predictions

#: real ISBI 2012 labels of the sample shipped with the package (0 = membrane, 255 = cell)
ISBI_LABELS = Path(__file__).resolve().parents[1] / "unet" / "sample_data" / "isbi2012" / "train" / "labels"
ALL = ["iou", "pixel_error", "rand_error", "warping_error", "seg"]


def _probabilities(labels, seed: int) -> np.ndarray:
    """A plausible imperfect cell-probability map of ``labels``: blurred cells, noise, one membrane erased."""
    rng = np.random.default_rng(seed)
    cells = training_target(labels, border=True).astype(np.float64)
    prob = ndimage.gaussian_filter(cells, 1.5) + rng.normal(0, 0.08, cells.shape)
    h, w = prob.shape
    prob[h // 2 - 2: h // 2 + 2, :] = np.maximum(prob[h // 2 - 2: h // 2 + 2, :], 1.0)  # a merge across cells
    return np.clip(prob, 0, 1).astype(np.float32)


def _write_case(tmp_path, labels: list, probs: list):
    """The files all three paths read: a float32 probability stack and an instance-label stack (npy)."""
    pred, gt = tmp_path / "pred.npy", tmp_path / "gt.npy"  # a 3- or 4-page TIFF would read as RGB(A)
    write_image(pred, np.stack(probs))
    write_image(gt, np.stack(labels).astype(np.uint16))
    return pred, gt


def _cli(pred, gt, tmp_path, *extra) -> dict:
    out = tmp_path / f"scores{len(list(tmp_path.glob('scores*.json')))}.json"
    assert main(["evaluate", str(pred), str(gt), "--metric", "isbi,seg,iou", "--json", str(out), "--quiet",
                 *extra]) == 0
    return json.loads(out.read_text())


def _assert_identical(case: str, values: dict[str, dict], keys):
    for key in keys:
        got = {path: v[key] for path, v in values.items() if key in v}
        assert len(got) >= 2, (case, key, got)
        assert len(set(got.values())) == 1, (case, key, got)  # exactly equal, not approximately


def test_isbi_files_score_identically_in_trainer_reproduce_and_cli(tmp_path):
    # real ISBI 2012 labels of the shipped sample, as the trainer and reproduce load them
    labels = [labels_from_mask(read_image(ISBI_LABELS / f"{i}.png")[:160, 40:200]) for i in (0, 3, 5, 7)]
    pred, gt = _write_case(tmp_path, labels, [_probabilities(g, i) for i, g in enumerate(labels)])
    probs = list(read_image(pred))  # every path scores the saved files
    labels = list(read_image(gt).astype(np.int32))
    gts = [training_target(g, border=True) for g in labels]  # the trainer's targets (separate_borders default)
    assert all(np.array_equal(t == 1, g > 0) for t, g in zip(gts, labels))  # ISBI: membranes already separate
    values = {
        "trainer": evaluate_predictions(probs, gts, labels, metrics=ALL),
        "reproduce": fold_metrics("isbi", probs, labels) | fold_metrics("seg", probs, labels),
        "cli": _cli(pred, gt, tmp_path)["images"][0],
    }
    _assert_identical("isbi", values, ALL)
    assert 0 < values["cli"]["rand_error"] < 1 and 0 < values["cli"]["seg"] < 1  # not a trivial case
    assert values["cli"]["mergers"] > 0  # the erased membrane merges cells


def test_dic_hela_files_score_identically_in_trainer_reproduce_and_cli(dic_hela_crops, tmp_path):
    samples = [load_sample(p) for p in ctc_pairs(dic_hela_crops) if not p.partial]
    labels = [s.labels for s in samples]
    pred, gt = _write_case(tmp_path, labels, [_probabilities(g, i) for i, g in enumerate(labels)])
    probs = list(read_image(pred))
    labels = list(read_image(gt).astype(np.int32))
    # touching cells: the trainer's targets have borders as background (paper Fig. 3), so its pixel
    # measures score that target; without separated borders they score the labels as the others do
    gts = [training_target(g, border=False) for g in labels]
    values = {
        "trainer": evaluate_predictions(probs, gts, labels, metrics=ALL),
        "reproduce": fold_metrics("isbi", probs, labels) | fold_metrics("seg", probs, labels),
        "cli": _cli(pred, gt, tmp_path)["images"][0],
    }
    _assert_identical("dic-hela", values, ALL)
    seeded = {"reproduce": {"seg": fold_metrics("seg", probs, labels, seed_threshold=0.8)["seg_watershed"]},
              "cli": _cli(pred, gt, tmp_path, "--seed-threshold", "0.8")["images"][0]}
    _assert_identical("dic-hela seeded watershed", seeded, ["seg"])
    assert values["cli"]["seg"] != seeded["cli"]["seg"]  # the watershed did split merged cells differently


def test_images_of_different_sizes_average_like_the_cli_folder_mean(tmp_path):
    labels = [labels_from_mask(read_image(ISBI_LABELS / "1.png")[:96, :128]),
              labels_from_mask(read_image(ISBI_LABELS / "2.png")[:128, :112])]
    probs = [_probabilities(g, i) for i, g in enumerate(labels)]
    for i, (g, p) in enumerate(zip(labels, probs)):
        write_image(tmp_path / "pred" / f"{i}.tif", p)
        write_image(tmp_path / "gt" / f"{i}.tif", g.astype(np.uint16))
    errors = ["pixel_error", "rand_error", "warping_error"]
    trainer = evaluate_predictions(probs, [training_target(g) for g in labels], labels, metrics=errors)
    cli = _cli(tmp_path / "pred", tmp_path / "gt", tmp_path)["mean"]
    for key in errors:
        assert trainer[key] == pytest.approx(cli[key], rel=1e-15, abs=0)  # both: the mean of per-image errors
        assert trainer[key] == np.mean([isbi_scores([p], [g])[key] for p, g in zip(probs, labels)])


def test_short_metric_names_are_aliases_mapped_in_one_place():
    assert [metric_name(m) for m in ("pixel", "rand", "warping", "iou", "seg")] == \
        ["pixel_error", "rand_error", "warping_error", "iou", "seg"]
    assert all(metric_name(m) == m for m in METRIC_NAMES)
    with pytest.raises(ValueError, match="unknown metric 'accuracy'"):
        metric_name("accuracy")
    labels = np.zeros((40, 40), np.int32)
    labels[5:20, 5:35], labels[24:36, 5:35] = 1, 2
    prob = [_probabilities(labels, 0)]
    old = score_probabilities(prob, [labels], metrics=["iou", "pixel", "rand", "warping", "seg"])
    assert old == score_probabilities(prob, [labels], metrics=ALL)
    assert list(old) == ALL  # results use one set of names, in METRIC_NAMES order


def test_seg_without_any_object_is_nan_for_validation_and_an_error_elsewhere():
    empty = [np.zeros((16, 16), np.int32)]
    prob = [np.full((16, 16), 0.9, np.float32)]
    assert np.isnan(score_probabilities(prob, empty, metrics=["seg"])["seg"])
    with pytest.raises(MetricInputError, match="SEG is undefined"):
        fold_metrics("seg", prob, empty)

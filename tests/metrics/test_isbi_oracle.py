"""ISBI 2012 errors against the official Fiji implementation (golden vectors)."""

import json

import numpy as np
import pytest

import unet.metrics as M
from unet.metrics.warping import COUNT_NAMES

from metrics_oracle import load_arrays, load_cases, load_meta

CASES = load_cases("isbi")


@pytest.fixture(params=sorted(CASES))
def case(request):
    folder, c = CASES[request.param]
    arrays = load_arrays(folder, request.param)
    details = json.loads((folder / c["oracle_details"]).read_text())
    return c, arrays["labels"], arrays["proposal"], details


def test_thresholds_are_the_java_loop():
    meta = load_meta("isbi")
    assert list(M.ISBI_THRESHOLDS) == meta["thresholds_pixel_rand"]
    assert list(M.WARPING_THRESHOLDS) == meta["thresholds_warping"]


def test_isbi_errors_match_official(case):
    c, labels, proposal, _ = case
    e = c["expected"]
    got = M.isbi_errors(labels, proposal)
    assert got["pixel_error"] == pytest.approx(e["pixel_error"], abs=1e-9, rel=0)
    assert got["rand_error"] == pytest.approx(e["rand_error"], abs=1e-9, rel=0)
    assert got["warping_pixels"] == e["warping_error_pixels"]
    assert got["warping_error"] == e["warping_error"]
    assert got["warping_threshold"] == e["warping_best_threshold"]
    assert (got["splits"], got["mergers"]) == (e["splits_at_best"], e["mergers_at_best"])


def test_single_metric_functions_agree(case):
    c, labels, proposal, _ = case
    e = c["expected"]
    assert M.pixel_error(labels, proposal) == pytest.approx(e["pixel_error"], abs=1e-9, rel=0)
    assert M.rand_error(labels, proposal) == pytest.approx(e["rand_error"], abs=1e-9, rel=0)
    assert M.warping_error(labels, proposal) == e["warping_error"]


def test_fixed_threshold_values(case):
    c, labels, proposal, _ = case
    info = c["info_not_isbi"]
    assert M.pixel_error(labels, proposal, threshold=0.5) == pytest.approx(info["pixel_error_at_fixed_0.5"], abs=1e-9)
    assert M.rand_error(labels, proposal, threshold=0.5) == pytest.approx(info["rand_error_at_fixed_0.5"], abs=1e-9)
    assert M.warping_error(labels, proposal, threshold=0.5) == pytest.approx(info["warping_error_at_fixed_0.5"], abs=1e-15)


def test_per_threshold_counts(case):
    _, labels, proposal, details = case
    pix = M.pixel_counts(labels, proposal)
    for row, exp in zip(pix, details["per_threshold_pixel_rand"]):
        assert tuple(row) == (exp["pixel_tp"], exp["pixel_fp"], exp["pixel_fn"], exp["pixel_tn"]), exp["th"]
    sums = M.rand_sums(labels, proposal)
    for (T, A, B), exp in zip(sums, details["per_threshold_pixel_rand"]):
        if A > 0 and T > 0:
            assert T / B == pytest.approx(exp["rand_precision"], abs=1e-12), exp["th"]
            assert T / A == pytest.approx(exp["rand_recall"], abs=1e-12), exp["th"]
    counts = M.warping_counts(labels, proposal)
    for row, exp in zip(counts, details["per_threshold_warping"]):
        assert dict(zip(COUNT_NAMES, row.tolist())) == exp["counts"], exp["th"]


def test_mismatch_classes_at_half(case):
    """Every remaining mismatch at threshold 0.5, with its topological class."""
    c, labels, proposal, details = case
    result = M.warp_labels(labels, proposal, threshold=0.5)
    first_slice = sorted((x, y, cls) for s, y, x, cls in result.mismatches if s == 0)
    assert first_slice == sorted(tuple(m) for m in details["slice1_th0.5"]["mismatches"])
    n_pixels = np.asarray(labels).size
    assert len(result.mismatches) / n_pixels == pytest.approx(c["expected"]["at_th_0.5"]["classic_warping_error"], abs=1e-15)
    assert result.warped.shape == np.shape(labels)
    at_half = next(t for t in details["per_threshold_warping"] if t["th"] == 0.5)
    assert result.counts() == at_half["counts"]


def test_full_image_radius_changes_annulus_cut():
    """With the whole image as window the annulus cut is a hole deletion, not a split."""
    folder, case = CASES["c21_annulus_cut_radius"]
    arrays = load_arrays(folder, "c21_annulus_cut_radius")
    expected = case["extra_radius_full_image"]["warping_error"]
    assert M.warping_error(arrays["labels"], arrays["proposal"], radius=10_000) == expected

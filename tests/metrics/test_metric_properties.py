"""Properties of the metrics that must hold for any input (hypothesis, small images)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

import unet.metrics as M
from unet.metrics._validation import as_isbi_pair
from unet.metrics._official import f_score
from unet.metrics.isbi import FOUR_CONNECTED, _rand_sums

FAST = settings(max_examples=25, deadline=None)

shapes = st.tuples(st.integers(4, 12), st.integers(4, 12))


@st.composite
def label_proposal(draw, slices=None):
    h, w = draw(shapes)
    shape = (h, w) if slices is None else (slices, h, w)
    cells = draw(arrays(np.bool_, shape))
    if not cells.any():
        cells.flat[draw(st.integers(0, cells.size - 1))] = True
    labels = cells.astype(np.uint8) * 255
    levels = st.sampled_from([0.0, 0.05, 0.3, 0.45, 0.5, 0.55, 0.75, 0.95, 1.0])
    proposal = draw(arrays(np.float32, shape, elements=levels))
    return labels, proposal


@FAST
@given(label_proposal())
def test_perfect_proposal_scores_zero(pair):
    labels, _ = pair
    perfect = labels / 255.0
    errors = M.isbi_errors(labels, perfect)
    assert errors["pixel_error"] == 0.0
    assert errors["rand_error"] == pytest.approx(0.0, abs=1e-15)
    assert errors["warping_error"] == 0.0


@FAST
@given(label_proposal())
def test_errors_are_within_unit_interval(pair):
    labels, proposal = pair
    errors = M.isbi_errors(labels, proposal)
    for key in ("pixel_error", "rand_error", "warping_error"):
        assert 0.0 <= errors[key] <= 1.0
    assert errors["warping_pixels"] == errors["splits"] + errors["mergers"]
    assert errors["warping_pixels"] == round(errors["warping_error"] * labels.size)


def _topology(cells: np.ndarray) -> tuple[int, int]:
    """(4-connected cell components, 8-connected membrane components with the outside)."""
    padded = np.pad(~cells, 1, constant_values=True)
    return ndimage.label(cells, structure=FOUR_CONNECTED)[1], ndimage.label(padded, structure=np.ones((3, 3)))[1]


@FAST
@given(label_proposal(), st.sampled_from(M.WARPING_THRESHOLDS))
def test_warping_preserves_topology_and_only_mismatches_remain(pair, th):
    labels, proposal = pair
    result = M.warp_labels(labels, proposal, threshold=th)
    assert _topology(result.warped) == _topology(labels > 0)
    target = proposal.astype(np.float64) > th
    disagree = sorted(zip(*np.nonzero(result.warped != target)))
    assert disagree == sorted((y, x) for _, y, x, _ in result.mismatches)


@FAST
@given(label_proposal(slices=3))
def test_stack_is_sum_of_slice_counts(pair):
    labels, proposal = pair
    pix = sum(M.pixel_counts(labels[s], proposal[s]) for s in range(3))
    np.testing.assert_array_equal(M.pixel_counts(labels, proposal), pix)
    warp = sum(M.warping_counts(labels[s], proposal[s]) for s in range(3))
    np.testing.assert_array_equal(M.warping_counts(labels, proposal), warp)
    # Pixel F-scores are formed from the summed counts (micro average) ...
    f = [f_score(tp, fp, fn) for tp, fp, fn, _ in pix]
    assert M.pixel_error(labels, proposal) == pytest.approx(1.0 - max(max(f), 0.0), abs=1e-12)
    # ... the warping error divides the summed split + merge pixels by all pixels.
    assert M.warping_error(labels, proposal) == np.min(warp[:, 0] + warp[:, 1]) / labels.size
    # Rand sums T, A, B add over slices (slices without cells contribute zero).
    rand = sum(_rand_sums(*as_isbi_pair(labels[s], proposal[s]), M.ISBI_THRESHOLDS) for s in range(3))
    np.testing.assert_allclose(M.rand_sums(labels, proposal), rand)


@st.composite
def instance_pair(draw):
    h, w = draw(shapes)
    gt = draw(arrays(np.int64, (2, h, w), elements=st.integers(0, 4)))
    if not gt.any():
        gt[0, 0, 0] = 1
    res = draw(arrays(np.int64, (2, h, w), elements=st.integers(0, 5)))
    return gt, res


@FAST
@given(instance_pair(), st.permutations(range(1, 6)), st.permutations(range(1, 5)))
def test_seg_invariant_to_relabelling(pair, perm_res, perm_gt):
    gt, res = pair
    relabel_res = np.array([0, *[p * 10 + 3 for p in perm_res]])[res]
    relabel_gt = np.array([0, *perm_gt])[gt]
    assert M.seg_score(relabel_gt, relabel_res) == pytest.approx(M.seg_score(gt, res), abs=1e-12)


@FAST
@given(instance_pair())
def test_seg_pools_objects_over_frames(pair):
    gt, res = pair
    per_frame = [M.seg_jaccards(gt[t], res[t]) for t in range(2)]
    pooled = [j for frame in per_frame for *_, j in frame]
    assert M.seg_score(gt, res) == pytest.approx(sum(pooled) / len(pooled), abs=1e-12)
    assert 0.0 <= M.seg_score(gt, res) <= 1.0
    assert M.seg_score(gt, gt) == 1.0

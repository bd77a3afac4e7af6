"""Invalid inputs give clear errors (ValueError and unet.errors.UserError)."""

import numpy as np
import pytest

import unet.metrics as M
from unet.errors import UserError


def _pair(h=8, w=8):
    labels = np.full((h, w), 255, np.uint8)
    labels[:, w // 2] = 0
    return labels, labels / 255.0


def test_error_type_is_user_error_and_value_error():
    assert issubclass(M.MetricInputError, UserError)
    assert issubclass(M.MetricInputError, ValueError)


@pytest.mark.parametrize("fn", [M.pixel_error, M.rand_error, M.warping_error, M.isbi_errors])
def test_mismatched_shapes(fn):
    labels, proposal = _pair()
    with pytest.raises(M.MetricInputError, match="different shapes"):
        fn(labels, proposal[:, :-1])


@pytest.mark.parametrize("fn", [M.pixel_error, M.rand_error, M.warping_error, M.isbi_errors])
def test_proposal_outside_unit_interval(fn):
    labels, proposal = _pair()
    with pytest.raises(M.MetricInputError, match=r"\[0, 1\].*divided by 255"):
        fn(labels, (proposal * 255).astype(np.uint8))
    with pytest.raises(M.MetricInputError, match=r"\[0, 1\]"):
        fn(labels, proposal - 0.5)
    bad = proposal.copy()
    bad[0, 0] = np.nan
    with pytest.raises(M.MetricInputError, match="NaN"):
        fn(labels, bad)


def test_bad_labels_and_dimensions():
    labels, proposal = _pair()
    with pytest.raises(M.MetricInputError, match="negative"):
        M.pixel_error(labels.astype(np.int16) - 1, proposal)
    with pytest.raises(M.MetricInputError, match="2-D image or a"):
        M.pixel_error(labels[None, None], proposal[None, None])
    with pytest.raises(M.MetricInputError, match="empty"):
        M.pixel_error(np.zeros((0, 4)), np.zeros((0, 4)))
    with pytest.raises(M.MetricInputError, match="threshold"):
        M.pixel_error(labels, proposal, threshold=1.5)


def test_empty_ground_truth():
    labels = np.zeros((8, 8), np.uint8)
    proposal = np.zeros((8, 8), np.float32)
    with pytest.raises(M.MetricInputError, match="no cell pixels"):
        M.rand_error(labels, proposal)
    with pytest.raises(M.MetricInputError, match="no cell pixels"):
        M.isbi_errors(labels, proposal)
    # Defined without cells: nothing to split or merge, and no false positive.
    assert M.warping_error(labels, proposal) == 0.0
    assert M.pixel_error(labels, proposal) == 0.0
    with pytest.raises(M.MetricInputError, match="no ground-truth object"):
        M.seg_score(labels, labels)


def test_seg_inputs():
    gt = np.zeros((4, 4), np.int32)
    gt[1:3, 1:3] = 1
    with pytest.raises(M.MetricInputError, match="different shapes"):
        M.seg_score(gt, gt[:3])
    with pytest.raises(M.MetricInputError, match="non-integer"):
        M.seg_score(gt, gt * 0.5)
    with pytest.raises(M.MetricInputError, match="negative"):
        M.seg_score(gt, -gt)
    with pytest.raises(M.MetricInputError, match="2-D, 3-D or 4-D"):
        M.seg_score(gt[None, None, None], gt[None, None, None])


def test_overlap_inputs():
    gt = np.zeros((4, 4), bool)
    with pytest.raises(M.MetricInputError, match="different shapes"):
        M.iou(gt, gt[:2])
    with pytest.raises(M.MetricInputError, match=r"\[0, 1\]"):
        M.dice(gt, np.full((4, 4), 2.5))
    with pytest.raises(M.MetricInputError, match="threshold"):
        M.iou(gt, gt, threshold=1.0)

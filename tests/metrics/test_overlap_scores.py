"""IoU, Dice and foreground IoU on cases checked by hand, and their relations."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import unet.metrics as M


def _squares():
    gt = np.zeros((10, 10), bool)
    gt[0:4, 0:4] = True  # 16 pixels
    pred = np.zeros((10, 10), bool)
    pred[2:6, 0:4] = True  # 16 pixels, 8 shared
    return gt, pred


def test_iou_and_dice_by_hand():
    gt, pred = _squares()
    assert M.iou(gt, pred) == pytest.approx(8 / 24)
    assert M.dice(gt, pred) == pytest.approx(16 / 32)
    # background: 100 - 24 pixels outside both; union of backgrounds 100 - 8
    np.testing.assert_allclose(M.iou(gt, pred, per_class=True), [76 / 92, 8 / 24])
    np.testing.assert_allclose(M.dice(gt, pred, per_class=True), [2 * 76 / (84 + 84), 16 / 32])


def test_probability_maps_are_thresholded():
    gt, pred = _squares()
    prob = np.where(pred, 0.7, 0.2)
    assert M.iou(gt, prob) == M.iou(gt, pred)
    assert M.iou(gt, prob, threshold=0.8) == 0.0
    assert M.iou(gt, np.where(gt, 0.51, 0.5)) == 1.0  # strict >, as the ISBI binarisation


def test_empty_masks_agree_perfectly():
    empty = np.zeros((5, 5), bool)
    assert M.iou(empty, empty) == 1.0
    assert M.dice(empty, empty) == 1.0
    assert M.iou(empty, ~empty) == 0.0


def test_foreground_iou_ignores_instance_ids():
    gt = np.zeros((6, 6), np.uint16)
    gt[:3] = 1
    gt[3:] = 2
    res = np.zeros((6, 6), np.uint16)
    res[:, :3] = 7  # one object covering half of both gt objects
    assert M.foreground_iou(gt, res) == pytest.approx(18 / 36)
    assert M.seg_score(gt, res) == 0.0  # exactly half of each: no match


def test_stack_is_pooled():
    gt, pred = _squares()
    empty = np.zeros_like(gt)
    stack_gt, stack_pred = np.stack([gt, gt]), np.stack([pred, empty])
    assert M.iou(stack_gt, stack_pred) == pytest.approx(8 / (24 + 16))


@settings(max_examples=30, deadline=None)
@given(arrays(np.bool_, (6, 7)), arrays(np.bool_, (6, 7)))
def test_dice_is_monotone_function_of_iou(gt, pred):
    j, d = M.iou(gt, pred), M.dice(gt, pred)
    assert d == pytest.approx(2 * j / (1 + j))
    assert M.iou(gt, pred) == M.iou(pred, gt)
    assert 0.0 <= j <= d <= 1.0

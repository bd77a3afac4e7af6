"""Pixel-overlap scores of binary segmentations: intersection over union and Dice.

Quick scores for training curves and sanity checks; the paper's own figures
use the ISBI errors (:mod:`unet.metrics.isbi`) and the SEG measure
(:mod:`unet.metrics.seg`).  Arrays of any shape are compared as a whole:
for a stack, intersections and unions are summed over all slices (pooled)
before dividing.
"""

from __future__ import annotations

import numpy as np

from unet.metrics._validation import as_mask_pair


def _ratio(num: int, den: int) -> float:
    # Both masks empty: the prediction is exactly right.
    return 1.0 if den == 0 else num / den


def iou(gt, pred, *, threshold: float = 0.5, per_class: bool = False):
    """Intersection over union (Jaccard index) of the foreground.

    Parameters
    ----------
    gt : array_like
        Ground-truth mask or label image; foreground = nonzero.
    pred : array_like, same shape
        Predicted mask (bool or integer, foreground = nonzero) or foreground
        probability map in [0, 1], binarised as ``pred > threshold``.
    threshold : float, optional
        Binarisation threshold for probability maps (default 0.5, the
        decision boundary of the two-class soft-max, paper Sec. 3).
    per_class : bool, optional
        Return ``array([iou_background, iou_foreground])`` instead of the
        foreground IoU.

    Returns
    -------
    float or ndarray
        IoU in [0, 1]; 1.0 when both masks are empty.
    """
    g, p = as_mask_pair(gt, pred, threshold)
    fg = _ratio(int(np.count_nonzero(g & p)), int(np.count_nonzero(g | p)))
    if not per_class:
        return fg
    bg = _ratio(int(np.count_nonzero(~g & ~p)), int(np.count_nonzero(~g | ~p)))
    return np.array([bg, fg])


def dice(gt, pred, *, threshold: float = 0.5, per_class: bool = False):
    """Dice coefficient ``2|G ∩ P| / (|G| + |P|)`` of the foreground.

    Parameters are those of :func:`iou`; 1.0 when both masks are empty.
    """
    g, p = as_mask_pair(gt, pred, threshold)
    fg = _ratio(2 * int(np.count_nonzero(g & p)), int(np.count_nonzero(g)) + int(np.count_nonzero(p)))
    if not per_class:
        return fg
    bg = _ratio(2 * int(np.count_nonzero(~g & ~p)), int(np.count_nonzero(~g)) + int(np.count_nonzero(~p)))
    return np.array([bg, fg])


def foreground_iou(gt_labels, pred_labels) -> float:
    """IoU of the foreground (label > 0) of two instance label images.

    The pixel-level companion of :func:`unet.metrics.seg_score`: it ignores
    which object a pixel belongs to, so merges and splits are not penalised.
    """
    return iou(np.asarray(gt_labels) > 0, np.asarray(pred_labels) > 0)

"""Input checks shared by the metrics: clear messages for problems a user can fix."""

from __future__ import annotations

import numpy as np

from unet.errors import UserError


class MetricInputError(UserError, ValueError):
    """Arrays given to a metric have the wrong shape, type or range."""


def _as_array(a, name: str) -> np.ndarray:
    try:
        arr = np.asarray(a)
    except Exception as err:  # pragma: no cover - numpy raises many types
        raise MetricInputError(f"{name}: cannot be read as an array ({err})") from err
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise MetricInputError(f"{name}: expected a numeric or boolean array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise MetricInputError(f"{name}: array is empty (shape {arr.shape})")
    return arr


def check_same_shape(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise MetricInputError(
            f"{names[0]} and {names[1]} have different shapes: {a.shape} vs {b.shape}"
        )


def as_isbi_pair(labels, proposal) -> tuple[np.ndarray, np.ndarray]:
    """Validate an ISBI (labels, proposal) pair and return ``(cell, P)`` as stacks.

    ``cell`` is a float64 stack of the labels (so that ``cell > th`` is the
    official binarisation), ``P`` the proposal as float32 (the official
    evaluation reads 32-bit images), both of shape ``(slices, H, W)``.
    """
    labels = _as_array(labels, "labels")
    proposal = _as_array(proposal, "proposal")
    check_same_shape(labels, proposal, ("labels", "proposal"))
    if labels.ndim not in (2, 3):
        raise MetricInputError(
            f"labels: expected a 2-D image or a (slices, H, W) stack, got shape {labels.shape}"
        )
    lab = labels.astype(np.float64, copy=False)
    if not np.all(np.isfinite(lab)):
        raise MetricInputError("labels: contains NaN or infinite values")
    if lab.min() < 0:
        raise MetricInputError("labels: negative values (expected 0 = membrane, >0 = cell, e.g. 0/255)")
    prop = proposal.astype(np.float64, copy=False)
    if not np.all(np.isfinite(prop)):
        raise MetricInputError("proposal: contains NaN or infinite values")
    lo, hi = float(prop.min()), float(prop.max())
    if lo < 0.0 or hi > 1.0:
        hint = " (8-bit images 0..255 must be divided by 255 first)" if hi <= 255 and lo >= 0 else ""
        raise MetricInputError(
            f"proposal: values must lie in [0, 1] (1 = cell), found range [{lo:g}, {hi:g}]{hint}"
        )
    if lab.ndim == 2:
        lab = lab[None]
        proposal = proposal[None]
    return lab, np.asarray(proposal, dtype=np.float32)


def as_label_pair(gt, res, names=("gt", "res")) -> tuple[np.ndarray, np.ndarray]:
    """Validate two integer instance-label arrays of the same shape."""
    gt = _as_array(gt, names[0])
    res = _as_array(res, names[1])
    check_same_shape(gt, res, names)
    for arr, name in ((gt, names[0]), (res, names[1])):
        if arr.dtype == np.bool_:
            continue
        if not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise MetricInputError(f"{name}: expected integer instance labels, got non-integer values")
        if arr.min() < 0:
            raise MetricInputError(f"{name}: negative labels (0 = background, 1, 2, ... = objects)")
    return gt.astype(np.int64, copy=False), res.astype(np.int64, copy=False)


def as_mask_pair(gt, pred, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Validate (gt mask, prediction) and return two boolean arrays.

    ``gt`` is a mask or label image (foreground = nonzero); ``pred`` is a mask
    (bool or integer labels, foreground = nonzero) or a probability map in
    [0, 1] binarised by ``pred > threshold``.
    """
    gt = _as_array(gt, "gt")
    pred = _as_array(pred, "pred")
    check_same_shape(gt, pred, ("gt", "pred"))
    if not 0.0 <= float(threshold) < 1.0:
        raise MetricInputError(f"threshold must lie in [0, 1), got {threshold}")
    if np.issubdtype(gt.dtype, np.floating) and not np.all(np.isfinite(gt)):
        raise MetricInputError("gt: contains NaN or infinite values")
    if pred.dtype == np.bool_ or np.issubdtype(pred.dtype, np.integer):
        if pred.dtype != np.bool_ and pred.min() < 0:
            raise MetricInputError("pred: negative values in an integer mask")
        pred_mask = pred != 0
    else:
        if not np.all(np.isfinite(pred)):
            raise MetricInputError("pred: contains NaN or infinite values")
        lo, hi = float(pred.min()), float(pred.max())
        if lo < 0.0 or hi > 1.0:
            raise MetricInputError(f"pred: probabilities must lie in [0, 1], found range [{lo:g}, {hi:g}]")
        pred_mask = pred > threshold
    return gt != 0, pred_mask

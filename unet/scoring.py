"""Scoring predictions against ground truth: the one implementation every caller uses.

Validation during training (:meth:`unet.training.Trainer.validate`), the
held-out folds of ``unet reproduce`` (:func:`unet.reproduce.evaluate.fold_metrics`)
and ``unet evaluate`` all score through these functions, so the same files give
the same numbers everywhere.  The measures themselves live in :mod:`unet.metrics`
(equal to the official tools); this module says how a set of images is pooled
and how a probability map becomes cells:

* ISBI 2012 pixel, Rand and warping errors (paper Table 1): on the stack of
  the images when they share a shape, counts summed over slices as the
  challenge's script does for its 30-slice test stack; else the mean of the
  per-image errors.
* SEG (paper Table 2): the Jaccard indices of every ground-truth object of all
  frames, pooled (frames may differ in size).
* IoU and Dice: pixels pooled over all images.
* Cells of a probability map: :func:`unet.inference.cell_instances` (the
  4-connected components of ``prob > 0.5``, or a seeded watershed).

It sits above :mod:`unet.metrics` and :mod:`unet.inference` (it needs
``cell_instances``) and below training, reproduce and the CLI.

Metric names are those of the results, logs and configs: :data:`METRIC_NAMES`.
The short names of older configs (``pixel``, ``rand``, ``warping``) are
aliases, mapped here only (:func:`metric_name`).
"""

from __future__ import annotations

import numpy as np

from unet import metrics as M
from unet.inference.labels import cell_instances

#: the metrics of ``eval.metrics`` / ``eval.monitor``, of validation logs and of results
METRIC_NAMES = ("iou", "dice", "pixel_error", "rand_error", "warping_error", "seg")
#: the three errors of the ISBI 2012 challenge (paper Table 1)
ISBI_ERRORS = ("pixel_error", "rand_error", "warping_error")
#: deprecated short names (configs written before these names were unified), accepted as aliases
METRIC_ALIASES = {"pixel": "pixel_error", "rand": "rand_error", "warping": "warping_error"}

_ISBI_FUNCTIONS = {"pixel_error": M.pixel_error, "rand_error": M.rand_error, "warping_error": M.warping_error}


def metric_name(name: str) -> str:
    """The name of a metric in results and logs; a deprecated short name maps to it.

    Raises
    ------
    ValueError
        For a name that is no metric.
    """
    canonical = METRIC_ALIASES.get(name, name)
    if canonical not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r} (choose from {', '.join(METRIC_NAMES)})")
    return canonical


def _stack(arrays) -> np.ndarray:
    """One ``(slices, H, W)`` stack of 2-D images and stacks (any other array is left to the metric to refuse)."""
    arrays = [np.asarray(a) for a in arrays]
    if len(arrays) == 1:
        return arrays[0]
    return np.concatenate([a[None] if a.ndim == 2 else a for a in arrays])


def isbi_scores(probs, cells, *, errors=ISBI_ERRORS) -> dict:
    """ISBI 2012 errors of cell-probability maps (paper Table 1; :func:`unet.metrics.isbi_errors`).

    Parameters
    ----------
    probs : sequence of ndarray (H, W) or (slices, H, W)
        Cell probability in [0, 1] (1 = cell), one entry per image or stack.
    cells : sequence of ndarray, same shapes
        Ground truth, 0 = membrane, >0 = cell (instance labels, a mask, 0/255).
    errors : iterable of str
        Which of :data:`ISBI_ERRORS` to compute.

    Returns
    -------
    dict
        The requested errors.  When all three are requested on images of one
        shape, everything :func:`unet.metrics.isbi_errors` reports (the
        threshold of each error, splits and mergers) besides.  Images of
        different shapes: the mean of the per-image errors.
    """
    errors = tuple(errors)
    probs, cells = list(probs), list(cells)
    if len({np.shape(p)[-2:] for p in probs}) == 1:
        return _isbi(_stack(probs), _stack(cells), errors)
    per_image = [_isbi(p, c, errors) for p, c in zip(probs, cells)]
    return {e: float(np.mean([r[e] for r in per_image])) for e in errors}


def _isbi(prob, cells, errors) -> dict:
    if set(errors) == set(ISBI_ERRORS):  # one pass: the warping error's thresholds come with the others
        return M.isbi_errors(cells, prob)
    return {e: float(_ISBI_FUNCTIONS[e](cells, prob)) for e in errors}


def instances(probs, *, threshold: float = 0.5, min_size: int = 0, seed_threshold: float | None = None) -> list:
    """Cell instances of each 2-D probability map (:func:`unet.inference.cell_instances`)."""
    return [cell_instances(p, threshold=threshold, min_size=min_size, seed_threshold=seed_threshold) for p in probs]


def seg(labels, predicted) -> float:
    """SEG of predicted instances (paper Table 2; :func:`unet.metrics.seg_jaccards`), pooled over every object.

    Parameters
    ----------
    labels, predicted : sequence of ndarray of int
        Ground-truth and predicted instance labels (0 = background), pairwise of
        the same shape: a 2-D frame, a ``(T, H, W)`` stack of frames or a
        ``(T, Z, H, W)`` stack of volumes; pairs may differ in shape.

    Raises
    ------
    unet.metrics.MetricInputError
        No ground-truth object in any frame: SEG is undefined.
    """
    jaccards = [j for g, r in zip(labels, predicted) for *_, j in M.seg_jaccards(g, r)]
    if not jaccards:
        raise M.MetricInputError("gt: no ground-truth object (all zeros), SEG is undefined")
    return float(sum(jaccards) / len(jaccards))  # the order and sum of unet.metrics.seg_score


def overlap_scores(cells, predicted, *, names=("iou", "dice"), valid=None, threshold: float = 0.5) -> dict:
    """Foreground IoU and Dice, pixels pooled over all images (:func:`unet.metrics.iou`, :func:`unet.metrics.dice`).

    Parameters
    ----------
    cells : sequence of ndarray
        Ground truth, foreground = nonzero.
    predicted : sequence of ndarray, same shapes
        Probability maps in [0, 1] (foreground ``> threshold``) or masks / labels (foreground = nonzero).
    names : iterable of {"iou", "dice"}
    valid : sequence of bool ndarray, optional
        Only these pixels count (the trainer: annotated ones).
    """
    names = list(names)
    if not names:
        return {}
    g, p = _pooled(cells, valid), _pooled(predicted, valid)
    functions = {"iou": M.iou, "dice": M.dice}
    return {n: float(functions[n](g, p, threshold=threshold)) for n in names}


def _pooled(arrays, valid) -> np.ndarray:
    """The pixels of all images (where ``valid``) in one array; a single whole image as it is."""
    if valid is None:
        if len(arrays) == 1:
            return np.asarray(arrays[0])
        return np.concatenate([np.ravel(a) for a in arrays])
    return np.concatenate([np.asarray(a)[m] for a, m in zip(arrays, valid)])


def score_probabilities(probs, labels, *, metrics, cells=None, valid=None, threshold: float = 0.5,
                        min_size: int = 0, seed_threshold: float | None = None) -> dict:
    """The requested metrics of cell-probability maps against the ground truth of the same images.

    Parameters
    ----------
    probs : sequence of ndarray (H, W)
        Cell probability (1 = cell), one per image.
    labels : sequence of ndarray (H, W) of int
        Instance labels of the same images (0 = background / membrane): the
        objects of ``seg`` and, unless ``cells`` is given, the foreground of
        the pixel measures.
    metrics : iterable of str
        Names of :data:`METRIC_NAMES` (or their deprecated aliases).
    cells : sequence of ndarray, optional
        Foreground of the pixel measures (ISBI errors, IoU, Dice) when it is
        not ``labels > 0``: the trainer scores the target it trains for, with
        background between touching cells (paper Sec. 3, Fig. 3).
    valid : sequence of bool ndarray, optional
        Pixels IoU and Dice count (the trainer: annotated ones).
    threshold, min_size, seed_threshold
        The cells of ``seg``: :func:`unet.inference.cell_instances`.

    Returns
    -------
    dict
        ``{name: value}`` in the order of :data:`METRIC_NAMES`.  ``seg`` is NaN
        when no image has a ground-truth object (a validation set of empty
        frames must not stop a training run).
    """
    wanted = {metric_name(m) for m in metrics}
    cells = labels if cells is None else cells
    out = overlap_scores(cells, probs, names=[n for n in ("iou", "dice") if n in wanted], valid=valid,
                         threshold=threshold)
    errors = [e for e in ISBI_ERRORS if e in wanted]
    if errors:
        isbi = isbi_scores(probs, cells, errors=errors)
        out.update({e: float(isbi[e]) for e in errors})
    if "seg" in wanted:
        predicted = instances(probs, threshold=threshold, min_size=min_size, seed_threshold=seed_threshold)
        try:
            out["seg"] = seg(labels, predicted)
        except M.MetricInputError:
            out["seg"] = float("nan")
    return out

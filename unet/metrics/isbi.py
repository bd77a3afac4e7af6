"""ISBI 2012 EM segmentation challenge metrics: pixel error and Rand error.

The U-Net paper (Ronneberger et al. 2015, Sec. 4, Table 1) reports the three
errors of the ISBI 2012 challenge (Arganda-Carreras et al. 2015, "Crowdsourcing
the creation of image segmentation algorithms for connectomics", Front.
Neuroanat. 9:142): pixel error, Rand error and warping error.  This module and
:mod:`unet.metrics.warping` reproduce the official evaluation script of
2015-01-22 (Fiji Trainable_Segmentation, ``trainableSegmentation.metrics``)
exactly; the golden vectors in ``shared/oracle/isbi`` check it.

Conventions (as in the challenge):

* ``labels``: ground truth, 0 = membrane, >0 = cell interior (ISBI PNGs are
  0/255).  ``proposal``: probability of *cell* (1 = cell, 0 = membrane) in
  [0, 1]; it is used as float32, as the official tool reads 32-bit images.
* A 3-D array is a stack of independent 2-D slices (axis 0); counts are summed
  over slices before the score is formed.
* Each error is minimised over the thresholds produced by the Java loop
  ``for (th = 0; th <= 1.0; th += 0.1)`` (11 values, the last
  0.9999999999999999) and binarisation is ``float64(P) > th``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from unet.metrics._official import (  # noqa: F401  (thresholds and FOUR_CONNECTED: public here)
    FOUR_CONNECTED,
    ISBI_THRESHOLDS,
    WARPING_THRESHOLDS,
    best_max,
    f_score,
    rand_f,
)
from unet.metrics._validation import MetricInputError, as_isbi_pair


def _resolve_thresholds(threshold) -> tuple[float, ...]:
    if threshold is None:
        return ISBI_THRESHOLDS
    th = float(threshold)
    if not 0.0 <= th <= 1.0:
        raise MetricInputError(f"threshold must lie in [0, 1], got {threshold}")
    return (th,)


def pixel_counts(labels, proposal, thresholds=ISBI_THRESHOLDS) -> np.ndarray:
    """True/false positive/negative pixel counts per threshold, positive = cell.

    Returns an int64 array of shape ``(len(thresholds), 4)`` with columns
    ``tp, fp, fn, tn``, summed over slices.
    """
    lab, prop = as_isbi_pair(labels, proposal)
    return _pixel_counts(lab, prop, thresholds)


def _sweep(row, lab: np.ndarray, prop: np.ndarray, thresholds, columns: int, dtype) -> np.ndarray:
    """``row(lab, p64, th)`` at each threshold, one row each: the official script's threshold loop.

    ``p64`` is the float32 proposal as float64, as the official script compares it (``float64(P) > th``).
    """
    p64 = prop.astype(np.float64)
    out = np.zeros((len(thresholds), columns), dtype=dtype)
    for k, th in enumerate(thresholds):
        out[k] = row(lab, p64, th)
    return out


def _pixel_counts(lab: np.ndarray, prop: np.ndarray, thresholds) -> np.ndarray:
    return _sweep(_pixel_row, lab, prop, thresholds, 4, np.int64)


def _pixel_row(lab: np.ndarray, p64: np.ndarray, th: float) -> tuple[int, int, int, int]:
    L = lab > th
    P = p64 > th
    tp = int(np.count_nonzero(L & P))
    fp = int(np.count_nonzero(P)) - tp
    fn = int(np.count_nonzero(L)) - tp
    return tp, fp, fn, L.size - tp - fp - fn


def pixel_error(labels, proposal, *, threshold: float | None = None) -> float:
    """ISBI 2012 pixel error: ``1 - F-score`` of the cell pixels.

    Not the fraction of disagreeing pixels: as in the challenge's evaluation
    script (Arganda-Carreras et al. 2015, Sec. 2.3.1), it is one minus the
    F-score (harmonic mean of precision and recall, positive class = cell) of
    the binarised proposal, with counts summed over slices, maximised over
    :data:`ISBI_THRESHOLDS`.

    Parameters
    ----------
    labels : array_like, shape (H, W) or (slices, H, W)
        Ground truth, 0 = membrane, >0 = cell.
    proposal : array_like, same shape
        Cell probability in [0, 1].
    threshold : float, optional
        Evaluate at this single threshold instead of the official sweep.

    Returns
    -------
    float
        The error in [0, 1] (0 = perfect).
    """
    lab, prop = as_isbi_pair(labels, proposal)
    ths = _resolve_thresholds(threshold)
    counts = _pixel_counts(lab, prop, ths)
    best, _ = best_max([f_score(tp, fp, fn) for tp, fp, fn, _tn in counts], ths)
    return float(1.0 - best)


def _components(mask2d: np.ndarray) -> np.ndarray:
    return ndimage.label(mask2d, structure=FOUR_CONNECTED)[0]


def rand_sums(labels, proposal, thresholds=ISBI_THRESHOLDS) -> np.ndarray:
    """Sums ``T, A, B`` of the foreground-restricted Rand F-score per threshold.

    Per slice, the 4-connected components ``i`` of ``labels > th`` and ``j`` of
    ``proposal > th`` are counted over ground-truth cell pixels only
    (``n_ij``; ``j = 0`` is proposal membrane):
    ``T = sum_{i,j>=1} n_ij^2 + sum_i n_i0``, ``A = sum_i (sum_j n_ij)^2``,
    ``B = sum_{j>=1} (sum_i n_ij)^2 + sum_i n_i0``, summed over slices.
    Returns a float64 array of shape ``(len(thresholds), 3)``.
    """
    lab, prop = as_isbi_pair(labels, proposal)
    return _rand_sums(lab, prop, thresholds)


def _rand_sums(lab: np.ndarray, prop: np.ndarray, thresholds) -> np.ndarray:
    return _sweep(_rand_row, lab, prop, thresholds, 3, np.float64)


def _rand_row(lab: np.ndarray, p64: np.ndarray, th: float) -> tuple[int, int, int]:
    T = A = B = 0
    for s in range(lab.shape[0]):
        gt_cells = lab[s] > th
        if not gt_cells.any():
            continue
        gi = _components(gt_cells)[gt_cells].astype(np.int64)
        pj = _components(p64[s] > th)[gt_cells].astype(np.int64)
        # n_ij over ground-truth cell pixels; singletons where j = 0
        # (proposal membrane inside a cell) are each their own cluster.
        base = int(pj.max()) + 1
        pairs, n_ij = np.unique(gi * base + pj, return_counts=True)
        inside = pairs % base > 0
        n_i0 = int(n_ij[~inside].sum())
        T += int(np.sum(n_ij[inside] ** 2)) + n_i0
        A += int(np.sum(np.bincount(gi).astype(np.int64) ** 2))
        col = np.bincount(pj[pj > 0]).astype(np.int64)
        B += int(np.sum(col**2)) + n_i0
    return T, A, B


def rand_error(labels, proposal, *, threshold: float | None = None) -> float:
    """ISBI 2012 foreground-restricted Rand error: ``1 - F-score`` of pixel pairs.

    Rand (1971) index restricted to ground-truth cell pixels, as the challenge
    evaluation script computes it (Arganda-Carreras et al. 2015, Sec. 2.3.2;
    Fiji ``RandError.getForegroundRestrictedRandIndexMaximalFScore``):
    precision ``T/B`` and recall ``T/A`` of "same segment" pairs (see
    :func:`rand_sums`), segments being the 4-connected components of cells;
    ``F = 2T/(A+B)`` maximised over :data:`ISBI_THRESHOLDS`.  This is *not*
    ``skimage.metrics.adapted_rand_error``.

    Parameters
    ----------
    labels, proposal, threshold
        As in :func:`pixel_error`.

    Raises
    ------
    MetricInputError
        Mismatched shapes, proposal outside [0, 1], or labels without any cell
        pixel (the index is then undefined).
    """
    lab, prop = as_isbi_pair(labels, proposal)
    if not np.any(lab > 0):
        raise MetricInputError("labels: no cell pixels, the Rand error is undefined")
    ths = _resolve_thresholds(threshold)
    sums = _rand_sums(lab, prop, ths)
    best, _ = best_max([rand_f(*row) for row in sums], ths)
    return float(1.0 - best)

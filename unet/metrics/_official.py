"""Arithmetic of the official ISBI 2012 evaluation script, shared by the three errors.

The challenge's script (Fiji Trainable_Segmentation ``trainableSegmentation.metrics``,
version 2015-01-22; Arganda-Carreras et al. 2015) sweeps thresholds with a Java
``for`` loop, turns counts into F-scores and keeps the first best threshold.
:mod:`unet.metrics.isbi` (pixel and Rand errors), :mod:`unet.metrics.warping`
and :func:`unet.metrics.isbi_errors` (all three in one call) use these pieces,
so each convention is written once.
"""

from __future__ import annotations

import numpy as np


def java_thresholds(start: float, stop: float, step: float) -> tuple[float, ...]:
    """Thresholds of ``for (double th = start; th <= stop; th += step)``.

    The accumulated double-precision sum matters: it gives 0.30000000000000004,
    0.7999999999999999, ... and decides whether the last value is included.
    """
    out = []
    th = float(start)
    while th <= stop:
        out.append(th)
        th += step
    return tuple(out)


#: Thresholds of the pixel and Rand errors: ``getPixelErrorMaximalFScore(0.0, 1.0, 0.1)``.
ISBI_THRESHOLDS = java_thresholds(0.0, 1.0, 0.1)
#: Thresholds of the warping error: ``getMinimumSplitsAndMergersErrorValue(0.0, 0.9, 0.1, ...)``.
WARPING_THRESHOLDS = java_thresholds(0.0, 0.9, 0.1)

#: 4-connectivity for cells, as Fiji's ``Utils.connectedComponents(..., 4)``.
FOUR_CONNECTED = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


def f_score(tp: float, fp: float, fn: float) -> float:
    """F-score of pixel counts as Fiji's ``ClassificationStatistics`` forms it.

    No false positives means precision 1 and no false negatives means recall 1
    (even when ``tp = 0``).
    """
    precision = 1.0 if fp == 0 else tp / (tp + fp)
    recall = 1.0 if fn == 0 else tp / (tp + fn)
    if precision + recall > 0:
        return 2.0 * precision * recall / (precision + recall)
    return 0.0


def rand_f(T: float, A: float, B: float) -> float:
    """Foreground-restricted Rand F-score ``2T / (A + B)`` from the sums of :func:`unet.metrics.rand_sums`."""
    if A == 0 or T == 0:
        return 0.0
    precision, recall = T / B, T / A
    return 2.0 * precision * recall / (precision + recall)


def best_max(scores, thresholds) -> tuple[float, float]:
    """Largest score and its threshold: Fiji keeps the first strictly larger one, from F = 0."""
    best, best_th = 0.0, thresholds[0]
    for f, th in zip(scores, thresholds):
        if f > best:
            best, best_th = f, th
    return best, best_th


def best_min(errors, thresholds) -> tuple[int, float]:
    """Index and threshold of the smallest error: Fiji keeps the first strictly smaller one."""
    best_k = int(np.argmin(errors))  # argmin returns the first minimum
    return best_k, thresholds[best_k]

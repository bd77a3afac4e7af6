"""The three ISBI 2012 errors in one call, as the challenge's evaluation script reports them."""

from __future__ import annotations

import numpy as np

from unet.metrics._official import ISBI_THRESHOLDS, WARPING_THRESHOLDS, best_max, best_min, f_score, rand_f
from unet.metrics._validation import MetricInputError, as_isbi_pair
from unet.metrics.isbi import pixel_counts, rand_sums
from unet.metrics.warping import DEFAULT_RADIUS, warping_counts


def isbi_errors(labels, proposal, *, radius: int = DEFAULT_RADIUS) -> dict:
    """Pixel, Rand and warping errors of the ISBI 2012 challenge (U-Net Table 1).

    Each error is minimised over its own thresholds exactly as the official
    evaluation script (version 2015-01-22) does; see
    :func:`unet.metrics.pixel_error`, :func:`unet.metrics.rand_error` and
    :func:`unet.metrics.warping_error` for the definitions (Arganda-Carreras et
    al. 2015; Jain et al. 2010).

    Parameters
    ----------
    labels : array_like, shape (H, W) or (slices, H, W)
        Ground truth, 0 = membrane, >0 = cell (ISBI PNGs: 0/255).
    proposal : array_like, same shape
        Cell probability in [0, 1] (1 = cell).
    radius : int, optional
        Window radius of the warping split test (official: 20).

    Returns
    -------
    dict
        ``pixel_error``, ``rand_error``, ``warping_error`` and the threshold at
        which each is reached (``pixel_threshold``, ``rand_threshold``,
        ``warping_threshold``), plus ``splits`` and ``mergers`` (pixels) and
        ``warping_pixels`` (their sum) at the best warping threshold.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.full((32, 32), 255, np.uint8); labels[:, 15:17] = 0
    >>> isbi_errors(labels, labels / 255.0)["warping_error"]
    0.0
    """
    lab, prop = as_isbi_pair(labels, proposal)
    if not np.any(lab > 0):
        raise MetricInputError("labels: no cell pixels, the Rand error is undefined")
    # the counts re-check the already validated stacks (cheap next to the warping)
    pix = pixel_counts(lab, prop, ISBI_THRESHOLDS)
    f_pix, th_pix = best_max([f_score(tp, fp, fn) for tp, fp, fn, _ in pix], ISBI_THRESHOLDS)
    rand = rand_sums(lab, prop, ISBI_THRESHOLDS)
    f_rand, th_rand = best_max([rand_f(*row) for row in rand], ISBI_THRESHOLDS)
    warp = warping_counts(lab, prop, WARPING_THRESHOLDS, radius=radius)
    errors = (warp[:, 0] + warp[:, 1]) / lab.size
    k, th_warp = best_min(errors, WARPING_THRESHOLDS)
    return {
        "pixel_error": float(1.0 - f_pix),
        "rand_error": float(1.0 - f_rand),
        "warping_error": float(errors[k]),
        "pixel_threshold": float(th_pix),
        "rand_threshold": float(th_rand),
        "warping_threshold": float(th_warp),
        "splits": int(warp[k, 0]),
        "mergers": int(warp[k, 1]),
        "warping_pixels": int(warp[k, 0] + warp[k, 1]),
    }

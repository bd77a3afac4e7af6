"""Evaluation metrics of the U-Net paper, equal to the official implementations.

* ISBI 2012 EM segmentation challenge (U-Net Table 1; Arganda-Carreras et al.
  2015): :func:`isbi_errors`, :func:`pixel_error`, :func:`rand_error`,
  :func:`warping_error` (Jain et al. 2010).
* ISBI cell tracking challenge (U-Net Table 2, "IoU"): the SEG measure
  :func:`seg_score` (Maška et al. 2014; Ulman et al. 2017).
* Plain overlap scores: :func:`iou`, :func:`dice`, :func:`foreground_iou`.

All functions are pure functions on NumPy arrays: a 2-D image or a stack with
slices (or frames) on axis 0.  Invalid inputs raise :class:`MetricInputError`
(a :class:`ValueError` and :class:`unet.errors.UserError`).
"""

from unet.metrics._validation import MetricInputError
from unet.metrics.challenge import isbi_errors
from unet.metrics.isbi import ISBI_THRESHOLDS, WARPING_THRESHOLDS, pixel_counts, pixel_error, rand_error, rand_sums
from unet.metrics.overlap import dice, foreground_iou, iou
from unet.metrics.seg import seg_jaccards, seg_score
from unet.metrics.warping import WarpingResult, warp_labels, warping_counts, warping_error

__all__ = [
    "ISBI_THRESHOLDS",
    "WARPING_THRESHOLDS",
    "MetricInputError",
    "WarpingResult",
    "dice",
    "foreground_iou",
    "iou",
    "isbi_errors",
    "pixel_counts",
    "pixel_error",
    "rand_error",
    "rand_sums",
    "seg_jaccards",
    "seg_score",
    "warp_labels",
    "warping_counts",
    "warping_error",
]

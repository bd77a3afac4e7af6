"""Per-image intensity normalisation, shared by training and prediction.

The paper feeds raw grey values; microscopy comes as 8- or 16-bit images whose
used range varies between files (DIC-HeLa frames span about 32-255, 16-bit
fluorescence often a few hundred counts).  Every image is therefore mapped
linearly so that its ``low``-th percentile becomes 0 and its ``high``-th
percentile 1 (values outside are kept, not clipped), as csbdeep/cellpose do.
Mode ``"meanstd"`` instead maps every image to mean 0.5 and standard deviation
1/6 (mean +- 3 std -> 0 and 1): percentiles leave the mean where the image's
histogram puts it, and DIC-HeLa sequence 01 sits 0.09 below sequence 02 after
percentile scaling, enough for a network trained on one sequence to call almost
all of the other background.
The same settings are stored in each checkpoint (``metadata["normalize"]``) and
reused by prediction.  On images larger than memory, the percentiles are
computed on a regular subsample of at most ``max_samples`` pixels, so a tiled
prediction uses the same statistics for every tile.
"""

from __future__ import annotations

import numpy as np

#: defaults written into checkpoints; see :func:`normalize`
DEFAULT_NORMALIZE = {"mode": "percentile", "low": 0.1, "high": 99.9}
#: ``"meanstd"`` mode: the standard deviations on each side of the mean mapped to 0 and 1
MEANSTD_WIDTH = 3.0


def intensity_range(image, *, mode: str = "percentile", low: float = 0.1, high: float = 99.9,
                    max_samples: int = 2**22) -> tuple[float, float]:
    """Grey values mapped to 0 and 1.

    Parameters
    ----------
    image : array_like
        Any shape; may be a memory-mapped or zarr-backed array (only a strided
        subsample is read when it holds more than ``max_samples`` pixels).
    mode : {"percentile", "meanstd", "minmax", "dtype", "none"}
        ``"percentile"``: the ``low``/``high`` percentiles; ``"meanstd"``: the
        mean -+ :data:`MEANSTD_WIDTH` standard deviations; ``"minmax"``: the
        extremes; ``"dtype"``: 0 and the dtype maximum for integer images (1.0
        for floats); ``"none"``: 0 and 1 (no change).
    """
    if mode == "none":
        return 0.0, 1.0
    if mode == "dtype":
        dt = np.dtype(image.dtype)
        return 0.0, float(np.iinfo(dt).max) if dt.kind in "ui" else 1.0
    sample = _subsample(image, max_samples)
    if mode == "minmax":
        lo, hi = float(sample.min()), float(sample.max())
    elif mode == "percentile":
        lo, hi = (float(v) for v in np.percentile(sample, [low, high]))
    elif mode == "meanstd":
        mean, std = float(sample.mean(dtype=np.float64)), float(sample.std(dtype=np.float64))
        lo, hi = mean - MEANSTD_WIDTH * std, mean + MEANSTD_WIDTH * std
    else:
        raise ValueError(f"normalize mode must be 'percentile', 'meanstd', 'minmax', 'dtype' or 'none', got {mode!r}")
    if hi <= lo:  # constant image: map it to 0 rather than dividing by zero
        hi = lo + 1.0
    return lo, hi


def normalize(image, *, mode: str = "percentile", low: float = 0.1, high: float = 99.9,
              value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Return ``image`` as float32 with ``value_range`` (default: :func:`intensity_range`) mapped to [0, 1]."""
    lo, hi = value_range if value_range is not None else intensity_range(image, mode=mode, low=low, high=high)
    return ((np.asarray(image, dtype=np.float32) - np.float32(lo)) / np.float32(hi - lo)).astype(np.float32, copy=False)


def _subsample(image, max_samples: int) -> np.ndarray:
    n = int(np.prod(image.shape))
    if n <= max_samples:
        return np.asarray(image).ravel()
    stride = int(np.ceil((n / max_samples) ** (1.0 / image.ndim)))
    return np.asarray(image[(slice(None, None, stride),) * image.ndim]).ravel()

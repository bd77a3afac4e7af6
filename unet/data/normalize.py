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
reused by prediction.

The rule, one for training and every prediction path (:func:`intensity_ranges`,
used by ``load_sample``, ``predict_tiled(normalize=...)``, ``predict_file`` and
``predict_dask``): each channel of each 2-D plane (a page of a stack) gets its
own range, as training reads one page at a time and normalises its channels
separately.  On images larger than memory, the range of a plane is computed on
a regular subsample of at most ``max_samples`` pixels that strides Y and X
only (never the Z or C axes), so a tiled prediction uses the same statistics
for every tile of a plane.
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
    if sample.dtype.kind == "f" and not np.isfinite(sample).all():  # NaN/inf pixels carry no intensity
        sample = sample[np.isfinite(sample)]
        if sample.size == 0:
            return 0.0, 1.0
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


def intensity_ranges(image, axes: str, *, mode: str = "percentile", low: float = 0.1, high: float = 99.9,
                     max_samples: int = 2**22) -> np.ndarray:
    """The normalisation rule: one :func:`intensity_range` per channel of each 2-D plane.

    Parameters
    ----------
    image : array_like
        numpy, memmap or zarr array; only a subsample strided in Y and X is read
        from planes of more than ``max_samples`` pixels.
    axes : str
        Axes of ``image``: ``Y``, ``X``, optionally ``C`` and one stack axis
        (``Z`` or ``T``), e.g. ``"YX"``, ``"CYX"``, ``"YXC"``, ``"ZYX"``, ``"ZCYX"``.
    mode, low, high, max_samples
        As for :func:`intensity_range`.

    Returns
    -------
    numpy.ndarray
        float64 ``(planes, channels, 2)``: ``[..., 0]`` is mapped to 0, ``[..., 1]`` to 1.
    """
    axes = axes.upper()
    if len(axes) != len(image.shape):
        raise ValueError(f"axes {axes!r} do not match an image of shape {tuple(image.shape)}")
    stack = next((a for a in axes if a not in "CYX"), None)
    planes = int(image.shape[axes.index(stack)]) if stack else 1
    channels = int(image.shape[axes.index("C")]) if "C" in axes else 1
    out = np.empty((planes, channels, 2))
    for z in range(planes):
        for c in range(channels):
            index = tuple(z if a == stack else c if a == "C" else slice(None) for a in axes)
            out[z, c] = intensity_range(_Plane(image, index), mode=mode, low=low, high=high,
                                        max_samples=max_samples)
    return out


def apply_ranges(box, ranges) -> np.ndarray:
    """``box`` (C, ...) as float32 with channel ``c``'s ``ranges[c]`` (C, 2) mapped to [0, 1]."""
    ranges = np.asarray(ranges, dtype=np.float64).reshape(-1, 2)
    shape = (-1,) + (1,) * (np.ndim(box) - 1)
    # as in normalize(): offset and width rounded to float32 once (same values as a one-channel call)
    lo = ranges[:, 0].astype(np.float32).reshape(shape)
    width = (ranges[:, 1] - ranges[:, 0]).astype(np.float32).reshape(shape)
    return ((np.asarray(box, dtype=np.float32) - lo) / width).astype(np.float32, copy=False)


def count_nonfinite(image, axes: str, *, block_bytes: int = 2**26) -> int:
    """Number of NaN or infinite pixels of ``image`` (0 for integer images), read in bands of rows.

    A single NaN would make every normalised tile NaN (percentiles of a plane
    with a NaN are NaN), so prediction checks the whole image first."""
    if np.dtype(image.dtype).kind not in "fc":
        return 0
    y = axes.upper().index("Y")
    row_bytes = max(1, int(np.prod(image.shape)) // max(1, image.shape[y]) * np.dtype(image.dtype).itemsize)
    step = max(1, block_bytes // row_bytes)
    total = 0
    for y0 in range(0, image.shape[y], step):
        index = tuple(slice(y0, y0 + step) if a == y else slice(None) for a in range(len(image.shape)))
        total += int(np.count_nonzero(~np.isfinite(np.asarray(image[index]))))
    return total


def replace_nonfinite(normalised: np.ndarray) -> np.ndarray:
    """Normalised pixels that were NaN or -inf become 0 (the darkest value), +inf 1."""
    return np.nan_to_num(normalised, copy=False, nan=0.0, posinf=1.0, neginf=0.0)


class _Plane:
    """One 2-D plane of an array, sliced lazily (so that a zarr/memmap plane is read only where sampled)."""

    def __init__(self, array, index):
        self.array, self.index = array, index
        self.dtype = array.dtype
        self.shape = tuple(n for n, i in zip(array.shape, index) if isinstance(i, slice))
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        key = iter(key)
        full = tuple(next(key) if isinstance(i, slice) else i for i in self.index)
        return self.array[full]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.array[self.index], dtype=dtype)


def _subsample(image, max_samples: int) -> np.ndarray:
    """All pixels, or a regular grid of at most about ``max_samples``.

    Only the two longest axes are strided (Y and X of an image, never the few
    planes or channels of a stack or colour image, whose ranges differ)."""
    n = int(np.prod(image.shape))
    if n <= max_samples:
        return np.asarray(image).ravel()
    longest = sorted(np.argsort(image.shape, kind="stable")[-2:].tolist())
    stride = int(np.ceil((n / max_samples) ** (1.0 / len(longest))))
    index = tuple(slice(None, None, stride) if a in longest else slice(None) for a in range(image.ndim))
    return np.asarray(image[index]).ravel()

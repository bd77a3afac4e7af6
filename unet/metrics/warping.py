"""ISBI 2012 warping error: topological disagreement counted in pixels.

The warping error of Jain et al. (2010, "Boundary learning by optimization with
topological constraints", CVPR, Sec. 3) warps the ground truth towards the
binarised proposal by flipping *simple* pixels only (flips that change no
topology), then counts the pixels where the two still disagree.  The ISBI 2012
challenge (Arganda-Carreras et al. 2015, Sec. 2.3.3) counts only the remaining
disagreements that are *splits* or *mergers*, minimised over thresholds 0 to
0.9 (see :data:`unet.metrics.isbi.WARPING_THRESHOLDS`):

    warping error = min_th (#split pixels + #merge pixels) / (W * H * slices)

This module reproduces the official implementation (Fiji Trainable_Segmentation
``WarpingError.getMinimumSplitsAndMergersErrorValue(0.0, 0.9, 0.1, false, 20)``)
pixel for pixel:

1. Binarise: ground-truth cell = ``labels > 0``; target cell =
   ``float64(proposal) > th``.  Outside the image counts as membrane.
2. Warp, in passes until a pass flips nothing: list the mismatched pixels in
   x-major order (x outer, y inner), stable-sort them by float32
   ``|P - th|`` descending (most confident first) and flip each in turn if it
   is a simple point of the *current* ground truth for the (4, 8) pair (cells
   4-connected, membrane 8-connected; :mod:`unet.metrics._simple_point`).
3. Classify each remaining mismatch from the 4-connected cell components of
   the warped ground truth among its 8 in-bounds neighbours: only membrane ->
   object addition (membrane pixel) / deletion (cell pixel); one object only ->
   hole deletion / addition; membrane and one object -> hole addition for a
   membrane pixel, while a cell pixel is set to membrane in the 41x41 window
   around it (radius 20; the whole image when the image is smaller) and called
   a split if the window's neighbours then hold more than two ids, else a hole
   deletion; two or more objects -> merge (membrane pixel) or split (cell
   pixel).

The official Java needs about a minute per 512x512 slice; the passes here run in
numba over a 256-entry lookup table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np
from scipy import ndimage

from unet.metrics._official import FOUR_CONNECTED, WARPING_THRESHOLDS, best_min
from unet.metrics._simple_point import NEIGHBOURS, simple_point_lut
from unet.metrics._validation import MetricInputError, as_isbi_pair

#: Radius of the local window for the split / hole-deletion test (official: 20).
DEFAULT_RADIUS = 20

# Mismatch classes, with the flag values of Fiji's WarpingError.
MERGE, SPLIT, HOLE_ADDITION, OBJECT_DELETION, OBJECT_ADDITION, HOLE_DELETION = 1, 2, 4, 8, 16, 32
CLASS_NAMES = {
    MERGE: "merge",
    SPLIT: "split",
    HOLE_ADDITION: "hole_addition",
    OBJECT_DELETION: "object_deletion",
    OBJECT_ADDITION: "object_addition",
    HOLE_DELETION: "hole_deletion",
}
#: Column order of :func:`warping_counts`.
COUNT_NAMES = ("splits", "mergers", "object_additions", "object_deletions", "hole_additions", "hole_deletions")
_COUNT_COLUMN = {SPLIT: 0, MERGE: 1, OBJECT_ADDITION: 2, OBJECT_DELETION: 3, HOLE_ADDITION: 4, HOLE_DELETION: 5}

_LUT = simple_point_lut()
_DY = np.array([d[0] for d in NEIGHBOURS], dtype=np.int64)
_DX = np.array([d[1] for d in NEIGHBOURS], dtype=np.int64)


@numba.njit(cache=True)
def _warp_passes(src, ys, xs, lut, dy, dx):
    """Flip simple mismatches of padded ``src`` in list order, pass after pass.

    ``ys``/``xs`` (padded coordinates) are the mismatches already in the
    official order.  A flipped pixel then matches the target and never
    mismatches again, so each later pass is the earlier list without the
    flipped pixels, in the same order: compacting it in place is the same as
    re-listing and re-sorting as the Java does.  Returns how many remain.
    """
    m = ys.shape[0]
    while m > 0:
        kept = 0
        for i in range(m):
            y = ys[i]
            x = xs[i]
            code = 0
            for k in range(8):
                if src[y + dy[k], x + dx[k]] != 0:
                    code |= 1 << k
            if lut[code]:
                src[y, x] = 1 - src[y, x]
            else:
                ys[kept] = y
                xs[kept] = x
                kept += 1
        if kept == m:
            break
        m = kept
    return m


@numba.njit(cache=True)
def _splits_window(warped, y, x, radius, dy, dx):
    """True if setting cell pixel (y, x) to membrane leaves its cell neighbours
    in two or more 4-connected components within the window of ``radius``
    (whole image when ``radius < 0``); outside the image is membrane."""
    h, w = warped.shape
    if radius < 0:
        y0, y1, x0, x1 = 0, h - 1, 0, w - 1
    else:
        y0, y1 = max(0, y - radius), min(h - 1, y + radius)
        x0, x1 = max(0, x - radius), min(w - 1, x + radius)
    bh, bw = y1 - y0 + 1, x1 - x0 + 1
    seen = np.zeros((bh, bw), dtype=np.uint8)
    seen[y - y0, x - x0] = 1  # the pixel itself is now membrane
    stack = np.empty(bh * bw, dtype=np.int64)
    started = False
    for k in range(8):
        ny, nx = y + dy[k], x + dx[k]
        if ny < y0 or ny > y1 or nx < x0 or nx > x1 or warped[ny, nx] == 0:
            continue
        if seen[ny - y0, nx - x0]:
            continue
        if started:
            return True  # a cell neighbour the first component did not reach
        started = True
        top = 0
        stack[top] = (ny - y0) * bw + (nx - x0)
        seen[ny - y0, nx - x0] = 1
        top += 1
        while top > 0:
            top -= 1
            p = stack[top]
            py, px = p // bw, p % bw
            for q in range(4):
                qy = py + (1 if q == 0 else -1 if q == 1 else 0)
                qx = px + (1 if q == 2 else -1 if q == 3 else 0)
                if qy < 0 or qy >= bh or qx < 0 or qx >= bw:
                    continue
                if seen[qy, qx] or warped[y0 + qy, x0 + qx] == 0:
                    continue
                seen[qy, qx] = 1
                stack[top] = qy * bw + qx
                top += 1
    return False


@numba.njit(cache=True)
def _classify(warped, comp, ys, xs, radius, dy, dx):
    """Official classification of the remaining mismatches (see module doc)."""
    h, w = warped.shape
    n = ys.shape[0]
    out = np.zeros(n, dtype=np.int64)
    ids = np.empty(8, dtype=np.int64)
    for i in range(n):
        y = ys[i]
        x = xs[i]
        n_ids = 0
        for k in range(8):
            ny, nx = y + dy[k], x + dx[k]
            if ny < 0 or ny >= h or nx < 0 or nx >= w:
                continue
            v = comp[ny, nx]
            new = True
            for j in range(n_ids):
                if ids[j] == v:
                    new = False
                    break
            if new:
                ids[n_ids] = v
                n_ids += 1
        centre = comp[y, x]
        if n_ids == 1 and ids[0] == 0:
            out[i] = OBJECT_DELETION if centre != 0 else OBJECT_ADDITION
        elif n_ids == 1:
            out[i] = HOLE_ADDITION if centre != 0 else HOLE_DELETION
        elif n_ids == 2:
            if centre == 0:
                out[i] = HOLE_ADDITION
            elif _splits_window(warped, y, x, radius, dy, dx):
                out[i] = SPLIT
            else:
                out[i] = HOLE_DELETION
        else:
            out[i] = MERGE if centre == 0 else SPLIT
    return out


def _warp_and_classify(cell: np.ndarray, prop32: np.ndarray, th: float, radius: int):
    """One slice at one threshold: (warped ground truth, ys, xs, classes)."""
    h, w = cell.shape
    src = np.zeros((h + 2, w + 2), dtype=np.uint8)
    src[1:-1, 1:-1] = cell
    target = prop32.astype(np.float64) > th
    mismatch = cell != target
    # x-major listing (x outer, y inner), then stable sort by float32 |P - th|
    # descending, exactly as the Java list + Collections.sort.
    xs, ys = np.nonzero(mismatch.T)
    key = np.abs(prop32[ys, xs].astype(np.float64) - th).astype(np.float32)
    order = np.argsort(-key, kind="stable")
    ys = np.ascontiguousarray(ys[order] + 1, dtype=np.int64)
    xs = np.ascontiguousarray(xs[order] + 1, dtype=np.int64)
    m = _warp_passes(src, ys, xs, _LUT, _DY, _DX)
    warped = src[1:-1, 1:-1].copy()
    ys, xs = ys[:m] - 1, xs[:m] - 1
    if warped.all():
        # ImageJ's convertToByte(true) of a constant float image gives all 0,
        # so the official labelling then sees no object at all.
        comp = np.zeros(warped.shape, dtype=np.int64)
    else:
        comp = ndimage.label(warped, structure=FOUR_CONNECTED)[0].astype(np.int64)
    use_radius = radius if 1 <= radius <= min(h, w) else -1
    classes = _classify(warped, comp, ys, xs, use_radius, _DY, _DX)
    return warped.astype(bool), ys, xs, classes


def _check_thresholds(thresholds) -> tuple[float, ...]:
    ths = tuple(float(t) for t in thresholds)
    if not ths or any(not 0.0 <= t <= 1.0 for t in ths):
        raise MetricInputError(f"thresholds must lie in [0, 1], got {thresholds}")
    return ths


def warping_counts(labels, proposal, thresholds=WARPING_THRESHOLDS, *, radius: int = DEFAULT_RADIUS) -> np.ndarray:
    """Remaining mismatches after warping, per class and threshold.

    Returns an int64 array of shape ``(len(thresholds), 6)``, columns as in
    :data:`COUNT_NAMES` (splits, mergers, object additions, object deletions,
    hole additions, hole deletions), summed over slices.
    """
    lab, prop = as_isbi_pair(labels, proposal)
    return _warping_counts(lab, prop, _check_thresholds(thresholds), radius)


def _warping_counts(lab, prop, thresholds, radius) -> np.ndarray:
    cells = lab > 0
    out = np.zeros((len(thresholds), 6), dtype=np.int64)
    for k, th in enumerate(thresholds):
        for s in range(lab.shape[0]):
            _, _, _, classes = _warp_and_classify(cells[s], prop[s], th, radius)
            for flag, col in _COUNT_COLUMN.items():
                out[k, col] += int(np.count_nonzero(classes == flag))
    return out


def warping_error(
    labels, proposal, *, threshold: float | None = None, radius: int = DEFAULT_RADIUS
) -> float:
    """ISBI 2012 warping error: (split + merge pixels) / all pixels, minimised.

    Parameters
    ----------
    labels, proposal
        As in :func:`unet.metrics.pixel_error`.
    threshold : float, optional
        Evaluate at this single threshold instead of the official sweep over
        :data:`~unet.metrics.isbi.WARPING_THRESHOLDS` (0 to 0.9).
    radius : int, optional
        Window radius of the split test (official: 20).  As in the official
        code, a radius below 1 or larger than the image uses the whole image.

    Returns
    -------
    float
        Number of split and merge pixels divided by ``W * H * slices``.
    """
    lab, prop = as_isbi_pair(labels, proposal)
    ths = WARPING_THRESHOLDS if threshold is None else _check_thresholds([threshold])
    counts = _warping_counts(lab, prop, ths, radius)
    errors = (counts[:, 0] + counts[:, 1]) / lab.size
    k, _ = best_min(errors, ths)
    return float(errors[k])


@dataclass
class WarpingResult:
    """Warped ground truth and classified remaining mismatches at one threshold.

    ``mismatches`` holds ``(slice, y, x, class_name)`` tuples.
    """

    threshold: float
    warped: np.ndarray
    mismatches: list = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        names = [m[3] for m in self.mismatches]
        return {name: names.count(CLASS_NAMES[flag]) for flag, name in
                zip((SPLIT, MERGE, OBJECT_ADDITION, OBJECT_DELETION, HOLE_ADDITION, HOLE_DELETION), COUNT_NAMES)}


def warp_labels(labels, proposal, *, threshold: float = 0.5, radius: int = DEFAULT_RADIUS) -> WarpingResult:
    """Warp the ground truth towards the proposal at one threshold (for inspection).

    Returns the warped ground truth (bool, ``True`` = cell, same shape as
    ``labels``) and every remaining mismatch with its topological class.
    """
    lab, prop = as_isbi_pair(labels, proposal)
    (th,) = _check_thresholds([threshold])
    cells = lab > 0
    warped = np.zeros(cells.shape, dtype=bool)
    mismatches = []
    for s in range(lab.shape[0]):
        warped[s], ys, xs, classes = _warp_and_classify(cells[s], prop[s], th, radius)
        mismatches.extend(
            (s, int(y), int(x), CLASS_NAMES[int(c)]) for y, x, c in zip(ys, xs, classes)
        )
    mismatches.sort()
    shape = np.shape(labels)
    return WarpingResult(th, warped.reshape(shape), mismatches)

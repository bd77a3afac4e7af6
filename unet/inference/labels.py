"""Instance labels (connected components) computed strip by strip, consistent across strip borders.

A whole-slide mask does not fit in memory, so components are labelled in each
strip of rows, the labels of touching pixels on the two sides of each strip
border are recorded as equivalences, and a second pass maps every provisional
label to its component.  Components are numbered in raster order of their
first pixel and small ones removed, exactly as
``scipy.ndimage.label`` on the whole mask followed by removing components
smaller than ``min_size`` and renumbering would do (4-connectivity, the
default of ``scipy.ndimage.label``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage.segmentation import watershed

#: 4-connectivity (pixels sharing an edge), as ``scipy.ndimage.label`` by default
FOUR_CONNECTED = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


def label_instances(mask: np.ndarray, *, min_size: int = 0) -> np.ndarray:
    """In-memory reference: 4-connected components of ``mask`` (2-D), smaller than ``min_size`` removed.

    Labels are uint32, 1..n in raster order of each component's first pixel.
    """
    lab, n = ndimage.label(np.asarray(mask, bool), structure=FOUR_CONNECTED)
    if min_size > 1 and n:
        sizes = np.bincount(lab.ravel())
        keep = sizes >= min_size
        keep[0] = False
        lut = np.zeros(n + 1, np.uint32)
        lut[keep] = np.arange(1, keep.sum() + 1, dtype=np.uint32)
        lab = lut[lab]
    return lab.astype(np.uint32, copy=False)


#: seed threshold of :func:`cell_instances` when none is chosen on training images
SEED_THRESHOLD = 0.9


def cell_instances(prob: np.ndarray, *, threshold: float = 0.5, min_size: int = 0,
                   seed_threshold: float | None = None) -> np.ndarray:
    """Cell instances (int32 labels, 0 = background) of a 2-D cell-probability map.

    Parameters
    ----------
    prob : ndarray (H, W)
        Cell probability.
    threshold : float
        Cells are ``prob > threshold``.
    min_size : int
        Cells smaller than this many pixels are dropped.
    seed_threshold : float, optional
        None: the cells are the 4-connected components of the mask. The paper's
        loss puts background between touching cells (Sec. 3, Fig. 3), which is
        what makes components cells; where the network leaves a gap in that
        border, two cells merge.
        A value: seeded watershed. Seeds are the components of ``prob >
        seed_threshold`` (the confident cell cores); they are flooded over
        ``-prob`` within the mask, so a weak border (a valley of the
        probability) still divides two cores. Components of the mask that hold
        no seed stay cells of their own.
    """
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"prob must be 2-D, got shape {prob.shape}")
    fg = prob > threshold
    if seed_threshold is None:
        return label_instances(fg, min_size=min_size).astype(np.int32)
    if not threshold <= seed_threshold < 1:
        raise ValueError(f"seed_threshold must lie in [threshold, 1), got {seed_threshold}")
    seeds, n = ndimage.label(prob > seed_threshold, structure=FOUR_CONNECTED)
    comps, _ = ndimage.label(fg, structure=FOUR_CONNECTED)
    unseeded = np.setdiff1d(np.unique(comps[fg]), np.unique(comps[seeds > 0]))
    extra = np.isin(comps, unseeded)
    seeds[extra] = n + comps[extra]  # each seedless component seeds itself
    lab = watershed(-prob, seeds, mask=fg, connectivity=1)
    if min_size > 1:
        sizes = np.bincount(lab.ravel())
        lab[sizes[lab] < min_size] = 0
    # 1..n, in raster order of each cell's first pixel, like the components
    ids, first = np.unique(lab.ravel(), return_index=True)
    order = ids[1:][np.argsort(first[1:])] if ids[0] == 0 else ids[np.argsort(first)]
    lut = np.zeros(int(lab.max()) + 1, np.int32)
    lut[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return lut[lab]


#: seed thresholds and minimum seed sizes tried on training images by
#: :func:`unet.reproduce.evaluate.choose_membrane_watershed`
#: (0.6 and 0.65 added in session 11: 0.7, then the lowest, won on the validation slices of two of the
#: three ISBI folds, so the grid went past its edge; 0.5 and 0.55 in session 17, when 0.6, the lowest, had
#: been chosen in 6 of the 18 choices of the isbi2012 report: 3 runs x 3 folds x plain / TTA maps)
MEMBRANE_SEED_GRID = (0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9, 0.95, 0.98)
MEMBRANE_MIN_SEED_GRID = (0, 25, 100)
#: smallest cell regions kept, tried after the seeds (by Rand error x warping error); 0 first: ties keep every region
#: (400 and 800 added in session 17: 200, the largest, had been chosen in 17 of those 18)
MEMBRANE_MIN_CELL_GRID = (0, 25, 50, 100, 200, 400, 800)


def membrane_watershed(prob: np.ndarray, *, seed_threshold: float = SEED_THRESHOLD,
                       min_seed_size: int = 0, min_cell_size: int = 0) -> np.ndarray:
    """Close the gaps of a membrane map: the cell probability with one-pixel watershed boundaries drawn in.

    A merge in the ISBI 2012 measures (Rand, warping) needs only one pixel of
    cell probability across a membrane.  Here every confident cell core
    (a 4-connected component of ``prob > seed_threshold`` with at least
    ``min_seed_size`` pixels) seeds a watershed of ``-prob`` over the whole
    image (not only the cell mask, as :func:`cell_instances` floods), so the
    basins of two cores meet along the valley of the probability between them
    even where that valley never falls below 0.5.  The meeting lines, one pixel
    wide and 4-connected-tight (``skimage.segmentation.watershed`` with
    ``watershed_line=True``), are set to probability 0; every other pixel keeps
    the network's probability, so thick membranes stay as predicted.

    With ``min_cell_size``, small cell regions first become membrane:
    4-connected regions of ``prob > 0.5`` smaller than that.  A fragment that a
    spurious membrane line cuts off a cell splits that cell, a topological error
    that the warping error counts, while as membrane it is only a deformed
    boundary.  (Filling small membrane holes in cells did not help on ISBI
    validation slices, so holes are left alone.)

    Parameters
    ----------
    prob : ndarray (H, W)
        Cell probability (1 = cell, 0 = membrane).
    seed_threshold : float
        Cores are ``prob > seed_threshold``.  Choose it on training images
        (:func:`unet.reproduce.evaluate.choose_membrane_watershed`).
    min_seed_size : int
        Smaller cores are not seeds (noise inside a cell would split it).
    min_cell_size : int
        Cell regions (``prob > 0.5``) with fewer pixels are set to 0 first
        (default 0: none).

    Returns
    -------
    ndarray float32 (H, W)
        ``prob`` with the boundaries between seeded regions at 0.  Without a
        seed, ``prob`` unchanged.
    """
    prob = np.asarray(prob, np.float32)
    if prob.ndim != 2:
        raise ValueError(f"prob must be 2-D, got shape {prob.shape}")
    if not 0 <= seed_threshold < 1:
        raise ValueError(f"seed_threshold must lie in [0, 1), got {seed_threshold}")
    if min_cell_size > 1:
        cells, n = ndimage.label(prob > 0.5, structure=FOUR_CONNECTED)
        specks = np.bincount(cells.ravel(), minlength=n + 1) < min_cell_size
        specks[0] = False
        prob = np.where(specks[cells], np.float32(0), prob)
    seeds, n = ndimage.label(prob > seed_threshold, structure=FOUR_CONNECTED)
    if n and min_seed_size > 1:
        small = np.bincount(seeds.ravel()) < min_seed_size
        small[0] = False
        seeds[small[seeds]] = 0
    if not seeds.any():
        return prob.copy()
    regions = watershed(-prob, seeds, connectivity=1, watershed_line=True)
    return np.where(regions > 0, prob, np.float32(0))


class StripLabeller:
    """Label the strips of one plane as they arrive; then map them consistently (:meth:`lookup`).

    Provisional labels of each strip are kept by a ``store`` callable (for
    example written to a temporary file) and read back in order, so memory
    holds one strip and one entry per provisional label.
    """

    def __init__(self):
        self.count = 0
        self.sizes = [np.zeros(1, np.int64)]
        self.edges: list[np.ndarray] = []
        self._last_row: np.ndarray | None = None

    def add(self, mask_strip: np.ndarray) -> np.ndarray:
        """Provisional labels (uint64) of the next strip of rows of the plane."""
        lab, n = ndimage.label(np.asarray(mask_strip, bool), structure=FOUR_CONNECTED)
        lab = lab.astype(np.uint64)
        if n:
            lab[lab > 0] += self.count
            self.sizes.append(np.bincount(lab.ravel(), minlength=self.count + n + 1)[self.count + 1 :].astype(np.int64))
        if self._last_row is not None and lab.shape[0]:
            a, b = self._last_row, lab[0]
            touch = (a > 0) & (b > 0)  # 4-connectivity across the border: same column
            if touch.any():
                self.edges.append(np.unique(np.stack([a[touch], b[touch]], 1), axis=0))
        if lab.shape[0]:
            self._last_row = lab[-1].copy()
        self.count += n
        return lab

    def lookup(self, *, min_size: int = 0) -> np.ndarray:
        """Table mapping each provisional label to its final label (0: background or too small)."""
        n = self.count + 1
        sizes = np.concatenate(self.sizes)
        edges = np.concatenate(self.edges) if self.edges else np.zeros((0, 2), np.uint64)
        graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0].astype(np.int64), edges[:, 1].astype(np.int64))),
                           shape=(n, n))
        ncomp, comp = connected_components(graph, directed=False)
        first = np.full(ncomp, np.iinfo(np.int64).max)
        np.minimum.at(first, comp[1:], np.arange(1, n))  # smallest provisional label = first pixel in raster order
        comp_size = np.bincount(comp[1:], weights=sizes[1:], minlength=ncomp)
        keep = (comp_size >= max(min_size, 1)) & (first < np.iinfo(np.int64).max)
        keep[comp[0]] = False
        order = np.argsort(np.where(keep, first, np.iinfo(np.int64).max), kind="stable")
        final = np.zeros(ncomp, np.uint32)
        final[order[: keep.sum()]] = np.arange(1, keep.sum() + 1, dtype=np.uint32)
        lut = final[comp]
        lut[0] = 0
        return lut

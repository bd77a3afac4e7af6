"""Training targets from instance masks (paper Sec. 3, Fig. 3c).

The network predicts two classes, background (0) and cell (1).  Touching cells
would merge into one connected component, so, as in the paper, "the separation
background labels between touching cells" are computed with morphological
operations: every cell pixel with a pixel of a *different* cell in its 3x3
neighbourhood becomes background.  Both sides of a contact are removed (the
result does not depend on how cells are numbered), so a gap of about 2 px
opens and no remaining pixel of one cell touches another cell even
diagonally: connected components of a perfect prediction give the instances.

Partial annotation
------------------
Some gold-truth frames annotate only some of the cells (DIC-HeLa 01/man_seg067:
3 of about 18).  Their unlabelled pixels are not reliable background.  Policy:
in a frame marked ``partial``, background pixels farther than
``partial_margin`` px (default 8, a few membrane widths) from every annotated
cell get :data:`IGNORE_INDEX` (no loss, weight 0); cells, their separation
borders and the thin ring of background around them stay labelled.  The ring
teaches the cell outline; beyond it unlabelled cells may lie.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

#: target value of pixels that carry no label (excluded from the loss)
IGNORE_INDEX = 255
BACKGROUND, CELL = 0, 1
#: background kept around annotated cells in partially annotated frames (px)
PARTIAL_MARGIN = 8


def separation_borders(labels: np.ndarray) -> np.ndarray:
    """Boolean map of cell pixels that touch (8-neighbourhood) a different cell.

    Computed with a grey-value dilation and erosion of the label image (paper
    Sec. 3: "separation border is computed using morphological operations").
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    fg = labels > 0
    if not fg.any():
        return np.zeros(labels.shape, bool)
    big = int(labels.max()) + 1
    # the smallest integer type that holds every id and `big` (the filters run faster on it)
    dtype = next(t for t in (np.uint8, np.uint16, np.int32, np.int64) if big <= np.iinfo(t).max)
    lab = labels.astype(dtype, copy=False)
    # the largest neighbour label (3x3 dilation); background (0) never exceeds a cell id
    hi = ndi.maximum_filter(lab, size=3, mode="nearest")
    # the smallest neighbouring *cell* label (3x3 erosion with background as +infinity)
    lo = ndi.minimum_filter(np.where(fg, lab, dtype(big)), size=3, mode="nearest")
    return fg & ((hi != lab) | (lo != lab))


def training_target(labels: np.ndarray, *, partial: bool = False, border: bool = True,
                    partial_margin: int = PARTIAL_MARGIN) -> np.ndarray:
    """Two-class target (uint8): 0 background, 1 cell, :data:`IGNORE_INDEX` unlabelled.

    Parameters
    ----------
    labels : ndarray (H, W)
        Instance labels, 0 = background, 1..N = cells.
    partial : bool
        The frame annotates only some cells: background farther than
        ``partial_margin`` px from every cell is ignored (see module docstring).
    border : bool
        Set the separation borders between touching cells to background
        (paper Sec. 3, Fig. 3c).
    """
    labels = np.asarray(labels)
    target = (labels > 0).astype(np.uint8)
    if border:
        target[separation_borders(labels)] = BACKGROUND
    if partial:
        fg = labels > 0
        if fg.any():
            far = ndi.distance_transform_edt(~fg) > partial_margin
        else:
            far = np.ones(labels.shape, bool)
        target[far & ~fg] = IGNORE_INDEX
    return target

"""Cell Tracking Challenge SEG measure (the "IoU" of U-Net Table 2).

The U-Net paper (Ronneberger et al. 2015, Sec. 4, Table 2) reports the ISBI
cell tracking challenge segmentation score, the SEG measure of the Cell
Tracking Challenge (Maška et al. 2014, Bioinformatics 30(11):1609, Sec. 2.3;
Ulman et al. 2017, Nat. Methods 14:1141, Online Methods "SEG"): for every
ground-truth object R, the result object S covering more than half of R
(``|R ∩ S| > 0.5 |R|``, strictly, so at most one S qualifies) gives the Jaccard
index ``J = |R ∩ S| / |R ∪ S|``; ``J = 0`` when no S qualifies.  SEG is the
mean of J over all ground-truth objects of all annotated frames, pooled (not a
mean of per-frame means).  Unmatched result objects (false positives) are not
penalised.
"""

from __future__ import annotations

import numpy as np

from unet.metrics._validation import MetricInputError, as_label_pair


def seg_jaccards(gt, res, *, volumetric: bool = False) -> list[tuple[int, int, float]]:
    """Per ground-truth object Jaccard index of the SEG measure.

    Parameters
    ----------
    gt, res : array_like of int
        Instance labels (0 = background) of the same shape: ``(H, W)`` for one
        frame, ``(T, H, W)`` for T annotated frames, ``(T, Z, H, W)`` for 3-D
        frames.  With ``volumetric=True`` a 3-D array is one ``(Z, H, W)``
        frame.

    Returns
    -------
    list of (frame, label, J)
        One entry per ground-truth object, sorted by frame then label.
    """
    gt, res = as_label_pair(gt, res)
    if gt.ndim < 2 or gt.ndim > 4:
        raise MetricInputError(f"gt: expected 2-D, 3-D or 4-D label arrays, got shape {gt.shape}")
    if gt.ndim == 2 or (volumetric and gt.ndim == 3):
        gt, res = gt[None], res[None]
    out = []
    for t in range(gt.shape[0]):
        g = gt[t].ravel()
        r = res[t].ravel()
        labels, sizes_r = np.unique(g[g > 0], return_counts=True)
        if labels.size == 0:
            continue
        res_ids, res_sizes = np.unique(r[r > 0], return_counts=True)
        both = (g > 0) & (r > 0)
        base = int(r.max()) + 1
        pairs, inter = np.unique(g[both] * base + r[both], return_counts=True)
        pair_g, pair_r = pairs // base, pairs % base
        # |R ∩ S| > 0.5 |R|, in integers: 2 |R ∩ S| > |R|.
        size_of_g = dict(zip(labels.tolist(), sizes_r.tolist()))
        size_of_r = dict(zip(res_ids.tolist(), res_sizes.tolist()))
        jacc = dict.fromkeys(labels.tolist(), 0.0)
        for gi, ri, n in zip(pair_g.tolist(), pair_r.tolist(), inter.tolist()):
            if 2 * n > size_of_g[gi]:
                jacc[gi] = n / (size_of_g[gi] + size_of_r[ri] - n)
        out.extend((t, lab, jacc[lab]) for lab in labels.tolist())
    return out


def seg_score(gt, res, *, volumetric: bool = False) -> float:
    """SEG measure of the Cell Tracking Challenge (pooled mean Jaccard index).

    Parameters
    ----------
    gt, res : array_like of int
        Ground-truth and result instance labels, 0 = background, same shape:
        ``(H, W)``, ``(T, H, W)`` (axis 0 = annotated frame) or
        ``(T, Z, H, W)``; see :func:`seg_jaccards`.  Label values need not
        correspond between ``gt`` and ``res``.
    volumetric : bool, optional
        Treat a 3-D array as one ``(Z, H, W)`` frame instead of T 2-D frames.

    Returns
    -------
    float
        SEG in [0, 1] (1 = every object matched exactly).

    Raises
    ------
    MetricInputError
        Different shapes, non-integer or negative labels, or no ground-truth
        object at all (SEG is then undefined).

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.zeros((8, 8), int); gt[2:6, 2:6] = 1
    >>> seg_score(gt, gt * 7)
    1.0
    """
    jaccards = seg_jaccards(gt, res, volumetric=volumetric)
    if not jaccards:
        raise MetricInputError("gt: no ground-truth object (all zeros), SEG is undefined")
    return float(sum(j for _, _, j in jaccards) / len(jaccards))

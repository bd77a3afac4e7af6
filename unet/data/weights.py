"""Pixel-wise loss weights (paper Sec. 3, eq. 2, Fig. 3d).

.. math::

    w(x) = w_c(x) + w_0 \\exp\\left(-\\frac{(d_1(x) + d_2(x))^2}{2\\sigma^2}\\right)

``w_c`` balances the class frequencies, ``d1``/``d2`` are the distances to the
nearest and second-nearest cell; the paper sets ``w0 = 10`` and
``sigma ~ 5`` px.  Conventions used here (the paper leaves them open):

* ``d_k(x)`` is the Euclidean distance from pixel ``x`` to the nearest pixel of
  cell ``k`` (0 inside the cell), computed on the *instance* labels, so
  separation-border pixels (cell pixels touching another cell, set to
  background in the target) get ``d1 = 0``, ``d2 ~ 1`` and the largest weights.
* The border term is added on pixels whose target is background (the gaps
  between cells and the separation borders), as in Fig. 3d; cell interiors
  get ``w_c`` only.
* ``w_c(class) = n / (K * n_class)`` ("balanced": every class contributes the
  same total weight, the mean of ``w_c`` is 1).  Pixels with the ignore target
  get weight 0.

Speed: the border term is below ``tol = 1e-4`` once ``d1 + d2`` exceeds
``sigma * sqrt(2 ln(w0 / tol))`` (24 px for the defaults), so each cell's
distance transform is computed only in its bounding box grown by that cutoff
and the term is set to 0 beyond it (absolute error < ``tol``).  The distance
transform is an exact compiled one (:mod:`unet.data._edt`, checked against scipy).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.ndimage as ndi
import skimage.measure
from skimage.morphology import skeletonize

from unet.data._edt import distance_to_label
from unet.data.targets import IGNORE_INDEX, training_target

#: paper Sec. 3: "we set w0 = 10 and sigma ~ 5 pixels"
W0 = 10.0
SIGMA = 5.0
#: border-term values below this are dropped (see module docstring)
TOLERANCE = 1e-4
#: thin-membrane term (beyond the paper, off by default): membranes about this thick (px) get most of it
GAP_WIDTH = 3.0


def as_instances(labels: np.ndarray) -> np.ndarray:
    """Instance labels; a boolean mask becomes its 4-connected components."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return skimage.measure.label(labels, connectivity=1).astype(np.int32)
    return labels


def class_weights_from(targets, *, n_classes: int = 2) -> np.ndarray:
    """Balanced class weights ``n / (K * n_c)`` over a training set.

    Parameters
    ----------
    targets : array or iterable of arrays
        Training targets (:func:`unet.data.targets.training_target`); pixels
        equal to :data:`IGNORE_INDEX` are not counted.

    Returns
    -------
    ndarray float64 (n_classes,)
        A class absent from every target gets weight 0 (it has no pixels to weigh).
    """
    if isinstance(targets, np.ndarray):
        targets = [targets]
    counts = np.zeros(n_classes, np.int64)
    for t in targets:
        t = np.asarray(t)
        counts += np.bincount(t[t != IGNORE_INDEX].ravel(), minlength=n_classes)[:n_classes]
    n = counts.sum()
    weights = np.zeros(n_classes)
    present = counts > 0
    weights[present] = n / (present.sum() * counts[present])
    return weights


def border_distances(labels: np.ndarray, *, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Distances ``d1``, ``d2`` (float32) to the nearest and second-nearest cell.

    Exact where ``d2 <= cutoff``; elsewhere ``d2`` (and ``d1`` if it also
    exceeds ``cutoff``) may be ``inf``.
    """
    labels = np.asarray(labels)
    d1 = np.full(labels.shape, np.inf, np.float32)
    d2 = np.full(labels.shape, np.inf, np.float32)
    pad = int(math.ceil(cutoff)) + 1
    h, w = labels.shape
    for k, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        grown = (slice(max(sl[0].start - pad, 0), min(sl[0].stop + pad, h)),
                 slice(max(sl[1].start - pad, 0), min(sl[1].stop + pad, w)))
        # the whole cell lies inside `grown`, so distances there are exact
        crop = np.ascontiguousarray(labels[grown])
        dist = np.empty(crop.shape, np.float32)
        distance_to_label(crop, k, dist)
        a, b = d1[grown], d2[grown]
        np.minimum(b, np.maximum(a, dist), out=b)
        np.minimum(a, dist, out=a)
    return d1, d2


def thin_membrane_weight(target: np.ndarray, *, width: float = GAP_WIDTH) -> np.ndarray:
    """Per-pixel emphasis of thin membranes (beyond the paper; float32 in [0, 1], 0 off the membrane).

    The topology errors of a membrane map (Rand and warping errors of ISBI
    2012) come from gaps, and gaps open where the membrane is thin.  For each
    background pixel (target 0) the local membrane thickness is read at the
    nearest pixel of the membrane's skeleton (twice its distance to the
    nearest cell pixel, :func:`skimage.morphology.skeletonize` and
    ``scipy.ndimage.distance_transform_edt``); the weight is
    ``exp(-thickness^2 / (2 width^2))``: close to 1 across membranes a few
    pixels thick, vanishing across wide background.  Multiplied by
    ``loss.gap_weight`` and added to the weight map (:func:`weight_map`).

    Parameters
    ----------
    target : ndarray (H, W)
        Training target (0 = background / membrane, 1 = cell, IGNORE_INDEX
        ignored: weight 0 there).
    width : float
        Membrane thickness (px) at which the weight has fallen to exp(-1/2).
    """
    target = np.asarray(target)
    membrane = target == 0
    out = np.zeros(target.shape, np.float32)
    if not membrane.any() or membrane.all():
        return out
    # distance to the nearest non-membrane pixel (cells; ignored pixels count as not membrane)
    dist = ndi.distance_transform_edt(membrane)
    skel = skeletonize(membrane)
    if not skel.any():
        return out
    # each membrane pixel takes the thickness at its nearest skeleton pixel
    _, (iy, ix) = ndi.distance_transform_edt(~skel, return_indices=True)
    thickness = 2.0 * dist[iy, ix]
    out[membrane] = np.exp(-(thickness[membrane] ** 2) / (2.0 * width * width))
    return out


def membrane_skeleton(target: np.ndarray, *, tube: int = 1) -> np.ndarray:
    """Tubed skeleton of the background class (membranes; borders between touching cells), bool (H, W).

    The target of the skeleton recall loss (beyond the paper; Kirchhoff et
    al. 2024, "Skeleton Recall Loss for Connectivity Conserving and Resource
    Efficient Segmentation of Thin Tubular Structures", ECCV): the
    :func:`skimage.morphology.skeletonize` centre line of every background
    region (target 0), dilated by ``tube`` px (4-connected steps) so that a
    prediction one pixel off the exact centre still counts.  A membrane a
    single pixel thick weighs as much here as a thick one, so a gap anywhere
    along it costs recall, which the pixel-wise loss, dominated by thick
    membranes and cell interiors, barely notices.

    Parameters
    ----------
    target : ndarray (H, W)
        Training target (0 = background / membrane, 1 = cell, IGNORE_INDEX
        unannotated: never part of the skeleton).
    tube : int
        Dilation of the centre line, px (paper: the skeleton dilated to a tube
        of a few pixels; 0 keeps the bare centre line).
    """
    target = np.asarray(target)
    if target.ndim != 2:
        raise ValueError(f"target must be 2-D, got shape {target.shape}")
    membrane = target == 0
    if not membrane.any():
        return membrane
    skel = skeletonize(membrane)
    if tube > 0:
        skel = ndi.binary_dilation(skel, iterations=int(tube))  # 4-connected structuring element
    return skel & membrane


def weight_map(labels: np.ndarray, *, w0: float = W0, sigma: float = SIGMA, class_weights=None,
               target: np.ndarray | None = None, tol: float = TOLERANCE, gap_weight: float = 0.0,
               gap_width: float = GAP_WIDTH) -> np.ndarray:
    """Weight map of paper eq. 2 for one image (float32, same shape as ``labels``).

    Parameters
    ----------
    labels : ndarray (H, W)
        Instance labels (0 = background, 1..N = cells); a boolean mask is split
        into its 4-connected components first (ISBI 2012: cells separated by membrane).
    w0, sigma : float
        Paper Sec. 3: ``w0 = 10``, ``sigma ~ 5`` px.
    class_weights : sequence of 2 floats, optional
        ``w_c`` for background and cell.  Default: balanced over this image
        (:func:`class_weights_from`); pass the training-set values for training.
    target : ndarray, optional
        The training target if already computed (e.g. with ``partial=True``);
        default :func:`unet.data.targets.training_target` of ``labels``.
        Pixels with :data:`IGNORE_INDEX` get weight 0.
    gap_weight, gap_width : float
        Beyond the paper (default 0: off): ``gap_weight`` times
        :func:`thin_membrane_weight` (membranes about ``gap_width`` px thick)
        is added on background pixels, so that gaps in thin membranes, which
        merge cells, cost more.

    Examples
    --------
    >>> import numpy as np, unet
    >>> lab = np.zeros((64, 64), np.int32); lab[10:30, 10:30] = 1; lab[10:30, 36:56] = 2
    >>> w = unet.weight_map(lab)
    >>> w.dtype, w.shape
    (dtype('float32'), (64, 64))
    """
    labels = as_instances(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    if target is None:
        target = training_target(labels)
    cw = class_weights_from(target) if class_weights is None else np.asarray(class_weights, np.float64)
    if cw.shape != (2,):
        raise ValueError(f"class_weights must hold 2 values (background, cell), got {cw.tolist()}")
    lut = np.zeros(256, np.float32)
    lut[0], lut[1] = cw
    weight = lut[target]
    if w0 and labels.max() > 1:
        cutoff = sigma * math.sqrt(2.0 * math.log(max(w0 / tol, 1.0 + 1e-12)))
        d1, d2 = border_distances(labels, cutoff=cutoff)
        near = (target == 0) & (d2 <= cutoff)
        s = d1[near] + d2[near]
        weight[near] += np.float32(w0) * np.exp(-(s * s) / np.float32(2.0 * sigma * sigma))
    if gap_weight:
        weight += np.float32(gap_weight) * thin_membrane_weight(target, width=gap_width)
    return weight

"""Elastic deformation (paper Sec. 3.1) and the one-pass tile warp used for training.

Paper Sec. 3.1: "We generate smooth deformations using random displacement
vectors on a coarse 3 by 3 grid.  The displacements are sampled from a
Gaussian distribution with 10 pixels standard deviation.  Per-pixel
displacements are then computed using bicubic interpolation."

The reference implementation is :func:`elasticdeform.deform_grid`.  Its
dense field is the cubic B-spline interpolant of the grid (control points at
the first and last pixel, ``mirror`` spline boundary) and the output is
``out(p) = in(p + d(p))``.  :func:`dense_displacement` computes the same
field as two small matrix products, and :func:`warp` samples the image (cubic
B-spline), the labels (nearest) and the weight map (linear) with one compiled
loop that also applies rotation, flips and shifts.  Beyond the image border the
data are mirrored with :data:`unet.mirror.MIRROR_MODE` (``"symmetric"``:
the border pixel is repeated, as in paper Fig. 2; ``scipy``/elasticdeform call
this ``"reflect"``).

Agreement with elasticdeform (tests/data/test_data_elastic.py): on the same
displacement grid, images agree to 1e-4 (for unit-range data) at least
20 px from the border, where elasticdeform's spline prefilter (always
``mirror``) does not differ from ours (``reflect``, matching the mirroring);
nearest-neighbour labels agree on >= 99.9 % of the pixels (ties in rounding
differ).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.ndimage as ndi

#: paper Sec. 3.1
GRID = 3
SIGMA = 10.0


def random_displacement(rng: np.random.Generator, *, grid: int = GRID, sigma: float = SIGMA) -> np.ndarray:
    """Displacements (2, grid, grid) on the coarse grid, N(0, sigma^2) px (paper Sec. 3.1)."""
    return rng.normal(0.0, sigma, size=(2, grid, grid))


@functools.lru_cache(maxsize=64)
def spline_matrix(n_out: int, n_grid: int) -> np.ndarray:
    """(n_out, n_grid) matrix interpolating ``n_grid`` control values to ``n_out`` pixels.

    Cubic B-spline with control points at pixels 0 and ``n_out - 1`` and the
    ``mirror`` boundary: the same interpolant as elasticdeform.
    """
    if n_grid == 1:
        return np.ones((n_out, 1))
    pos = np.arange(n_out) * ((n_grid - 1) / max(n_out - 1, 1))
    eye = np.eye(n_grid)
    m = np.stack([ndi.map_coordinates(eye[k], [pos], order=3, mode="mirror") for k in range(n_grid)], axis=1)
    m.setflags(write=False)
    return m


def dense_displacement(displacement: np.ndarray, shape) -> np.ndarray:
    """Per-pixel displacement (2, H, W) from a coarse grid (2, gy, gx), bicubic (paper Sec. 3.1)."""
    displacement = np.asarray(displacement, np.float64)
    my = spline_matrix(int(shape[0]), displacement.shape[1])
    mx = spline_matrix(int(shape[1]), displacement.shape[2])
    return np.stack([my @ displacement[d] @ mx.T for d in range(2)]).astype(np.float32)


def spline_coefficients(image: np.ndarray) -> np.ndarray:
    """Cubic B-spline coefficients (C, H, W) float32 of ``image`` (C, H, W), mirrored boundary.

    Computed once per training image; :func:`warp` then interpolates with 16 taps per pixel.
    """
    image = np.asarray(image, np.float32)
    return np.stack([ndi.spline_filter(c, order=3, mode="reflect", output=np.float32) for c in image])


def affine_matrix(*, angle: float = 0.0, flip_y: bool = False, flip_x: bool = False, rot90: int = 0,
                  scale: float = 1.0) -> np.ndarray:
    """2x2 matrix mapping tile offsets (from the tile centre) to image offsets."""
    a = math.radians(angle) + rot90 * math.pi / 2
    c, s = math.cos(a), math.sin(a)
    if rot90 % 1 == 0 and angle == 0:  # exact zeros for the lossless rotations
        c, s = round(c), round(s)
    m = np.array([[c, -s], [s, c]]) / scale
    return m @ np.diag([-1.0 if flip_y else 1.0, -1.0 if flip_x else 1.0])


def warp(coef: np.ndarray, *, origin, size, displacement=None, matrix=None, target=None, weight=None,
         out_size=None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Sample a deformed tile: image (cubic), target (nearest), weight (linear).

    Tile pixel ``p`` (0 <= p < size) is taken from image position
    ``origin + c + matrix @ (p - c) + d(p)``, ``c`` the tile centre and ``d``
    the dense field of the coarse ``displacement`` grid over the tile.
    Positions outside the image are mirrored (``numpy.pad(mode="symmetric")``).

    Parameters
    ----------
    coef : ndarray (C, H, W)
        :func:`spline_coefficients` of the image.
    origin : (float, float)
        Image position of the tile's top-left pixel (before deformation).
    size : int or (int, int)
        Input tile size.
    displacement : ndarray (2, g, g), optional
        Coarse grid (pixels); default none.
    matrix : ndarray (2, 2), optional
        :func:`affine_matrix`; default identity.
    target, weight : ndarray (H, W), optional
        uint8 target and float32 weight map, sampled only in the centred
        ``out_size`` crop (what a valid network predicts).

    Returns
    -------
    image (C, th, tw) float32, target (oh, ow) uint8 or None, weight (oh, ow) float32 or None
    """
    # imported here, not at the top: numba's import (0.3 s) is paid only by callers that warp; the training
    # config imports this module for the augmentation defaults (`unet reproduce --list`, config checks)
    from unet.data._warp import warp_kernel

    th, tw = (size, size) if np.isscalar(size) else (int(size[0]), int(size[1]))
    oh, ow = (th, tw) if out_size is None else ((out_size, out_size) if np.isscalar(out_size) else tuple(out_size))
    if (th - oh) % 2 or (tw - ow) % 2 or oh > th or ow > tw:
        raise ValueError(f"output {oh}x{ow} must be centred in the input tile {th}x{tw}")
    disp = np.zeros((2, 1, 1)) if displacement is None else np.asarray(displacement, np.float64)
    my = spline_matrix(th, disp.shape[1])
    mx = np.ascontiguousarray(spline_matrix(tw, disp.shape[2]))
    ty = np.ascontiguousarray(np.stack([my @ disp[0], my @ disp[1]]))
    a = np.eye(2) if matrix is None else np.asarray(matrix, np.float64)
    c = coef.shape[0]
    out_img = np.empty((c, th, tw), np.float32)
    have_t, have_w = target is not None, weight is not None
    out_t = np.empty((oh, ow) if have_t else (0, 0), np.uint8)
    out_w = np.empty((oh, ow) if have_w else (0, 0), np.float32)
    dummy_t = np.zeros((1, 1), np.uint8)
    dummy_w = np.zeros((1, 1), np.float32)
    warp_kernel(np.ascontiguousarray(coef, dtype=np.float32),
                np.ascontiguousarray(target, dtype=np.uint8) if have_t else dummy_t,
                np.ascontiguousarray(weight, dtype=np.float32) if have_w else dummy_w,
                ty, mx, float(origin[0]), float(origin[1]), np.ascontiguousarray(a),
                (th - oh) // 2, (tw - ow) // 2, have_t, have_w, out_img, out_t, out_w)
    return out_img, (out_t if have_t else None), (out_w if have_w else None)


def elastic_deform(image: np.ndarray, displacement: np.ndarray, *, labels=None, weight=None):
    """Deform a whole 2-D image (and labels, weight map) with one coarse displacement grid.

    The fast equivalent of ``elasticdeform.deform_grid([image, labels, weight],
    displacement, order=[3, 0, 1], mode="reflect")``: same field, cubic image,
    nearest labels, linear weights, mirrored boundary.  ``labels`` may be any
    integer image with values < 256 (e.g. a training target).
    """
    img = np.asarray(image, np.float32)
    chw = img[None] if img.ndim == 2 else img
    out_img, out_t, out_w = warp(spline_coefficients(chw), origin=(0, 0), size=chw.shape[1:],
                                 displacement=displacement, target=labels, weight=weight)
    return (out_img[0] if img.ndim == 2 else out_img), out_t, out_w

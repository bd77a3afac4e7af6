"""Compiled inner loop of :func:`unet.data.elastic.warp` (numba; cached on disk)."""

from __future__ import annotations

import math

import numba
import numpy as np

from unet.mirror import mirror_index

_mirror_index = numba.njit(cache=True, nogil=True, inline="always")(mirror_index)


@numba.njit(cache=True, nogil=True, inline="always")
def _fold(i, n):
    # the mirroring rule of unet.mirror (numpy.pad "symmetric", paper Fig. 2)
    if 0 <= i < n:  # the common case: no integer division
        return i
    return _mirror_index(i, n)


@numba.njit(cache=True, nogil=True, inline="always")
def _bspline_weights(t, out):
    # cubic B-spline weights of the 4 neighbours at fractional offset t in [0, 1)
    s = 1.0 - t
    out[0] = s * s * s / 6.0
    out[1] = (3.0 * t * t * t - 6.0 * t * t + 4.0) / 6.0
    out[2] = (-3.0 * t * t * t + 3.0 * t * t + 3.0 * t + 1.0) / 6.0
    out[3] = t * t * t / 6.0


@numba.njit(cache=True, nogil=True, inline="always")
def _cubic_mirrored(coef, iy, ix, wy, wx, yi, xi, out_img, u, v):
    # every channel's cubic B-spline at one pixel near the border: the 4x4 coefficients mirrored
    nc, h, w = coef.shape
    for k in range(4):
        yi[k] = _fold(iy + k, h)
        xi[k] = _fold(ix + k, w)
    for c in range(nc):
        acc = 0.0
        for p in range(4):
            row = 0.0
            for q in range(4):
                row += wx[q] * coef[c, yi[p], xi[q]]
            acc += wy[p] * row
        out_img[c, u, v] = acc


@numba.njit(cache=True, nogil=True, inline="always")
def _linear(weight, y, x, fy, fx, h, w):
    # the weight map, bilinear at (y, x) (mirrored beyond the border)
    ay = y - fy
    ax = x - fx
    y0 = _fold(int(fy), h)
    y1 = _fold(int(fy) + 1, h)
    x0 = _fold(int(fx), w)
    x1 = _fold(int(fx) + 1, w)
    return ((1.0 - ay) * ((1.0 - ax) * weight[y0, x0] + ax * weight[y0, x1])
            + ay * ((1.0 - ax) * weight[y1, x0] + ax * weight[y1, x1]))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def warp_kernel(coef, target, weight, ty, mx, oy, ox, a, hy, hx, have_t, have_w, out_img, out_t, out_w):
    nc, h, w = coef.shape
    th, tw = out_img.shape[1], out_img.shape[2]
    oh, ow = out_t.shape if have_t else out_w.shape
    g = mx.shape[1]
    cy = (th - 1) * 0.5
    cx = (tw - 1) * 0.5
    yi = np.empty(4, np.int64)
    xi = np.empty(4, np.int64)
    wy = np.empty(4, np.float64)
    wx = np.empty(4, np.float64)
    for u in range(th):
        ru = u - cy
        for v in range(tw):
            rv = v - cx
            dy = 0.0
            dx = 0.0
            for j in range(g):
                dy += ty[0, u, j] * mx[v, j]
                dx += ty[1, u, j] * mx[v, j]
            y = oy + cy + a[0, 0] * ru + a[0, 1] * rv + dy
            x = ox + cx + a[1, 0] * ru + a[1, 1] * rv + dx
            fy = math.floor(y)
            fx = math.floor(x)
            _bspline_weights(y - fy, wy)
            _bspline_weights(x - fx, wx)
            iy = int(fy) - 1
            ix = int(fx) - 1
            if iy >= 0 and iy + 3 < h and ix >= 0 and ix + 3 < w:
                # interior (the common case): direct indexing, no mirroring
                for c in range(nc):
                    acc = 0.0
                    for p in range(4):
                        r = iy + p
                        acc += wy[p] * (wx[0] * coef[c, r, ix] + wx[1] * coef[c, r, ix + 1]
                                        + wx[2] * coef[c, r, ix + 2] + wx[3] * coef[c, r, ix + 3])
                    out_img[c, u, v] = acc
            else:
                _cubic_mirrored(coef, iy, ix, wy, wx, yi, xi, out_img, u, v)
            ou = u - hy
            ov = v - hx
            if 0 <= ou < oh and 0 <= ov < ow:
                if have_t:
                    out_t[ou, ov] = target[_fold(int(math.floor(y + 0.5)), h), _fold(int(math.floor(x + 0.5)), w)]
                if have_w:
                    out_w[ou, ov] = _linear(weight, y, x, fy, fx, h, w)

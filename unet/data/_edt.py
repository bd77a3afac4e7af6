"""Exact 2-D Euclidean distance transform to one label (numba), for the weight map.

Felzenszwalb & Huttenlocher (2012), "Distance transforms of sampled
functions": a 1-D pass down each column, then the lower envelope of parabolas
along each row; linear in the number of pixels.  About 4x faster here than
``scipy.ndimage.distance_transform_edt``, which also computes the feature
indices.  Tested against scipy in tests/data/test_data_weights.py.
"""

from __future__ import annotations

import numba
import numpy as np

_BIG = 1e20


@numba.njit(cache=True, nogil=True)
def distance_to_label(labels, k, out):
    """``out[i, j]`` = Euclidean distance from pixel (i, j) to the nearest pixel with ``labels == k``."""
    h, w = labels.shape
    f = np.empty((h, w), np.float64)
    # column pass: 1-D distance to the nearest feature pixel in the same column
    for j in range(w):
        last = -1
        for i in range(h):
            if labels[i, j] == k:
                last = i
            f[i, j] = (i - last) if last >= 0 else _BIG
        last = -1
        for i in range(h - 1, -1, -1):
            if labels[i, j] == k:
                last = i
            if last >= 0 and last - i < f[i, j]:
                f[i, j] = last - i
        for i in range(h):
            if f[i, j] < _BIG:
                f[i, j] = f[i, j] * f[i, j]
    # row pass: lower envelope of the parabolas (x - q)^2 + f[q]
    v = np.empty(w, np.int64)
    z = np.empty(w + 1, np.float64)
    for i in range(h):
        row = f[i]
        kk = 0
        v[0] = 0
        z[0] = -np.inf
        z[1] = np.inf
        for q in range(1, w):
            s = ((row[q] + q * q) - (row[v[kk]] + v[kk] * v[kk])) / (2.0 * (q - v[kk]))
            while s <= z[kk]:
                kk -= 1
                s = ((row[q] + q * q) - (row[v[kk]] + v[kk] * v[kk])) / (2.0 * (q - v[kk]))
            kk += 1
            v[kk] = q
            z[kk] = s
            z[kk + 1] = np.inf
        kk = 0
        for q in range(w):
            while z[kk + 1] < q:
                kk += 1
            d = (q - v[kk]) * (q - v[kk]) + row[v[kk]]
            out[i, q] = np.sqrt(d) if d < _BIG * 0.5 else np.inf

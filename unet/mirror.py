"""Mirror extrapolation beyond the image border (paper Sec. 2, Fig. 2).

"To predict the pixels in the border region of the image, the missing context
is extrapolated by mirroring the input image." (Ronneberger et al. 2015, Sec. 2)

One rule serves training tiles (:func:`unet.data.tiles.extract_tile`), the
elastic warp (:mod:`unet.data._warp`, compiled with numba) and prediction tiles
(:func:`unet.inference.tiling.mirror_indices`), so that training and inference
see the same border.  This module needs only NumPy: inference imports it
without the training-data machinery.
"""

from __future__ import annotations

import numpy as np

#: ``numpy.pad`` mode of the mirrored context (paper Fig. 2): ``"symmetric"``
#: mirrors about the image edge, so the border pixel is repeated
#: (``... c b a | a b c ...``) and the image continues smoothly across the edge
#: (``scipy.ndimage`` calls this ``"reflect"``).
MIRROR_MODE = "symmetric"


def mirror_index(i, n):
    """Source index of position ``i`` (int or integer array) on an axis of ``n`` pixels.

    Equal to indexing ``numpy.pad(axis, width, mode=MIRROR_MODE)`` at ``i +
    width`` for any pad width: the mirrored axis repeats with period ``2 n``
    (``... 1 0 | 0 1 ... n-1 | n-1 n-2 ...``).  Written with ``%`` and
    ``np.minimum`` only, so numba compiles the same function for scalars
    (:mod:`unet.data._warp`).
    """
    i = i % (2 * n)
    return np.minimum(i, 2 * n - 1 - i)


def mirror_indices(size: int, start: int, length: int) -> np.ndarray:
    """Source indices for positions ``start .. start+length-1`` of an axis of ``size`` pixels.

    Positions outside ``[0, size)`` are mirrored (:func:`mirror_index`); a
    1-pixel axis repeats its pixel.
    """
    return mirror_index(np.arange(start, start + length), size)

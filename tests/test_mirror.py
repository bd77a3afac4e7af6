"""The one mirroring rule (paper Fig. 2) against numpy.pad, for arrays and for the compiled warp."""

import numpy as np
import pytest

from unet.mirror import MIRROR_MODE, mirror_index, mirror_indices


@pytest.mark.parametrize("size", [1, 2, 5])
def test_mirror_indices_equal_numpy_pad_for_any_width(size):
    axis = np.arange(size)
    padded = np.pad(axis, 3 * size + 4, mode=MIRROR_MODE)  # pads several times the axis
    for start in range(-3 * size - 4, 2 * size):
        for length in (1, size, 2 * size + 3):
            want = padded[start + 3 * size + 4 : start + 3 * size + 4 + length]
            np.testing.assert_array_equal(axis[mirror_indices(size, start, length)], want)


def test_compiled_rule_of_the_warp_equals_the_numpy_rule():
    from unet.data._warp import _fold

    for n in (1, 2, 7):
        for i in range(-4 * n - 3, 4 * n + 3):
            assert _fold(i, n) == mirror_index(np.int64(i), n) == np.pad(np.arange(n), 5 * n + 3, mode="symmetric")[i + 5 * n + 3]

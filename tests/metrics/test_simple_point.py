"""The ported official simple-point test is the textbook (4, 8) definition."""

import numpy as np
from scipy import ndimage

from unet.metrics._simple_point import NEIGHBOURS, official_simple_point, simple_point_lut


def _patch(code: int, centre: int) -> np.ndarray:
    patch = np.zeros((3, 3))
    patch[1, 1] = centre
    for k, (dy, dx) in enumerate(NEIGHBOURS):
        if code >> k & 1:
            patch[1 + dy, 1 + dx] = 1.0
    return patch


def _textbook(patch: np.ndarray) -> bool:
    """Rosenfeld: one 4-component of cells 4-adjacent to the centre, one 8-component of membrane."""
    cells = patch.astype(bool)
    cells[1, 1] = False
    lab, _ = ndimage.label(cells, structure=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    t4 = len({lab[1 + dy, 1 + dx] for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))} - {0})
    membrane = ~patch.astype(bool)
    membrane[1, 1] = False
    t8 = ndimage.label(membrane, structure=np.ones((3, 3)))[1]
    return t4 == 1 and t8 == 1


def test_lut_equals_textbook_definition_for_all_patches():
    lut = simple_point_lut()
    for code in range(256):
        for centre in (0, 1):
            patch = _patch(code, centre)
            assert official_simple_point(patch) == lut[code] == _textbook(patch), (code, centre)


def test_known_configurations():
    lut = simple_point_lut()
    assert not lut[0]  # isolated pixel: flipping deletes or creates an object
    assert not lut[255]  # surrounded by cells: flipping creates or fills a hole
    # a straight 1-px membrane between two cells: flipping merges them
    code = sum(1 << k for k, (dy, dx) in enumerate(NEIGHBOURS) if dx != 0)
    assert not lut[code]
    # a pixel at the edge of a cell (cells on one side only) is simple
    code = sum(1 << k for k, (dy, dx) in enumerate(NEIGHBOURS) if dy == 1)
    assert lut[code]

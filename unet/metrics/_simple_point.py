"""Simple-point test of the ISBI 2012 warping error, as a 256-entry lookup table.

A pixel is *simple* when flipping it changes no topology (no object or hole is
created, deleted, split or merged) (Bertrand & Malandain 1994; Jain et al.
2010, Sec. 3).  The official ISBI 2012 evaluation (Fiji Trainable_Segmentation,
``WarpingError.simple2DBertrand(patch, 4)``) decides this by embedding the 3x3
patch as the middle plane of a 3x3x3 block and running the 3-D test of
Bertrand & Malandain with (6, 26) adjacency, cells 6-adjacent and membrane
26-adjacent - in the plane, the (4, 8) pair: cells 4-connected, membrane
8-connected.  The 3-D routine below is a line-by-line port of that test, so the
table is exactly the official decision for each of the 256 configurations of
the 8 neighbours; the centre pixel does not enter the test.

The table is indexed by the 8 neighbours of ``(y, x)``, bit ``k`` set when
neighbour ``NEIGHBOURS[k]`` (``(dy, dx)``) is a cell pixel.
"""

from __future__ import annotations

import numpy as np

#: (dy, dx) of the 8 neighbours, in the bit order of the lookup table.
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))

# Masks of the Euler-characteristic counts of Bertrand & Malandain (1994),
# indexed [x][y][z] with voxel index x + 3*y + 9*z, as in the Fiji source.
_A6 = np.array([[[0, 1, 0], [1, 5, 1], [0, 1, 0]], [[0] * 3] * 3, [[0] * 3] * 3])
_A18 = np.array([[[0, 0, 0], [0, 1, 1], [0, 0, 0]], [[0, 0, 0], [0, 0, 1], [0, 0, 0]], [[0] * 3] * 3])
_A26 = np.array([[[0, 0, 0], [0, 1, 1], [0, 1, 1]], [[0, 0, 0], [0, 0, 1], [0, 1, 1]], [[0] * 3] * 3])
_B18 = np.array([[[0, 1, 0], [0, 1, 9], [0, 1, 0]], [[0, 1, 1], [0, 0, 1], [0, 1, 1]], [[0] * 3] * 3])
_B26 = np.array([[[0, 0, 0], [0, 1, 1], [0, 1, 7]], [[0, 0, 0], [0, 0, 1], [0, 1, 1]], [[0] * 3] * 3])

_N6 = (4, 10, 12, 14, 16, 22)
_N18 = (1, 3, 4, 5, 7, 9, 10, 11, 12, 14, 15, 16, 17, 19, 21, 22, 23, 25)
_N26 = tuple(i for i in range(27) if i != 13)


def _nca(v, con: int, space: int) -> int:
    idx = {6: _N6, 18: _N18, 26: _N26}[con]
    tsum = int(sum(int(v[i]) for i in idx))
    return con * space - tsum if space == 1 else tsum


def _ncb(v, ctyp: str, con: int, space: int) -> int:
    def val(x, y, z):
        return v[x + 3 * y + 9 * z]

    r = range(3)
    if ctyp == "a" and con == 6:
        m = _A6
        views = [
            lambda x, y, z: m[x][y][z], lambda x, y, z: m[2 - x][y][z],
            lambda x, y, z: m[y][x][z], lambda x, y, z: m[2 - y][x][z],
            lambda x, y, z: m[z][y][x], lambda x, y, z: m[2 - z][y][x],
        ]
        target = 5 - space
    elif con == 18:
        m = _A18 if ctyp == "a" else _B18
        views = [
            lambda x, y, z: m[x][y][z], lambda x, y, z: m[x][y][2 - z],
            lambda x, y, z: m[2 - x][y][z], lambda x, y, z: m[2 - x][y][2 - z],
            lambda x, y, z: m[y][x][z], lambda x, y, z: m[y][x][2 - z],
            lambda x, y, z: m[2 - y][x][z], lambda x, y, z: m[2 - y][x][2 - z],
            lambda x, y, z: m[x][z][y], lambda x, y, z: m[x][z][2 - y],
            lambda x, y, z: m[2 - x][z][y], lambda x, y, z: m[2 - x][z][2 - y],
        ]
        target = 3 - 3 * space if ctyp == "a" else 9 - space
    elif con == 26:
        m = _A26 if ctyp == "a" else _B26
        views = [
            lambda x, y, z: m[x][y][z], lambda x, y, z: m[2 - x][y][z],
            lambda x, y, z: m[x][2 - y][z], lambda x, y, z: m[x][y][2 - z],
            lambda x, y, z: m[2 - x][2 - y][z], lambda x, y, z: m[x][2 - y][2 - z],
            lambda x, y, z: m[2 - x][y][2 - z], lambda x, y, z: m[2 - x][2 - y][2 - z],
        ]
        target = 7 - 7 * space if ctyp == "a" else 7 - space
    else:
        return 0
    sums = [int(sum(view(x, y, z) * val(x, y, z) for x in r for y in r for z in r)) for view in views]
    return sum(1 for s in sums if s == target)


def _simple_26(v) -> bool:
    if _nca(v, 6, 1) == 1:
        return True
    if _nca(v, 26, 0) == 1:
        return True
    if _ncb(v, "b", 26, 0) == 0:
        if _nca(v, 18, 0) == 1:
            return True
        if (
            _ncb(v, "a", 6, 1) == 0
            and _ncb(v, "b", 18, 0) == 0
            and (_nca(v, 6, 1) - _ncb(v, "a", 18, 1) + _ncb(v, "a", 26, 1)) == 1
        ):
            return True
    return False


def official_simple_point(patch: np.ndarray) -> bool:
    """The official ISBI decision for a 3x3 binary patch (1 = cell), centre at [1, 1].

    Port of Fiji's ``simple2DBertrand(patch, 4)``: the patch is the middle plane
    of a 3x3x3 block (empty planes around it), the block is inverted so that
    membrane is the 26-connected foreground, and the (26, 6) simple-point test
    of Bertrand & Malandain (1994) is applied.
    """
    block = np.zeros(27)
    block[9:18] = np.asarray(patch, dtype=float).reshape(9)
    inverted = np.where(block == 1.0, 0.0, 1.0)
    return _simple_26(inverted)


def simple_point_lut() -> np.ndarray:
    """Return the 256-entry boolean table of the official simple-point test."""
    lut = np.zeros(256, dtype=np.bool_)
    for code in range(256):
        patch = np.zeros((3, 3))
        for k, (dy, dx) in enumerate(NEIGHBOURS):
            if code >> k & 1:
                patch[1 + dy, 1 + dx] = 1.0
        lut[code] = official_simple_point(patch)
    return lut

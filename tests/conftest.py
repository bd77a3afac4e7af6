"""Shared fixtures.  Real data live in ``../shared`` beside the repository (CI lays it out the same way)."""

from pathlib import Path

import numpy as np
import pytest
import skimage.io
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# 2-core machines: keep intra-op threads low so parallel processes do not thrash.
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (ISBI 2012, DIC-HeLa), or skip when it is absent."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip("../shared/data is not present")
    return path


@pytest.fixture(scope="session")
def isbi_crops(tmp_path_factory, shared_data):
    """``isbi_crops(name, n, crop)``: a folder dataset of the first ``n`` real ISBI 2012 slices cut
    to ``crop`` (a pair of slices), as images/sN.png and masks/sN.png in a fresh temporary folder."""

    def make(name: str, n: int, crop: tuple[slice, slice]) -> Path:
        root = tmp_path_factory.mktemp(name)
        for sub, src in (("images", "images"), ("masks", "labels")):
            (root / sub).mkdir()
            for i in range(n):
                arr = skimage.io.imread(shared_data / "isbi2012/train" / src / f"{i}.png")
                skimage.io.imsave(root / sub / f"s{i}.png", np.ascontiguousarray(arr[crop]), check_contrast=False)
        return root

    return make

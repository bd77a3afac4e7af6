"""Shared fixtures.

Every feature is tested on data shipped in the repository: the ISBI 2012 sample of the demo
(``unet/sample_data/isbi2012``), crops of DIC-HeLa and a subset of the metric golden vectors
(``tests/fixtures``, see PROVENANCE.md there).  The full real data and golden vectors in
``../shared`` beside the repository add more cases when present; tests that need the whole of it
skip without it, unless ``UNET_REQUIRE_SHARED=1`` (set by ``.ci/run``) turns that into a failure.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import skimage.io
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = REPO / "tests" / "fixtures"
SAMPLE = REPO / "unet" / "sample_data"
#: CI always has ../shared: a missing folder must fail there, not skip
REQUIRE_SHARED = os.environ.get("UNET_REQUIRE_SHARED", "") not in ("", "0")
#: data sources of the real-data tests: the shipped fixtures always, ../shared when present
SOURCES = ["shipped"] + (["shared"] if (SHARED / "data").is_dir() or REQUIRE_SHARED else [])

# 2-core machines: keep intra-op threads low so parallel processes do not thrash.
torch.set_num_threads(2)


def shared_path(*parts: str) -> Path:
    """``../shared/PARTS``; skips the test when absent (fails under ``UNET_REQUIRE_SHARED=1``)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} is not present (the full real data; the shipped fixtures cover the feature)"
        if REQUIRE_SHARED:
            pytest.fail(message + " but UNET_REQUIRE_SHARED is set", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (all of ISBI 2012 and DIC-HeLa), or skip when it is absent."""
    return shared_path("data")


@pytest.fixture(scope="session", params=SOURCES)
def dic_hela(request) -> Path:
    """A DIC-HeLa folder (01/, 02/ with images/ and masks/): the shipped 256x256 crops of five
    frames, and the whole ``../shared/data/dic-hela`` when present."""
    if request.param == "shared":
        return shared_path("data", "dic-hela")
    return FIXTURES / "dic-hela"


@pytest.fixture(scope="session")
def dic_hela_crops() -> Path:
    """The shipped DIC-HeLa crops only: 01/t002, 01/t021, 01/t067 (partial), 02/t006, 02/t014."""
    return FIXTURES / "dic-hela"


@pytest.fixture(scope="session", params=SOURCES)
def isbi2012(request) -> Path:
    """An ISBI 2012 folder (train/images, train/labels): the 10 slices shipped with the demo, and
    all 30 of ``../shared/data/isbi2012`` when present."""
    if request.param == "shared":
        return shared_path("data", "isbi2012")
    return SAMPLE / "isbi2012"


@pytest.fixture(scope="session")
def isbi_crops(tmp_path_factory):
    """``isbi_crops(name, n, crop)``: a folder dataset of the first ``n`` (<= 8) real ISBI 2012
    slices of the shipped sample cut to ``crop`` (a pair of slices), as images/sN.png and
    masks/sN.png in a fresh temporary folder."""

    def make(name: str, n: int, crop: tuple[slice, slice]) -> Path:
        assert n <= 8, "the shipped sample holds slices 0-7 (and 28, 29)"
        root = tmp_path_factory.mktemp(name)
        for sub, src in (("images", "images"), ("masks", "labels")):
            (root / sub).mkdir()
            for i in range(n):
                arr = skimage.io.imread(SAMPLE / "isbi2012/train" / src / f"{i}.png")
                skimage.io.imsave(root / sub / f"s{i}.png", np.ascontiguousarray(arr[crop]), check_contrast=False)
        return root

    return make

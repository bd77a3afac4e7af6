"""Shared fixtures.  Real data live in ``../shared`` beside the repository (CI lays it out the same way)."""

from pathlib import Path

import pytest
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

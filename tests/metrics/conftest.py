"""Fixtures of the metric tests: the golden vectors in ``../shared/oracle``."""

from pathlib import Path

import pytest
from metrics_oracle import ORACLE


@pytest.fixture(scope="session")
def oracle_dir() -> Path:
    """``../shared/oracle`` (golden metric vectors), or skip when it is absent."""
    if not (ORACLE / "isbi" / "vectors.json").is_file():
        pytest.skip("../shared/oracle is not present")
    return ORACLE

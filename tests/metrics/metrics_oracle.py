"""Golden metric vectors of ``../shared/oracle``: paths and loaders shared by the tests."""

import json
from pathlib import Path

import numpy as np

ORACLE = Path(__file__).resolve().parents[2].parent / "shared" / "oracle"


def load_cases(kind: str) -> list[dict]:
    """Cases of ``oracle/<kind>/vectors.json`` for parametrisation (empty when absent)."""
    path = ORACLE / kind / "vectors.json"
    if not path.is_file():
        return []
    return json.loads(path.read_text())["cases"]


def case_ids(kind: str) -> list[str]:
    return [c["name"] for c in load_cases(kind)] or ["absent"]


def load_arrays(oracle_dir: Path, kind: str, name: str) -> dict[str, np.ndarray]:
    with np.load(oracle_dir / kind / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}

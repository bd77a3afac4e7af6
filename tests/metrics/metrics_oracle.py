"""Golden metric vectors: the subset shipped in ``tests/fixtures/oracle`` (always) and the rest of
``../shared/oracle`` (when present).  Paths and loaders shared by the metric tests."""

import json
import os
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1]
SHIPPED = TESTS / "fixtures" / "oracle"
SHARED = TESTS.parents[1] / "shared" / "oracle"
if os.environ.get("UNET_REQUIRE_SHARED", "") not in ("", "0") and not SHARED.is_dir():
    raise RuntimeError(f"{SHARED} is not present but UNET_REQUIRE_SHARED is set")


def load_cases(kind: str) -> dict[str, tuple[Path, dict]]:
    """``{name: (folder, case)}`` of ``oracle/<kind>/vectors.json``: every shipped case, and the
    cases only ``../shared/oracle`` holds."""
    cases = {}
    for root in (SHARED, SHIPPED):  # shipped copies win: the same files, always present
        path = root / kind / "vectors.json"
        if path.is_file():
            cases.update({c["name"]: (root / kind, c) for c in json.loads(path.read_text())["cases"]})
    return dict(sorted(cases.items()))


def load_meta(kind: str) -> dict:
    return json.loads((SHIPPED / kind / "vectors.json").read_text())["meta"]


def load_arrays(folder: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(folder / f"{name}.npz") as z:
        return {k: z[k] for k in z.files}

"""Fixtures of the reproduction tests: a tiny ISBI 2012 folder dataset and a tiny experiment file."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CROP = (slice(150, 246), slice(180, 276))  # 96 x 96 px of each slice


@pytest.fixture(scope="session")
def tiny_isbi_stack(isbi_crops) -> Path:
    """Six real 96x96 ISBI 2012 crops (slices 0-5) as a folder dataset: images/sN.png, masks/sN.png."""
    return isbi_crops("tiny_isbi_stack", 6, CROP)


TINY = {  # a few seconds per training on 2 cores
    "data.dataset": "folder", "model.unet.base_channels": 4, "model.unet.depth": 2,
    "model.fcn.base_channels": 4, "model.fcn.fc_channels": 8, "train.tile_size": 60, "train.steps": 4,
    "train.num_workers": 0, "train.threads": 2, "train.checkpoint_every": 2, "train.log_every": 1,
    "optim.name": "adam", "optim.lr": 0.01, "augment.elastic": False,
}


def write_tiny_experiment(path: Path, data_root: Path, **extra) -> Path:
    """configs/reproduce/isbi2012.yaml's protocol (3 contiguous folds, both models, paper numbers,
    targets) over the tiny dataset, with a tiny profile."""
    import yaml

    real = yaml.safe_load((REPO / "configs/reproduce/isbi2012.yaml").read_text())
    real["base"] = str(REPO / "configs/isbi2012.yaml")
    # the paper's protocol only: its two models and their targets (the rows beyond the paper are
    # tested in test_reproduce_selection.py)
    real["runs"] = [r for r in real["runs"] if r["name"] in ("unet", "fcn8s")]
    real["targets"] = [t for t in real["targets"] if t["run"] == "unet" and not t["metric"].endswith("_watershed")]
    real["evaluation"].pop("membrane_watershed", None)
    real["profiles"] = {"cpu": {"description": "tiny test profile",
                                "set": {**TINY, "data.root": str(data_root), **extra}}}
    path.write_text(yaml.safe_dump(real, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def make_tiny_experiment():
    """:func:`write_tiny_experiment`, as a fixture (test modules need not import conftest)."""
    return write_tiny_experiment


@pytest.fixture(scope="session")
def tiny_settings():
    """The repository root and :data:`TINY` (test modules need not import conftest)."""
    return REPO, dict(TINY)


@pytest.fixture
def own_copy(tmp_path):
    """``own_copy(finished)``: a private copy of a module fixture's finished ``unet reproduce`` (its
    ``out`` and ``runs`` folders, and ``argv`` pointing at them), for tests that change the files,
    so that no test depends on the order of the others."""
    import shutil

    def copy(finished: dict) -> dict:
        mine = dict(finished)
        moved = {}
        for key in ("out", "runs"):
            if key in finished:
                moved[str(finished[key])] = str(tmp_path / key)
                shutil.copytree(finished[key], tmp_path / key)
                mine[key] = tmp_path / key
        if "fold" in finished:  # a fold folder inside runs/
            mine["fold"] = Path(str(finished["fold"]).replace(str(finished["runs"]), str(tmp_path / "runs")))
        mine["argv"] = [moved.get(a, a) for a in finished["argv"]]
        return mine

    return copy

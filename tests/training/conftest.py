from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_isbi(isbi_crops) -> Path:
    """A folder dataset of four real 96x96 ISBI 2012 crops (images/ + masks/)."""
    return isbi_crops("tiny_isbi", 4, (slice(100, 196), slice(200, 296)))


@pytest.fixture(scope="session")
def tiny_cfg():
    """``tiny_cfg(root, **extra)``: the config of a tiny U-Net run on the folder dataset ``root``."""
    from unet.training.config import load_config

    return lambda root, **extra: load_config(None, extra=tiny_overrides(root, **extra))


def tiny_overrides(root, **extra):
    base = {
        "data.dataset": "folder", "data.root": str(root), "data.train": "0:2", "data.val": "2:4",
        "model.unet.base_channels": 4, "model.unet.depth": 2, "model.unet.dropout": 0.5,
        "train.tile_size": 60, "train.num_workers": 0, "train.log_every": 1, "train.threads": 2,
        "eval.metrics": ["iou", "pixel"], "eval.overlays": 1, "optim.name": "adam", "optim.lr": 0.01,
    }
    base.update(extra)
    return base

from pathlib import Path

import numpy as np
import pytest
import skimage.io


@pytest.fixture(scope="session")
def tiny_isbi(tmp_path_factory, shared_data) -> Path:
    """A folder dataset of four real 96x96 ISBI 2012 crops (images/ + masks/)."""
    root = tmp_path_factory.mktemp("tiny_isbi")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(4):
        img = skimage.io.imread(shared_data / "isbi2012/train/images" / f"{i}.png")
        lab = skimage.io.imread(shared_data / "isbi2012/train/labels" / f"{i}.png")
        skimage.io.imsave(root / "images" / f"s{i}.png", np.ascontiguousarray(img[100:196, 200:296]),
                          check_contrast=False)
        skimage.io.imsave(root / "masks" / f"s{i}.png", np.ascontiguousarray(lab[100:196, 200:296]),
                          check_contrast=False)
    return root


def tiny_overrides(root, **extra):
    base = {
        "data.dataset": "folder", "data.root": str(root), "data.train": "0:2", "data.val": "2:4",
        "model.unet.base_channels": 4, "model.unet.depth": 2, "model.unet.dropout": 0.5,
        "train.tile_size": 60, "train.num_workers": 0, "train.log_every": 1, "train.threads": 2,
        "eval.metrics": ["iou", "pixel"], "eval.overlays": 1, "optim.name": "adam", "optim.lr": 0.01,
    }
    base.update(extra)
    return base

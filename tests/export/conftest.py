"""Shared fixtures of the export tests: a small seamless U-Net checkpoint and a real image."""

from pathlib import Path

import numpy as np
import pytest
import torch

import unet

REPO = Path(__file__).resolve().parents[2]
#: a real ISBI 2012 slice shipped with the package (8-bit ssTEM, 512 x 512)
ISBI_SLICE = REPO / "unet" / "sample_data" / "isbi2012" / "train" / "images" / "28.png"


def small_unet(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(base_channels=4, depth=2, dropout=0.0)
    args.update(kw)
    return unet.create_model("unet", **args).eval()


@pytest.fixture(scope="session")
def isbi_image() -> np.ndarray:
    import skimage.io

    return skimage.io.imread(ISBI_SLICE)


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    """(checkpoint path, model): a seamless depth-2 U-Net with the default percentile normalisation."""
    root = tmp_path_factory.mktemp("export")
    model = small_unet()
    path = unet.save_checkpoint(model, root / "small.pt", normalize={"mode": "percentile", "low": 0.1, "high": 99.9})
    return path, model

"""Shared fixtures of the CLI tests."""

import numpy as np
import pytest
import tifffile
import torch

import unet


@pytest.fixture()
def checkpoint_and_image(tmp_path):
    """A tiny valid U-Net checkpoint and a 40x40 8-bit image to predict."""
    torch.manual_seed(0)
    ckpt = unet.save_checkpoint(unet.create_model("unet", base_channels=2, depth=2, dropout=0.0), tmp_path / "m.pt")
    image = tmp_path / "img.tif"
    tifffile.imwrite(image, np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))
    return ckpt, image

"""Tiny networks and images for the inference tests (2-core machines: everything stays small)."""

import numpy as np
import torch

import unet


def tiny_unet(depth=2, base_channels=4, padding="valid", in_channels=1, num_classes=2, seed=0):
    torch.manual_seed(seed)
    return unet.create_model("unet", base_channels=base_channels, depth=depth, padding=padding,
                             in_channels=in_channels, num_classes=num_classes, dropout=0.0).eval()


def smooth_image(shape, seed=0):
    """A normalised image with structure at several scales (random nets saturate on white noise)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.random(shape), 2.0)
    return ((img - img.mean()) / (img.std() + 1e-6)).astype(np.float32)


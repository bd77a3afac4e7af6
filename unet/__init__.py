"""unet: the U-Net of Ronneberger, Fischer & Brox (2015) for biomedical image segmentation.

The top-level names are imported lazily so that ``unet --help`` stays quick;
each lives in the subpackage named beside it.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    # models
    "create_model": "unet.models",
    "list_models": "unet.models",
    "register_model": "unet.models",
    "UNet": "unet.models.unet",
    "FCN": "unet.models.fcn",
    # geometry of valid networks
    "output_size": "unet.models.geometry",
    "halo": "unet.models.geometry",
    "is_valid_input_size": "unet.models.geometry",
    "nearest_valid_input_sizes": "unet.models.geometry",
    "check_input_size": "unet.models.geometry",
    "tile_dependence": "unet.models.seamless",
    # checkpoints
    "save_checkpoint": "unet.checkpoint",
    "load_checkpoint": "unet.checkpoint",
    # data
    "weight_map": "unet.data.weights",
    # inference
    "predict_tiled": "unet.inference",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'unet' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(__all__)

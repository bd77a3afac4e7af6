"""unet: the U-Net of Ronneberger, Fischer & Brox (2015) for biomedical image segmentation.

The top-level names are loaded lazily (``lazy_loader``, as scikit-image does);
each lives in the subpackage named beside it.  Laziness keeps ``unet --help`` at
0.13 s instead of 6.5 s and ``import unet`` at 0.07 s instead of 5.8 s (most of
it torch; ``python scripts/bench_startup.py``, figures in scripts/BENCHMARKS.md).
"""

from __future__ import annotations

import lazy_loader

__version__ = "0.1.0"

__getattr__, __dir__, _names = lazy_loader.attach(__name__, submod_attrs={
    "models": ["create_model", "list_models", "register_model"],
    "models.unet_paper": ["UNet"],
    "models.fcn": ["FCN"],
    # geometry of valid networks
    "models.geometry": ["output_size", "halo", "is_valid_input_size", "nearest_valid_input_sizes",
                        "check_input_size"],
    "models.seamless": ["tile_dependence"],
    "checkpoint": ["save_checkpoint", "load_checkpoint"],
    "data.weights": ["weight_map"],
    "inference": ["predict_tiled"],
})
__all__ = ["__version__", *_names]

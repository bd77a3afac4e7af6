"""Prediction: overlap-tile inference of arbitrarily large images (paper Sec. 2, Fig. 2).

* :func:`predict_tiled` - in memory, an already normalised array -> probabilities.
* :func:`predict_file` - out of core, an image file -> probability / mask / labels file.
* :func:`predict_dask` - the same prediction as a Dask graph (runs on dask.distributed).
"""

from __future__ import annotations

import importlib

from unet.inference.tiling import (  # noqa: F401
    DEFAULT_MEMORY_LIMIT,
    MIRROR_MODE,
    ImageSource,
    TileDependenceWarning,
    TileGrid,
    blend_window,
    choose_tile_size,
    make_grid,
    mirror_indices,
    predict_region,
    predict_strips,
    predict_tiled,
    consistency_tile_sizes,
    tile_consistency,
)

_LAZY = {
    "predict_file": "unet.inference.files",
    "open_image": "unet.inference.files",
    "label_instances": "unet.inference.labels",
    "cell_instances": "unet.inference.labels",
    "membrane_watershed": "unet.inference.labels",
    "predict_dask": "unet.inference.distributed",
}

__all__ = [
    "predict_tiled", "predict_file", "predict_dask", "open_image", "label_instances", "cell_instances",
    "membrane_watershed",
    "predict_strips", "predict_region", "make_grid", "choose_tile_size", "mirror_indices",
    "blend_window", "ImageSource", "TileGrid", "TileDependenceWarning",
    "tile_consistency", "consistency_tile_sizes", "MIRROR_MODE", "DEFAULT_MEMORY_LIMIT",
]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'unet.inference' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

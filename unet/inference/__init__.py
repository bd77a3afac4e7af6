"""Prediction: overlap-tile inference of arbitrarily large images (paper Sec. 2, Fig. 2).

* :func:`predict_tiled` - in memory, an already normalised array -> probabilities.
* :func:`predict_file` - out of core, an image file -> probability / mask / labels file.
* :func:`predict_dask` - the same prediction as a Dask graph (runs on dask.distributed).

Names are loaded lazily (``lazy_loader``): ``import unet.inference`` imports
neither torch nor Dask (start-up figures: :mod:`unet`).
"""

from __future__ import annotations

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "tiling": ["DEFAULT_MEMORY_LIMIT", "MIRROR_MODE", "ImageSource", "TileGrid", "blend_window",
               "choose_tile_size", "make_grid", "mirror_indices", "predict_region", "predict_strips",
               "predict_tiled", "TileDependenceWarning", "tile_consistency",
               "consistency_tile_sizes"],
    "files": ["predict_file", "open_image"],
    "labels": ["label_instances", "cell_instances", "membrane_watershed"],
    "distributed": ["predict_dask"],
})

"""Data pipeline: datasets -> samples -> training tiles (paper Sec. 3 and 3.1).

paths (:func:`isbi2012_pairs`, :func:`ctc_pairs`, :func:`folder_pairs`,
:func:`dataset_pairs`) -> :func:`load_sample` -> :class:`TileDataset` ->
:func:`make_loader`.  Targets with separation borders
(:func:`training_target`), the weight map of eq. 2 (:func:`weight_map`), the
elastic deformation of Sec. 3.1 (:mod:`unet.data.elastic`, :class:`Augmentation`).

Names are loaded lazily (``lazy_loader``) so that ``import unet.data.weights`` does not pull in
torch (start-up figures: :mod:`unet`).
"""

from __future__ import annotations

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "loaders": ["ImagePair", "Sample", "isbi2012_pairs", "ctc_pairs", "folder_pairs", "dataset_pairs",
                "load_sample", "labels_from_mask", "KNOWN_PARTIAL_FRAMES"],
    "normalize": ["DEFAULT_NORMALIZE", "normalize"],
    "targets": ["IGNORE_INDEX", "training_target", "separation_borders"],
    "weights": ["weight_map", "class_weights_from"],
    "augment": ["Augmentation"],
    "elastic": ["random_displacement", "dense_displacement", "elastic_deform"],
    "tiles": ["MIRROR_MODE", "extract_tile", "TileDataset", "make_loader"],
    "manifest": ["load_manifest"],
    "selection": ["select_pairs", "config_pairs"],
})

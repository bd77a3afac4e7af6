"""Data pipeline: datasets -> samples -> training tiles (paper Sec. 3 and 3.1).

paths (:func:`isbi2012_pairs`, :func:`ctc_pairs`, :func:`folder_pairs`,
:func:`dataset_pairs`) -> :func:`load_sample` -> :class:`TileDataset` ->
:func:`make_loader`.  Targets with separation borders
(:func:`training_target`), the weight map of eq. 2 (:func:`weight_map`), the
elastic deformation of Sec. 3.1 (:mod:`unet.data.elastic`, :class:`Augmentation`).

Names are imported lazily so that ``import unet.data.weights`` does not pull in torch.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "ImagePair": "unet.data.loaders",
    "Sample": "unet.data.loaders",
    "isbi2012_pairs": "unet.data.loaders",
    "ctc_pairs": "unet.data.loaders",
    "folder_pairs": "unet.data.loaders",
    "dataset_pairs": "unet.data.loaders",
    "load_sample": "unet.data.loaders",
    "labels_from_mask": "unet.data.loaders",
    "KNOWN_PARTIAL_FRAMES": "unet.data.loaders",
    "DEFAULT_NORMALIZE": "unet.data.normalize",
    "normalize": "unet.data.normalize",
    "IGNORE_INDEX": "unet.data.targets",
    "training_target": "unet.data.targets",
    "separation_borders": "unet.data.targets",
    "weight_map": "unet.data.weights",
    "class_weights_from": "unet.data.weights",
    "Augmentation": "unet.data.augment",
    "random_displacement": "unet.data.elastic",
    "dense_displacement": "unet.data.elastic",
    "elastic_deform": "unet.data.elastic",
    "MIRROR_MODE": "unet.data.tiles",
    "extract_tile": "unet.data.tiles",
    "TileDataset": "unet.data.tiles",
    "make_loader": "unet.data.tiles",
    "load_manifest": "unet.data.manifest",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'unet.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__():
    return __all__

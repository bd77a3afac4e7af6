"""Files shipped inside the package: training configs, dataset manifests, the demo sample.

They live under ``unet/`` so that a wheel install (not only an editable one) finds them;
the repository's top-level ``configs/`` and ``datasets/`` are links to the same folders.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def resource_dir(name: str) -> Path:
    """The folder ``unet/NAME`` ("configs", "datasets", "sample_data") as a file-system path.

    The package is installed as plain files (wheel or editable), never zipped, so the
    traversable that :func:`importlib.resources.files` returns is a real folder.
    """
    return Path(str(files("unet").joinpath(name)))


#: ``unet/configs``: training configs; ``reproduce/`` holds the experiments
CONFIG_DIR = resource_dir("configs")
#: ``unet/datasets``: one manifest per dataset
MANIFEST_DIR = resource_dir("datasets")
#: ``unet/sample_data``: the 10 ISBI 2012 slices of ``unet demo``
SAMPLE_DIR = resource_dir("sample_data")

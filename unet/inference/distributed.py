"""The overlap-tile prediction as a Dask graph, for dask.distributed clusters.

Each output chunk is a task that reads the mirrored input windows of exactly
the tiles whose kept part meets the chunk (:func:`unet.inference.predict_region`)
and predicts them, so the result equals the single-process
:func:`unet.inference.predict_tiled` (chunks are whole tiles, tile origins are
global, and the mirrored context is read from the whole image, not from the
chunk).  The model enters the graph once; an image given as a path is opened
by each task itself, so workers need to see the file but nothing large is
shipped through the scheduler.
"""

from __future__ import annotations

import copy
import os

import dask
import dask.array as da
import numpy as np
import torch

from unet.checkpoint import load_checkpoint
from unet.data.normalize import DEFAULT_NORMALIZE, intensity_ranges
from unet.errors import UserError
from unet.inference.files import check_finite, open_image
from unet.inference.tiling import ImageSource, make_grid, parse_axes, predict_region, unwrap, warn_if_tile_dependent


def _open(image, axes, value_range, in_channels, nan_to_num=False):
    if isinstance(image, (str, os.PathLike)):
        array, axes = open_image(image, axes=axes, in_channels=in_channels)
    else:
        array = image
    return ImageSource(array, axes, value_range=value_range, nan_to_num=nan_to_num,
                       name=str(image) if isinstance(image, (str, os.PathLike)) else "image")


def _predict_block(model, image, axes, value_range, grid, plane, box, batch_size, tta, device, nan_to_num=False):
    source = _open(image, axes, value_range, getattr(model, "in_channels", 1), nan_to_num)
    with torch.inference_mode():
        return predict_region(model, source, grid, box, plane=plane, batch_size=batch_size, tta=tta, device=device)


def predict_dask(model, image, *, axes: str | None = None, tile_size=None, chunk_tiles: int = 4,
                 batch_size: int = 1, tta: bool = False, memory_limit=None, margin: int | None = None,
                 value_range=None, normalize: dict | None = None, device=None, nan_to_num: bool = False):
    """Class probabilities as a lazy ``dask.array`` (compute it locally or on a dask.distributed cluster).

    Parameters
    ----------
    model : torch.nn.Module or path
        The network or a checkpoint file (whose ``metadata["normalize"]`` is
        used for path inputs).  A copy in eval mode enters the graph.
    image : array_like or path
        An already normalised array (numpy, memmap, zarr), or an image file
        (TIFF, zarr, npy, PNG; see :func:`unet.inference.files.open_image`),
        which is normalised like :func:`unet.inference.predict_file` does.
    axes : str, optional
        As for :func:`unet.inference.predict_tiled`.
    chunk_tiles : int
        Output chunks hold ``chunk_tiles`` x ``chunk_tiles`` tiles.
    tile_size, batch_size, tta, memory_limit, margin, device
        As for :func:`unet.inference.predict_tiled`.
    value_range : (float, float) or array_like, optional
        Normalisation range to apply to every window (overrides the default):
        one pair, or ``(planes, channels, 2)`` as from
        :func:`unet.data.normalize.intensity_ranges` (the default for a path).
    nan_to_num : bool
        NaN/infinite pixels of the image (checked first) are an error, or with
        ``nan_to_num`` read as 0 after normalisation (+inf as 1).

    Returns
    -------
    dask.array.Array
        float32 (num_classes, H, W), or (planes, num_classes, H, W) for stacks,
        chunked by whole tiles.  For valid nets ``.compute()`` equals
        :func:`unet.inference.predict_tiled` with the same tile size.
    """
    model, normalize = _graph_model(model, normalize)
    in_channels = getattr(model, "in_channels", 1)
    is_path = isinstance(image, (str, os.PathLike))
    if is_path:
        array, axes = open_image(image, axes=axes, in_channels=in_channels)
        check_finite(array, axes, image, nan_to_num=nan_to_num)
        if value_range is None:
            settings = normalize or DEFAULT_NORMALIZE
            value_range = intensity_ranges(array, axes, **{k: settings[k] for k in ("mode", "low", "high")
                                                           if k in settings})
        image = os.fspath(image)
    else:
        array = image
        axes = parse_axes(array.shape, axes, in_channels)
        check_finite(array, axes, "image", nan_to_num=nan_to_num)
    source = ImageSource(array, axes)
    if source.channels != in_channels:
        raise UserError(f"{source.name}: has {source.channels} channel(s), the model expects {in_channels}")
    grid = make_grid(model, source.plane_shape, tile_size=tile_size, memory_limit=memory_limit,
                     batch_size=batch_size, margin=margin)
    warn_if_tile_dependent(model, grid, name=image if is_path else "image")
    block = dict(axes=axes, value_range=value_range, grid=grid, batch_size=batch_size, tta=tta, device=device,
                 nan_to_num=nan_to_num)
    # each enters the graph once (one key), however many tasks use it
    model_d, image_d = dask.delayed(model, pure=False), image if is_path else dask.delayed(image, pure=False)
    planes = [_plane_graph(model_d, image_d, z, num_classes=int(model.num_classes),
                           chunk=(grid.tile[0] * chunk_tiles, grid.tile[1] * chunk_tiles), **block)
              for z in range(source.num_planes)]
    return da.stack(planes) if source.stack_axis else planes[0]


def _graph_model(model, normalize):
    """A copy of the network in eval mode (loaded from a checkpoint path: with its normalisation settings)."""
    if isinstance(model, (str, os.PathLike)):
        model, meta = load_checkpoint(model, with_metadata=True)
        normalize = normalize or meta.get("normalize")
    return copy.deepcopy(unwrap(model)).eval(), normalize


def _plane_graph(model_d, image_d, z: int, *, num_classes: int, chunk: tuple[int, int], axes, value_range, grid,
                 batch_size, tta, device, nan_to_num):
    """Plane ``z`` as a block array: one task per output chunk of ``chunk`` pixels (whole tiles)."""
    H, W = grid.shape
    rows = []
    for y0 in range(0, H, chunk[0]):
        row = []
        for x0 in range(0, W, chunk[1]):
            box = (y0, min(H, y0 + chunk[0]), x0, min(W, x0 + chunk[1]))
            task = dask.delayed(_predict_block, pure=True)(
                model_d, image_d, axes, value_range, grid, z, box, batch_size, tta, device, nan_to_num)
            row.append(da.from_delayed(task, shape=(num_classes, box[1] - y0, box[3] - x0), dtype=np.float32))
        rows.append(row)
    return da.block(rows)

"""Out-of-core prediction: image file in, probability / mask / instance-label file out.

The input is opened without loading it (TIFF and BigTIFF through tifffile: a
memory map when the data are stored uncompressed and contiguous, tifffile's
zarr store for tiled or compressed files; zarr; npy as a memory map; PNG and
JPEG, which cannot be read in parts, are loaded).  It is normalised with the
checkpoint's settings (``metadata["normalize"]``), the range computed once on a
subsample of the whole image so that every tile gets the same mapping.  Rows
of tiles are predicted and written as they finish (TIFF tiles or zarr chunks),
so memory holds a row of tiles, not the image.  Every output is written to a
temporary name beside the target and renamed when complete: an error leaves
nothing at the target path, and an existing file is only replaced with
``overwrite=True``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import tifffile
import zarr

from unet.checkpoint import load_checkpoint
from unet.data.normalize import DEFAULT_NORMALIZE, count_nonfinite, intensity_ranges
from unet.errors import InputFileError, UserError, warn
from unet.inference.labels import StripLabeller
from unet.inference.tiling import (
    ImageSource,
    eval_mode,
    make_grid,
    make_progress,
    parse_axes,
    predict_strips,
    unwrap,
    warn_if_tile_dependent,
)
from unet.io import atomic_path, read_image, write_image

OUTPUTS = ("prob", "mask", "labels")
PROB_DTYPES = ("float32", "float16", "uint8")
#: suffixes written tile by tile; .png and .npy outputs are assembled in memory (small images)
STREAM_SUFFIXES = (".tif", ".tiff", ".zarr")
OUTPUT_SUFFIXES = STREAM_SUFFIXES + (".png", ".npy")
INPUT_SUFFIXES = (".tif", ".tiff", ".zarr", ".npy", ".png", ".jpg", ".jpeg", ".bmp")
#: TIFF tile edge (a multiple of 16, as TIFF requires) and fast zlib compression
TIFF_TILE = 256
TIFF_COMPRESSION = ("zlib", 1)
#: mask value of foreground pixels (the ISBI 2012 labels use 255 for cells)
MASK_VALUE = 255
#: key of the TIFF description / zarr attribute naming what ``predict_file`` wrote (one of :data:`OUTPUTS`)
OUTPUT_TAG = "unet_output"


def read_output_tag(path) -> str | None:
    """What ``predict_file`` wrote to ``path`` (``"prob"``, ``"mask"``, ``"labels"``), or None if untagged."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:
                meta = tif.shaped_metadata or ()
            kind = meta[0].get(OUTPUT_TAG) if meta else None
        elif path.suffix.lower() == ".zarr":
            kind = zarr.open_array(str(path), mode="r").attrs.get(OUTPUT_TAG)
        else:
            return None
    except Exception:  # unreadable files are reported by the reader, not here
        return None
    return kind if kind in OUTPUTS else None


# --------------------------------------------------------------------------- input


class MappedArray:
    """Uncompressed pixels in a file (plain TIFF, npy), read by slicing without keeping them mapped.

    A long-lived ``numpy.memmap`` counts every page it has touched in the
    process's resident memory until the end; mapping the file anew for each
    read and copying the window out keeps the resident set at the window.
    """

    def __init__(self, path, dtype, shape, offset: int):
        self.path, self.dtype, self.shape, self.offset = str(path), np.dtype(dtype), tuple(shape), int(offset)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape))

    def __getitem__(self, index):
        mm = np.memmap(self.path, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)
        try:
            return np.array(mm[index])
        finally:
            mm._mmap.close()
            del mm

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out if dtype is None else out.astype(dtype)


def _open_tiff(path: Path):
    try:
        tif = tifffile.TiffFile(path)
    except Exception as err:
        raise InputFileError(path, f"not a readable TIFF ({type(err).__name__}: {err})") from err
    try:
        if not tif.series:
            raise InputFileError(path, "TIFF contains no image")
        series = tif.series[0]
        size = path.stat().st_size
        for page in tif.pages:
            for off, count in zip(page.dataoffsets, page.databytecounts):
                if off + count > size:
                    raise InputFileError(path, "TIFF is truncated: image data extend beyond the end of the file")
        hint = series.axes
        if series.dataoffset is not None and not any(p.compression != 1 for p in tif.pages[:1]):
            dtype = np.dtype(series.dtype).newbyteorder(tif.byteorder)
            array = MappedArray(path, dtype, series.shape, series.dataoffset)
            tif.close()
        else:
            array = zarr.open(series.aszarr(), mode="r")
    except InputFileError:
        tif.close()
        raise
    except Exception as err:
        tif.close()
        raise InputFileError(path, f"not a readable TIFF ({type(err).__name__}: {err})") from err
    return array, hint


def open_image(path, *, axes: str | None = None, in_channels: int = 1):
    """Open an image for reading in parts.

    Returns
    -------
    array : array_like
        numpy memmap, zarr array or (PNG/JPEG) numpy array.
    axes : str
        ``axes`` if given, else inferred from the shape: (H, W) "YX"; a last
        axis of at most 4 (RGB) "YXC"; (C, H, W) "CYX" when C equals the
        model's ``in_channels`` > 1; otherwise a stack "ZYX" (4-D: "ZYXC"/"ZCYX").

    Raises
    ------
    InputFileError
        Missing, empty, corrupt or truncated file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise InputFileError(path, "no such file")
    if suffix not in INPUT_SUFFIXES:
        raise InputFileError(path, f"unknown image type {suffix!r} (expected one of {', '.join(INPUT_SUFFIXES)})")
    if suffix != ".zarr" and path.stat().st_size == 0:
        raise InputFileError(path, "file is empty")
    hint = None
    if suffix in (".tif", ".tiff"):
        array, hint = _open_tiff(path)
    elif suffix == ".zarr":
        try:
            array = zarr.open_array(str(path), mode="r")
        except Exception as err:
            raise InputFileError(path, f"not a readable zarr array ({type(err).__name__}: {err})") from err
    elif suffix == ".npy":
        try:
            mm = np.load(path, mmap_mode="r", allow_pickle=False)
            array = MappedArray(path, mm.dtype, mm.shape, mm.offset) if mm.flags.c_contiguous else mm
        except Exception as err:
            raise InputFileError(path, f"not a readable npy file ({type(err).__name__}: {err})") from err
    else:
        array = read_image(path)
    if 0 in tuple(array.shape):
        raise InputFileError(path, f"image is empty (shape {tuple(array.shape)})")
    if np.dtype(array.dtype).kind not in "biuf":
        raise InputFileError(path, f"unsupported pixel type {array.dtype}")
    try:
        axes = parse_axes(array.shape, axes or None, in_channels, planes_first=True,
                          samples_last=bool(hint) and hint.endswith("S"))
    except UserError as err:
        raise InputFileError(path, str(err)) from err
    return array, axes


# --------------------------------------------------------------------------- output


def _output_path_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise UserError(f"{path}: unsupported output type {suffix!r} (use {', '.join(OUTPUT_SUFFIXES)})")
    return suffix


def _tiff_tiles(strips: Iterator[np.ndarray], width: int, tile: int, dtype) -> Iterator[np.ndarray]:
    """Cut rows arriving in strips of any height into TIFF tiles, in TIFF order (edge tiles zero-padded).

    At most one row of TIFF tiles is copied; the strips themselves are only sliced.
    """
    held = np.zeros((0, width), dtype)  # rows waiting for a full row of TIFF tiles (< tile rows)

    def emit(rows):
        for x in range(0, width, tile):
            t = np.zeros((tile, tile), dtype)
            part = rows[:, x : x + tile]
            t[: part.shape[0], : part.shape[1]] = part
            yield t

    for rows in strips:
        rows = rows.astype(dtype, copy=False)
        start = 0
        if len(held):
            start = min(tile - len(held), len(rows))
            held = np.concatenate([held, rows[:start]])
            if len(held) < tile:
                continue
            yield from emit(held)
            held = np.zeros((0, width), dtype)
        while len(rows) - start >= tile:
            yield from emit(rows[start : start + tile])
            start += tile
        if start < len(rows):
            held = rows[start:].copy()
    if len(held):
        yield from emit(held)


def _write_stream(path: Path, planes, shape: tuple, dtype, *, overwrite: bool, on_ready=None,
                  kind: str | None = None) -> None:
    """Write ``planes`` (an iterator of per-plane iterators of row strips) to ``path`` atomically.

    ``shape`` is the output's shape ((H, W) or (Z, H, W)); ``on_ready`` is
    called once the target is known to be writable, before any strip is pulled.
    ``kind`` (``"prob"``, ``"mask"``, ``"labels"``) is recorded in the TIFF
    description / zarr attributes as ``unet_output`` (:data:`OUTPUT_TAG`), so
    ``unet evaluate`` knows an 8-bit probability map from instance labels.
    """
    suffix = _output_path_kind(path)
    dtype = np.dtype(dtype)
    H, W = shape[-2:]
    if suffix in (".tif", ".tiff"):
        with atomic_path(path, overwrite=overwrite) as tmp:
            if on_ready:
                on_ready(tmp)
            big = int(np.prod(shape)) * dtype.itemsize > 2**31  # classic TIFF offsets are 32-bit
            tiles = (t for plane in planes for t in _tiff_tiles(plane, W, TIFF_TILE, dtype))
            with tifffile.TiffWriter(tmp, bigtiff=big) as tw:
                tw.write(tiles, shape=shape, dtype=dtype, tile=(TIFF_TILE, TIFF_TILE), photometric="minisblack",
                         compression=TIFF_COMPRESSION[0], compressionargs={"level": TIFF_COMPRESSION[1]},
                         metadata={"axes": "ZYX" if len(shape) == 3 else "YX",
                                   **({OUTPUT_TAG: kind} if kind else {})})
    elif suffix == ".zarr":
        with atomic_path(path, overwrite=overwrite, folder=True) as tmp:
            if on_ready:
                on_ready(tmp)
            chunks = (1,) * (len(shape) - 2) + (min(H, 512), min(W, 512))
            arr = zarr.open_array(str(tmp), mode="w", shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
            if kind:
                arr.attrs[OUTPUT_TAG] = kind
            for z, plane in enumerate(planes):
                y = 0
                for rows in plane:
                    arr[(z,) * (len(shape) - 2) + (slice(y, y + len(rows)),)] = rows
                    y += len(rows)
    else:  # .png / .npy: assembled in memory
        if path.exists() and not overwrite:
            raise UserError(f"{path}: already exists (pass --overwrite / overwrite=True to replace it)")
        if on_ready:
            on_ready(None)
        out = np.stack([np.concatenate(list(plane)) for plane in planes]).astype(dtype, copy=False)
        write_image(path, out.reshape(shape), overwrite=overwrite)


# --------------------------------------------------------------------------- prediction


def check_options(*, threshold: float = 0.5, min_size: int = 0) -> None:
    """:class:`UserError` for a threshold outside [0, 1] (or NaN) or a negative ``min_size``."""
    if not 0 <= threshold <= 1:  # also False for NaN
        raise UserError(f"threshold must be a probability in [0, 1], got {threshold}")
    if min_size < 0:
        raise UserError(f"min_size must be >= 0 pixels, got {min_size}")


def check_finite(array, axes: str, path, *, nan_to_num: bool = False) -> int:
    """Count NaN/infinite pixels; an :class:`InputFileError` naming ``path`` and the count unless ``nan_to_num``."""
    bad = count_nonfinite(array, axes)
    if bad and not nan_to_num:
        raise InputFileError(path, f"{bad} of {int(np.prod(array.shape))} pixels are NaN or infinite (the prediction "
                                   "would be NaN); pass --nan-to-num / nan_to_num=True to predict them as the "
                                   "darkest value")
    return bad


def _load(checkpoint_or_model, normalize):
    if isinstance(checkpoint_or_model, (str, os.PathLike)):
        model, meta = load_checkpoint(checkpoint_or_model, with_metadata=True)
        settings = normalize or meta.get("normalize") or DEFAULT_NORMALIZE
    else:
        model, settings = unwrap(checkpoint_or_model), normalize or DEFAULT_NORMALIZE
    return model, dict(settings)


def foreground(probs: np.ndarray) -> np.ndarray:
    """Foreground probability from class probabilities (K, ...): class 1 for two classes, else 1 - background."""
    return probs[1] if probs.shape[0] == 2 else 1.0 - probs[0]


def _to_dtype(p: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint8":
        return np.round(np.clip(p, 0, 1) * 255).astype(np.uint8)
    return p.astype(dtype, copy=False)


def predict_file(checkpoint_or_model, input_path, output_path, *, output: str = "prob", tile_size=None,
                 tta: bool = False, overwrite: bool = False, threshold: float = 0.5, min_size: int = 0,
                 dtype: str = "float32", batch_size: int = 1, memory_limit=None, device=None,
                 axes: str | None = None, normalize: dict | None = None, margin: int | None = None,
                 progress=False, nan_to_num: bool = False) -> Path:
    """Predict an image file of any size, out of core, into a TIFF, zarr, PNG or npy file.

    Parameters
    ----------
    checkpoint_or_model : path or torch.nn.Module
        A checkpoint (its ``metadata["normalize"]`` settings are used) or a model
        (then ``normalize`` or :data:`unet.data.normalize.DEFAULT_NORMALIZE`).
    input_path : path
        TIFF/BigTIFF (tiled, compressed or plain), zarr, npy, PNG/JPEG.  2-D
        images, channels and stacks (predicted slice by slice; see :func:`open_image`).
    output_path : path
        ``.tif``/``.tiff`` or ``.zarr`` (written tile by tile) or ``.png``/``.npy``
        (assembled in memory).  Same height/width (and planes) as the input.
    output : {"prob", "mask", "labels"}
        Foreground probability (``dtype``: float32, float16 or uint8 scaled to
        0..255); binary mask (uint8, 255 where the probability > ``threshold``,
        strictly, the convention of the metrics and of the ISBI challenge code);
        instance labels (uint32 connected components of the mask, 4-connected,
        components smaller than ``min_size`` pixels removed, consistent across
        tiles; planes of a stack labelled separately).
    tile_size, tta, batch_size, memory_limit, device, margin
        As for :func:`unet.inference.predict_tiled`.
    overwrite : bool
        Replace an existing output (otherwise :class:`UserError`).
    progress : bool
        tqdm bar over tiles.
    nan_to_num : bool
        Float images are checked for NaN/infinite pixels first (one pass over
        the file), which would make the whole output NaN: an error naming the
        count, or with ``nan_to_num`` they are predicted as 0 after
        normalisation (+inf as 1), the range computed on the finite pixels.

    Returns
    -------
    Path
        ``output_path``; nothing exists there unless it is complete.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    _check_request(input_path, output_path, output=output, dtype=dtype, threshold=threshold, min_size=min_size,
                   overwrite=overwrite)
    model, settings = _load(checkpoint_or_model, normalize)
    source = _open_source(input_path, model, settings, axes=axes, nan_to_num=nan_to_num)
    grid = make_grid(model, source.plane_shape, tile_size=tile_size, memory_limit=memory_limit,
                     batch_size=batch_size, margin=margin)
    warn_if_tile_dependent(model, grid, name=str(input_path))
    bar = make_progress(progress, grid.num_tiles * source.num_planes, input_path.name)

    def probs(z):
        return _foreground_strips(model, source, grid, z, batch_size=batch_size, tta=tta, device=device, bar=bar)

    try:
        with eval_mode(model):
            _write_output(output_path, probs, source, output=output, dtype=dtype, threshold=threshold,
                          min_size=min_size, overwrite=overwrite)
    finally:
        if bar is not None:
            bar.close()
    if source.seen_range is not None and source.seen_range[0] == source.seen_range[1]:
        warn(f"{input_path}: the image is constant (every pixel is {source.seen_range[0]:g}): "
             "the prediction carries no information")
    return output_path


def _check_request(input_path: Path, output_path: Path, *, output: str, dtype: str, threshold: float,
                   min_size: int, overwrite: bool) -> None:
    """Refuse bad options and an output that cannot be written before anything is predicted."""
    if output not in OUTPUTS:
        raise UserError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    if dtype not in PROB_DTYPES:
        raise UserError(f"dtype must be one of {', '.join(PROB_DTYPES)}, got {dtype!r}")
    check_options(threshold=threshold, min_size=min_size)
    if _output_path_kind(output_path) == ".png":  # checked now, not after the whole prediction
        kind = {"prob": f"probabilities of dtype {dtype}", "labels": "instance labels (uint32)"}.get(output)
        if kind and not (output == "prob" and dtype == "uint8"):
            raise UserError(f"{output_path}: PNG holds 8- or 16-bit integers, not {kind}; use .tif, .zarr or .npy"
                            + (", or --dtype uint8" if output == "prob" else ""))
    if output_path.exists() and not overwrite:
        raise UserError(f"{output_path}: already exists (pass --overwrite / overwrite=True to replace it)")
    if output_path.resolve() == input_path.resolve():
        raise UserError(f"{output_path}: the output would replace the input")


def _open_source(input_path: Path, model, settings: dict, *, axes: str | None, nan_to_num: bool) -> ImageSource:
    """Open the input for reading in parts, check it against the model, and fix its normalisation range."""
    in_channels = getattr(model, "in_channels", 1)
    array, axes = open_image(input_path, axes=axes, in_channels=in_channels)
    source = ImageSource(array, axes, name=str(input_path), nan_to_num=nan_to_num)
    if source.channels != in_channels:
        raise InputFileError(input_path, f"has {source.channels} channel(s) (axes {axes}, shape "
                                         f"{tuple(array.shape)}), the model expects {in_channels}")
    norm_keys = {k: settings[k] for k in ("mode", "low", "high") if k in settings}
    try:
        check_finite(array, axes, input_path, nan_to_num=nan_to_num)
    except UserError:
        raise
    except Exception as err:  # decoding errors of compressed data surface on first read
        raise InputFileError(input_path, f"cannot read image data ({type(err).__name__}: {err})") from err
    try:
        source.value_range = intensity_ranges(array, axes, **norm_keys)  # per channel of each plane
    except ValueError as err:
        raise UserError(f"normalisation settings {settings}: {err}") from err
    except Exception as err:  # decoding errors of compressed data surface on first read
        raise InputFileError(input_path, f"cannot read image data ({type(err).__name__}: {err})") from err
    return source


def _foreground_strips(model, source: ImageSource, grid, z: int, *, batch_size: int, tta: bool, device,
                       bar) -> Iterator[np.ndarray]:
    """Foreground probability of plane ``z``, strip by strip."""
    # only the foreground is kept per tile: the strip buffers hold one map, not num_classes
    for _, strip in predict_strips(model, source, grid, plane=z, batch_size=batch_size, tta=tta, device=device,
                                   progress=bar, reduce=lambda p: foreground(p)[None], num_outputs=1):
        yield strip[0]


def _write_output(path: Path, probs, source: ImageSource, *, output: str, dtype: str, threshold: float,
                  min_size: int, overwrite: bool) -> None:
    """Write what ``output`` asks for from the strips ``probs(z)`` of each plane."""
    shape = ((source.num_planes,) if source.stack_axis else ()) + source.plane_shape
    planes = range(source.num_planes)
    if output == "prob":
        _write_stream(path, ((_to_dtype(p, dtype) for p in probs(z)) for z in planes), shape, dtype,
                      overwrite=overwrite, kind="prob")
    elif output == "mask":
        _write_stream(path, (((p > threshold).astype(np.uint8) * MASK_VALUE for p in probs(z)) for z in planes),
                      shape, np.uint8, overwrite=overwrite, kind="mask")
    else:
        _write_labels(path, probs, source.num_planes, shape, threshold=threshold, min_size=min_size,
                      overwrite=overwrite)


def _write_labels(path: Path, probs, num_planes: int, shape, *, threshold: float, min_size: int, overwrite: bool):
    """Two passes per plane: provisional labels of each strip saved to a temporary folder, then relabelled."""

    def planes(tmpdir: Path):
        for z in range(num_planes):
            labeller, files = StripLabeller(), []
            for i, p in enumerate(probs(z)):
                f = tmpdir / f"z{z}_s{i}.npy"
                np.save(f, labeller.add(p > threshold))
                files.append(f)
            lut = labeller.lookup(min_size=min_size)

            def strips(files=files, lut=lut):
                for f in files:
                    lab = np.load(f)
                    f.unlink()
                    yield lut[lab]

            yield strips()

    with tempfile.TemporaryDirectory(prefix=".unet-labels-", dir=_temp_parent(path)) as tmp:
        _write_stream(path, planes(Path(tmp)), shape, np.uint32, overwrite=overwrite, kind="labels")


def _temp_parent(path: Path) -> str | None:
    parent = path.parent if str(path.parent) else Path(".")
    return str(parent) if parent.is_dir() and os.access(parent, os.W_OK) else None

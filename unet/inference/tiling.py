"""Overlap-tile prediction of arbitrarily large images (paper Sec. 2, Fig. 2).

"This strategy allows the seamless segmentation of arbitrarily large images by
an overlap-tile strategy (see Figure 2).  To predict the pixels in the border
region of the image, the missing context is extrapolated by mirroring the
input image." (Ronneberger et al. 2015, Sec. 2)

How the image is cut
--------------------
*Output tiles* of ``tile`` pixels partition the image.  For a valid-padded
U-Net each output tile is predicted from an *input tile* that adds the network's
halo (92 px per side for the paper's net) of context; context beyond the image
border is the image mirrored with :data:`MIRROR_MODE` (a numpy pad mode).
Because every tile origin lies on the same 2**depth grid (the 2x2 poolings see
the same pixel pairs), a valid network's prediction of a pixel is the same in
every tile that contains it: the result does not depend on the tile size.

Same-padded networks and the FCN see zero padding at every tile border, so
their tiles overlap by ``2 * margin`` pixels and overlapping predictions are
averaged with a smooth (squared sine) window that sums to one over the overlap.
This is approximate: near tile borders the prediction differs from a
whole-image pass (the test suite measures by how much).

Everything here works on one 2-D plane at a time of an :class:`ImageSource`,
which reads windows from any array-like (numpy, memmap, zarr, tifffile's zarr
store) so that images larger than memory are never loaded whole: rows of
tiles are predicted and emitted as *strips* (:func:`predict_strips`).
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from unet.data.normalize import apply_ranges, count_nonfinite, intensity_ranges, replace_nonfinite
from unet.errors import InputFileError, UserError
from unet.models.geometry import halo, input_size_for_output
from unet.models.seamless import ADVICE, tile_dependence

# One mirroring rule (paper Fig. 2) for training tiles and prediction tiles, so that both see the
# same border; unet.mirror needs only numpy (no torch Dataset machinery).
from unet.mirror import MIRROR_MODE, mirror_indices  # noqa: F401  (re-exported by unet.inference)
from unet.models import unwrap

#: default memory budget for the network's working set (activations of one batch of tiles)
DEFAULT_MEMORY_LIMIT = 1 << 30
#: letters of the one stack axis an image may have (planes predicted one by one): Z (depth), T (time),
#: and tifffile's Q (unknown) and I (image sequence); besides it an image has Y, X and optionally C
STACK_AXIS_LETTERS = "ZTQI"


# --------------------------------------------------------------------------- geometry


def _step(model) -> int:
    """Tile origins are multiples of 2**depth so every pooling sees the same pixel pairs."""
    depth = getattr(model, "depth", 0)
    return 2**depth if isinstance(depth, int) and depth > 0 else 1


def _is_valid(model) -> bool:
    return getattr(model, "padding", "same") == "valid"


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def context_radius(model) -> int:
    """Pixels of context per side that a prediction depends on.

    For a valid U-Net this is its halo (92 px, paper Fig. 1).  A same-padded
    network of the same depth sees the same receptive field, so the same
    formula gives the default overlap margin for it.
    """
    if _is_valid(model):
        return halo(model)
    depth = getattr(model, "depth", 4)
    return 2 * (3 * 2**depth - 2)


def parse_memory(value) -> int | None:
    """Bytes from ``1073741824``, ``"1G"``, ``"512M"``, ``"1.5GB"``, ``"2GiB"`` (None stays None)."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        n = int(value) if value == value else 0  # NaN: refused below
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(value))
        if not m:
            raise UserError(f"cannot read memory size {value!r} (examples: 800M, 2G, 1.5GB)")
        scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[m.group(2).lower()]
        n = int(float(m.group(1)) * scale)
    if n <= 0:
        raise UserError(f"memory limit must be positive, got {value!r} (examples: 800M, 2G, 1.5GB)")
    return n


def bytes_per_input_pixel(model) -> int:
    """Rough peak memory per input pixel of one tile in a forward pass (float32).

    At the highest resolution of a U-Net the skip, the up-convolution output,
    their concatenation and the next convolution output are alive together;
    measured with ``ru_maxrss`` on CPU (torch 2.13): 1660 B/px for the paper's
    net (64 channels), 490 for 16 channels, 364 for 8.  The formula
    ``4 * (7 * c0 + 40 + ...)`` stays 10-30 % above these.
    """
    # exported models (unet.export.runtime) are no nn.Module; they state their first level's width
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)] if isinstance(model, nn.Module) else []
    c0 = convs[0].out_channels if convs else getattr(model, "base_channels", 64)
    cin = getattr(model, "in_channels", 1)
    k = getattr(model, "num_classes", 2)
    return 4 * (7 * c0 + 40 + cin + 4 * k)


@dataclass(frozen=True)
class TileGrid:
    """How one plane of ``shape`` is cut into tiles (all sizes are (y, x) pairs).

    Attributes
    ----------
    shape : image height and width.
    tile : output tile step; output tiles at multiples of it partition the image.
    input : network input tile size.
    context : input pixels before a tile's first output pixel (halo or margin).
    kept : size of the part of each network output that is used.
    kept_offset : the kept part starts ``kept_offset`` pixels before the tile origin
        (0 for valid nets; the overlap margin for same-padded nets).
    blend : whether overlapping kept parts are averaged with :func:`blend_window`.
    """

    shape: tuple[int, int]
    tile: tuple[int, int]
    input: tuple[int, int]
    context: tuple[int, int]
    kept: tuple[int, int]
    kept_offset: tuple[int, int]
    blend: bool

    def origins(self, axis: int) -> range:
        return range(0, self.shape[axis], self.tile[axis])

    @property
    def num_tiles(self) -> int:
        return len(self.origins(0)) * len(self.origins(1))


def _input_for(model, tile: int, margin: int) -> int:
    return input_size_for_output(model, tile) if _is_valid(model) else tile + 2 * margin


def choose_tile_size(model, shape: Sequence[int], *, memory_limit=None, batch_size: int = 1,
                     margin: int | None = None) -> tuple[int, int]:
    """Output tile size (y, x) from a memory budget (``memory_limit``, default 1 GiB).

    A batch of input tiles may hold ``memory_limit / bytes_per_input_pixel``
    pixels (:func:`bytes_per_input_pixel`).  Among the ways of cutting the
    image into ``ny`` x ``nx`` equal tiles (each a multiple of 2**depth) whose
    input tiles fit, the one computing the fewest input pixels (tiles plus
    their halos) wins: large, possibly rectangular tiles, little work beyond
    the image border.
    """
    limit = parse_memory(memory_limit) or DEFAULT_MEMORY_LIMIT
    step = _step(model)
    m = 0 if _is_valid(model) else _round_up(context_radius(model) if margin is None else int(margin), step)
    budget = limit / (bytes_per_input_pixel(model) * max(1, batch_size))
    H, W = (int(s) for s in shape)
    r = 2 * (context_radius(model) if _is_valid(model) else m)
    best, seen = None, set()
    for ny in range(1, -(-H // step) + 1):
        ty = _round_up(-(-H // ny), step)
        if ty in seen:
            continue
        seen.add(ty)
        sy = _input_for(model, ty, m)
        tx_max = int(budget // sy) - r  # output width whose input fits next to sy
        tx_max = tx_max // step * step
        while tx_max >= step and _input_for(model, tx_max, m) * sy > budget:
            tx_max -= step
        if tx_max < step:
            continue
        nx = -(-W // tx_max)
        tx = _round_up(-(-W // nx), step)
        cost = ny * nx * sy * _input_for(model, tx, m)
        if best is None or cost < best[0]:
            best = (cost, (ty, tx))
    return best[1] if best else (step, step)


def rounded_tile_size(model, tile_size) -> tuple[int, int]:
    """``tile_size`` (int or (y, x)) rounded down to a multiple of 2**depth.

    Tile origins must lie on the pooling grid (multiples of 2**depth) for the
    tiles to see the pixel pairs the whole-image network sees; smaller tiles
    are an error rather than silently enlarged."""
    step = _step(model)
    ts = (tile_size, tile_size) if np.isscalar(tile_size) else tuple(tile_size)
    if len(ts) != 2 or any(int(t) != t or int(t) < step for t in ts):
        raise UserError(f"tile size must be a whole number of pixels >= {step} (2**depth for this "
                        f"depth-{getattr(model, 'depth', 0)} network), got {tile_size}")
    return tuple(int(t) // step * step for t in ts)


def make_grid(model, shape: Sequence[int], *, tile_size=None, memory_limit=None, batch_size: int = 1,
              margin: int | None = None) -> TileGrid:
    """The :class:`TileGrid` for a plane of ``shape`` (height, width).

    Parameters
    ----------
    tile_size : int or (int, int), optional
        Output tile size, at least 2**depth (else :class:`UserError`); rounded
        down to a multiple of 2**depth (the pooling grid, paper Sec. 3; see
        :func:`rounded_tile_size`) and capped at the image.  Default: from the
        memory budget (:func:`choose_tile_size`).
    batch_size : int
        Tiles per forward pass, >= 1.
    margin : int, optional
        Same-padded nets only: overlap per side (default: the receptive-field
        radius, :func:`context_radius`, rounded up to 2**depth).
    """
    shape = (int(shape[0]), int(shape[1]))
    if min(shape) < 1:
        raise UserError(f"image is empty (shape {shape})")
    step = _step(model)
    if not int(batch_size) >= 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    if memory_limit is not None:
        parse_memory(memory_limit)  # refuses 0 and nonsense before any work
    if tile_size is None:
        tile = choose_tile_size(model, shape, memory_limit=memory_limit, batch_size=batch_size, margin=margin)
    else:
        tile = rounded_tile_size(model, tile_size)
    tile = tuple(min(t, _round_up(s, step)) for t, s in zip(tile, shape))
    if _is_valid(model):
        h = halo(model)
        inp = tuple(input_size_for_output(model, t) for t in tile)
        return TileGrid(shape, tile, inp, (h, h), tile, (0, 0), blend=False)
    m = _round_up(context_radius(model) if margin is None else int(margin), step)
    inp = tuple(t + 2 * m for t in tile)
    return TileGrid(shape, tile, inp, (m, m), inp, (m, m), blend=True)


class TileDependenceWarning(UserWarning):
    """The image is split into several tiles and the model's output depends on the tile."""


def warn_if_tile_dependent(model, grid: TileGrid, *, name: str = "image", stacklevel: int = 3) -> str | None:
    """Warn once (:class:`TileDependenceWarning`) if ``grid`` has several tiles and ``model`` is not seamless.

    A one-tile prediction is what the model computes on the whole image, so
    only a split image warns.  Returns the warning text (None if no warning).
    See :func:`unet.models.seamless.tile_dependence`.
    """
    if grid.num_tiles <= 1:
        return None
    reason = tile_dependence(model)
    if reason is None:
        return None
    msg = (f"{name} is split into {grid.num_tiles} tiles of {grid.tile[0]}x{grid.tile[1]} px and this model's "
           f"output depends on the tile ({reason}): the result depends on the tile size. To avoid it, {ADVICE}.")
    warnings.warn(msg, TileDependenceWarning, stacklevel=stacklevel)
    return msg


def blend_window(length: int, margin: int) -> np.ndarray:
    """1-D weights over a kept prediction of ``length`` px with ``margin`` px of overlap per side.

    Adjacent tiles overlap by ``2 * margin``; there one tile's weight rises as
    sin^2 while its neighbour's falls as cos^2, so they sum to one and the
    seam is smooth.  Weights are > 0 everywhere so border tiles normalise.
    """
    w = np.ones(length, dtype=np.float64)
    if margin > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(2 * margin) + 0.5) / (2 * margin)) ** 2
        n = min(2 * margin, length)
        w[:n] = np.minimum(w[:n], ramp[:n])
        w[length - n :] = np.minimum(w[length - n :], ramp[:n][::-1])
    return w.astype(np.float32)


# --------------------------------------------------------------------------- image access


def infer_axes(shape: Sequence[int], in_channels: int, *, planes_first: bool = False,
               samples_last: bool = False) -> str:
    """The axes of an image of ``shape`` for a model with ``in_channels``: the package's one guessing rule.

    (H, W) is "YX".  A 3-D image is "YXC" when its last axis holds colour
    samples (``samples_last``: a TIFF's "S" axis) or is at most 4 and smaller
    than H and W; "CYX" when its first axis equals the model's ``in_channels``
    > 1.  Otherwise the extra axis is a stack of planes ("ZYX"; 4-D: "ZYXC" or
    "ZCYX" by where ``in_channels`` fits) only when ``planes_first`` says so:
    an image *file* (a multi-page TIFF, an npy or zarr file) lists its planes
    first, while an in-memory array of shape (3, H, W) is ambiguous and needs
    explicit axes.
    """
    nd = len(shape)
    if nd == 2:
        return "YX"
    if nd == 3:
        if samples_last or (shape[-1] <= 4 and shape[-1] < min(shape[:2])):
            return "YXC"
        if in_channels > 1 and shape[0] == in_channels:
            return "CYX"
        if planes_first:
            return "ZYX"
    if nd == 4 and planes_first:
        if samples_last or shape[-1] == in_channels:
            return "ZYXC"
        if shape[1] == in_channels:
            return "ZCYX"
    raise UserError(
        f"cannot tell the axes of an image of shape {tuple(shape)}: pass axes (e.g. 'ZYX' for a stack "
        "predicted slice by slice, 'CYX' or 'YXC' for channels, 'ZCYX')")


def parse_axes(shape: Sequence[int], axes: str | None, in_channels: int, *, planes_first: bool = False,
               samples_last: bool = False) -> str:
    """Check ``axes`` of an image of ``shape``, or infer them (:func:`infer_axes`, same keywords).

    Accepted letters: one stack axis (:data:`STACK_AXIS_LETTERS`), C (channels), Y and X.
    """
    ndim = len(shape)
    if axes is None:
        axes = infer_axes(shape, in_channels, planes_first=planes_first, samples_last=samples_last)
    axes = axes.upper()
    stack = STACK_AXIS_LETTERS
    if len(axes) != ndim or len(set(axes)) != ndim or "Y" not in axes or "X" not in axes \
            or any(a not in "CYX" + stack for a in axes) or sum(a in stack for a in axes) > 1:
        raise UserError(f"axes {axes!r} do not describe an image of shape {tuple(shape)} "
                        "(use Y, X, optionally C and one stack axis Z/T)")
    if axes.index("Y") > axes.index("X"):
        raise UserError(f"axes {axes!r}: Y must come before X")
    return axes


class ImageSource:
    """Read windows of the 2-D planes of an image without loading it whole.

    Parameters
    ----------
    array : array_like
        numpy array, memmap, zarr array or anything sliceable with ``shape``.
    axes : str
        See :func:`parse_axes`.
    value_range : (float, float) or array_like, optional
        Grey values mapped to 0 and 1: one ``(low, high)`` pair for all planes
        and channels, or ``(planes, channels, 2)`` per channel of each plane
        (:func:`unet.data.normalize.intensity_ranges`, the training rule); the
        same for every window of a plane.  None reads the values as float32.
    """

    def __init__(self, array, axes: str, *, value_range=None, name: str = "image", nan_to_num: bool = False):
        self.array = array
        self.axes = axes
        self.value_range = value_range
        #: NaN/-inf pixels read as 0 and +inf as 1 after normalisation (else they make the output NaN)
        self.nan_to_num = nan_to_num
        self.name = name
        shape = dict(zip(axes, array.shape))
        self.height, self.width = int(shape["Y"]), int(shape["X"])
        self.channels = int(shape.get("C", 1))
        self.stack_axis = next((a for a in axes if a in STACK_AXIS_LETTERS), None)
        self.num_planes = int(shape[self.stack_axis]) if self.stack_axis else 1
        # file-backed arrays (zarr, TIFF stores) decode whole chunks: read each band of rows once
        self.cache_bands = not isinstance(array, np.ndarray)
        self._band = None  # (plane, y0, y1, x0, x1, normalised pixels)
        #: smallest and largest raw value read so far (a constant image predicts nothing; the caller warns)
        self.seen_range: tuple[float, float] | None = None

    @property
    def plane_shape(self) -> tuple[int, int]:
        return self.height, self.width

    def prefetch(self, plane: int, y0: int, y1: int, x0: int, x1: int) -> None:
        """Keep the window ``[y0:y1, x0:x1]`` of ``plane`` for the following reads (file-backed arrays only).

        The band is kept in the file's pixel type (1 byte per pixel for uint8), not as float32.
        """
        if self.cache_bands:
            b = self._band
            if b is None or b[:5] != (plane, y0, y1, x0, x1):
                self._band = None  # free the old band before reading the new one
                self._band = (plane, y0, y1, x0, x1, self._read_raw(plane, y0, y1, x0, x1))

    def read(self, plane: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Window ``[y0:y1, x0:x1]`` of ``plane`` as float32 (C, h, w), normalised."""
        b = self._band
        if b is not None and b[0] == plane and b[1] <= y0 and y1 <= b[2] and b[3] <= x0 and x1 <= b[4]:
            return self._normalise(b[5][:, y0 - b[1] : y1 - b[1], x0 - b[3] : x1 - b[3]], plane)
        return self._normalise(self._read_raw(plane, y0, y1, x0, x1), plane)

    def _normalise(self, box: np.ndarray, plane: int) -> np.ndarray:
        if self.value_range is not None:
            ranges = np.asarray(self.value_range, dtype=np.float64)
            ranges = ranges[plane] if ranges.ndim == 3 else np.broadcast_to(ranges, (self.channels, 2))
            box = apply_ranges(box, ranges)
        else:
            box = np.asarray(box, dtype=np.float32)
        if self.nan_to_num:
            box = replace_nonfinite(np.array(box, dtype=np.float32))
        return box

    def _read_raw(self, plane: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        index, kept = [], []
        for a in self.axes:
            if a == "Y":
                index.append(slice(y0, y1))
            elif a == "X":
                index.append(slice(x0, x1))
            elif a == "C":
                index.append(slice(None))
            else:
                index.append(plane)
                continue
            kept.append(a)
        try:
            box = np.asarray(self.array[tuple(index)])
        except Exception as err:  # decoders of compressed files fail on first read of a bad tile, with many types
            raise InputFileError(self.name, f"cannot read image data ({type(err).__name__}: {err})") from err
        if box.size:
            lo, hi = float(box.min()), float(box.max())
            seen = self.seen_range
            self.seen_range = (lo, hi) if seen is None else (min(seen[0], lo), max(seen[1], hi))
        if "C" in kept:
            return np.moveaxis(box, kept.index("C"), 0)
        return box[None]

    def read_mirrored(self, plane: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Pixels at source indices ``ys`` x ``xs`` (from :func:`mirror_indices`), as (C, len(ys), len(xs))."""
        y0, y1 = int(ys.min()), int(ys.max()) + 1
        x0, x1 = int(xs.min()), int(xs.max()) + 1
        box = self.read(plane, y0, y1, x0, x1)
        if len(ys) != y1 - y0 or ys[0] != y0 or np.any(np.diff(ys) != 1):
            box = box[:, ys - y0]
        if len(xs) != x1 - x0 or xs[0] != x0 or np.any(np.diff(xs) != 1):
            box = box[:, :, xs - x0]
        return box


# --------------------------------------------------------------------------- the network


def _forward(model, x, *, tta: bool):
    """Softmax class probabilities (paper Sec. 3) for a batch; with ``tta`` the mean of the
    probabilities over the 8 flips/rotations by 90 degrees of the input (the dihedral group
    of the square), as the paper averaged predictions over rotated/flipped inputs."""
    if not tta:
        return torch.softmax(model(x), dim=1)
    total = None
    for k in range(4):
        for flip in (False, True):
            xt = x.flip(-1) if flip else x
            y = torch.softmax(model(torch.rot90(xt, k, (-2, -1))), dim=1)
            y = torch.rot90(y, -k, (-2, -1))
            y = y.flip(-1) if flip else y
            total = y if total is None else total + y
    return total / 8


class _Runner:
    """Feeds batches of tiles of one plane to the model and returns the kept predictions."""

    def __init__(self, model, source: ImageSource, grid: TileGrid, *, batch_size: int, tta: bool, device, progress):
        self.model, self.source, self.grid = model, source, grid
        self.batch_size = max(1, int(batch_size))
        self.tta = tta
        # an exported model (unet.export.runtime.ExportedModel: ONNX Runtime, TorchScript) runs a batch itself
        self.predict_batch = getattr(model, "predict_batch", None)
        param = next(model.parameters(), None) if self.predict_batch is None else None
        self.device = torch.device(device) if device is not None else (param.device if param is not None else "cpu")
        self.dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        self.progress = progress
        in_ch = getattr(model, "in_channels", None)
        if in_ch is not None and source.channels != in_ch:
            raise UserError(f"{source.name}: has {source.channels} channel(s), the model expects {in_ch}")
        self.window = None
        if grid.blend:
            wy = blend_window(grid.kept[0], grid.kept_offset[0])
            wx = blend_window(grid.kept[1], grid.kept_offset[1])
            self.window = wy[:, None] * wx[None, :]

    def tiles(self, plane: int, origins: list[tuple[int, int]]) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield ``(ky0, kx0, pred)``: the kept prediction (K, ky, kx) and where it starts in the image."""
        g = self.grid
        H, W = g.shape
        if self.source.cache_bands:
            origins = sorted(origins)
        for i in range(0, len(origins), self.batch_size):
            chunk = origins[i : i + self.batch_size]
            if self.source.cache_bands:
                self._prefetch(plane, origins, chunk)
            batch = np.stack([
                self.source.read_mirrored(
                    plane,
                    mirror_indices(H, ty - g.context[0], g.input[0]),
                    mirror_indices(W, tx - g.context[1], g.input[1]),
                )
                for ty, tx in chunk
            ])
            y = self.run_batch(batch)[:, :, : g.kept[0], : g.kept[1]]
            for (ty, tx), pred in zip(chunk, y):
                yield ty - g.kept_offset[0], tx - g.kept_offset[1], pred
            if self.progress is not None:
                self.progress.update(len(chunk))

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N, K, h, w) of a float32 batch of input tiles (N, C, H, W): the one step
        that differs between the torch model and an exported model's backend."""
        if self.predict_batch is not None:
            return np.asarray(self.predict_batch(batch, tta=self.tta), dtype=np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(device=self.device, dtype=self.dtype)
            return _forward(self.model, x, tta=self.tta).float().cpu().numpy()

    def _prefetch(self, plane, origins, chunk):
        """Read, once, the rows of input that the tile row(s) of ``chunk`` need, across all their columns."""
        g = self.grid
        rows = {ty for ty, _ in chunk}
        cols = [tx for ty, tx in origins if ty in rows]
        ys = np.concatenate([mirror_indices(g.shape[0], ty - g.context[0], g.input[0]) for ty in rows])
        xs = np.concatenate([mirror_indices(g.shape[1], tx - g.context[1], g.input[1]) for tx in (min(cols), max(cols))])
        self.source.prefetch(plane, int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)


class _Accumulator:
    """Rows ``[y0, y1)`` x ``[x0, x1)`` of the prediction, filled by (possibly overlapping) tiles."""

    def __init__(self, num_classes: int, y0: int, y1: int, x0: int, x1: int, blend: bool):
        self.y0, self.y1, self.x0, self.x1 = y0, y1, x0, x1
        self.num = np.zeros((num_classes, y1 - y0, x1 - x0), np.float32)
        self.den = np.zeros((y1 - y0, x1 - x0), np.float32) if blend else None

    def add(self, ky: int, kx: int, pred: np.ndarray, window: np.ndarray | None) -> None:
        a0, a1 = max(ky, self.y0), min(ky + pred.shape[1], self.y1)
        b0, b1 = max(kx, self.x0), min(kx + pred.shape[2], self.x1)
        if a0 >= a1 or b0 >= b1:
            return
        src = (slice(None), slice(a0 - ky, a1 - ky), slice(b0 - kx, b1 - kx))
        dst = (slice(None), slice(a0 - self.y0, a1 - self.y0), slice(b0 - self.x0, b1 - self.x0))
        if self.den is None:  # valid nets: tiles partition the image, copy exactly
            self.num[dst] = pred[src]
        else:
            w = window[src[1:]]
            self.num[dst] += pred[src] * w
            self.den[dst[1:]] += w

    def extend_to(self, y1: int) -> None:
        if y1 > self.y1:
            extra = y1 - self.y1
            self.num = np.concatenate([self.num, np.zeros((self.num.shape[0], extra, self.num.shape[2]), np.float32)], 1)
            if self.den is not None:
                self.den = np.concatenate([self.den, np.zeros((extra, self.den.shape[1]), np.float32)], 0)
            self.y1 = y1

    def pop_until(self, y: int) -> np.ndarray:
        """Remove and return the finished rows ``[self.y0, y)``."""
        n = y - self.y0
        out = self.num[:, :n]
        if self.den is not None:
            out = out / self.den[None, :n]
            self.den = self.den[n:]
        self.num = self.num[:, n:]
        self.y0 = y
        return out


def _num_classes(model) -> int:
    k = getattr(model, "num_classes", None)
    if k is None:
        raise UserError("the model has no 'num_classes' attribute")
    return int(k)


def predict_strips(model, source: ImageSource, grid: TileGrid, *, plane: int = 0, batch_size: int = 1,
                   tta: bool = False, device=None, progress=None, reduce=None,
                   num_outputs: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Predict one plane row of tiles at a time; yield ``(y0, probs)`` strips, top to bottom.

    ``probs`` is float32 (num_classes, h, width) for image rows ``y0 .. y0+h``;
    the strips cover the plane exactly once.  Memory holds one row of tiles,
    never the whole image.  The model must already be in eval mode (see
    :func:`predict_tiled`).  ``reduce`` maps each tile's (num_classes, h, w)
    probabilities to ``num_outputs`` maps before they are stored (e.g. the
    foreground only, halving the strip's memory).
    """
    run = _Runner(model, source, grid, batch_size=batch_size, tta=tta, device=device, progress=progress)
    H, W = grid.shape
    acc = _Accumulator(num_outputs or _num_classes(model), 0, 0, 0, W, grid.blend)
    rows = list(grid.origins(0))
    for r, ty in enumerate(rows):
        acc.extend_to(min(H, ty - grid.kept_offset[0] + grid.kept[0]))
        for ky, kx, pred in run.tiles(plane, [(ty, tx) for tx in grid.origins(1)]):
            acc.add(ky, kx, pred if reduce is None else reduce(pred), run.window)
        done = H if r + 1 == len(rows) else max(acc.y0, rows[r + 1] - grid.kept_offset[0])
        if done > acc.y0:
            y0 = acc.y0
            yield y0, acc.pop_until(done)


def predict_region(model, source: ImageSource, grid: TileGrid, box: tuple[int, int, int, int], *, plane: int = 0,
                   batch_size: int = 1, tta: bool = False, device=None) -> np.ndarray:
    """Probabilities (num_classes, y1-y0, x1-x0) for ``box = (y0, y1, x0, x1)`` of one plane.

    Runs exactly the tiles of ``grid`` whose kept part meets the box, so the
    result equals the same rows/columns of :func:`predict_strips` (used by the
    Dask path, :mod:`unet.inference.distributed`).
    """
    y0, y1, x0, x1 = box
    run = _Runner(model, source, grid, batch_size=batch_size, tta=tta, device=device, progress=None)

    def meeting(axis, lo, hi):
        off, kept = grid.kept_offset[axis], grid.kept[axis]
        return [t for t in grid.origins(axis) if t - off < hi and t - off + kept > lo]

    acc = _Accumulator(_num_classes(model), y0, y1, x0, x1, grid.blend)
    origins = [(ty, tx) for ty in meeting(0, y0, y1) for tx in meeting(1, x0, x1)]
    for ky, kx, pred in run.tiles(plane, origins):
        acc.add(ky, kx, pred, run.window)
    return acc.pop_until(y1)


class eval_mode:
    """Context manager: model in eval mode under ``torch.inference_mode``; previous mode restored."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        self.ctx = torch.inference_mode()
        self.ctx.__enter__()
        return self.model

    def __exit__(self, *exc):
        self.ctx.__exit__(*exc)
        if self.was_training:
            self.model.train(True)
        return False


def make_progress(progress, total: int, desc: str):
    """A tqdm bar when ``progress`` is True (and stderr is a terminal unless forced), else None."""
    if not progress:
        return None
    return tqdm(total=total, desc=desc, unit="tile", leave=False, dynamic_ncols=True,
                disable=None if progress != "always" else False)


def predict_tiled(model, image, *, tile_size=None, batch_size: int = 1, tta: bool = False, device=None,
                  memory_limit=None, progress: bool = False, axes: str | None = None,
                  margin: int | None = None, normalize: dict | None = None) -> np.ndarray:
    """Class probabilities of a whole image by the overlap-tile strategy (paper Fig. 2).

    Parameters
    ----------
    model : torch.nn.Module
        A U-Net or FCN (from :func:`unet.create_model` or a checkpoint).  It is
        run in eval mode under ``torch.inference_mode``; its previous mode is
        restored afterwards.
    image : array_like
        Already normalised, or raw with ``normalize``.  For a one-channel
        model (H, W); for ``in_channels`` C > 1, (C, H, W); stacks need
        ``axes`` (e.g. ``"ZYX"``), planes are predicted one by one.
    tile_size : int or (int, int), optional
        Output tile size (the partition; input tiles add the halo), rounded
        down to a multiple of 2**depth.  Default: chosen from ``memory_limit``
        (:func:`choose_tile_size`).  For valid nets without per-tile
        statistics the result does not depend on it; for others
        (:func:`unet.models.seamless.tile_dependence`) a split image gives a
        :class:`TileDependenceWarning`.
    batch_size : int
        Tiles per forward pass.
    tta : bool
        Average over the 8 flips/rotations by 90 degrees (paper Sec. 3.1 / 4).
    device : torch device, optional
        Default: where the model's parameters are.
    memory_limit : int or str, optional
        Budget for one batch of tiles, e.g. ``"2G"`` (default 1 GiB).
    progress : bool
        Show a tqdm bar over tiles.
    axes : str, optional
        Axes of ``image``, e.g. ``"YX"``, ``"CYX"``, ``"ZYX"``, ``"ZCYX"``.
    margin : int, optional
        Same-padded nets only: overlap per side (see :func:`make_grid`).
    normalize : dict, optional
        Normalise ``image`` first with these settings (``mode``, ``low``,
        ``high``; e.g. a checkpoint's ``metadata["normalize"]``) by the rule of
        training: each channel of each plane on its own
        (:func:`unet.data.normalize.intensity_ranges`).  None: ``image`` is
        already normalised.

    Returns
    -------
    numpy.ndarray
        float32 softmax probabilities: (num_classes, H, W), or
        (planes, num_classes, H, W) for a stack.
    """
    model = unwrap(model)
    arr = image if hasattr(image, "shape") and hasattr(image, "__getitem__") else np.asarray(image)
    if 0 in tuple(arr.shape):
        raise UserError(f"image is empty (shape {tuple(arr.shape)})")
    axes = parse_axes(arr.shape, axes, getattr(model, "in_channels", 1))
    value_range = None
    if normalize is not None:
        value_range = intensity_ranges(arr, axes, **{k: normalize[k] for k in ("mode", "low", "high") if k in normalize})
    bad = count_nonfinite(arr, axes)
    if bad:
        raise UserError(f"image holds {bad} NaN or infinite pixel(s) of {int(np.prod(arr.shape))}: they would make "
                        "the prediction NaN; replace them first (e.g. numpy.nan_to_num)")
    source = ImageSource(arr, axes, value_range=value_range)
    grid = make_grid(model, source.plane_shape, tile_size=tile_size, memory_limit=memory_limit,
                     batch_size=batch_size, margin=margin)
    warn_if_tile_dependent(model, grid)
    k = _num_classes(model)
    out = np.empty((source.num_planes, k, *source.plane_shape), np.float32)
    bar = make_progress(progress, grid.num_tiles * source.num_planes, "predict")
    try:
        with eval_mode(model):
            for z in range(source.num_planes):
                for y0, strip in predict_strips(model, source, grid, plane=z, batch_size=batch_size, tta=tta,
                                                device=device, progress=bar):
                    out[z, :, y0 : y0 + strip.shape[1]] = strip
    finally:
        if bar is not None:
            bar.close()
    return out if source.stack_axis else out[0]


def set_threads_for_cli() -> None:
    """Use every core (the CLI; library calls leave torch's setting alone)."""
    torch.set_num_threads(os.cpu_count() or 1)


def consistency_tile_sizes(model, shape: Sequence[int], *, middle: int = 128) -> list:
    """Output tile sizes that test seamlessness (issue 11): the smallest valid one (2**depth px), the
    multiple of 2**depth nearest ``middle``, and one tile over the whole image (None)."""
    step = _step(model)
    mid = int(round(middle / step)) * step
    return [step] + ([mid] if step < mid < max(shape) else []) + [None]


def tile_consistency(model, image, tile_sizes=None, *, batch_size: int = 8, device=None,
                     axes: str | None = None, normalize: dict | None = None) -> float:
    """Largest absolute difference of the class probabilities of ``image`` between tile sizes.

    The first entry of ``tile_sizes`` is the reference; every other one is
    compared with it.  A seamless model (:func:`unet.models.seamless.tile_dependence`
    is None) gives float32 rounding only, below 1e-4; a model with per-tile
    statistics gives differences up to 1.

    Parameters
    ----------
    model : torch.nn.Module
    image : array_like
        Image, as for :func:`predict_tiled`: normalised, or raw with ``normalize``.
    tile_sizes : sequence of (int or None), optional
        Output tile sizes; None is one tile covering the image.  Default
        :func:`consistency_tile_sizes`: smallest valid, about 128 px, whole image.
    batch_size, device, axes, normalize
        As for :func:`predict_tiled` (``normalize``: a checkpoint's settings
        for a raw ``image``).

    Returns
    -------
    float
        ``max |p_t - p_ref|`` over tile sizes ``t``, classes and pixels.
    """
    arr = np.asarray(image)
    shape = arr.shape[-2:]
    if tile_sizes is None:
        tile_sizes = consistency_tile_sizes(unwrap(model), shape)
    whole = max(shape)
    ref, diff = None, 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TileDependenceWarning)  # measured here, not warned about
        for t in tile_sizes:
            p = predict_tiled(model, arr, tile_size=whole if t is None else t, batch_size=batch_size,
                              device=device, axes=axes, normalize=normalize)
            if ref is None:
                ref = p
            else:
                diff = max(diff, float(np.abs(p - ref).max()))
    return diff


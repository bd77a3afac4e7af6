"""Training tiles for valid networks (paper Sec. 2 and 3, Fig. 2).

A valid (unpadded) U-Net predicts only the centre of its input tile: a
572x572 input gives a 388x388 output, so a training sample is an input tile
*carrying the network's halo* (92 px per side) and the target and weight crop
of the output area.  Beyond the image border the missing context is
extrapolated by mirroring (paper Fig. 2) with the one rule of
:mod:`unet.mirror` (:data:`MIRROR_MODE`, ``"symmetric"``: the border pixel is
repeated), which inference uses too.

Every item of :class:`TileDataset` is a pure function of ``(seed, index)``:
all randomness comes from ``numpy.random.default_rng([seed, index])``, so an
interrupted training resumes exactly by restarting at index ``step *
batch_size`` (:func:`make_loader` ``start=``, the trainer's loader too), and
results do not depend on the number of loader workers.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from unet.data.augment import Augmentation
from unet.data.elastic import spline_coefficients, warp
from unet.data.targets import IGNORE_INDEX, PARTIAL_MARGIN, training_target
from unet.data.weights import GAP_WIDTH, SIGMA, W0, class_weights_from, membrane_skeleton, weight_map
from unet.io import atomic_path
from unet.mirror import MIRROR_MODE, mirror_indices  # noqa: F401  (MIRROR_MODE: re-exported by unet.data)


def extract_tile(array: np.ndarray, top_left, size) -> np.ndarray:
    """Crop ``size`` from the last two axes at ``top_left`` (may lie outside), mirroring beyond the border.

    Equal to cropping ``numpy.pad(array, ..., mode=MIRROR_MODE)`` with enough
    padding, for any offset (the image is mirrored again as often as needed).
    """
    h, w = array.shape[-2:]
    th, tw = (size, size) if np.isscalar(size) else size
    rows = mirror_indices(h, int(top_left[0]), th)
    cols = mirror_indices(w, int(top_left[1]), tw)
    return array[..., rows[:, None], cols[None, :]]


def _pair(size):
    return (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))


class TileDataset(Dataset):
    """Random training tiles with targets and weights (a ``torch.utils.data.Dataset``).

    Parameters
    ----------
    samples : list of :class:`unet.data.loaders.Sample`
        Loaded training images with labels.
    input_size : int or (int, int)
        Network input tile, e.g. 572 (paper Fig. 1).
    output_size : int or (int, int), optional
        Network output for that input (``unet.output_size(model, input_size)``,
        388 for the paper's network); default ``input_size`` (same-padded nets).
    augment : Augmentation, optional
        Default :class:`Augmentation` (paper settings); ``Augmentation.none()`` for validation.
    length : int
        Number of items (tiles); item ``i`` is random but fixed by ``(seed, i)``.
    seed : int
    w0, sigma : float
        Weight map (paper eq. 2; ``w0 = 10``, ``sigma = 5`` px).
    class_weights : (float, float), optional
        ``w_c`` for background and cell; default balanced over all given samples
        (:func:`unet.data.weights.class_weights_from`).
    partial_margin : int
        Background kept around annotated cells in partially annotated frames.
    border : bool
        Separation borders between touching cells in the targets (paper Sec. 3; default True).
    cache_dir : path, optional
        Store each image's target and weight map here (keyed by the labels'
        hash and the settings) and reuse them in later runs.

    Notes
    -----
    Targets, weight maps and cubic spline coefficients are computed once per
    image in the constructor; items then only deform and crop them together
    (image cubic, target nearest, weight linear, see :func:`unet.data.elastic.warp`).
    An image is chosen with probability proportional to its area; the output
    crop lies inside the image (centred when the image is smaller), the input
    tile around it takes mirrored context beyond the border.  Weights of
    ignored pixels (:data:`IGNORE_INDEX`) are 0.
    """

    def __init__(self, samples, *, input_size, output_size=None, augment: Augmentation | None = None,
                 length: int = 1000, seed: int = 0, w0: float = W0, sigma: float = SIGMA,
                 class_weights=None, partial_margin: int = PARTIAL_MARGIN, border: bool = True, cache_dir=None,
                 gap_weight: float = 0.0, gap_width: float = GAP_WIDTH, skeleton: bool = False):
        samples = [s for s in samples if s.labels is not None]
        if not samples:
            raise ValueError("TileDataset needs at least one sample with labels")
        self.input_size = _pair(input_size)
        self.output_size = _pair(output_size if output_size is not None else input_size)
        halo = [(i - o) for i, o in zip(self.input_size, self.output_size)]
        if any(h < 0 or h % 2 for h in halo):
            raise ValueError(f"output {self.output_size} must be centred in input {self.input_size}")
        self.halo = (halo[0] // 2, halo[1] // 2)
        self.augment = Augmentation() if augment is None else augment
        self.length = int(length)
        self.seed = int(seed)
        self.names = [s.name for s in samples]
        self.images = [np.ascontiguousarray(s.image, np.float32) for s in samples]
        self.targets = [training_target(s.labels, partial=s.partial, border=border, partial_margin=partial_margin)
                        for s in samples]
        self.class_weights = (class_weights_from(self.targets) if class_weights is None
                              else np.asarray(class_weights, np.float64))
        self.gap = (float(gap_weight), float(gap_width))
        self.skeleton = bool(skeleton)
        self.weights = [self._weights(s, t, w0, sigma, cache_dir) for s, t in zip(samples, self.targets)]
        self.coefs = ([] if self.augment.is_identity else [spline_coefficients(im) for im in self.images])
        area = np.array([t.size for t in self.targets], np.float64)
        self.probs = area / area.sum()
        self._warm_up()

    def _weights(self, sample, target, w0, sigma, cache_dir):
        key = None
        if cache_dir is not None:
            h = hashlib.sha256(np.ascontiguousarray(sample.labels).tobytes())
            h.update(np.ascontiguousarray(target).tobytes())
            h.update(repr((sample.labels.shape, w0, sigma, self.class_weights.tolist())
                          + ((self.gap,) if self.gap[0] else ())).encode())
            key = Path(cache_dir) / f"weights-{h.hexdigest()[:24]}.npy"
            if key.is_file():
                return np.load(key)
        w = weight_map(sample.labels, w0=w0, sigma=sigma, class_weights=self.class_weights, target=target,
                       gap_weight=self.gap[0], gap_width=self.gap[1])
        if key is not None:
            key.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(key, overwrite=True) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, w)
        return w

    def _warm_up(self):
        # compile (or load from numba's cache) before workers fork
        if self.coefs:
            warp(self.coefs[0][:, :4, :4], origin=(0, 0), size=4, target=self.targets[0][:4, :4],
                 weight=self.weights[0][:4, :4])

    def __len__(self) -> int:
        return self.length

    def _draw(self, index: int):
        rng = np.random.default_rng([self.seed, int(index)])
        j = int(rng.choice(len(self.images), p=self.probs))
        h, w = self.targets[j].shape
        oh, ow = self.output_size
        oy = int(rng.integers(0, h - oh + 1)) if h >= oh else -((oh - h) // 2)
        ox = int(rng.integers(0, w - ow + 1)) if w >= ow else -((ow - w) // 2)
        return rng, j, oy, ox

    def locate(self, index: int) -> tuple[int, int, int]:
        """(image number, row, column) of the output crop of item ``index`` before deformation.

        The input tile starts ``halo`` px above and left of it.
        """
        _, j, oy, ox = self._draw(index)
        return j, oy, ox

    def sample(self, index: int):
        """The NumPy arrays of item ``index``: image (C, h, w) float32, target (uint8), weight (float32)."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a TileDataset of length {self.length}")
        rng, j, oy, ox = self._draw(index)
        (th, tw), (oh, ow), (hy, hx) = self.input_size, self.output_size, self.halo
        origin = (oy - hy, ox - hx)
        if self.augment.is_identity:
            image = extract_tile(self.images[j], origin, (th, tw))
            target = extract_tile(self.targets[j], (oy, ox), (oh, ow))
            weight = extract_tile(self.weights[j], (oy, ox), (oh, ow))
            return np.ascontiguousarray(image), np.ascontiguousarray(target), np.ascontiguousarray(weight)
        disp, matrix, shift = self.augment.geometry(rng)
        image, target, weight = warp(self.coefs[j], origin=(origin[0] + shift[0], origin[1] + shift[1]),
                                     size=(th, tw), displacement=disp, matrix=matrix,
                                     target=self.targets[j], weight=self.weights[j], out_size=(oh, ow))
        image = self.augment.gray_values(image, rng)
        weight[target == IGNORE_INDEX] = 0.0
        return image, target, weight

    def __getitem__(self, index: int) -> dict:
        image, target, weight = self.sample(index)
        item = {"image": torch.from_numpy(image), "target": torch.from_numpy(target.astype(np.int64)),
                "weight": torch.from_numpy(weight)}
        if self.skeleton:  # of the deformed target, so the centre lines are those the network must draw
            item["skeleton"] = torch.from_numpy(membrane_skeleton(target))
        return item


def init_worker(worker_id: int) -> None:
    """``worker_init_fn`` of every training DataLoader: one torch thread per worker process."""
    torch.set_num_threads(1)  # each worker one core: workers are the parallelism


def default_num_workers() -> int:
    """One worker per spare core, at most 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def make_loader(dataset, *, batch_size: int = 1, num_workers: int | None = None, start: int = 0,
                shuffle: bool = False, drop_last: bool = False, pin_memory: bool = False, rank: int = 0,
                world_size: int = 1) -> DataLoader:
    """A DataLoader yielding items ``start, start + 1, ...`` of ``dataset`` in order (also the trainer's).

    Items are already random per index (:class:`TileDataset`), so no shuffling
    is needed; ``shuffle=True`` visits a fixed permutation (seeded by
    ``dataset.seed``) from position ``start``.  Either way batch ``k`` of a
    loader started at ``start`` equals batch ``k + start / batch_size`` of a
    loader started at 0, whatever ``num_workers`` is (0 runs in the main
    process).  Workers use one torch thread each and stay alive between epochs.
    Neither creating nor iterating the loader draws from torch's global random
    generator (the workers' seeds come from a private one), so dropout in a
    resumed run draws what it would have drawn.

    Data parallelism (:mod:`unet.training.distributed`): each global batch of
    ``world_size * batch_size`` consecutive positions is shared out, process
    ``rank`` taking the ``rank``-th ``batch_size`` of them; ``start`` is then
    ``step * world_size * batch_size``.
    """
    n = len(dataset)
    if not 0 <= start <= n:
        raise ValueError(f"start {start} outside 0..{n}")
    if world_size > 1 and start % (batch_size * world_size):
        raise ValueError(f"start {start} is not the start of a global batch of {world_size} x {batch_size}")
    seed = getattr(dataset, "seed", 0)
    if shuffle:
        order = np.random.default_rng([seed, 0x5EED]).permutation(n)[start:].tolist()
    else:
        order = range(start, n)
    if world_size > 1:
        order = [item for position, item in enumerate(order, start) if (position // batch_size) % world_size == rank]
    workers = default_num_workers() if num_workers is None else int(num_workers)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=order, num_workers=workers, drop_last=drop_last,
        pin_memory=pin_memory, worker_init_fn=init_worker if workers else None,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=workers > 0, prefetch_factor=2 if workers else None)

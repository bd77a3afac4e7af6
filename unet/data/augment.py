"""Data augmentation settings (paper Sec. 3.1).

The paper needs "shift and rotation invariance as well as robustness to
deformations and gray value variations", and names the elastic deformation
(3x3 grid, 10 px standard deviation) as the key one.  Every geometric part
(elastic field, rotation, flips, 90-degree turns, shift, zoom) is folded into
the *one* sampling map of :func:`unet.data.elastic.warp`: the tile is
interpolated once, from the real image context around it (a rotation applied
after cropping would fill the tile corners with invented content, and each
extra resampling blurs).  Shift invariance comes mainly from the random tile
positions (:class:`unet.data.tiles.TileDataset`).

Gray-value variations (brightness, contrast, gamma, noise) are applied here in
NumPy rather than with albumentations because albumentations clips float
images to [0, 1] and its ``RandomGamma`` returns NaN for negative values,
both of which occur in percentile-normalised images (values outside the
0.1/99.9 percentiles are kept, see :mod:`unet.data.normalize`).  Any
albumentations transform (or callable) can be added through ``extra``: it
receives the image tile only, channels last, seeded from the sample's
generator so that samples stay reproducible.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from unet.data import elastic as _elastic


@dataclass
class Augmentation:
    """What to randomise for each training tile.  ``Augmentation.none()`` for validation/test.

    Attributes
    ----------
    elastic : bool
        Random elastic deformation (paper Sec. 3.1).
    elastic_grid : int
        Coarse grid size: 3 (paper Sec. 3.1: "coarse 3 by 3 grid").
    elastic_sigma : float
        Standard deviation of the grid displacements in px: 10 (paper Sec. 3.1).
    flips : bool
        Random horizontal and vertical flips.
    rot90 : bool
        Random turns by multiples of 90 degrees.
    rotate : float
        Extra rotation, uniform in [-rotate, rotate] degrees (0: off; not fixed by the
        paper, whose rotation invariance the flips and 90-degree turns give).
    shift : float
        Extra sub-pixel shift, uniform in [-shift, shift] px per axis (tile positions are already random).
    scale : float
        Zoom factor uniform in [1 - scale, 1 + scale] (0: off; not in the paper).
    gray : bool
        Gray-value variations (paper Sec. 3.1) on/off; the three settings below.
    gray_brightness : float
        Added offset uniform in [-b, b] (image units, i.e. fractions of the normalised
        0.1-99.9 percentile range).
    gray_contrast : float
        Factor uniform in [1 - c, 1 + c] applied around the tile mean.
    gray_gamma : float
        Gamma uniform in log space between 1 / (1 + g) and 1 + g, applied between the
        tile's minimum and maximum (0: off).
    noise : float
        Standard deviation of added Gaussian noise (0: off).
    extra : albumentations transform or callable, optional
        Applied last to the image tile (H, W, C) only.  An albumentations
        transform is called as ``extra(image=tile)["image"]`` after
        ``extra.set_random_seed(...)``; another callable as ``extra(tile, rng)``.
    """

    elastic: bool = True
    elastic_grid: int = _elastic.GRID
    elastic_sigma: float = _elastic.SIGMA
    flips: bool = True
    rot90: bool = True
    # The defaults are what every `unet train` run so far used (and what trained the results);
    # this class used to say rotate 15, contrast 0.1, gamma 0.1, which no `unet train` run used.
    rotate: float = 0.0
    shift: float = 0.0
    scale: float = 0.0
    gray: bool = True
    gray_brightness: float = 0.1
    gray_contrast: float = 0.2
    gray_gamma: float = 0.2
    noise: float = 0.0
    extra: Any = None

    @classmethod
    def none(cls) -> "Augmentation":
        """No augmentation at all (validation and test time)."""
        return cls(elastic=False, flips=False, rot90=False, rotate=0.0, shift=0.0, scale=0.0, gray=False,
                   gray_brightness=0.0, gray_contrast=0.0, gray_gamma=0.0, noise=0.0, extra=None)

    @classmethod
    def paper(cls) -> "Augmentation":
        """The defaults: elastic 3x3 grid, 10 px (Sec. 3.1), flips, 90-degree turns, gray values."""
        return cls()

    def replace(self, **changes) -> "Augmentation":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["extra"] = None if self.extra is None else repr(self.extra)
        return d

    @property
    def is_identity(self) -> bool:
        """True when tiles are plain crops (no geometric or gray-value change)."""
        gray = self.gray and (self.gray_brightness or self.gray_contrast or self.gray_gamma)
        return not (self.elastic and self.elastic_sigma > 0 or self.flips or self.rot90 or self.rotate
                    or self.shift or self.scale or gray or self.noise or self.extra is not None)

    # -- drawing ---------------------------------------------------------------------------

    def geometry(self, rng: np.random.Generator):
        """Draw (coarse displacement grid or None, 2x2 matrix, (dy, dx) shift)."""
        disp = (_elastic.random_displacement(rng, grid=self.elastic_grid, sigma=self.elastic_sigma)
                if self.elastic and self.elastic_sigma > 0 else None)
        flip_y = bool(rng.integers(2)) if self.flips else False
        flip_x = bool(rng.integers(2)) if self.flips else False
        turns = int(rng.integers(4)) if self.rot90 else 0
        angle = float(rng.uniform(-self.rotate, self.rotate)) if self.rotate else 0.0
        zoom = float(rng.uniform(1 - self.scale, 1 + self.scale)) if self.scale else 1.0
        shift = tuple(rng.uniform(-self.shift, self.shift, 2)) if self.shift else (0.0, 0.0)
        matrix = _elastic.affine_matrix(angle=angle, flip_y=flip_y, flip_x=flip_x, rot90=turns, scale=zoom)
        return disp, matrix, shift

    def gray_values(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Gray-value variations of an image tile (C, H, W) float32, in place where possible."""
        if self.gray and self.gray_contrast:
            factor = np.float32(rng.uniform(1 - self.gray_contrast, 1 + self.gray_contrast))
            mean = image.mean(axis=(1, 2), keepdims=True)
            image = (image - mean) * factor + mean
        if self.gray and self.gray_brightness:
            image += np.float32(rng.uniform(-self.gray_brightness, self.gray_brightness))
        if self.gray and self.gray_gamma:
            g = math.exp(rng.uniform(-math.log1p(self.gray_gamma), math.log1p(self.gray_gamma)))
            lo = image.min(axis=(1, 2), keepdims=True)
            span = np.maximum(image.max(axis=(1, 2), keepdims=True) - lo, np.float32(1e-6))
            image = lo + span * ((image - lo) / span) ** np.float32(g)
        if self.noise:
            image += rng.normal(0.0, self.noise, image.shape).astype(np.float32)
        if self.extra is not None:
            hwc = np.ascontiguousarray(np.moveaxis(image, 0, -1))
            if hasattr(self.extra, "set_random_seed"):
                self.extra.set_random_seed(int(rng.integers(2**31)))
                hwc = self.extra(image=hwc)["image"]
            else:
                hwc = self.extra(hwc, rng)
            image = np.moveaxis(np.asarray(hwc, np.float32), -1, 0)
        return np.ascontiguousarray(image, dtype=np.float32)

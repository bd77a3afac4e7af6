"""Dataset loaders: paths -> image/mask pairs -> samples.

One pattern for every dataset (as in torch-em): a ``*_pairs`` function lists
:class:`ImagePair` objects (image path, mask path, name), :func:`load_sample`
reads one pair into a :class:`Sample` (normalised float32 image, int32
instance labels), and :class:`unet.data.tiles.TileDataset` turns samples into
training tiles.

Supported layouts
-----------------
* ISBI 2012 (:func:`isbi2012_pairs`): ``train/images/N.png`` + ``train/labels/N.png``
  (also ``image``/``label`` folder names, TIFF slices) or the challenge's
  multi-page stacks ``train-volume.tif``/``train-labels.tif``/``test-volume.tif``.
  Labels: 255 = cell interior, 0 = membrane.
* Cell Tracking Challenge (:func:`ctc_pairs`): ``SEQ/tTTT.tif`` with
  ``SEQ_GT/SEG/man_segTTT.tif`` (official zip), or ``SEQ/images/tTTT.tif`` with
  ``SEQ/masks/man_segTTT.tif``.  Only annotated frames are listed.
* Your own data (:func:`folder_pairs`): ``images/`` + ``masks/`` matched by file stem.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import skimage.measure
import tifffile

from unet.data.normalize import DEFAULT_NORMALIZE, apply_ranges, intensity_ranges
from unet.errors import InputFileError, UserError, warn
from unet.io import IMAGE_SUFFIXES, read_image

#: Frames of the Cell Tracking Challenge gold truth whose SEG mask annotates only
#: some of the cells (see ``datasets/dic-hela.yaml`` and ../shared/data/dic-hela/PROVENANCE.md):
#: DIC-HeLa 01/man_seg067 labels 3 of about 18 cells.
KNOWN_PARTIAL_FRAMES = {"dic-hela": ("01/067",)}


@dataclass(frozen=True)
class ImagePair:
    """An image file and its mask file (``None`` for unlabelled test images)."""

    image: Path
    mask: Path | None
    name: str
    #: the mask annotates only some of the objects (unlabelled pixels are not reliable background)
    partial: bool = False
    #: page of a multi-page stack (ISBI ``train-volume.tif``), or None for single images
    index: int | None = None


@dataclass
class Sample:
    """One loaded training image.

    Attributes
    ----------
    image : ndarray, float32, (C, H, W)
        Normalised per channel (:func:`unet.data.normalize.intensity_ranges`).
    labels : ndarray, int32, (H, W)
        Instance labels, 0 = background, 1..N = cells (None without a mask).
    """

    image: np.ndarray
    labels: np.ndarray | None
    name: str
    partial: bool = False


# ----------------------------------------------------------------------------- pairs


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and not p.name.startswith("."))


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.stem)]


def _first_dir(root: Path, names) -> Path | None:
    for n in names:
        if (root / n).is_dir():
            return root / n
    return None


def isbi2012_pairs(root, *, split: str = "train") -> list[ImagePair]:
    """ISBI 2012 EM slices (Cardona et al. 2010; paper Sec. 4, Fig. 2).

    Parameters
    ----------
    root : path
        Folder holding ``train/images`` + ``train/labels`` and ``test/images``
        (``image``/``label`` are accepted too), or the challenge stacks
        ``train-volume.tif``, ``train-labels.tif``, ``test-volume.tif``.
    split : {"train", "test"}
        The test split has no labels (``mask`` is None).
    """
    root = Path(root)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (expected the ISBI 2012 data)")
    stack = root / ("train-volume.tif" if split == "train" else "test-volume.tif")
    part = root / split
    img_dir = _first_dir(part, ("images", "image", "volume")) if part.is_dir() else None
    if img_dir is None and split == "test" and part.is_dir() and _images_in(part):
        img_dir = part  # test/N.png directly (as in some mirrors)
    if img_dir is not None:
        images = sorted(_images_in(img_dir), key=_natural_key)
        if not images:
            raise UserError(f"{img_dir}: no images found")
        if split == "test":
            return [ImagePair(p, None, f"test/{p.stem}") for p in images]
        lab_dir = _first_dir(part, ("labels", "label", "masks"))
        if lab_dir is None:
            raise UserError(f"{part}: no labels folder (expected {part / 'labels'})")
        return _match_by_stem(images, _images_in(lab_dir), img_dir, lab_dir, prefix="train/")
    if stack.is_file():
        try:
            with tifffile.TiffFile(stack) as tif:
                shape = tif.series[0].shape
            n = shape[0] if len(shape) == 3 else 1
        except Exception as err:
            raise InputFileError(stack, f"cannot read TIFF stack ({err})") from err
        labels = root / "train-labels.tif" if split == "train" else None
        if labels is not None and not labels.is_file():
            raise InputFileError(labels, "no such file (the labels for train-volume.tif)")
        return [ImagePair(stack, labels, f"{split}/{k}", index=k) for k in range(n)]
    raise UserError(f"{root}: neither {split}/images/ nor {stack.name} found (ISBI 2012 layout)")


def ctc_pairs(root, *, sequences=("01", "02"), partial=None) -> list[ImagePair]:
    """Cell Tracking Challenge 2-D training data: the frames that have a gold-truth SEG mask.

    Parameters
    ----------
    root : path
        The dataset folder (e.g. ``DIC-C2DH-HeLa``; a parent holding exactly one
        such folder is accepted).  Layouts: ``SEQ/tTTT.tif`` +
        ``SEQ_GT/SEG/man_segTTT.tif`` (official), or ``SEQ/images/tTTT.tif`` +
        ``SEQ/masks/man_segTTT.tif``.
    sequences : sequence of str
        Sequences to use; the paper trains on both (Sec. 4).
    partial : iterable of str, optional
        Frames (``"SEQ/TTT"``) whose mask labels only some cells.  Default: the
        known ones (:data:`KNOWN_PARTIAL_FRAMES`) when ``root`` is DIC-HeLa.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: no such folder (expected a Cell Tracking Challenge dataset)")
    if not any((root / s).is_dir() for s in sequences):
        subs = [d for d in root.iterdir() if d.is_dir() and any((d / s).is_dir() for s in sequences)]
        if len(subs) == 1:
            root = subs[0]
    if partial is None:
        partial = KNOWN_PARTIAL_FRAMES["dic-hela"] if re.search(r"dic.*hela", root.name, re.I) else ()
    partial = set(partial)
    pairs = []
    for seq in sequences:
        seq = str(seq)
        if (root / seq / "images").is_dir():
            img_dir, seg_dir = root / seq / "images", root / seq / "masks"
        else:
            img_dir, seg_dir = root / seq, root / f"{seq}_GT" / "SEG"
        if not img_dir.is_dir():
            raise UserError(f"{root / seq}: sequence folder not found")
        if not seg_dir.is_dir():
            raise UserError(f"{seg_dir}: no segmentation gold truth for sequence {seq}")
        masks = sorted(seg_dir.glob("man_seg*.tif"))
        if not masks:
            raise UserError(f"{seg_dir}: no man_segTTT.tif files")
        for m in masks:
            t = m.stem[len("man_seg"):]
            img = img_dir / f"t{t}.tif"
            if not img.is_file():
                raise InputFileError(m, f"no matching image {img}")
            pairs.append(ImagePair(img, m, f"{seq}/t{t}", partial=f"{seq}/{t}" in partial))
    return pairs


def folder_pairs(images_dir, masks_dir, *, partial=()) -> list[ImagePair]:
    """Pair ``images_dir/X.ext`` with ``masks_dir/X.ext2`` by file stem.

    A mask stem may also carry a ``_mask``/``_masks``/``_label``/``_labels``/``_seg``
    suffix (``a.tif`` <-> ``a_mask.png``).  Every image needs a mask and vice versa.
    ``partial`` lists the stems whose masks label only some of the objects.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    for d in (images_dir, masks_dir):
        if not d.is_dir():
            raise UserError(f"{d}: no such folder")
    images = _images_in(images_dir)
    if not images:
        raise UserError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    pairs = _match_by_stem(images, _images_in(masks_dir), images_dir, masks_dir)
    partial = set(partial)
    return [dataclasses.replace(p, partial=True) if p.name in partial else p for p in pairs]


_MASK_SUFFIX = re.compile(r"(_mask|_masks|_label|_labels|_seg)$", re.I)


def _match_by_stem(images, masks, img_dir, mask_dir, prefix="") -> list[ImagePair]:
    by_stem: dict[str, Path] = {}
    for m in masks:
        stem = _MASK_SUFFIX.sub("", m.stem)
        if stem in by_stem:
            raise InputFileError(m, f"two masks for image stem {stem!r}: {by_stem[stem].name} and {m.name}")
        by_stem[stem] = m
    img_stems = {}
    for p in images:
        if p.stem in img_stems:
            raise InputFileError(p, f"two images with stem {p.stem!r}: {img_stems[p.stem].name} and {p.name}")
        img_stems[p.stem] = p
    missing = [p for p in images if p.stem not in by_stem]
    if missing:
        raise InputFileError(missing[0], f"no mask in {mask_dir} with the same name"
                             + (f" ({len(missing)} images lack a mask)" if len(missing) > 1 else ""))
    orphans = [m for s, m in by_stem.items() if s not in img_stems]
    if orphans:
        raise InputFileError(orphans[0], f"no image in {img_dir} with the same name")
    images = sorted(images, key=_natural_key)
    return [ImagePair(p, by_stem[p.stem], f"{prefix}{p.stem}") for p in images]


def dataset_pairs(name: str, root, **kw) -> list[ImagePair]:
    """Pairs of a dataset named as in ``datasets/`` ("isbi2012", "dic-hela", "phc-u373", "folder").

    ``"ctc"`` takes any Cell Tracking Challenge dataset (no frames marked partial).

    ``"folder"`` takes ``root`` holding ``images/`` and ``masks/`` (or pass
    ``images_dir``/``masks_dir``).  Other keywords go to the layout's function.
    """
    key = name.lower().replace("_", "-")
    if key in ("isbi2012", "isbi-2012", "isbi"):
        return isbi2012_pairs(root, **kw)
    if key in ("dic-hela", "dic-c2dh-hela"):
        kw.setdefault("partial", KNOWN_PARTIAL_FRAMES["dic-hela"])
        return ctc_pairs(root, **kw)
    if key in ("phc-u373", "phc-c2dh-u373", "ctc"):
        kw.setdefault("partial", ())
        return ctc_pairs(root, **kw)
    if key == "folder":
        root = Path(root)
        return folder_pairs(kw.pop("images_dir", root / "images"), kw.pop("masks_dir", root / "masks"), **kw)
    raise UserError(f"unknown dataset {name!r}; known: isbi2012, dic-hela, phc-u373, folder")


# ----------------------------------------------------------------------------- samples


def _read_page(path: Path, index: int | None) -> np.ndarray:
    if index is None:
        return read_image(path)
    stack = _read_stack(str(path), Path(path).stat().st_mtime_ns)
    if stack.ndim == 2:
        stack = stack[None]
    if not 0 <= index < len(stack):
        raise InputFileError(path, f"has {len(stack)} page(s), page {index} requested")
    return stack[index]


@functools.lru_cache(maxsize=2)
def _read_stack(path: str, mtime_ns: int) -> np.ndarray:
    # whole multi-page stacks are small (ISBI: 30 x 512 x 512 bytes); keep the last two read
    return read_image(path)


def _as_chw(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim == 2:
        return image[None]
    if image.ndim == 3 and image.shape[-1] in (1, 2, 3, 4) and image.shape[0] > 4:
        return np.moveaxis(image, -1, 0)  # channels-last colour image
    if image.ndim == 3 and image.shape[0] <= 4:
        return image
    raise InputFileError(path, f"expected a 2-D image (H, W) or (H, W, C), got shape {image.shape}")


def labels_from_mask(mask: np.ndarray, *, kind: str = "auto", path=None) -> np.ndarray:
    """Instance labels (int32, 0 = background) from a binary or instance mask.

    Parameters
    ----------
    kind : {"auto", "binary", "instance"}
        ``"binary"``: foreground = nonzero (or the maximum of a 0/255 mask),
        instances = its 4-connected components (ISBI 2012: cells are separated by
        membrane).  ``"instance"``: the values are the instance ids.
        ``"auto"``: binary when the mask is boolean or its values lie within
        {0, 255} or {0, 1} (one id for every object: splitting it into connected
        components is right whether it meant "binary" or "one cell"), otherwise instance.
    """
    where = path if path is not None else "mask"
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] in (3, 4):  # RGB(A) binary masks saved by paint programs
        if not all(np.array_equal(mask[..., 0], mask[..., c]) for c in range(1, 3)):
            raise InputFileError(where, "colour mask: expected a grey or label image")
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise InputFileError(where, f"expected a 2-D mask, got shape {mask.shape}")
    if mask.dtype.kind == "f":
        if not np.all(np.isfinite(mask)) or not np.array_equal(mask, np.round(mask)):
            raise InputFileError(where, "mask has non-integer values")
        mask = mask.astype(np.int64)
    if mask.dtype.kind not in "biu":
        raise InputFileError(where, f"unsupported mask dtype {mask.dtype}")
    if mask.dtype.kind == "i" and mask.size and mask.min() < 0:
        raise InputFileError(where, f"mask has negative values (min {mask.min()})")
    if kind == "auto":
        values = np.unique(mask)
        found = set(values.tolist())
        binary = mask.dtype == bool or found <= {0, 255} or found <= {0, 1}
        kind = "binary" if binary else "instance"
    if kind == "binary":
        values = np.unique(mask)
        if len(values) > 2:
            raise InputFileError(where, f"binary mask expected, found {len(values)} values "
                                 f"({', '.join(map(str, values[:6].tolist()))}{', ...' if len(values) > 6 else ''})")
        return skimage.measure.label(mask > 0, connectivity=1).astype(np.int32)
    if kind != "instance":
        raise ValueError(f"mask_kind must be 'auto', 'binary' or 'instance', got {kind!r}")
    if mask.size and int(mask.max()) > np.iinfo(np.int32).max:
        raise InputFileError(where, "instance ids exceed int32")
    return mask.astype(np.int32)


def load_sample(pair: ImagePair, *, normalize=DEFAULT_NORMALIZE, mask_kind: str = "auto") -> Sample:
    """Read and normalise one pair.

    Parameters
    ----------
    pair : ImagePair
    normalize : dict
        Keyword arguments of :func:`unet.data.normalize.normalize` (default: the
        0.1/99.9 percentiles of each image mapped to 0/1); 8- and 16-bit inputs
        end up on the same scale.
    mask_kind : {"auto", "binary", "instance"}
        See :func:`labels_from_mask`.

    Raises
    ------
    InputFileError
        For an unreadable file, a mask whose shape differs from the image's, or
        unexpected label values.
    """
    raw = _read_page(Path(pair.image), pair.index)
    check_pixels(raw, pair.image)
    image = _as_chw(raw, pair.image)
    if image.dtype.kind not in "uif" and image.dtype != bool:
        raise InputFileError(pair.image, f"unsupported image dtype {image.dtype}")
    norm = dict(normalize or {"mode": "none"})
    image = apply_ranges(image, intensity_ranges(image, "CYX", **norm)[0])  # the rule prediction uses too
    labels = None
    if pair.mask is not None:
        mask = _read_page(Path(pair.mask), pair.index)
        if mask.shape[:2] != image.shape[1:]:
            raise InputFileError(pair.mask, f"mask shape {mask.shape[:2]} differs from image shape "
                                 f"{image.shape[1:]} ({pair.image})")
        labels = labels_from_mask(mask, kind=mask_kind, path=pair.mask)
    return Sample(image=image, labels=labels, name=pair.name, partial=pair.partial)


def check_pixels(image: np.ndarray, path) -> None:
    """Refuse NaN or infinite pixels (one makes the loss NaN); warn about a constant image (nothing to learn).

    Raises
    ------
    InputFileError
        Naming ``path`` and the number of non-finite pixels.
    """
    if image.dtype.kind in "fc":
        bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        if bad:
            raise InputFileError(path, f"{bad} of {image.size} pixels are NaN or infinite (replace them, e.g. "
                                       "by the image's median, or leave the image out)")
    if image.size and image.dtype.kind in "uifb" and image.min() == image.max():
        warn(f"{path}: the image is constant (every pixel is {float(image.flat[0]):g}): it carries no information")


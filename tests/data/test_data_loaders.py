"""Loaders on real data (the shipped ISBI sample and DIC-HeLa crops; all of ../shared/data when
present) and on small synthetic folders."""

import numpy as np
import pytest
import tifffile

from unet.data import (ImagePair, ctc_pairs, dataset_pairs, folder_pairs, isbi2012_pairs, load_sample,
                       KNOWN_PARTIAL_FRAMES)
from unet.data.normalize import normalize
from unet.errors import InputFileError, UserError
from unet.io import read_image


def _listed(root, sub):
    """File names under ``root/sub`` in the folder's SHA256SUMS (independent of the loaders)."""
    return sorted(line.split()[1].removeprefix("./").split("/")[-1] for line in (root / "SHA256SUMS").read_text().splitlines()
                  if line.split()[1].removeprefix("./").startswith(sub))


def test_isbi2012_train_counts_shapes_and_label_convention(isbi2012):
    pairs = isbi2012_pairs(isbi2012)
    assert len(pairs) == len(_listed(isbi2012, "train/images/")) in (10, 30)  # shipped sample, all of ../shared
    assert [p.name for p in pairs[:3]] == ["train/0", "train/1", "train/2"]  # numeric, not lexical order
    assert pairs[-1].name == "train/29"
    assert all(p.image.stem == p.mask.stem for p in pairs)
    s = load_sample(pairs[0])
    assert s.image.dtype == np.float32 and s.image.shape == (1, 512, 512)
    assert s.labels.dtype == np.int32 and s.labels.shape == (512, 512)
    raw = read_image(pairs[0].mask)
    # 255 = cell, 0 = membrane: foreground of the labels is exactly the white pixels
    assert set(np.unique(raw).tolist()) == {0, 255}
    np.testing.assert_array_equal(s.labels > 0, raw == 255)
    # binary masks become 4-connected components: many cells, none touching another
    assert s.labels.max() > 50
    lab = s.labels
    assert not np.any((lab[:, 1:] > 0) & (lab[:, :-1] > 0) & (lab[:, 1:] != lab[:, :-1]))
    # the image is normalised with the shared per-image normalisation
    np.testing.assert_allclose(s.image[0], normalize(read_image(pairs[0].image)), rtol=0, atol=1e-6)


def test_isbi2012_test_split_has_no_masks(tmp_path):
    import shutil

    from unet.resources import SAMPLE_DIR

    shutil.copytree(SAMPLE_DIR / "isbi2012" / "train" / "images", tmp_path / "test" / "images")
    pairs = isbi2012_pairs(tmp_path, split="test")
    assert len(pairs) == 10 and all(p.mask is None for p in pairs)
    assert load_sample(pairs[0]).labels is None


def test_isbi2012_stack_layout(tmp_path, isbi2012):
    root = isbi2012
    imgs = np.stack([read_image(root / f"train/images/{k}.png") for k in range(3)])
    labs = np.stack([read_image(root / f"train/labels/{k}.png") for k in range(3)])
    tifffile.imwrite(tmp_path / "train-volume.tif", imgs, photometric="minisblack")
    tifffile.imwrite(tmp_path / "train-labels.tif", labs, photometric="minisblack")
    pairs = isbi2012_pairs(tmp_path)
    assert [p.index for p in pairs] == [0, 1, 2]
    s = load_sample(pairs[2])
    ref = load_sample(isbi2012_pairs(root)[2])
    np.testing.assert_array_equal(s.image, ref.image)
    np.testing.assert_array_equal(s.labels, ref.labels)


def test_dic_hela_pairs_only_annotated_frames_both_sequences(dic_hela):
    pairs = ctc_pairs(dic_hela)
    assert len(pairs) == len(_listed(dic_hela, "01/masks/")) + len(_listed(dic_hela, "02/masks/")) in (5, 18)
    assert {p.name.split("/")[0] for p in pairs} == {"01", "02"}
    assert all(p.image.stem[1:] == p.mask.stem[len("man_seg"):] for p in pairs)
    partial = [p.name for p in pairs if p.partial]
    assert partial == ["01/t067"]
    s = load_sample(pairs[0])
    assert s.image.shape == (1, *raw_shape(pairs[0].image)) and s.labels.dtype == np.int32
    raw = read_image(pairs[0].mask)
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(s.labels, raw)  # instance ids kept as they are
    assert s.labels.max() == int(tifffile.imread(pairs[0].mask).max()) > 1


def raw_shape(path):
    return tifffile.imread(path).shape


def test_dataset_pairs_dispatch_and_manifest_partial(isbi2012, dic_hela):
    from unet.data.manifest import load_manifest

    assert len(dataset_pairs("isbi2012", isbi2012)) == len(isbi2012_pairs(isbi2012))
    pairs = dataset_pairs("dic-hela", dic_hela, sequences=("01",))
    assert len(pairs) == len(_listed(dic_hela, "01/masks/")) and sum(p.partial for p in pairs) == 1
    manifest = load_manifest("dic-hela")
    assert tuple(manifest["partial_frames"]) == KNOWN_PARTIAL_FRAMES["dic-hela"]


def test_official_ctc_layout(tmp_path):
    (tmp_path / "01").mkdir()
    (tmp_path / "01_GT" / "SEG").mkdir(parents=True)
    for t in (0, 1, 2):
        tifffile.imwrite(tmp_path / "01" / f"t{t:03d}.tif", np.full((8, 9), t, np.uint16))
    mask = np.zeros((8, 9), np.uint16)
    mask[2:5, 2:5] = 7
    tifffile.imwrite(tmp_path / "01_GT" / "SEG" / "man_seg001.tif", mask)
    pairs = ctc_pairs(tmp_path, sequences=("01",))
    assert [p.name for p in pairs] == ["01/t001"] and not pairs[0].partial
    s = load_sample(pairs[0], normalize={"mode": "none"})
    assert s.image.shape == (1, 8, 9) and s.image.max() == 1.0
    assert set(np.unique(s.labels).tolist()) == {0, 7}


def _write(path, arr):
    tifffile.imwrite(path, arr) if path.suffix == ".tif" else np.save(path, arr)


def test_folder_pairs_binary_and_instance_16bit(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    img16 = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 100)
    tifffile.imwrite(tmp_path / "images" / "a.tif", img16)
    tifffile.imwrite(tmp_path / "images" / "b.tif", (img16 // 256).astype(np.uint8))
    binary = np.zeros((20, 30), np.uint8)
    binary[2:8, 2:8] = 255
    binary[10:15, 2:8] = 255
    tifffile.imwrite(tmp_path / "masks" / "a_mask.tif", binary)
    inst = np.zeros((20, 30), np.uint16)
    inst[2:8, 2:8] = 3
    inst[2:8, 8:14] = 5  # touching the first cell: must stay two instances
    tifffile.imwrite(tmp_path / "masks" / "b.tif", inst)
    pairs = folder_pairs(tmp_path / "images", tmp_path / "masks")
    assert [p.name for p in pairs] == ["a", "b"] and not any(p.partial for p in pairs)
    assert [p.partial for p in folder_pairs(tmp_path / "images", tmp_path / "masks", partial=["b"])] == [False, True]
    a, b = (load_sample(p) for p in pairs)
    assert a.image.dtype == np.float32 and b.image.dtype == np.float32
    # 8- and 16-bit copies of the same picture land on the same normalised scale
    np.testing.assert_allclose(a.image, b.image, atol=0.02)
    assert a.labels.max() == 2  # binary -> connected components
    tifffile.imwrite(tmp_path / "masks" / "a_mask.tif", (binary > 0).astype(np.uint16))  # 0/1 mask, 16-bit
    assert load_sample(pairs[0]).labels.max() == 2
    assert set(np.unique(b.labels).tolist()) == {0, 3, 5}


def test_clear_errors(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((10, 10), np.uint8))
    tifffile.imwrite(tmp_path / "images" / "c.tif", np.zeros((10, 10), np.uint8))
    tifffile.imwrite(tmp_path / "masks" / "a.tif", np.zeros((10, 10), np.uint8))
    with pytest.raises(InputFileError, match="c.tif.*no mask"):
        folder_pairs(tmp_path / "images", tmp_path / "masks")
    # mismatched shapes
    tifffile.imwrite(tmp_path / "masks" / "c.tif", np.zeros((10, 11), np.uint8))
    pairs = folder_pairs(tmp_path / "images", tmp_path / "masks")
    with pytest.raises(InputFileError, match=r"c.tif.*shape"):
        load_sample(pairs[1])
    # unreadable file
    (tmp_path / "masks" / "c.tif").write_bytes(b"not a tiff")
    with pytest.raises(InputFileError, match="c.tif.*cannot read"):
        load_sample(pairs[1])
    # unexpected label values for a binary mask
    tifffile.imwrite(tmp_path / "masks" / "c.tif", np.resize(np.array([0, 1, 2], np.uint8), (10, 10)))
    with pytest.raises(InputFileError, match="binary mask expected"):
        load_sample(pairs[1], mask_kind="binary")
    tifffile.imwrite(tmp_path / "masks" / "c.tif", np.full((10, 10), -1, np.int16))
    with pytest.raises(InputFileError, match="negative"):
        load_sample(pairs[1])
    tifffile.imwrite(tmp_path / "masks" / "c.tif", np.full((10, 10), 0.5, np.float32))
    with pytest.raises(InputFileError, match="non-integer"):
        load_sample(pairs[1])
    with pytest.raises(UserError, match="no such folder"):
        ctc_pairs(tmp_path / "nope")
    with pytest.raises(UserError, match="unknown dataset"):
        dataset_pairs("mnist", tmp_path)
    assert isinstance(ImagePair(tmp_path, None, "x").partial, bool)


def test_meanstd_normalisation_aligns_the_two_dic_hela_sequences(dic_hela):
    from unet.data import dataset_pairs, load_sample

    pairs = {p.name: p for p in dataset_pairs("dic-hela", dic_hela)}
    means = {}
    for mode in ("percentile", "meanstd"):
        imgs = {seq: load_sample(pairs[f"{seq}/{t}"], normalize={"mode": mode}).image[0]
                for seq, t in (("01", "t021"), ("02", "t006"))}
        means[mode] = {seq: float(im.mean()) for seq, im in imgs.items()}
        if mode == "meanstd":
            for im in imgs.values():
                assert im.mean() == pytest.approx(0.5, abs=1e-4) and im.std() == pytest.approx(1 / 6, rel=1e-3)
    if len(pairs) == 18:  # whole frames (../shared): the shift it removes (the shipped crops hardly show it)
        assert abs(means["percentile"]["01"] - means["percentile"]["02"]) > 0.05

"""``unet predict`` on files, folders and globs; clear one-line errors, exit 2, no partial files."""

import numpy as np
import pytest
import tifffile

import unet
from unet.cli import main
from unet.data.normalize import intensity_range, normalize
from unet.inference import label_instances, predict_tiled

from inference_helpers import tiny_unet


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from scipy.ndimage import gaussian_filter

    root = tmp_path_factory.mktemp("cli")
    model = tiny_unet(depth=2)
    ckpt = unet.save_checkpoint(model, root / "model.pt")
    rng = np.random.default_rng(0)
    images = {}
    for name, shape in (("a", (40, 57)), ("b", (33, 20))):
        img = gaussian_filter(rng.random(shape), 2)
        img = np.round((img - img.min()) / np.ptp(img) * 255).astype(np.uint8)
        (root / "in").mkdir(exist_ok=True)
        tifffile.imwrite(root / "in" / f"{name}.tif", img)
        images[name] = img
    return root, model, ckpt, images


def expected_prob(model, img):
    return predict_tiled(model, normalize(img, value_range=intensity_range(img)), tile_size=16)[1]


def test_predict_folder_and_glob_keep_geometry(setup, capsys):
    root, model, ckpt, images = setup
    out = root / "out_folder"
    rc = main(["predict", "--checkpoint", str(ckpt), str(root / "in"), "-o", str(out), "--tile-size", "16", "-q"])
    assert rc == 0
    for name, img in images.items():
        got = tifffile.imread(out / f"{name}_prob.tif")
        assert got.shape == img.shape
        np.testing.assert_array_equal(got, expected_prob(model, img))
    out2 = root / "out_glob"
    rc = main(["predict", "-c", str(ckpt), str(root / "in" / "*.tif"), "-o", str(out2), "--tile-size", "16",
               "--output", "labels", "--min-size", "5", "-q"])
    assert rc == 0
    for name, img in images.items():
        lab = tifffile.imread(out2 / f"{name}_labels.tif")
        np.testing.assert_array_equal(lab, label_instances(expected_prob(model, img) >= 0.5, min_size=5))


def test_single_file_output_mask_and_overwrite(setup, capsys):
    root, model, ckpt, images = setup
    out = root / "single_mask.tif"
    args = ["predict", "-c", str(ckpt), str(root / "in" / "a.tif"), "-o", str(out), "--output", "mask", "-q"]
    assert main(args) == 0
    mask = tifffile.imread(out)
    np.testing.assert_array_equal(mask, np.where(expected_prob(model, images["a"]) > 0.5, 255, 0))
    out.write_bytes(b"old")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and str(out) in err[0]
    assert out.read_bytes() == b"old"
    assert main(args + ["--overwrite"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out), mask)


def _bad_files(folder, image):
    import skimage.io

    folder.mkdir(exist_ok=True)
    (folder / "corrupt.tif").write_bytes(b"II*\x00" + b"\x17" * 300)
    tifffile.imwrite(folder / "ok.tif", image, compression="zlib", rowsperstrip=4)
    data = (folder / "ok.tif").read_bytes()
    (folder / "truncated.tif").write_bytes(data[: len(data) * 2 // 3])
    skimage.io.imsave(folder / "rgb.png", np.stack([image] * 3, -1), check_contrast=False)
    np.save(folder / "empty.npy", np.zeros((5, 0), np.uint8))
    return {"corrupt.tif": "TIFF", "truncated.tif": "truncated", "rgb.png": "channel", "empty.npy": "empty"}


def test_bad_inputs_exit_2_with_one_line_and_no_file(setup, capsys):
    root, model, ckpt, images = setup
    cases = _bad_files(root / "bad", images["a"])
    (root / "bad_out").mkdir()
    for name, problem in cases.items():
        out = root / "bad_out" / f"{name}.tif"
        rc = main(["predict", "-c", str(ckpt), str(root / "bad" / name), "-o", str(out), "-q"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, name
        assert len(err) == 1 and name in err[0] and problem in err[0], err
        assert not out.exists()
    assert not any(p.name.startswith(".") for p in (root / "bad_out").iterdir())


def test_unwritable_output_and_missing_input(setup, capsys):
    root, model, ckpt, images = setup
    blocker = root / "a_file"
    blocker.write_text("not a folder")
    target = blocker / "out.tif"
    rc = main(["predict", "-c", str(ckpt), str(root / "in" / "a.tif"), "-o", str(target), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot write" in err[0] and str(target) in err[0]
    assert blocker.read_text() == "not a folder"
    rc = main(["predict", "-c", str(ckpt), str(root / "in" / "nope.tif"), "-o", str(root / "x.tif"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "nope.tif" in err[0]
    assert not (root / "x.tif").exists()


def test_non_finite_pixels_are_named_or_replaced(setup, capsys):
    root, model, ckpt, images = setup
    stack = np.stack([images["a"], images["a"][::-1]]).astype(np.float32)
    stack[0, 5, 7], stack[0, 30, 2], stack[1, 0, 0] = np.nan, np.inf, -np.inf
    src = root / "nan_stack.tif"
    tifffile.imwrite(src, stack, photometric="minisblack")
    out = root / "nan_out.tif"
    args = ["predict", "-c", str(ckpt), str(src), "-o", str(out), "--tile-size", "16", "-q"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nan_stack.tif" in err[0] and "3 of" in err[0] and "--nan-to-num" in err[0]
    assert not out.exists()
    with pytest.raises(unet.errors.UserError, match="3 NaN or infinite"):
        predict_tiled(model, stack, axes="ZYX", tile_size=16)
    assert main(args + ["--nan-to-num"]) == 0
    got = tifffile.imread(out)
    assert np.isfinite(got).all()
    # the other pixels see the range of the finite pixels, the bad ones the darkest (NaN, -inf) or brightest value
    lo0, hi0 = intensity_range(stack[0][np.isfinite(stack[0])])
    lo1, hi1 = intensity_range(stack[1][np.isfinite(stack[1])])
    for z, (lo, hi) in enumerate(((lo0, hi0), (lo1, hi1))):
        norm = np.nan_to_num(normalize(stack[z], value_range=(lo, hi)), nan=0.0, posinf=1.0, neginf=0.0)
        np.testing.assert_array_equal(got[z], predict_tiled(model, norm, tile_size=16)[1])


def test_checkpoint_with_non_finite_weights_is_refused(setup, tmp_path, capsys):
    import torch

    root, model, ckpt, images = setup
    broken = tiny_unet(depth=2)
    with torch.no_grad():
        next(broken.parameters())[0].fill_(float("nan"))
    bad = unet.save_checkpoint(broken, tmp_path / "nan.pt")
    rc = main(["predict", "-c", str(bad), str(root / "in" / "a.tif"), "-o", str(tmp_path / "o.tif"), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "nan.pt" in err[0] and "NaN or infinite" in err[0]
    assert not (tmp_path / "o.tif").exists()
    with pytest.raises(unet.errors.InputFileError, match="1 of"):
        unet.load_checkpoint(bad)


@pytest.mark.parametrize("option, value, message", [
    ("--threshold", "1.5", "--threshold must be a probability in [0, 1]"),
    ("--threshold", "-0.1", "--threshold must be a probability in [0, 1]"),
    ("--threshold", "nan", "--threshold must be a probability in [0, 1]"),
    ("--batch-size", "0", "--batch-size must be at least 1"),
    ("--min-size", "-1", "--min-size must be >= 0"),
    ("--memory-limit", "0", "memory limit must be positive"),
    ("--tile-size", "3", "--tile-size: tile size must be a whole number of pixels >= 4"),
])
def test_bad_options_exit_2_with_one_line(setup, tmp_path, capsys, option, value, message):
    root, model, ckpt, images = setup
    out = tmp_path / "o.tif"
    rc = main(["predict", "-c", str(ckpt), str(root / "in" / "a.tif"), "-o", str(out), option, value, "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_tile_size_rounding_is_reported_and_library_refuses_small_tiles(setup, tmp_path, capsys):
    root, model, ckpt, images = setup
    out = tmp_path / "o.tif"
    assert main(["predict", "-c", str(ckpt), str(root / "in" / "a.tif"), "-o", str(out), "--tile-size", "10"]) == 0
    assert "--tile-size 10 rounded down to 8, a multiple of 2**depth = 4" in capsys.readouterr().err
    with pytest.raises(unet.errors.UserError, match=">= 4"):
        predict_tiled(model, images["a"] / 255.0, tile_size=2)
    with pytest.raises(unet.errors.UserError, match="batch size"):
        predict_tiled(model, images["a"] / 255.0, tile_size=8, batch_size=0)


def test_mask_and_labels_use_strictly_greater_than_threshold(setup, tmp_path):
    root, model, ckpt, images = setup
    p = expected_prob(model, images["a"])
    t = float(np.sort(p.ravel())[p.size // 3])  # a probability some pixels have exactly
    src = str(root / "in" / "a.tif")
    for output in ("mask", "labels"):
        out = tmp_path / f"{output}.tif"
        assert main(["predict", "-c", str(ckpt), src, "-o", str(out), "--tile-size", "16", "--output", output,
                     "--threshold", repr(t), "-q"]) == 0
        np.testing.assert_array_equal(tifffile.imread(out) > 0, p > t)
    assert np.any(p == t)

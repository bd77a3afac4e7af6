"""Out-of-core prediction: every input format gives exactly what the in-memory path gives."""

import numpy as np
import pytest
import tifffile
import zarr

import unet
from unet.data.loaders import ImagePair, load_sample
from unet.data.normalize import DEFAULT_NORMALIZE, intensity_range, normalize
from unet.errors import InputFileError, UserError
from unet.inference import label_instances, predict_file, predict_tiled
from unet.inference.files import read_output_tag

from inference_helpers import tiny_unet


@pytest.fixture(scope="module")
def model():
    return tiny_unet(depth=2)


@pytest.fixture(scope="module")
def image():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    img = gaussian_filter(rng.random((150, 205)), 3)
    return np.round((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8)


def in_memory(model, image, *, tile_size=32, batch_size=1, **norm):
    return predict_tiled(model, normalize(image, value_range=intensity_range(image, **norm)), tile_size=tile_size,
                         batch_size=batch_size)


def read(path):
    path = str(path)
    if path.endswith(".zarr"):
        return np.asarray(zarr.open_array(path, mode="r"))
    if path.endswith(".npy"):
        return np.load(path)
    return tifffile.imread(path)


def write_inputs(folder, image):
    import skimage.io

    tifffile.imwrite(folder / "plain.tif", image)  # uncompressed: memory-mapped
    tifffile.imwrite(folder / "tiled.tif", image, tile=(64, 64), compression="zlib")
    tifffile.imwrite(folder / "big.tif", image, bigtiff=True, compression="lzw", rowsperstrip=16)
    np.save(folder / "image.npy", image)
    z = zarr.open_array(str(folder / "image.zarr"), mode="w", shape=image.shape, chunks=(40, 50), dtype=image.dtype)
    z[:] = image
    skimage.io.imsave(folder / "image.png", image, check_contrast=False)
    return ["plain.tif", "tiled.tif", "big.tif", "image.npy", "image.zarr", "image.png"]


def test_out_of_core_writes_exactly_the_in_memory_result(tmp_path, model, image):
    expected = in_memory(model, image, tile_size=64, batch_size=3)[1]
    assert expected.std() > 0.01
    for name in write_inputs(tmp_path, image):
        for suffix in (".tif", ".zarr"):
            out = predict_file(model, tmp_path / name, tmp_path / f"out_{name}{suffix}", tile_size=64, batch_size=3)
            got = read(out)
            assert got.shape == image.shape and got.dtype == np.float32, name
            np.testing.assert_array_equal(got, expected, err_msg=f"{name} -> {suffix}")
    assert not list(tmp_path.glob(".*part*"))  # no temporary files left behind


def test_probability_types_and_mask(tmp_path, model, image):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, image, tile=(32, 32), compression="zlib")
    p = in_memory(model, image)[1]
    f16 = read(predict_file(model, src, tmp_path / "p16.tif", tile_size=32, dtype="float16"))
    u8 = read(predict_file(model, src, tmp_path / "p8.tif", tile_size=32, dtype="uint8"))
    assert f16.dtype == np.float16 and u8.dtype == np.uint8
    np.testing.assert_array_equal(f16, p.astype(np.float16))
    np.testing.assert_array_equal(u8, np.round(p * 255).astype(np.uint8))
    t = float(np.sort(p.ravel())[p.size // 2])  # a value some pixels have: they are background
    assert np.any(p == t)
    mask = read(predict_file(model, src, tmp_path / "m.tif", tile_size=32, output="mask", threshold=t))
    # the outputs say what they are, so unet evaluate reads the 8-bit map as probabilities, not as labels
    assert [read_output_tag(tmp_path / f) for f in ("p16.tif", "p8.tif", "m.tif")] == ["prob", "prob", "mask"]
    assert read_output_tag(src) is None
    np.testing.assert_array_equal(mask, np.where(p > t, 255, 0).astype(np.uint8))  # strictly, as the metrics


def test_instance_labels_agree_across_tile_borders(tmp_path, model, image):
    image = image[:80, :120]
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, image)
    p = in_memory(model, image, tile_size=16)[1]
    t = float(np.quantile(p, 0.6))
    mask = p >= t
    for min_size in (0, 20):
        expected = label_instances(mask, min_size=min_size)
        got = read(predict_file(model, src, tmp_path / f"l{min_size}.tif", tile_size=16, output="labels",
                                threshold=t, min_size=min_size))
        assert got.dtype == np.uint32
        np.testing.assert_array_equal(got, expected)
    # the test is only meaningful if components do cross the 16-px tile borders (rows and columns)
    lab = label_instances(mask)
    crossings = [np.intersect1d(lab[y - 1][lab[y - 1] > 0], lab[y][lab[y] > 0]).size for y in range(16, 80, 16)]
    crossings += [np.intersect1d(lab[:, x - 1][lab[:, x - 1] > 0], lab[:, x][lab[:, x] > 0]).size for x in range(16, 120, 16)]
    assert sum(crossings) > 5
    assert np.bincount(lab.ravel())[1:].max() > 16 * 16  # some component larger than a tile
    assert 0 < lab.max()


def _trained_view(path, index=None):
    """The image as training sees it (load_sample: each channel of the page normalised on its own)."""
    return load_sample(ImagePair(image=path, mask=None, name="x", index=index), normalize=DEFAULT_NORMALIZE).image


def test_stack_planes_are_normalised_one_by_one_as_in_training(tmp_path, model, image):
    stack = np.stack([image, image[::-1] // 8, image[:, ::-1].astype(np.uint16) * 40]).astype(np.uint16)
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, stack, compression="zlib", photometric="minisblack")
    got = read(predict_file(model, src, tmp_path / "out.tif", tile_size=48))
    assert got.shape == stack.shape
    for z in range(3):
        np.testing.assert_array_equal(got[z], predict_tiled(model, _trained_view(src, z)[0], tile_size=48)[1])
    # predict_tiled on the raw stack applies the same rule
    np.testing.assert_array_equal(predict_tiled(model, stack, axes="ZYX", tile_size=48,
                                                normalize=DEFAULT_NORMALIZE)[:, 1], got)


def test_channels_are_normalised_one_by_one_as_in_training(tmp_path, image):
    model = tiny_unet(depth=2, in_channels=3)
    rgb = np.stack([image, image[::-1] // 8 + 3, 255 - image // 2], axis=-1).astype(np.uint8)  # other ranges
    src = tmp_path / "rgb.tif"
    tifffile.imwrite(src, rgb, photometric="rgb")
    expected = predict_tiled(model, _trained_view(src), tile_size=48)[1]
    np.testing.assert_array_equal(read(predict_file(model, src, tmp_path / "out.tif", tile_size=48)), expected)
    np.testing.assert_array_equal(predict_tiled(model, rgb, axes="YXC", tile_size=48,
                                                normalize=DEFAULT_NORMALIZE)[1], expected)
    from unet.inference import predict_dask

    np.testing.assert_array_equal(predict_dask(model, src, tile_size=48).compute(scheduler="sync")[1], expected)


def test_checkpoint_normalisation_settings_are_used(tmp_path, model, image):
    ckpt = unet.save_checkpoint(model, tmp_path / "m.pt", normalize={"mode": "minmax"})
    got = read(predict_file(ckpt, _tif(tmp_path, image), tmp_path / "o.tif", tile_size=64))
    np.testing.assert_array_equal(got, in_memory(model, image, tile_size=64, mode="minmax")[1])
    assert np.abs(got - in_memory(model, image, tile_size=64)[1]).max() > 1e-4  # the settings matter


def _tif(folder, image):
    src = folder / "in.tif"
    if not src.exists():
        tifffile.imwrite(src, image)
    return src


def test_existing_output_is_kept_unless_overwrite(tmp_path, model, image):
    src, out = _tif(tmp_path, image), tmp_path / "o.tif"
    out.write_bytes(b"keep")
    with pytest.raises(UserError, match="already exists"):
        predict_file(model, src, out, tile_size=32)
    assert out.read_bytes() == b"keep"
    predict_file(model, src, out, tile_size=32, overwrite=True)
    assert read(out).shape == image.shape
    zout = tmp_path / "o.zarr"
    predict_file(model, src, zout, tile_size=32)
    with pytest.raises(UserError, match="already exists"):
        predict_file(model, src, zout, tile_size=32)


def test_bad_inputs_give_clear_errors_and_no_output(tmp_path, model, image):
    import skimage.io

    bad = {}
    bad["corrupt.tif"] = b"II*\x00" + bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8))
    tifffile.imwrite(tmp_path / "whole.tif", image, compression="zlib", rowsperstrip=8)
    data = (tmp_path / "whole.tif").read_bytes()
    bad["truncated.tif"] = data[: len(data) // 2]
    bad["zero.tif"] = b""
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
    skimage.io.imsave(tmp_path / "rgb.png", np.stack([image] * 3, -1), check_contrast=False)
    np.save(tmp_path / "empty.npy", np.zeros((0, 7), np.uint8))
    cases = {"corrupt.tif": "TIFF", "truncated.tif": "truncated", "zero.tif": "empty",
             "rgb.png": "3 channel", "empty.npy": "empty", "missing.tif": "no such file"}
    for name, problem in cases.items():
        out = tmp_path / f"out_{name}.tif"
        with pytest.raises(InputFileError, match=problem) as info:
            predict_file(model, tmp_path / name, out, tile_size=32)
        assert name in str(info.value)
        assert not out.exists()
    assert not list(tmp_path.glob(".*part*"))


def test_unwritable_output_is_an_error_with_no_partial_file(tmp_path, model, image):
    src = _tif(tmp_path, image)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot write"):
        predict_file(model, src, tmp_path / "file" / "out.tif", tile_size=32)
    with pytest.raises(UserError, match="unsupported output"):
        predict_file(model, src, tmp_path / "out.jpg", tile_size=32)


def test_tiff_tiles_reassemble_strips_of_any_height():
    from unet.inference.files import _tiff_tiles

    rng = np.random.default_rng(0)
    img = rng.random((103, 70)).astype(np.float32)
    heights = [5, 17, 1, 40, 3, 37]
    strips, y = [], 0
    for h in heights:
        strips.append(img[y : y + h])
        y += h
    tiles = list(_tiff_tiles(iter(strips), 70, 16, np.float32))
    ny, nx = -(-103 // 16), -(-70 // 16)
    assert len(tiles) == ny * nx and all(t.shape == (16, 16) for t in tiles)
    full = np.zeros((ny * 16, nx * 16), np.float32)
    for i, t in enumerate(tiles):
        full[(i // nx) * 16 : (i // nx + 1) * 16, (i % nx) * 16 : (i % nx + 1) * 16] = t
    np.testing.assert_array_equal(full[:103, :70], img)
    assert not full[103:].any() and not full[:, 70:].any()


def test_real_lzw_tiff_and_png(dic_hela, isbi2012, tmp_path, model):
    """DIC-HeLa frames are LZW-compressed strip TIFFs, ISBI 2012 images PNGs (read through different paths)."""
    import tifffile

    from unet.io import read_image

    sources = sorted((dic_hela / "01" / "images").glob("*.tif"))[:1]
    sources += [isbi2012 / "train" / "images" / "0.png"]
    with tifffile.TiffFile(sources[0]) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.LZW
    for src in sources:
        img = read_image(src)
        got = read(predict_file(model, src, tmp_path / f"{src.stem}.tif", tile_size=128, batch_size=4))
        np.testing.assert_array_equal(got, in_memory(model, img, tile_size=128, batch_size=4)[1])


class _CountingArray:
    """Array-like that records the size of every read (stands in for a zarr/TIFF store)."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim
        self.reads = []

    def __getitem__(self, index):
        out = self.array[index]
        self.reads.append(out.size)
        return out


def test_file_backed_images_are_read_a_band_of_tiles_at_a_time(model):
    from unet.inference import ImageSource, make_grid, predict_strips

    img = np.random.default_rng(0).random((300, 200)).astype(np.float32)
    arr = _CountingArray(img)
    source = ImageSource(arr, "YX")
    grid = make_grid(model, source.plane_shape, tile_size=32)
    strips = list(predict_strips(model.eval(), source, grid))
    np.testing.assert_array_equal(np.concatenate([s for _, s in strips], axis=1), predict_tiled(model, img, tile_size=32))
    band = grid.input[0] * 200  # one input tile high, the image wide
    assert max(arr.reads) <= band < img.size / 3
    assert sum(arr.reads) <= len(list(grid.origins(0))) * band  # each band read once

"""One normalisation rule (each channel of each plane on its own) for training and every prediction path."""

import numpy as np
import pytest
import tifffile

from unet.data.loaders import ImagePair, load_sample
from unet.data.normalize import apply_ranges, intensity_range, intensity_ranges, normalize


def _planes_10_11_5001(h=64, w=64):
    stack = np.full((3, h, w), 10, np.uint16)
    stack[1] = 11
    stack[2] = 5001
    return stack


def test_subsample_strides_y_and_x_only():
    stack = _planes_10_11_5001()
    # more pixels than max_samples: a subsample, but of every plane
    assert intensity_range(stack, mode="minmax", max_samples=1000) == (10.0, 5001.0)
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 1], rgb[..., 2] = 100, 200
    assert intensity_range(rgb, mode="minmax", max_samples=1000) == (0.0, 200.0)


@pytest.mark.parametrize("max_samples", [2**22, 500])
def test_ranges_per_channel_of_each_plane(max_samples):
    rng = np.random.default_rng(0)
    zcyx = (rng.random((2, 3, 40, 50)) * np.array([1, 10, 1000])[None, :, None, None]
            + np.array([0, 5])[:, None, None, None]).astype(np.float32)
    got = intensity_ranges(zcyx, "ZCYX", max_samples=max_samples)
    assert got.shape == (2, 3, 2)
    for z in range(2):
        for c in range(3):
            sub = zcyx[z, c] if max_samples > zcyx[z, c].size else zcyx[z, c, ::2, ::2]  # 2000 px, 500 samples: stride 2
            assert tuple(got[z, c]) == intensity_range(sub, max_samples=2**22)
    # the same numbers whatever the axis order
    np.testing.assert_array_equal(intensity_ranges(np.moveaxis(zcyx, 1, -1), "ZYXC", max_samples=max_samples), got)
    np.testing.assert_array_equal(intensity_ranges(zcyx[0], "CYX", max_samples=max_samples), got[:1])
    np.testing.assert_array_equal(intensity_ranges(zcyx[:, 0], "ZYX", max_samples=max_samples), got[:, :1])


def test_apply_ranges_matches_normalize_per_channel():
    rng = np.random.default_rng(1)
    img = (rng.random((2, 30, 30)) * [[[7]], [[3000]]]).astype(np.uint16)
    r = intensity_ranges(img, "CYX")[0]
    out = apply_ranges(img, r)
    for c in range(2):
        np.testing.assert_array_equal(out[c], normalize(img[c]))
        assert abs(np.percentile(out[c], 99.9) - 1) < 1e-5


def test_training_reads_each_page_and_channel_with_its_own_range(tmp_path):
    stack = _planes_10_11_5001(32, 32).astype(np.float32)
    stack[:, :8] += 1  # some contrast in every plane
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    for z in range(3):
        s = load_sample(ImagePair(image=path, mask=None, name=str(z), index=z), normalize={"mode": "minmax"})
        assert s.image.min() == 0 and s.image.max() == 1
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:8] = (10, 100, 250)
    write = tmp_path / "rgb.tif"
    tifffile.imwrite(write, rgb)
    s = load_sample(ImagePair(image=write, mask=None, name="rgb"), normalize={"mode": "minmax"})
    assert s.image.shape == (3, 32, 32)
    assert [float(s.image[c].max()) for c in range(3)] == [1.0, 1.0, 1.0]

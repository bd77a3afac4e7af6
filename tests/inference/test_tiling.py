"""Overlap-tile prediction (paper Fig. 2): tile-size independence, mirroring, blending, TTA."""

import numpy as np
import pytest
import torch

import unet
from unet.errors import UserError
from unet.inference.tiling import context_radius
from unet.inference import MIRROR_MODE, blend_window, choose_tile_size, make_grid, mirror_indices
from unet.models.geometry import halo, input_size_for_output

from inference_helpers import smooth_image, tiny_unet


def whole_image_pass(model, image):
    """One forward pass over the image mirror-padded with numpy's MIRROR_MODE (independent reference)."""
    h = halo(model)
    H, W = image.shape[-2:]
    sy, sx = input_size_for_output(model, H), input_size_for_output(model, W)
    pad = [(0, 0)] * (image.ndim - 2) + [(h, sy - H - h), (h, sx - W - h)]
    x = np.pad(image, pad, mode=MIRROR_MODE)
    x = torch.from_numpy(x).reshape(1, -1, *x.shape[-2:])
    with torch.inference_mode():
        return torch.softmax(model.eval()(x), 1)[0, :, :H, :W].numpy()


@pytest.mark.parametrize("size", [(37, 53), (3, 3), (1, 40), (29, 1), (1, 1), (20, 64)])
def test_valid_net_result_does_not_depend_on_tile_size(size):
    model = tiny_unet(depth=2)
    img = smooth_image(size, seed=sum(size))
    ref = whole_image_pass(model, img)
    for tile in (4, 12, 36, 200):
        p = unet.predict_tiled(model, img, tile_size=tile, batch_size=8)
        assert p.shape == (2, *size) and p.dtype == np.float32
        np.testing.assert_allclose(p, ref, atol=1e-5, err_msg=f"tile {tile}")


def test_deeper_net_rectangular_tiles_and_batches():
    model = tiny_unet(depth=3, base_channels=2)
    img = smooth_image((45, 70), seed=3)
    ref = whole_image_pass(model, img)
    for tile, batch in (((16, 40), 1), ((24, 8), 3), (50, 2)):
        np.testing.assert_allclose(unet.predict_tiled(model, img, tile_size=tile, batch_size=batch), ref, atol=1e-5)


def test_tiles_actually_differ_from_a_misaligned_grid():
    # the reason tile origins sit on the 2**depth grid: a shift by one pixel changes a valid U-Net's output
    model = tiny_unet(depth=2)
    img = smooth_image((40, 40), seed=1)
    ref = whole_image_pass(model, img)
    shifted = whole_image_pass(model, np.pad(img, ((1, 0), (0, 0)), mode=MIRROR_MODE))[:, 1:]
    assert np.abs(shifted - ref).max() > 1e-3


def test_mirror_indices_equal_numpy_pad_mode():
    for size in (1, 2, 3, 7, 50):
        axis = np.arange(size)
        for before, after in ((0, 0), (3, 0), (0, 5), (20, 31), (1, 1)):
            padded = np.pad(axis, (before, after), mode=MIRROR_MODE)
            for start in range(-before, size + after):
                length = size + after - start
                got = mirror_indices(size, start, length)
                np.testing.assert_array_equal(got, padded[start + before : start + before + length])


def test_prediction_mirrors_like_the_training_tiles():
    # Fig. 2: the context beyond the border is the image mirrored at the border, the same way in
    # training (unet.data.tiles) and prediction
    from unet.data import tiles

    assert MIRROR_MODE == tiles.MIRROR_MODE
    img = np.arange(12, dtype=np.float32).reshape(3, 4)
    for start in (-7, -1, 2):
        got = img[mirror_indices(3, start, 9)]
        np.testing.assert_array_equal(got, np.pad(img, ((10, 10), (0, 0)), mode=tiles.MIRROR_MODE)[start + 10 : start + 19])


def test_stacks_are_predicted_slice_by_slice_and_channels_handled():
    model = tiny_unet(depth=2)
    stack = np.stack([smooth_image((20, 30), seed=s) for s in range(3)])
    p = unet.predict_tiled(model, stack, axes="ZYX", tile_size=8)
    assert p.shape == (3, 2, 20, 30)
    for z in range(3):
        np.testing.assert_allclose(p[z], whole_image_pass(model, stack[z]), atol=1e-5)
    with pytest.raises(UserError, match="axes"):
        unet.predict_tiled(model, stack)

    rgb_model = tiny_unet(depth=2, in_channels=3, num_classes=3)
    cyx = np.stack([smooth_image((21, 17), seed=s) for s in range(3)])
    ref = whole_image_pass(rgb_model, cyx)
    np.testing.assert_allclose(unet.predict_tiled(rgb_model, cyx, tile_size=8), ref, atol=1e-5)
    yxc = np.ascontiguousarray(np.moveaxis(cyx, 0, -1))
    np.testing.assert_allclose(unet.predict_tiled(rgb_model, yxc, axes="YXC", tile_size=12), ref, atol=1e-5)
    with pytest.raises(UserError, match="channel"):
        unet.predict_tiled(model, cyx, axes="CYX")


def test_probabilities_sum_to_one_and_empty_image_is_an_error():
    model = tiny_unet(depth=2, num_classes=3)
    p = unet.predict_tiled(model, smooth_image((17, 19)), tile_size=8)
    np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)
    with pytest.raises(UserError, match="empty"):
        unet.predict_tiled(model, np.zeros((0, 10), np.float32))


def test_eval_mode_inference_mode_and_previous_mode_restored():
    torch.manual_seed(0)
    model = unet.create_model("unet", base_channels=4, depth=2, dropout=0.5)  # dropout: train mode is random
    model.train()
    img = smooth_image((24, 24))
    a = unet.predict_tiled(model, img, tile_size=8)
    b = unet.predict_tiled(model, img, tile_size=24)
    assert model.training
    np.testing.assert_allclose(a, b, atol=1e-5)
    model.eval()
    np.testing.assert_allclose(a, whole_image_pass(model, img), atol=1e-5)
    unet.predict_tiled(model, img)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_tile_size_from_memory_budget():
    from unet.inference.tiling import bytes_per_input_pixel, parse_memory

    model = unet.create_model("unet")  # the paper's net: halo 92
    bpp = bytes_per_input_pixel(model)
    chosen = {}
    for limit in ("256M", "4G"):
        ty, tx = chosen[limit] = choose_tile_size(model, (10000, 10000), memory_limit=limit)
        assert ty % 16 == 0 and tx % 16 == 0
        assert input_size_for_output(model, ty) * input_size_for_output(model, tx) * bpp <= parse_memory(limit)
    assert np.prod(chosen["256M"]) < np.prod(chosen["4G"])
    # the choice computes (almost) the fewest input pixels of all tile shapes that fit the budget
    tiny = tiny_unet(depth=2)
    H, W, limit = 203, 150, 6000 * bytes_per_input_pixel(tiny)
    cost = lambda ty, tx: -(-H // ty) * -(-W // tx) * input_size_for_output(tiny, ty) * input_size_for_output(tiny, tx)
    feasible = [(ty, tx) for ty in range(4, 208, 4) for tx in range(4, 152, 4)
                if input_size_for_output(tiny, ty) * input_size_for_output(tiny, tx) <= 6000]
    ty, tx = choose_tile_size(tiny, (H, W), memory_limit=limit)
    assert (ty, tx) in feasible
    assert cost(ty, tx) <= 1.02 * min(cost(*t) for t in feasible)
    # a 1000 px axis is cut into equal halves, not 600 + 400
    assert choose_tile_size(tiny, (1000, 8), memory_limit=(600 + 40) * 48 * bytes_per_input_pixel(tiny)) == (500, 8)
    # the automatic choice does not change a valid net's result
    img = smooth_image((50, 33))
    np.testing.assert_allclose(unet.predict_tiled(tiny, img, memory_limit=40 * 40 * bytes_per_input_pixel(tiny)),
                               whole_image_pass(tiny, img), atol=1e-5)


def test_grid_tiles_partition_the_image():
    model = tiny_unet(depth=3)
    assert make_grid(model, (100, 37), tile_size=30).tile == (24, 24)  # rounded down to the 2**3 pooling grid
    assert make_grid(model, (100, 37), tile_size=200).tile == (104, 40)  # capped at the image, on the grid
    for tile in (30, (8, 16), 200):
        g = make_grid(model, (100, 37), tile_size=tile)
        cover = np.zeros((100, 37), int)
        for ty in g.origins(0):
            for tx in g.origins(1):
                cover[ty : ty + g.tile[0], tx : tx + g.tile[1]] += 1
        assert (cover == 1).all()


def test_blend_window_is_a_partition_of_unity_over_the_overlap():
    margin, tile = 6, 20
    w = blend_window(tile + 2 * margin, margin)
    assert (w > 0).all() and w.max() == 1
    total = np.zeros(3 * tile + 2 * margin)
    for k in range(3):
        total[k * tile : k * tile + tile + 2 * margin] += w
    np.testing.assert_allclose(total[2 * margin : -2 * margin], 1.0, atol=1e-6)


@pytest.mark.parametrize("name,kwargs,tile", [
    ("unet", dict(base_channels=4, depth=2, padding="same", dropout=0.0), 32),
    ("fcn8s", dict(base_channels=4, fc_channels=16, dropout=0.0), 64),
])
def test_same_padded_nets_blend_overlapping_tiles_approximately(name, kwargs, tile):
    """Measured error of the blended tiles against one tile covering the whole image.

    Same-padded nets see zeros at every tile border, so tiling is approximate; the
    overlap + blending must bring it far below naive non-overlapping tiles, and
    more overlap must help.  (Measured on these random nets: U-Net depth 2 max 0.11,
    FCN-8s max 0.010 at the default margin; without overlap 0.86 and 0.47.)
    """
    torch.manual_seed(0)
    model = unet.create_model(name, **kwargs).eval()
    img = smooth_image((150, 170))
    ref = unet.predict_tiled(model, img, tile_size=1024)
    big = int(1.5 * context_radius(model))
    err = {m: np.abs(unet.predict_tiled(model, img, tile_size=tile, margin=m) - ref) for m in (None, 0, big)}
    assert err[None].max() < 0.15
    assert err[None].max() < err[0].max() / 3
    assert err[None].mean() < err[0].mean() / 10
    assert err[big].mean() < err[None].mean()


def _dihedral(img, k, flip):
    x = img[..., ::-1] if flip else img
    return np.rot90(x, k, axes=(-2, -1))


def _undo(p, k, flip):
    y = np.rot90(p, -k, axes=(-2, -1))
    return y[..., ::-1] if flip else y


def test_tta_averages_the_eight_flips_and_rotations():
    # Each tile is flipped/rotated as a whole, which maps the 2x2 pooling pairs onto pooling
    # pairs; whole flipped images keep that alignment when their size is a multiple of 2**depth.
    model = tiny_unet(depth=2)
    img = smooth_image((28, 32), seed=5)
    tta = unet.predict_tiled(model, img, tile_size=12, tta=True)
    manual = np.mean([_undo(unet.predict_tiled(model, np.ascontiguousarray(_dihedral(img, k, f)), tile_size=200), k, f)
                      for k in range(4) for f in (False, True)], axis=0)
    np.testing.assert_allclose(tta, manual, atol=1e-5)
    # TTA makes the prediction equivariant to rotation; a single pass is not
    rot = np.ascontiguousarray(np.rot90(img))
    np.testing.assert_allclose(unet.predict_tiled(model, rot, tta=True, tile_size=8), np.rot90(tta, axes=(1, 2)), atol=1e-5)
    plain = unet.predict_tiled(model, img)
    assert np.abs(np.rot90(plain, axes=(1, 2)) - unet.predict_tiled(model, rot)).max() > 1e-3


def test_one_axis_rule_for_arrays_and_files(tmp_path):
    from unet.inference.files import open_image
    from unet.inference.tiling import infer_axes

    assert infer_axes((20, 30), 1) == "YX"
    assert infer_axes((20, 30, 3), 1) == "YXC" and infer_axes((20, 30, 8), 1, samples_last=True) == "YXC"
    assert infer_axes((3, 20, 30), 3) == "CYX"
    with pytest.raises(UserError, match="axes"):  # an in-memory (3, H, W) array may be a stack or channels
        infer_axes((3, 20, 30), 1)
    assert infer_axes((3, 20, 30), 1, planes_first=True) == "ZYX"  # a file lists its planes first
    assert infer_axes((5, 20, 30, 2), 2, planes_first=True) == "ZYXC"
    assert infer_axes((5, 2, 20, 30), 2, planes_first=True) == "ZCYX"
    np.save(tmp_path / "stack.npy", np.zeros((3, 20, 30), np.float32))
    assert open_image(tmp_path / "stack.npy")[1] == "ZYX"
    np.save(tmp_path / "rgb.npy", np.zeros((20, 30, 3), np.float32))
    assert open_image(tmp_path / "rgb.npy", in_channels=3)[1] == "YXC"

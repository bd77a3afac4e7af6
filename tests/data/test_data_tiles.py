"""Tile sampling for valid networks (paper Fig. 2) and the deterministic loader."""

import numpy as np
import pytest
import torch

from unet.data import (IGNORE_INDEX, MIRROR_MODE, Augmentation, Sample, TileDataset, ctc_pairs, extract_tile,
                       load_sample, make_loader, training_target, weight_map)


@pytest.fixture(scope="module")
def hela(dic_hela):
    pairs = ctc_pairs(dic_hela, sequences=("01",))
    return [load_sample(p) for p in (pairs[0], pairs[-1])]  # a full frame and the partial 01/t067


def test_mirror_mode_is_numpy_symmetric():
    assert MIRROR_MODE == "symmetric"
    a = np.arange(5 * 7).reshape(5, 7)
    padded = np.pad(a, 20, mode=MIRROR_MODE)  # pads several times the image size
    for top, left in [(-3, -2), (-20, -20), (2, 4), (-17, 3), (1, -19)]:
        np.testing.assert_array_equal(extract_tile(a, (top, left), (9, 11)),
                                      padded[top + 20: top + 29, left + 20: left + 31])
    # Fig. 2: the edge pixel is repeated across the border
    assert list(extract_tile(a, (0, -2), (1, 4))[0]) == [1, 0, 0, 1]


def _synthetic(h=40, w=50, seed=0):
    rng = np.random.default_rng(seed)
    lab = np.zeros((h, w), np.int32)
    lab[5:20, 5:20] = 1
    lab[5:20, 20:35] = 2
    lab[25:35, 10:40] = 3
    return Sample(image=rng.random((1, h, w)).astype(np.float32), labels=lab, name="s")


@pytest.mark.parametrize("augment", [Augmentation.none(), Augmentation.none().replace(extra=lambda x, rng: x)])
def test_tiles_carry_mirrored_context_and_centre_crop(augment):
    # second case: the interpolating path (spline + warp kernel) with an identity transform
    s = _synthetic()
    ds = TileDataset([s], input_size=28, output_size=12, augment=augment, length=20, seed=3)
    target = training_target(s.labels)
    weight = weight_map(s.labels, class_weights=ds.class_weights)
    halo = 8
    pad_img = np.pad(s.image, ((0, 0), (halo, halo), (halo, halo)), mode=MIRROR_MODE)
    positions = set()
    for i in range(20):
        item = ds[i]
        _, oy, ox = ds.locate(i)
        positions.add((oy, ox))
        assert 0 <= oy <= 40 - 12 and 0 <= ox <= 50 - 12
        np.testing.assert_allclose(item["image"].numpy(), pad_img[:, oy:oy + 28, ox:ox + 28], atol=1e-5)
        np.testing.assert_array_equal(item["target"].numpy(), target[oy:oy + 12, ox:ox + 12])
        np.testing.assert_allclose(item["weight"].numpy(), weight[oy:oy + 12, ox:ox + 12], rtol=1e-5)
    assert len(positions) > 10  # random positions
    assert any(oy < halo or ox < halo for oy, ox in positions)  # some tiles need mirrored context


def test_item_types_and_shapes_and_ignore_weights(hela):
    ds = TileDataset(hela, input_size=188, output_size=100, length=8, seed=0)
    item = ds[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 188, 188)
    assert item["target"].dtype == torch.int64 and item["target"].shape == (100, 100)
    assert item["weight"].dtype == torch.float32 and item["weight"].shape == (100, 100)
    saw_ignore = False
    for i in range(8):
        t, w = ds[i]["target"], ds[i]["weight"]
        assert set(t.unique().tolist()) <= {0, 1, IGNORE_INDEX}
        assert torch.all(w[t == IGNORE_INDEX] == 0) and torch.all(w[t != IGNORE_INDEX] > 0)
        saw_ignore |= bool((t == IGNORE_INDEX).any())
    assert saw_ignore  # the partial frame contributes ignored pixels


def test_same_seed_same_samples_independent_of_order(hela):
    kw = dict(input_size=124, output_size=36, length=6)
    a = TileDataset(hela, seed=7, **kw)
    b = TileDataset(hela, seed=7, **kw)
    c = TileDataset(hela, seed=8, **kw)
    for i in (5, 0, 3):  # any order
        x, y = a[i], b[i]
        assert all(torch.equal(x[k], y[k]) for k in x)
    assert not torch.equal(a[0]["image"], c[0]["image"])
    assert not torch.equal(a[0]["image"], a[1]["image"])


def test_loader_resumes_exactly_whatever_the_worker_count(hela):
    ds = TileDataset(hela, input_size=60, output_size=60, length=12, seed=1)
    full = [b["image"] for b in make_loader(ds, batch_size=3, num_workers=0)]
    resumed = [b["image"] for b in make_loader(ds, batch_size=3, num_workers=2, start=6)]
    assert len(full) == 4 and len(resumed) == 2
    for x, y in zip(full[2:], resumed):
        assert torch.equal(x, y)
    shuffled = [b["image"] for b in make_loader(ds, batch_size=3, num_workers=0, shuffle=True)]
    again = [b["image"] for b in make_loader(ds, batch_size=3, num_workers=0, shuffle=True, start=3)]
    assert torch.equal(shuffled[1], again[0])


def test_invalid_geometry_is_rejected(hela):
    with pytest.raises(ValueError, match="centred"):
        TileDataset(hela, input_size=100, output_size=51)
    with pytest.raises(IndexError):
        TileDataset(hela, input_size=60, length=2).sample(2)


def test_image_target_and_weight_are_deformed_together():
    s = _synthetic(64, 64)
    target = training_target(s.labels)
    s.image = target[None].astype(np.float32)  # the image shows the target itself
    aug = Augmentation(gray=False, rotate=15.0)  # elastic, flips, turns, rotations; no gray values
    ds = TileDataset([s], input_size=48, output_size=32, augment=aug, length=10, seed=0)
    for i in range(10):
        item = ds[i]
        img = item["image"][0, 8:40, 8:40].numpy()
        t = item["target"].numpy()
        # the cubic image and the nearest-neighbour target agree away from the edges of the objects
        agree = (np.abs(img - t) < 0.5).mean()
        assert agree > 0.97, agree
        w = item["weight"].numpy()
        if (t == 1).sum() > 20:  # inside cells the (linearly warped) weight is the cell class weight
            assert abs(np.median(w[t == 1]) - ds.class_weights[1]) < 1e-3


def test_weight_maps_cached_on_disk(tmp_path, hela):
    a = TileDataset(hela, input_size=60, length=2, cache_dir=tmp_path)
    files = sorted(tmp_path.glob("weights-*.npy"))
    assert len(files) == 2
    stamp = [f.stat().st_mtime_ns for f in files]
    b = TileDataset(hela, input_size=60, length=2, cache_dir=tmp_path)  # reads them back
    assert [f.stat().st_mtime_ns for f in sorted(tmp_path.glob("weights-*.npy"))] == stamp
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(x, y)
    c = TileDataset(hela, input_size=60, length=2, cache_dir=tmp_path, sigma=3.0)  # other settings, other key
    assert len(list(tmp_path.glob("weights-*.npy"))) == 4
    assert not np.array_equal(a.weights[0], c.weights[0])


def test_loader_leaves_the_global_rng_alone():
    """Exact resume: dropout draws from torch's global generator; the loader must not draw from it."""
    torch.manual_seed(0)
    before = torch.get_rng_state()
    for workers in (0, 1):
        loader = make_loader(list(range(6)), batch_size=2, num_workers=workers, start=2)
        assert torch.cat(list(loader)).tolist() == [2, 3, 4, 5]
    assert torch.equal(torch.get_rng_state(), before)


def test_loader_shares_each_global_batch_out_to_the_processes():
    parts = [torch.cat(list(make_loader(list(range(16)), batch_size=2, num_workers=0, start=8, rank=r,
                                        world_size=2, shuffle=True))).tolist() for r in (0, 1)]
    order = torch.cat(list(make_loader(list(range(16)), batch_size=2, num_workers=0, shuffle=True))).tolist()
    assert parts == [order[8:10] + order[12:14], order[10:12] + order[14:16]]
    with pytest.raises(ValueError, match="global batch"):
        make_loader(list(range(16)), batch_size=2, start=2, rank=1, world_size=2)

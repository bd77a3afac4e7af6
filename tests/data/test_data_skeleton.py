"""Membrane skeleton (beyond the paper, ``loss.skeleton_recall``): the centre lines a gap would cut."""

import numpy as np
import pytest

from unet.data.targets import IGNORE_INDEX
from unet.data.weights import membrane_skeleton


def _two_membranes():
    """Three cells side by side: a 2-px membrane between the first two, an 18-px one between the others."""
    target = np.ones((48, 80), np.uint8)
    target[:, 20:22] = 0
    target[:, 50:68] = 0
    return target


def test_every_membrane_has_a_centre_line_however_thick():
    skel = membrane_skeleton(_two_membranes(), tube=0)
    # one line per membrane along its length: thin and thick membranes weigh alike
    thin, thick = skel[12:36, 18:24].sum(axis=1), skel[12:36, 48:70].sum(axis=1)
    assert np.all(thin >= 1) and np.all(thick == 1)
    assert np.all(np.nonzero(skel[12:36, 48:70])[1] + 48 >= 57) and np.all(np.nonzero(skel[12:36, 48:70])[1] + 48 <= 60)
    assert not skel[_two_membranes() == 1].any()  # never on a cell


def test_the_tube_widens_the_line_but_stays_inside_the_membrane():
    target = _two_membranes()
    bare, tubed = membrane_skeleton(target, tube=0), membrane_skeleton(target, tube=1)
    assert np.all(tubed[bare])
    assert tubed[12:36, 48:70].sum(axis=1).min() == 3  # 1 px on each side of the centre line
    assert not tubed[target == 1].any()


def test_ignored_pixels_and_images_without_membrane():
    target = _two_membranes()
    target[:, 50:68] = IGNORE_INDEX  # an unannotated band is not membrane
    skel = membrane_skeleton(target)
    assert not skel[:, 40:].any() and skel[:, 18:24].any()
    assert not membrane_skeleton(np.ones((8, 8), np.uint8)).any()
    with pytest.raises(ValueError, match="2-D"):
        membrane_skeleton(np.zeros((2, 8, 8), np.uint8))


def test_tile_dataset_gives_the_skeleton_of_each_deformed_target_only_when_asked():
    from unet.data.augment import Augmentation
    from unet.data.loaders import Sample
    from unet.data.tiles import TileDataset

    target = _two_membranes()
    lab = np.where(target == 1, np.cumsum(np.diff(np.r_[0, target[0]]) == 1)[None, :], 0).astype(np.int32)
    sample = Sample(name="s", image=np.random.default_rng(0).random((1, 48, 80), dtype=np.float32), labels=lab)
    aug = Augmentation(elastic=True, flips=True, rot90=True)
    off = TileDataset([sample], input_size=40, length=3, augment=aug)
    on = TileDataset([sample], input_size=40, length=3, augment=aug, skeleton=True)
    assert "skeleton" not in off[0]
    for i in range(3):
        item = on[i]
        assert item["skeleton"].dtype.is_floating_point is False
        np.testing.assert_array_equal(item["skeleton"].numpy(), membrane_skeleton(item["target"].numpy()))
        np.testing.assert_array_equal(item["target"].numpy(), off[i]["target"].numpy())  # same draw

"""Thin-membrane weight (beyond the paper, ``loss.gap_weight``): more weight where a gap would merge cells."""

import numpy as np
import pytest

from unet.data.targets import IGNORE_INDEX
from unet.data.weights import thin_membrane_weight, weight_map


def _two_membranes():
    """Three cells side by side: a 2-px membrane between the first two, an 18-px one between the others."""
    lab = np.zeros((48, 80), np.int32)
    lab[:, :20] = 1
    lab[:, 22:50] = 2
    lab[:, 68:] = 3
    return lab


def test_thin_membranes_weigh_more_than_thick_ones():
    target = (_two_membranes() > 0).astype(np.uint8)
    w = thin_membrane_weight(target, width=3.0)
    thin, thick = w[10:38, 20:22], w[10:38, 55:63]
    assert thin.min() > 0.5 and thick.max() < 1e-3
    assert np.all(w[target == 1] == 0)  # cells get nothing


def test_gap_weight_adds_to_the_paper_map_and_is_off_by_default():
    lab = _two_membranes()
    paper = weight_map(lab)
    np.testing.assert_array_equal(weight_map(lab, gap_weight=0.0), paper)
    extra = weight_map(lab, gap_weight=5.0) - paper
    assert extra[10:38, 20:22].min() > 2.5 and np.abs(extra[10:38, 56:62]).max() < 1e-2
    assert np.all(extra[lab > 0] == 0)


def test_ignored_pixels_stay_at_zero_weight():
    lab = _two_membranes()
    target = (lab > 0).astype(np.uint8)
    target[:, 20:22] = IGNORE_INDEX
    w = weight_map(lab, target=target, gap_weight=5.0)
    assert np.all(w[:, 20:22] == 0)


def test_tile_dataset_and_config_carry_the_gap_weight():
    from unet.data.loaders import Sample
    from unet.data.tiles import TileDataset
    from unet.training.config import ConfigError, load_config

    pytest.importorskip("skimage")
    lab = _two_membranes()
    sample = Sample(name="s", image=np.zeros((1, *lab.shape), np.float32), labels=lab)
    off = TileDataset([sample], input_size=32, length=1)
    on = TileDataset([sample], input_size=32, length=1, gap_weight=4.0)
    assert on.weights[0][10:38, 20:22].min() > off.weights[0][10:38, 20:22].min() + 2
    with pytest.raises(ConfigError, match="gap_weight"):
        load_config(None, overrides=["loss.gap_weight=-1"])

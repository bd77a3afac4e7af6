"""The comparison figure of a report: the error colours mean what the caption says."""

import numpy as np
import pytest
import skimage.io

from unet.reproduce.figures import GAP_RGB, SPURIOUS_RGB, instances_rgb, membrane_errors_rgb, plot_comparison


def _two_cells():
    labels = np.ones((32, 32), np.uint8)
    labels[:, 15:17] = 0  # a membrane between two cells
    return labels


def test_gap_in_a_membrane_is_red_and_a_spurious_membrane_blue():
    labels = _two_cells()
    prob = np.where(labels > 0, 0.9, 0.1)
    prob[10:14, 15:17] = 0.8  # a gap: membrane predicted as cell, merging the two cells
    prob[25, 3:8] = 0.2  # a spurious membrane inside a cell
    rgb = membrane_errors_rgb(prob, labels)
    red = np.all(rgb == GAP_RGB, axis=-1)
    blue = np.all(rgb == SPURIOUS_RGB, axis=-1)
    assert red.sum() == 8 and red[10:14, 15:17].all()
    assert blue.sum() == 5 and blue[25, 3:8].all()
    np.testing.assert_allclose(rgb[0, 0], 0.9)  # elsewhere: the probability in grey


def test_instances_get_distinct_colours():
    inst = np.zeros((20, 20), np.int32)
    inst[2:8, 2:8], inst[10:18, 10:18] = 1, 2
    rgb = instances_rgb(np.zeros((20, 20)), inst)
    assert not np.allclose(rgb[4, 4], rgb[14, 14]) and not np.allclose(rgb[4, 4], rgb[0, 0])


@pytest.mark.parametrize("kind", ["isbi", "seg"])
def test_comparison_figure_has_one_row_per_fold(tmp_path, kind):
    labels = _two_cells() if kind == "isbi" else np.kron([[1, 2], [3, 0]], np.ones((16, 16), np.int32))
    row = {"title": "fold", "image": np.random.default_rng(0).random((32, 32)), "labels": labels,
           "predictions": [("A", np.where(labels > 0, 0.9, 0.1)), ("B", np.full((32, 32), 0.6))]}
    one = skimage.io.imread(plot_comparison([row], kind=kind, path=tmp_path / "one.png"))
    two = skimage.io.imread(plot_comparison([row, row], kind=kind, path=tmp_path / "two.png"))
    assert two.shape[0] > 1.6 * one.shape[0] and two.shape[1] == one.shape[1]
    assert one.shape[1] > 3 * one.shape[0]  # image, truth and two runs side by side


def test_comparison_figure_refuses_unknown_kinds_and_empty_input(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        plot_comparison([{}], kind="iou", path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="no rows"):
        plot_comparison([], kind="seg", path=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()

import numpy as np
import pytest

from unet.inference import cell_instances, label_instances


def _two_touching_cells():
    """Two 16x18 cells side by side; the network's border between them is weak (0.6 > 0.5)."""
    gt = np.zeros((20, 40), np.int32)
    gt[2:18, 2:20] = 1
    gt[2:18, 20:38] = 2
    prob = np.where(gt > 0, 0.97, 0.02).astype(np.float32)
    prob[2:18, 19:21] = 0.6  # a valley of the probability, not deep enough to cut the mask
    return gt, prob


def test_components_are_the_connected_components_of_the_mask():
    rng = np.random.default_rng(0)
    prob = rng.random((30, 30))
    np.testing.assert_array_equal(cell_instances(prob, threshold=0.7, min_size=3),
                                  label_instances(prob > 0.7, min_size=3))


def test_watershed_divides_cells_joined_by_a_weak_border():
    gt, prob = _two_touching_cells()
    assert cell_instances(prob).max() == 1  # components merge the two cells
    lab = cell_instances(prob, seed_threshold=0.9)
    assert lab.max() == 2
    for cell in (1, 2):
        r = np.bincount(lab[gt == cell]).argmax()
        inter = np.sum((lab == r) & (gt == cell))
        assert inter / np.sum((lab == r) | (gt == cell)) > 0.9
    np.testing.assert_array_equal(lab > 0, prob > 0.5)  # the mask is only divided, never changed


def test_cells_without_a_confident_core_are_kept_and_small_cells_dropped():
    prob = np.zeros((30, 30), np.float32)
    prob[2:12, 2:12] = 0.95  # a confident cell
    prob[15:25, 15:25] = 0.7  # a cell without any pixel above the seed threshold
    prob[27:29, 2:4] = 0.95  # 4 px
    lab = cell_instances(prob, seed_threshold=0.9, min_size=5)
    assert sorted(np.unique(lab)) == [0, 1, 2]  # consecutive labels, in raster order
    assert lab[5, 5] == 1 and lab[20, 20] == 2 and lab[28, 3] == 0


def test_bad_seed_threshold_is_refused():
    with pytest.raises(ValueError, match="seed_threshold"):
        cell_instances(np.zeros((4, 4)), threshold=0.5, seed_threshold=0.4)
    with pytest.raises(ValueError, match="2-D"):
        cell_instances(np.zeros((2, 4, 4)))

"""Gap-closing post-processing of a membrane map (beyond the paper): seeded watershed, one-pixel boundaries."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from unet.inference import membrane_watershed
from unet.metrics import isbi_errors, rand_error


def _cells_with_a_gap(seed=0):
    """Four cells separated by 4-px membranes (ISBI convention 255 = cell) and a blurred cell-probability
    map in which one membrane has a gap (probability 0.7 there: cells merge at every threshold < 0.7)."""
    gt = np.full((64, 64), 255, np.uint8)
    gt[:, 30:34] = 0
    gt[30:34, :] = 0
    prob = gaussian_filter(np.where(gt > 0, 0.97, 0.03), 1.5).astype(np.float32)
    rng = np.random.default_rng(seed)
    prob = np.clip(prob + rng.normal(0, 0.01, prob.shape), 0, 1).astype(np.float32)
    gap = prob.copy()
    gap[8:16, 29:35] = 0.7
    return gt, prob, gap


def test_closes_a_gap_and_lowers_the_rand_error():
    gt, _, gap = _cells_with_a_gap()
    before = rand_error(gt, gap)
    closed = membrane_watershed(gap, seed_threshold=0.9)
    after = rand_error(gt, closed)
    assert before > 0.03 and after < before / 10
    # one-pixel boundary across the gap, inside the membrane columns
    rows = closed[8:16, 29:35] == 0
    assert rows.any(axis=1).all() and (rows.sum(axis=1) <= 2).all()
    assert isbi_errors(gt, closed)["warping_error"] <= isbi_errors(gt, gap)["warping_error"]


def test_keeps_the_network_map_elsewhere():
    gt, prob, _ = _cells_with_a_gap()
    closed = membrane_watershed(prob, seed_threshold=0.9)
    changed = closed != prob
    assert np.all(closed[changed] == 0)  # only boundaries are drawn, nothing is raised
    assert np.all(gt[changed] == 0)  # and they lie on the membranes here
    assert rand_error(gt, closed) <= rand_error(gt, prob) + 1e-12


def test_small_seeds_are_ignored_and_no_seed_changes_nothing():
    gt, prob, gap = _cells_with_a_gap()
    noisy = np.minimum(gap, 0.95)
    noisy[5, 5] = noisy[5, 20] = 0.999  # two single-pixel peaks inside one cell: the only seeds above 0.96
    split = rand_error(gt, membrane_watershed(noisy, seed_threshold=0.96))
    kept = rand_error(gt, membrane_watershed(noisy, seed_threshold=0.96, min_seed_size=5))
    assert split > kept + 0.03  # a boundary between the two peaks splits the cell; without seeds nothing changes
    flat = np.full((16, 16), 0.5, np.float32)
    np.testing.assert_array_equal(membrane_watershed(flat, seed_threshold=0.9), flat)
    with pytest.raises(ValueError, match="seed_threshold"):
        membrane_watershed(flat, seed_threshold=1.0)


def test_parameters_are_chosen_on_the_given_images():
    from unet.reproduce.evaluate import choose_membrane_watershed, fold_metrics

    gt, _, gap = _cells_with_a_gap()
    labels = [(gt > 0).astype(np.int32)] * 2
    best, scores = choose_membrane_watershed([gap, gap], labels, seed_grid=(0.6, 0.9), min_seed_grid=(0,))
    assert scores["none"] > 0.03 and scores["0.9/0"] < scores["none"]
    assert best == {"seed_threshold": 0.9, "min_seed_size": 0}  # 0.6 seeds the gap itself: no boundary there
    m = fold_metrics("isbi", [gap], labels[:1], membrane_watershed=best)
    assert m["rand_error_watershed"] < m["rand_error"] and m["membrane_watershed"] == best


def test_small_cell_fragments_are_removed_and_chosen_by_warping_error():
    from unet.reproduce.evaluate import choose_membrane_watershed

    gt = np.full((64, 64), 255, np.uint8)
    gt[:, 28:36] = 0  # two cells, an 8-px membrane
    cut = np.where(gt > 0, 0.97, 0.03).astype(np.float32)
    cut[4, 0:5] = cut[0:5, 4] = 0.03  # a spurious line cuts a 16-px corner off the left cell: a split
    kept = membrane_watershed(cut, seed_threshold=0.9)
    cleaned = membrane_watershed(cut, seed_threshold=0.9, min_cell_size=25)
    assert np.all(cleaned[0:4, 0:4] == 0) and kept[0:4, 0:4].min() > 0.5
    cells = cut > 0.5
    cells[:5, :5] = False
    np.testing.assert_array_equal(cleaned[cells] > 0.5, kept[cells] > 0.5)  # the cells (hundreds of px) stay
    assert isbi_errors(gt, kept)["splits"] == 1 and isbi_errors(gt, cleaned)["warping_error"] == 0
    labels = [(gt > 0).astype(np.int32)]
    best, scores = choose_membrane_watershed([cut], labels, seed_grid=(0.9,), min_seed_grid=(0,),
                                             min_cell_grid=(0, 25))
    assert scores["cell/25"] < scores["cell/0"] and best == {"seed_threshold": 0.9, "min_seed_size": 0,
                                                             "min_cell_size": 25}
    # a grid of one value keeps the two-parameter choice
    assert "min_cell_size" not in choose_membrane_watershed([cut], labels, seed_grid=(0.9,), min_seed_grid=(0,))[0]


def test_smallest_cell_kept_weighs_the_rand_error_it_costs():
    """Removing small cell regions fixes splits (warping error) but turns small true cells into membrane
    (Rand error); the choice minimises the product of the two errors, both recorded per size tried."""
    from unet.reproduce.evaluate import choose_membrane_watershed

    gt = np.full((64, 64), 255, np.uint8)
    gt[:, 28:36] = 0  # two large cells, an 8-px membrane ...
    gt[40:42, :28] = gt[40:52, 8:10] = gt[50:52, :10] = 0  # ... and a true 60-px cell in the left one's corner
    prob = np.where(gt > 0, 0.97, 0.03).astype(np.float32)
    prob[4, 0:5] = prob[0:5, 4] = 0.03  # a spurious line cuts a 16-px fragment off the left cell: a split
    labels = [(gt > 0).astype(np.int32)]
    best, scores = choose_membrane_watershed([prob], labels, seed_grid=(0.9,), min_seed_grid=(0,),
                                             min_cell_grid=(0, 25, 100))
    for k in (0, 25, 100):  # the recorded errors are those of the post-processed map
        closed = membrane_watershed(prob, seed_threshold=0.9, min_cell_size=k)
        assert scores[f"cell/{k}"] == pytest.approx(isbi_errors(gt, closed)["warping_error"])
        assert scores[f"cell_rand/{k}"] == pytest.approx(rand_error(gt, closed))
    # 100 px also removes the true 60-px cell: its Rand error rises above what 25 px gives
    assert scores["cell_rand/100"] > scores["cell_rand/25"]
    product = {k: scores[f"cell/{k}"] * scores[f"cell_rand/{k}"] for k in (0, 25, 100)}
    assert best["min_cell_size"] == min(product, key=lambda k: (product[k], k)) == 25

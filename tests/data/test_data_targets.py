"""Targets with separation borders (paper Sec. 3, Fig. 3c) and the partial-annotation policy."""

import numpy as np
import skimage.measure

from unet.data import IGNORE_INDEX, ctc_pairs, load_sample, separation_borders, training_target


def test_touching_cells_are_split_into_two_components():
    lab = np.zeros((20, 30), np.int32)
    lab[4:16, 3:15] = 1
    lab[4:16, 15:27] = 2  # shares a vertical edge with cell 1
    assert skimage.measure.label(lab > 0, connectivity=1).max() == 1  # merged without borders
    t = training_target(lab)
    assert t.dtype == np.uint8 and set(np.unique(t).tolist()) == {0, 1}
    for conn in (1, 2):  # even 8-connectivity keeps them apart
        comps = skimage.measure.label(t == 1, connectivity=conn)
        assert comps.max() == 2
    # only pixels at the contact were removed, from both cells
    removed = (lab > 0) & (t == 0)
    assert set(np.unique(np.nonzero(removed)[1]).tolist()) == {14, 15}
    assert training_target(lab, border=False)[removed].all()


def test_diagonal_contact_is_split():
    lab = np.zeros((10, 10), np.int32)
    lab[1:5, 1:5] = 1
    lab[5:9, 5:9] = 2  # touch only at a corner
    comps = skimage.measure.label(training_target(lab) == 1, connectivity=2)
    assert comps.max() == 2


def test_isolated_cell_is_untouched():
    lab = np.zeros((12, 12), np.int32)
    lab[3:9, 3:9] = 4
    assert not separation_borders(lab).any()
    np.testing.assert_array_equal(training_target(lab), (lab > 0).astype(np.uint8))


def test_real_dic_hela_components_never_span_two_cells(dic_hela):
    pairs = ctc_pairs(dic_hela)
    for pair in pairs[::3] if len(pairs) > 5 else pairs:
        lab = load_sample(pair).labels
        t = training_target(lab, partial=pair.partial)
        comps = skimage.measure.label(t == 1, connectivity=2)
        for region in skimage.measure.regionprops(comps, intensity_image=lab):
            ids = np.unique(region.image_intensity[region.image])
            assert len(ids) == 1 and ids[0] > 0, pair.name
        # every cell keeps most of its pixels
        kept = np.bincount(lab[t == 1].ravel(), minlength=lab.max() + 1)[1:]
        total = np.bincount(lab.ravel(), minlength=lab.max() + 1)[1:]
        assert np.all(kept[total > 0] > 0.8 * total[total > 0]), pair.name  # (a crop lacks some ids)


def test_partial_frame_ignores_far_background(dic_hela):
    pair = next(p for p in ctc_pairs(dic_hela) if p.partial)
    lab = load_sample(pair).labels
    t = training_target(lab, partial=True, partial_margin=8)
    assert set(np.unique(t).tolist()) == {0, 1, IGNORE_INDEX}
    np.testing.assert_array_equal(t == 1, training_target(lab) == 1)  # cells unchanged
    import scipy.ndimage as ndi

    dist = ndi.distance_transform_edt(lab == 0)
    assert np.all(t[dist > 8] == IGNORE_INDEX)
    assert np.all(t[(dist > 0) & (dist <= 8)] == 0)
    assert (t == IGNORE_INDEX).mean() > 0.5  # most of that sparse frame carries no label

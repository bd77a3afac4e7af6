"""Weight map of paper eq. 2."""

import numpy as np
import scipy.ndimage as ndi

import unet
from unet.data import IGNORE_INDEX, class_weights_from, ctc_pairs, load_sample, training_target, weight_map


def _two_disks(gap, r=12, size=(64, 96)):
    yy, xx = np.mgrid[: size[0], : size[1]]
    cy, cx1 = size[0] // 2, 20
    cx2 = cx1 + 2 * r + gap + 1  # rightmost pixel of disk 1 at cx1 + r; `gap` empty columns between
    lab = np.zeros(size, np.int32)
    lab[(yy - cy) ** 2 + (xx - cx1) ** 2 <= r * r] = 1
    lab[(yy - cy) ** 2 + (xx - cx2) ** 2 <= r * r] = 2
    return lab, cy, cx1 + r, cx2 - r


def test_midpoint_of_gap_matches_eq2():
    gap = 7
    lab, cy, right1, left2 = _two_disks(gap)
    assert left2 - right1 - 1 == gap
    cw = (0.7, 1.9)
    w = weight_map(lab, w0=10.0, sigma=5.0, class_weights=cw)
    mid = (right1 + left2) // 2
    d = mid - right1  # distance to the nearest pixel of each disk along the axis
    assert d == left2 - mid == 4
    expected = cw[0] + 10.0 * np.exp(-((2 * d) ** 2) / (2 * 5.0**2))
    np.testing.assert_allclose(w[cy, mid], expected, rtol=1e-5)
    # far from both cells only the class weight remains; inside cells too
    assert np.isclose(w[2, 2], cw[0]) and np.isclose(w[cy, 20], cw[1])
    # other sigma/w0 follow the formula too
    w2 = weight_map(lab, w0=3.0, sigma=2.0, class_weights=cw)
    np.testing.assert_allclose(w2[cy, mid], cw[0] + 3.0 * np.exp(-64 / 8.0), rtol=1e-5)


def test_border_term_matches_brute_force_everywhere():
    rng = np.random.default_rng(0)
    lab = np.zeros((80, 80), np.int32)
    for k in range(1, 7):
        y, x = rng.integers(8, 72, 2)
        lab[y - 6:y + 6, x - 5:x + 5] = k  # later cells overwrite, some touch
    lab = np.unique(lab, return_inverse=True)[1].reshape(lab.shape).astype(np.int32)
    dists = np.stack([ndi.distance_transform_edt(lab != k) for k in range(1, lab.max() + 1)])
    dists.sort(axis=0)
    d1, d2 = dists[0], dists[1]
    target = training_target(lab)
    cw = class_weights_from(target)
    ref = cw[target] + (target == 0) * 10.0 * np.exp(-((d1 + d2) ** 2) / 50.0)
    np.testing.assert_allclose(weight_map(lab), ref, atol=2e-4)


def test_class_weights_balance_the_classes():
    lab, *_ = _two_disks(7)
    target = training_target(lab)
    cw = class_weights_from(target)
    n0, n1 = (target == 0).sum(), (target == 1).sum()
    np.testing.assert_allclose(cw, [target.size / (2 * n0), target.size / (2 * n1)])
    # each class carries the same total weight, and no border term (w0 = 0) leaves w = w_c
    w = weight_map(lab, w0=0.0)
    np.testing.assert_allclose(w[target == 0].sum(), w[target == 1].sum(), rtol=1e-5)
    np.testing.assert_allclose(w.mean(), 1.0, rtol=1e-5)
    # over several images: counted together, ignore pixels excluded
    t2 = target.copy()
    t2[:10] = IGNORE_INDEX
    cw2 = class_weights_from([target, t2])
    c0 = n0 + (t2 == 0).sum()
    c1 = n1 + (t2 == 1).sum()
    np.testing.assert_allclose(cw2, [(c0 + c1) / (2 * c0), (c0 + c1) / (2 * c1)])


def test_binary_mask_is_labelled_and_ignore_gets_zero():
    lab, cy, right1, left2 = _two_disks(3)
    w_bin = weight_map(lab > 0)  # bool mask -> connected components
    np.testing.assert_allclose(w_bin, weight_map(lab), rtol=1e-6)
    target = training_target(lab)
    target[:5] = IGNORE_INDEX
    w = weight_map(lab, target=target, class_weights=(1.0, 1.0))
    assert np.all(w[:5] == 0) and np.all(w[5:] >= 1.0)


def test_real_dic_hela_weights_peak_between_touching_cells(dic_hela):
    pair = ctc_pairs(dic_hela)[0]
    lab = load_sample(pair).labels
    w = unet.weight_map(lab)
    assert w.dtype == np.float32 and w.shape == lab.shape and np.all(np.isfinite(w))
    target = training_target(lab)
    cw = class_weights_from(target)
    from unet.data import separation_borders

    border = separation_borders(lab)
    # separation borders (d1 = 0, d2 <= 1.5) carry nearly the full w0 on top of w_c
    assert np.all(w[border] >= cw[0] + 10 * np.exp(-1.5**2 / 50) - 1e-4)
    assert np.allclose(w[target == 1], cw[1])


def test_compiled_distance_transform_is_exact():
    from unet.data._edt import distance_to_label

    rng = np.random.default_rng(1)
    for trial in range(12):
        h, w = (int(x) for x in rng.integers(1, 40, 2))
        lab = rng.integers(0, 3, (h, w)).astype(np.int32) if trial % 2 else (rng.random((h, w)) < 0.03).astype(np.int32)
        out = np.empty((h, w), np.float32)
        distance_to_label(lab, 1, out)
        if (lab == 1).any():
            np.testing.assert_allclose(out, ndi.distance_transform_edt(lab != 1), atol=1e-4)
        else:
            assert np.isinf(out).all()

"""Elastic deformation (paper Sec. 3.1) against the reference elasticdeform, and augmentation."""

import elasticdeform
import numpy as np
import pytest
import scipy.ndimage as ndi

from unet.data import Augmentation, isbi2012_pairs, load_sample, training_target
from unet.data.elastic import (affine_matrix, dense_displacement, elastic_deform, random_displacement,
                               spline_coefficients, warp)

#: stated tolerance of the fast path against elasticdeform (unit-range images) where the sampling
#: position lies at least MARGIN px inside the image; nearer the border the two differ by the boundary
#: convention of the spline prefilter (elasticdeform always prefilters with "mirror")
TOL = 1e-4
MARGIN = 10


def _interior(disp, shape, margin=MARGIN):
    field = dense_displacement(disp, shape)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    y, x = yy + field[0], xx + field[1]
    return (y >= margin) & (y <= shape[0] - 1 - margin) & (x >= margin) & (x <= shape[1] - 1 - margin)


@pytest.fixture(scope="module")
def isbi(isbi2012):
    s = load_sample(isbi2012_pairs(isbi2012)[3], normalize={"mode": "minmax"})
    return s.image[0], s.labels


def test_dense_field_matches_elasticdeform():
    h, w = 61, 83
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    disp = random_displacement(np.random.default_rng(3), grid=3, sigma=4.0)
    field = dense_displacement(disp, (h, w))
    # linear interpolation of a ramp returns the sampling position exactly
    ref_y = elasticdeform.deform_grid(yy, disp, order=1, mode="nearest") - yy
    ref_x = elasticdeform.deform_grid(xx, disp, order=1, mode="nearest") - xx
    inside = (yy + field[0] > 0) & (yy + field[0] < h - 1) & (xx + field[1] > 0) & (xx + field[1] < w - 1)
    assert inside.mean() > 0.7
    np.testing.assert_allclose(field[0][inside], ref_y[inside], atol=1e-5)
    np.testing.assert_allclose(field[1][inside], ref_x[inside], atol=1e-5)
    # the field passes through the grid values at the control points (first/middle/last pixel)
    np.testing.assert_allclose(field[:, [0, 30, 60]][:, :, [0, 41, 82]], disp, atol=1e-4)


def test_fast_warp_matches_elasticdeform_on_real_image(isbi):
    image, labels = isbi
    target = training_target(labels)
    weight = ndi.gaussian_filter(target.astype(np.float32), 3)
    for seed in range(2):
        disp = random_displacement(np.random.default_rng(seed))  # 3x3 grid, 10 px (paper)
        ours_img, ours_t, ours_w = elastic_deform(image, disp, labels=target, weight=weight)
        ref_img, ref_t, ref_w = elasticdeform.deform_grid([image, target, weight], disp, order=[3, 0, 1],
                                                          mode="reflect")
        core = _interior(disp, image.shape)
        assert core.mean() > 0.8
        assert np.abs(ours_img - ref_img)[core].max() < TOL
        assert np.abs(ours_w - ref_w)[core].max() < TOL
        assert (ours_t != ref_t)[core].mean() < 1e-3
        # everywhere, border band included, it is scipy's cubic spline with the same mirroring
        yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
        field = dense_displacement(disp, image.shape)
        scipy_img = ndi.map_coordinates(image, [yy + field[0], xx + field[1]], order=3, mode="reflect")
        assert np.abs(ours_img - scipy_img).max() < TOL
        assert ours_img.std() > 0.5 * image.std() and not np.allclose(ours_img, image, atol=0.05)


def test_zero_displacement_is_identity_and_keeps_labels(isbi):
    image, labels = isbi
    labels8 = (labels % 251).astype(np.uint8)
    out, out_l, out_w = elastic_deform(image, np.zeros((2, 3, 3)), labels=labels8, weight=image)
    np.testing.assert_allclose(out, image, atol=1e-5)
    np.testing.assert_array_equal(out_l, labels8)
    np.testing.assert_allclose(out_w, image, atol=1e-6)
    # a real deformation moves pixels but never invents label values (nearest neighbour)
    _, moved, _ = elastic_deform(image, random_displacement(np.random.default_rng(7)), labels=labels8)
    assert set(np.unique(moved).tolist()) <= set(np.unique(labels8).tolist())
    assert (moved != labels8).mean() > 0.05


def test_flips_and_turns_are_exact():
    rng = np.random.default_rng(0)
    img = rng.random((1, 16, 16)).astype(np.float32)
    coef = spline_coefficients(img)
    tgt = rng.integers(0, 3, (16, 16)).astype(np.uint8)
    for k in range(4):
        out, t, _ = warp(coef, origin=(0, 0), size=16, matrix=affine_matrix(rot90=k), target=tgt)
        assert any(np.allclose(out[0], np.rot90(img[0], s), atol=1e-5) for s in (k, -k))
        assert any(np.array_equal(t, np.rot90(tgt, s)) for s in (k, -k))
    out, _, _ = warp(coef, origin=(0, 0), size=16, matrix=affine_matrix(flip_x=True))
    np.testing.assert_allclose(out[0], img[0, :, ::-1], atol=1e-5)
    out, _, _ = warp(coef, origin=(0, 0), size=16, matrix=affine_matrix(flip_y=True))
    np.testing.assert_allclose(out[0], img[0, ::-1], atol=1e-5)


def test_augmentation_config():
    none = Augmentation.none()
    assert none.is_identity and not Augmentation().is_identity
    paper = Augmentation()
    assert (paper.elastic_grid, paper.elastic_sigma) == (3, 10.0)
    # validation settings draw no randomness that changes the data
    disp, matrix, shift = none.geometry(np.random.default_rng(0))
    assert disp is None and np.array_equal(matrix, np.eye(2)) and shift == (0.0, 0.0)
    img = np.random.default_rng(1).random((1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(none.gray_values(img.copy(), np.random.default_rng(0)), img)
    # gray-value variations keep values outside [0, 1] (no clipping) and are reproducible
    wide = np.linspace(-0.3, 1.4, 64, dtype=np.float32).reshape(1, 8, 8)
    aug = Augmentation(gray_gamma=0.3, noise=0.01)
    a = aug.gray_values(wide.copy(), np.random.default_rng(5))
    b = aug.gray_values(wide.copy(), np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all() and not np.array_equal(a, wide)
    assert a.min() < -0.1 and a.max() > 1.1
    d, m, _ = Augmentation(rotate=0, flips=False, rot90=False).geometry(np.random.default_rng(0))
    assert d.shape == (2, 3, 3) and np.array_equal(m, np.eye(2))


def test_albumentations_extra_is_seeded():
    import albumentations as A

    aug = Augmentation.none().replace(extra=A.Compose([A.GaussNoise(std_range=(0.05, 0.1), p=1.0)]))
    img = np.full((1, 32, 32), 0.5, np.float32)
    a = aug.gray_values(img.copy(), np.random.default_rng(1))
    b = aug.gray_values(img.copy(), np.random.default_rng(1))
    c = aug.gray_values(img.copy(), np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert a.shape == img.shape and not np.array_equal(a, c)

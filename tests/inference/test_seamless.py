"""Seamless prediction (paper Sec. 2): which models depend on the tile, and the one warning when they do."""

import warnings

import numpy as np
import pytest
import torch

import unet
from unet.cli import main
from unet.inference import TileDependenceWarning, predict_tiled
from unet.models.seamless import is_seamless, tile_dependence

from inference_helpers import smooth_image, tiny_unet


def _tiny(norm=None, padding="valid", seed=0):
    torch.manual_seed(seed)
    return unet.create_model("unet", base_channels=4, depth=2, padding=padding, norm=norm, dropout=0.0).eval()


def _trained_bn(seed=0):
    """A batch-norm U-Net whose running statistics are not the initial 0 / 1 (a few training-mode passes)."""
    model = _tiny("batch", seed=seed).train()
    with torch.no_grad():
        for i in range(5):
            model(torch.from_numpy(smooth_image((2, 1, 76, 76), seed=i) * 2 + 0.3))
    return model.eval()


def _tile_dependent_warnings(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [w for w in caught if issubclass(w.category, TileDependenceWarning)]


@pytest.mark.parametrize("norm,needle", [("instance", "InstanceNorm2d"), ("group", "GroupNorm")])
def test_per_sample_normalisation_is_tile_dependent(norm, needle):
    reason = tile_dependence(_tiny(norm))
    assert reason is not None and needle in reason and "per-sample" in reason


def test_same_padding_and_bn_without_running_stats_are_tile_dependent():
    assert "same" in tile_dependence(_tiny(padding="same"))
    assert "same" in tile_dependence(unet.create_model("fcn8s", base_channels=4, fc_channels=8))
    model = _tiny("batch")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.track_running_stats = False  # eval mode would use each tile's statistics
    assert "BatchNorm2d" in tile_dependence(model)


def test_valid_nets_without_per_tile_statistics_are_seamless():
    assert tile_dependence(_tiny()) is None
    assert tile_dependence(_tiny("batch")) is None and is_seamless(_tiny("none"))


@pytest.mark.parametrize("model_fn", [lambda: _tiny("instance"), lambda: _tiny(padding="same")])
def test_warning_only_when_a_tile_dependent_model_splits_the_image(model_fn):
    model = model_fn()
    img = smooth_image((40, 40))
    got = _tile_dependent_warnings(lambda: predict_tiled(model, img, tile_size=8))
    assert len(got) == 1
    msg = str(got[0].message)
    assert "depends on the tile size" in msg and "tiles of 8x8" in msg and "one tile" in msg
    assert _tile_dependent_warnings(lambda: predict_tiled(model, img, tile_size=40)) == []


@pytest.mark.parametrize("model_fn", [lambda: _tiny(), _trained_bn])
def test_seamless_models_give_no_warning_and_the_same_probabilities(model_fn):
    model = model_fn()
    img = smooth_image((52, 60), seed=3)
    results = []
    for tile in (4, 16, 64):
        assert _tile_dependent_warnings(lambda: results.append(predict_tiled(model, img, tile_size=tile))) == []
    for p in results[1:]:
        np.testing.assert_allclose(p, results[0], atol=1e-4)


def test_instance_norm_really_depends_on_the_tile():
    # the warning is not a false alarm: the probabilities do move with the tile size
    model = _tiny("instance", seed=1)
    img = smooth_image((48, 48), seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TileDependenceWarning)
        diff = np.abs(predict_tiled(model, img, tile_size=8) - predict_tiled(model, img, tile_size=48)).max()
    assert diff > 1e-3


def test_predict_file_and_dask_warn_once(tmp_path):
    pytest.importorskip("dask")
    from unet.inference import predict_dask, predict_file

    model = _tiny("instance")
    src = tmp_path / "img.npy"
    np.save(src, (smooth_image((40, 40)) * 40 + 128).astype(np.uint8))
    got = _tile_dependent_warnings(lambda: predict_file(model, src, tmp_path / "p.npy", tile_size=8))
    assert len(got) == 1 and "img.npy" in str(got[0].message)
    assert _tile_dependent_warnings(lambda: predict_file(model, src, tmp_path / "q.npy", tile_size=40)) == []
    assert len(_tile_dependent_warnings(lambda: predict_dask(model, src, tile_size=8))) == 1
    assert _tile_dependent_warnings(lambda: predict_file(_tiny(), src, tmp_path / "r.npy", tile_size=8)) == []


def test_cli_predict_warns_once_and_info_says_seamless(tmp_path, capsys):
    inst = unet.save_checkpoint(_tiny("instance"), tmp_path / "inst.pt")
    plain = unet.save_checkpoint(_tiny(), tmp_path / "plain.pt")
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", (smooth_image((40, 40)) * 40 + 128).astype(np.uint8))
    inputs = [str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]
    assert main(["predict", "-c", str(inst), *inputs, "-o", str(tmp_path / "o1"), "--tile-size", "8", "-q"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "depends on the tile size" in err
    assert main(["predict", "-c", str(plain), *inputs, "-o", str(tmp_path / "o2"), "--tile-size", "8", "-q"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["info", str(inst)]) == 0
    assert "seamless: no (per-sample normalisation" in capsys.readouterr().out
    assert main(["info", str(plain)]) == 0
    assert "seamless: yes" in capsys.readouterr().out


def _isbi_sample():
    """A real 512x512 ISBI 2012 slice shipped with the package, normalised as in training."""
    from pathlib import Path

    from unet.data.normalize import normalize
    from unet.io import read_image

    path = Path(unet.__file__).parent / "sample_data/isbi2012/train/images/5.png"
    return normalize(np.asarray(read_image(path), np.float32))


def test_consistency_tile_sizes_are_smallest_128_and_whole():
    from unet.inference import consistency_tile_sizes

    paper = unet.create_model("unet")
    assert consistency_tile_sizes(paper, (512, 512)) == [16, 128, None]
    assert consistency_tile_sizes(_tiny(), (512, 512)) == [4, 128, None]
    assert consistency_tile_sizes(paper, (100, 90)) == [16, None]


def test_tile_consistency_on_a_real_image_separates_seamless_models():
    from unet.inference import tile_consistency

    img = _isbi_sample()
    assert img.shape == (512, 512)
    crop = img[200:296, 100:196]
    for model in (_tiny(), _trained_bn()):
        assert tile_consistency(model, img, [None, 128]) < 1e-4
        assert tile_consistency(model, crop) < 1e-4  # smallest valid tile (4 px), ~128 (none here), whole
    inst = _tiny("instance")
    assert tile_consistency(inst, img, [None, 128]) > 1e-2
    with warnings.catch_warnings():
        warnings.simplefilter("error", TileDependenceWarning)  # measuring is not warned about
        assert tile_consistency(inst, crop) > 1e-2

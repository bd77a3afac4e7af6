"""Precise batch normalisation (``train.bn_recalibration_tiles``): running statistics re-estimated with the final weights."""

import numpy as np
import torch

import unet
from unet.checkpoint import read_checkpoint
from unet.training.batchnorm import recalibrate_batchnorm
from unet.training.config import load_config
from unet.training.trainer import Trainer


def _bn_net():
    torch.manual_seed(0)
    return unet.create_model("unet", base_channels=4, depth=2, norm="batch", dropout=0.5)


def test_running_statistics_are_the_mean_over_the_batches():
    model = _bn_net().train()
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(2, 1, 60, 60, generator=gen) * s + s for s in (0.5, 1.0, 2.0)]
    n = recalibrate_batchnorm(model, batches)
    assert n == 6 and model.training  # mode restored
    first_conv, first_bn = model.down[0][0], model.down[0][1]
    with torch.no_grad():
        feats = [first_conv(x) for x in batches]
    expected_mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    expected_var = torch.stack([f.transpose(0, 1).reshape(f.shape[1], -1).var(1) for f in feats]).mean(0)
    torch.testing.assert_close(first_bn.running_mean, expected_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(first_bn.running_var, expected_var, rtol=1e-4, atol=1e-5)
    assert first_bn.momentum == 0.1 and int(first_bn.num_batches_tracked) == 3


def test_dropout_is_off_while_recalibrating():
    # with dropout active the statistics after it would change from one call to the next
    a, b = _bn_net(), _bn_net()
    x = [torch.randn(1, 1, 60, 60, generator=torch.Generator().manual_seed(2))]
    torch.manual_seed(5)
    recalibrate_batchnorm(a, x)
    torch.manual_seed(6)
    recalibrate_batchnorm(b, x)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_nothing_to_do_without_batch_norm():
    model = unet.create_model("unet", base_channels=4, depth=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert recalibrate_batchnorm(model, [torch.randn(1, 1, 60, 60)]) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_trainer_recalibrates_after_the_last_step_with_batches_of_two(tiny_isbi, tiny_cfg, tmp_path):
    common = {"model.unet.norm": "batch", "train.steps": 4, "train.batch_size": 2, "train.val_every": 4,
              "train.checkpoint_every": 4}
    Trainer(tiny_cfg(tiny_isbi, **common), tmp_path / "plain", quiet=True).fit()
    Trainer(tiny_cfg(tiny_isbi, **common, **{"train.bn_recalibration_tiles": 5}),
            tmp_path / "precise", quiet=True).fit()
    plain, precise = read_checkpoint(tmp_path / "plain/last.pt"), read_checkpoint(tmp_path / "precise/last.pt")
    key = "down.0.1.num_batches_tracked"
    assert int(plain["state_dict"][key]) == 4  # one per training step
    assert int(precise["state_dict"][key]) == 3  # 5 tiles in batches of 2: a fresh average over 3 batches
    assert not torch.equal(plain["state_dict"]["down.0.1.running_mean"], precise["state_dict"]["down.0.1.running_mean"])
    # the weights themselves are those of the same training
    assert torch.equal(plain["state_dict"]["down.0.0.weight"], precise["state_dict"]["down.0.0.weight"])
    model = unet.load_checkpoint(tmp_path / "precise/last.pt")
    assert unet.tile_dependence(model) is None
    assert np.isfinite(model(torch.zeros(1, 1, 60, 60)).detach().numpy()).all()


def test_configs_select_seamless_normalisations():
    for norm in ("none", None, "batch"):
        cfg = load_config(None, overrides=[f"model.unet.norm={'null' if norm is None else norm}",
                                           "model.fcn.norm=batch", "train.bn_recalibration_tiles=200",
                                           "train.batch_size=4"])
        model = unet.create_model("unet", **{**cfg.model_kwargs(), "base_channels": 4, "depth": 2})
        assert unet.tile_dependence(model) is None
    assert cfg.train.bn_recalibration_tiles == 200 and cfg.train.batch_size == 4

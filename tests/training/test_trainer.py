import csv
import subprocess
import sys

import numpy as np
import pytest
import torch

from unet.checkpoint import read_checkpoint
from unet.cli import main
from unet.errors import UserError
from unet.training.trainer import Trainer, TrainingDiverged


def test_tiny_net_overfits_two_real_crops(tiny_isbi, tiny_cfg, tmp_path):
    cfg = tiny_cfg(tiny_isbi, **{"train.steps": 60, "train.val_every": 60, "train.checkpoint_every": 60,
                             "augment.elastic": False, "augment.gray": False, "model.unet.dropout": 0.0,
                             "data.val": "0:2"})
    Trainer(cfg, tmp_path / "run", quiet=True).fit()
    with open(tmp_path / "run/log.csv") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh)]
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < first / 2, (first, last)  # the loss falls by at least a factor of 2 in 60 steps
    for name in ("config.yaml", "last.pt", "best.pt", "curves.png", "log.csv"):
        assert (tmp_path / "run" / name).exists(), name
    assert list((tmp_path / "run/overlays").glob("*.png"))


def test_kill_and_resume_equals_uninterrupted(tiny_isbi, tiny_cfg, tmp_path):
    extra = {"train.steps": 8, "train.checkpoint_every": 3, "train.val_every": 4, "optim.name": "sgd",
             "optim.lr": 0.01, "optim.schedule": "cosine"}  # dropout, elastic deformation and a schedule
    full = Trainer(tiny_cfg(tiny_isbi, **extra), tmp_path / "full", quiet=True)
    full.fit()
    # "killed" after 5 steps: the last checkpoint is step 3, steps 4-5 are lost and redone
    Trainer(tiny_cfg(tiny_isbi, **extra), tmp_path / "cut", quiet=True, stop_after=5).fit()
    assert read_checkpoint(tmp_path / "cut/last.pt")["step"] == 3
    Trainer(tiny_cfg(tiny_isbi, **extra), tmp_path / "cut", quiet=True, resume=True).fit()
    a = read_checkpoint(tmp_path / "full/last.pt")
    b = read_checkpoint(tmp_path / "cut/last.pt")
    assert a["step"] == b["step"] == 8
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    with open(tmp_path / "cut/log.csv") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh)]
    assert steps == list(range(1, 9))  # no duplicated rows from the replayed steps


def test_existing_run_is_not_overwritten(tiny_isbi, tiny_cfg, tmp_path):
    cfg = tiny_cfg(tiny_isbi, **{"train.steps": 1, "train.val_every": 1})
    Trainer(cfg, tmp_path / "r", quiet=True).fit()
    with pytest.raises(UserError, match="--resume"):
        Trainer(cfg, tmp_path / "r", quiet=True)
    Trainer(cfg, tmp_path / "r", quiet=True, overwrite=True).fit()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_isbi, tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg(tiny_isbi, **{"train.steps": 6, "train.checkpoint_every": 2, "train.val_every": 100})
    import unet.training.trainer as T

    real = T.get_loss("weighted_ce")
    calls = {"n": 0}

    def poisoned(name):
        def loss(*a, **k):
            calls["n"] += 1
            value = real(*a, **k)
            return value * float("nan") if calls["n"] == 4 else value
        return loss

    monkeypatch.setattr(T, "get_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="nan at step 4"):
        Trainer(cfg, tmp_path / "r", quiet=True).fit()
    ckpt = read_checkpoint(tmp_path / "r/last.pt")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


def test_transfer_learning_init_and_freeze(tiny_isbi, tiny_cfg, tmp_path):
    cfg = tiny_cfg(tiny_isbi, **{"train.steps": 2, "train.val_every": 2})
    Trainer(cfg, tmp_path / "src", quiet=True).fit()
    src = read_checkpoint(tmp_path / "src/last.pt")["state_dict"]
    t = Trainer(cfg, tmp_path / "dst", quiet=True, init_from=tmp_path / "src/last.pt", freeze_encoder=True)
    t.fit()
    dst = read_checkpoint(tmp_path / "dst/last.pt")["state_dict"]
    enc = [k for k in src if k.startswith(("down.", "bottom."))]
    dec = [k for k in src if k.startswith(("up_conv.", "head."))]
    assert enc and all(torch.equal(src[k], dst[k]) for k in enc)  # frozen: loaded and unchanged
    assert any(not torch.equal(src[k], dst[k]) for k in dec)  # the decoder trained


@pytest.mark.parametrize("args, message", [
    (["--set", "train.stepz=3"], "unknown key 'train.stepz'"),
    (["--set", "optim.lr=-1"], "optim.lr must be > 0"),
    (["--set", "data.root=/nonexistent/data"], "/nonexistent/data: data folder not found"),
])
def test_cli_bad_config_fails_before_training(tiny_isbi, tmp_path, capsys, args, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{dataset: folder, root: {tiny_isbi}, train: '0:2', val: '2:4'}}\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--quiet", *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing written


def test_cli_missing_config(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "config file not found" in capsys.readouterr().err

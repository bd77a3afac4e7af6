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


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_tiny_net_overfits_two_real_crops(tiny_isbi, tiny_cfg, tmp_path, amp):
    cfg = tiny_cfg(tiny_isbi, **{"train.steps": 60, "train.val_every": 60, "train.checkpoint_every": 60,
                             "augment.elastic": False, "augment.gray": False, "model.unet.dropout": 0.0,
                             "data.val": "0:2", "train.amp": amp})
    Trainer(cfg, tmp_path / "run", quiet=True).fit()
    with open(tmp_path / "run/log.csv") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh)]
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < first / 2, (first, last)  # the loss falls by at least a factor of 2 in 60 steps
    for name in ("config.yaml", "last.pt", "best.pt", "curves.png", "log.csv"):
        assert (tmp_path / "run" / name).exists(), name
    assert list((tmp_path / "run/overlays").glob("*.png"))


def test_bf16_autocast_runs_the_forward_pass_in_bfloat16_on_the_cpu(tiny_isbi, tiny_cfg, tmp_path, monkeypatch):
    """``train.amp: bf16`` on the CPU: convolutions in bfloat16, the loss in float32, float32 weights; the
    weights after a few steps are close to, but not the same as, float32 training's."""
    import unet.training.trainer as T

    seen, real = [], T.get_loss("weighted_ce")

    def spy(logits, y, w):
        seen.append(logits.dtype)
        return real(logits, y, w)

    monkeypatch.setattr(T, "get_loss", lambda name: spy)
    states = {}
    for amp in ("none", "bf16"):
        cfg = tiny_cfg(tiny_isbi, **{"train.steps": 3, "train.val_every": 100, "train.amp": amp,
                                     "model.unet.dropout": 0.0})
        Trainer(cfg, tmp_path / amp, quiet=True).fit()
        states[amp] = read_checkpoint(tmp_path / amp / "last.pt")["state_dict"]
    assert seen == [torch.float32] * 6  # the loss never sees bfloat16 logits
    diffs = [(states["none"][k].float() - states["bf16"][k].float()).abs().max().item()
             for k in states["none"] if states["none"][k].is_floating_point()]
    assert all(states["bf16"][k].dtype == states["none"][k].dtype for k in states["none"])
    assert 0 < max(diffs) < 0.05, max(diffs)  # bfloat16 rounding moved the weights, a little


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


class _NanGradient(torch.autograd.Function):
    """The identity, whose gradient is NaN: what the CPU's bfloat16 convolution backward now and then gives."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def _nan_gradient_at(monkeypatch, bad_calls):
    import unet.training.trainer as T

    real, calls = T.get_loss("weighted_ce"), {"n": 0}

    def loss(logits, y, w):
        calls["n"] += 1
        return real(_NanGradient.apply(logits) if calls["n"] in bad_calls else logits, y, w)

    monkeypatch.setattr(T, "get_loss", lambda name: loss)


def test_a_step_with_a_nan_gradient_and_a_finite_loss_is_skipped(tiny_isbi, tiny_cfg, tmp_path, monkeypatch):
    extra = {"train.steps": 3, "train.checkpoint_every": 2, "train.val_every": 100, "model.unet.dropout": 0.0}
    Trainer(tiny_cfg(tiny_isbi, **extra), tmp_path / "two", quiet=True, stop_after=2).fit()
    _nan_gradient_at(monkeypatch, {3})
    with pytest.warns(UserWarning, match="step 3: gradient NaN or infinite with a finite loss; step skipped"):
        Trainer(tiny_cfg(tiny_isbi, **extra), tmp_path / "r", quiet=True).fit()
    two = read_checkpoint(tmp_path / "two/last.pt")
    done = read_checkpoint(tmp_path / "r/last.pt")
    assert (two["step"], done["step"]) == (2, 3)
    params = [k for k in done["state_dict"] if "running_" not in k and "num_batches" not in k]
    assert params and all(torch.isfinite(done["state_dict"][k]).all() for k in params)
    # the weights after the skipped step 3 are those of step 2
    assert all(torch.equal(done["state_dict"][k], two["state_dict"][k]) for k in params)


def test_nan_gradients_in_a_row_stop_the_run_as_diverged(tiny_isbi, tiny_cfg, tmp_path, monkeypatch):
    from unet.training.trainer import MAX_BAD_GRADIENT_STEPS

    cfg = tiny_cfg(tiny_isbi, **{"train.steps": 10, "train.checkpoint_every": 1, "train.val_every": 100})
    _nan_gradient_at(monkeypatch, set(range(2, 11)))
    stopped = f"gradient NaN or infinite in {MAX_BAD_GRADIENT_STEPS} steps in a row"
    with pytest.raises(TrainingDiverged, match=stopped), pytest.warns(UserWarning, match="step skipped"):
        Trainer(cfg, tmp_path / "r", quiet=True).fit()
    ckpt = read_checkpoint(tmp_path / "r/last.pt")
    assert ckpt["step"] == MAX_BAD_GRADIENT_STEPS  # step 1, then the skipped ones before the last
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


def test_resume_refuses_changes_it_cannot_honour_and_records_the_others(tiny_isbi, tiny_cfg, tmp_path, capsys):
    import yaml

    extra = {"train.steps": 2, "train.val_every": 2, "train.checkpoint_every": 2}
    Trainer(tiny_cfg(tiny_isbi, **extra), tmp_path / "r", quiet=True).fit()
    before = (tmp_path / "r/config.yaml").read_text()
    with pytest.raises(UserError, match=r"--resume cannot change optim.lr 0.01 -> 0.0001"):
        Trainer(tiny_cfg(tiny_isbi, **extra, **{"optim.lr": 1e-4}), tmp_path / "r", quiet=True, resume=True)
    rc = main(["train", "--config", "unused", "--out", str(tmp_path / "r"), "--resume", "--quiet",
               "--set", "optim.lr=1e-4"])
    assert rc == 2 and "cannot change optim.lr" in capsys.readouterr().err
    assert (tmp_path / "r/config.yaml").read_text() == before and read_checkpoint(tmp_path / "r/last.pt")["step"] == 2
    # more steps: applied, and config.yaml and the checkpoint say so
    assert main(["train", "--config", "unused", "--out", str(tmp_path / "r"), "--resume", "--quiet",
                 "--set", "train.steps=3"]) == 0
    assert "train.steps: 2 -> 3" in capsys.readouterr().out
    ckpt = read_checkpoint(tmp_path / "r/last.pt")
    saved = yaml.safe_load((tmp_path / "r/config.yaml").read_text())
    assert ckpt["step"] == 3 and ckpt["metadata"]["config"]["train"]["steps"] == saved["train"]["steps"] == 3
    assert ckpt["metadata"]["config"]["optim"]["lr"] == saved["optim"]["lr"] == 0.01
    # a checkpoint saved before augment.scale existed resumes as if it had said 0 (it trained without zoom)
    from unet.training.trainer import resume_changes
    old = dict(ckpt, metadata={**ckpt["metadata"], "config": {**ckpt["metadata"]["config"], "augment": {
        k: v for k, v in ckpt["metadata"]["config"]["augment"].items() if k != "scale"}}})
    torch.save(old, tmp_path / "old.pt")
    cfg = tiny_cfg(tiny_isbi, **{**extra, "train.steps": 3})
    assert resume_changes(tmp_path / "old.pt", cfg) == {}
    with pytest.raises(UserError, match=r"cannot change augment.scale 0.0 -> 0.2"):
        resume_changes(tmp_path / "old.pt", tiny_cfg(tiny_isbi, **{**extra, "augment.scale": 0.2}))
    # and one saved before loss.skeleton_recall existed, as if it had said 0 (no skeleton term)
    old = dict(ckpt, metadata={**ckpt["metadata"], "config": {**ckpt["metadata"]["config"], "loss": {
        k: v for k, v in ckpt["metadata"]["config"]["loss"].items() if k != "skeleton_recall"}}})
    torch.save(old, tmp_path / "old-loss.pt")
    assert resume_changes(tmp_path / "old-loss.pt", cfg) == {}
    with pytest.raises(UserError, match=r"cannot change loss.skeleton_recall 0.0 -> 1.0"):
        resume_changes(tmp_path / "old-loss.pt", tiny_cfg(tiny_isbi, **{**extra, "loss.skeleton_recall": 1.0}))


def test_init_from_another_architecture_needs_partial_init(tiny_isbi, tiny_cfg, tmp_path, capsys):
    cfg = tiny_cfg(tiny_isbi, **{"train.steps": 1, "train.val_every": 1})
    Trainer(cfg, tmp_path / "src", quiet=True).fit()
    src = tmp_path / "src/last.pt"
    deeper = tiny_cfg(tiny_isbi, **{"train.steps": 1, "train.val_every": 1, "model.unet.depth": 3})
    with pytest.raises(UserError, match=r"only \d+ of the \d+ tensors .*--partial-init"):
        Trainer(deeper, tmp_path / "dst", quiet=True, init_from=src).fit()
    assert not (tmp_path / "dst/last.pt").exists()  # refused before any training
    t = Trainer(deeper, tmp_path / "dst", init_from=src, partial_init=True)
    t.fit()
    report = capsys.readouterr().out
    n_loaded, n_all = (int(x) for x in report.split("initialised ")[1].split(" ")[0].split("/"))
    assert 0 < n_loaded < n_all and "kept their fresh initialisation" in report
    same = tiny_cfg(tiny_isbi, **{"train.steps": 1, "train.val_every": 1})
    Trainer(same, tmp_path / "dst2", init_from=src).fit()  # the same architecture loads whole without the flag
    assert "kept their fresh" not in capsys.readouterr().out


def test_fit_ends_its_loader_workers(tiny_isbi, tiny_cfg, tmp_path):
    # unet reproduce runs dozens of trainings in one process: each must leave no worker process behind
    import multiprocessing

    before = {p.pid for p in multiprocessing.active_children()}
    cfg = tiny_cfg(tiny_isbi, **{"train.steps": 2, "train.val_every": 2, "train.num_workers": 1})
    trainer = Trainer(cfg, tmp_path / "run", quiet=True)
    trainer.fit()
    assert read_checkpoint(tmp_path / "run/last.pt")["step"] == 2
    left = {p.pid for p in multiprocessing.active_children()} - before
    assert not left, f"worker processes still alive after fit(): {sorted(left)}"


def test_skeleton_recall_adds_its_term_to_the_training_loss(tiny_isbi, tiny_cfg, tmp_path):
    """``loss.skeleton_recall`` (beyond the paper): the same first batch and weights, the loss larger by
    the weight times a recall loss in (0, 1)."""
    first = {}
    for weight in (0.0, 2.0):
        cfg = tiny_cfg(tiny_isbi, **{"train.steps": 1, "train.val_every": 100, "model.unet.dropout": 0.0,
                                     "loss.skeleton_recall": weight})
        Trainer(cfg, tmp_path / str(weight), quiet=True).fit()
        with open(tmp_path / str(weight) / "log.csv") as fh:
            first[weight] = float(next(r for r in csv.DictReader(fh) if r["loss"])["loss"])
    extra = (first[2.0] - first[0.0]) / 2.0
    assert 0.05 < extra < 1.0, first  # an untrained net misses part of the centre lines, not all of them

"""Learning-rate schedules (torch schedulers) against their definition, and exact resume of them."""

import csv
import math

import pytest
import torch

from unet.checkpoint import read_checkpoint
from unet.training.config import load_config
from unet.training.trainer import Trainer, make_optimizer, make_scheduler

STEPS, LR = 50, 0.01


def defined_lr(step: int, *, schedule: str, warmup: int, step_size: int, gamma: float) -> float:
    """The rate of step ``step`` as the config defines it (the formula of the former LambdaLR)."""
    if warmup and step < warmup:
        return LR * (step + 1) / warmup
    t = min((step - warmup) / max(1, STEPS - warmup), 1.0)
    return LR * {"constant": 1.0, "cosine": 0.5 * (1 + math.cos(math.pi * t)), "poly": (1 - t) ** 0.9,
                 "step": gamma ** (step // step_size)}[schedule]


def _setup(schedule, warmup, *, steps=STEPS, start=0):
    cfg = load_config(overrides=[f"optim.schedule={schedule}", f"optim.warmup_steps={warmup}", f"optim.lr={LR}",
                                 "optim.step_size=6", "optim.gamma=0.5", f"train.steps={steps}"])
    optimizer = make_optimizer([torch.nn.Parameter(torch.zeros(2))], cfg)
    return optimizer, make_scheduler(optimizer, cfg, start=start)


def _rates(optimizer, scheduler, n):
    """The rate each of the next ``n`` optimiser steps uses, and the one after them (logged at the end)."""
    out = []
    for _ in range(n):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out + [scheduler.get_last_lr()[0]]


@pytest.mark.parametrize("warmup", [0, 1, 7])  # 7 > step_size: step milestones inside the warm-up
@pytest.mark.parametrize("schedule", ["constant", "cosine", "poly", "step"])
def test_every_schedule_follows_its_definition(schedule, warmup):
    got = _rates(*_setup(schedule, warmup), STEPS)
    want = [defined_lr(s, schedule=schedule, warmup=warmup, step_size=6, gamma=0.5) for s in range(STEPS + 1)]
    assert got == pytest.approx(want, rel=1e-9, abs=1e-15)
    assert got[0] == pytest.approx(LR / warmup if warmup else LR, rel=1e-12)


@pytest.mark.parametrize("schedule", ["cosine", "poly", "step"])
def test_resumed_schedule_continues_bit_for_bit(schedule):
    full = _rates(*_setup(schedule, 3), STEPS)
    assert _rates(*_setup(schedule, 3, start=20), STEPS - 20) == full[20:]
    # a restored optimiser (its rate from the checkpoint) does not change the schedule
    optimizer, _ = _setup(schedule, 3)
    optimizer.param_groups[0]["lr"] = 123.0
    cfg = load_config(overrides=[f"optim.schedule={schedule}", "optim.warmup_steps=3", f"optim.lr={LR}",
                                 "optim.step_size=6", "optim.gamma=0.5", f"train.steps={STEPS}"])
    assert _rates(optimizer, make_scheduler(optimizer, cfg, start=20), 5) == full[20:26]


def test_resume_with_more_steps_stretches_the_schedule():
    # train.steps may grow on resume: the rest of the run follows the longer schedule
    got = _rates(*_setup("cosine", 0, steps=2 * STEPS, start=STEPS // 2), 10)
    want = [LR * 0.5 * (1 + math.cos(math.pi * s / (2 * STEPS))) for s in range(STEPS // 2, STEPS // 2 + 11)]
    assert got == pytest.approx(want, rel=1e-9)


def test_checkpoint_of_the_former_lambda_scheduler_resumes(tiny_isbi, tiny_cfg, tmp_path):
    """Runs saved before the torch schedulers hold a LambdaLR state; they resume on the same schedule."""
    extra = {"train.steps": 2, "train.val_every": 100, "train.checkpoint_every": 2, "optim.name": "sgd",
             "optim.lr": LR, "optim.schedule": "cosine"}
    Trainer(tiny_cfg(tiny_isbi, **extra), tmp_path / "r", quiet=True).fit()
    payload = read_checkpoint(tmp_path / "r/last.pt")
    payload["scheduler"] = {"base_lrs": [LR], "last_epoch": 2, "_step_count": 3, "_last_lr": [LR / 2],
                            "lr_lambdas": [None]}  # what LambdaLR.state_dict() held
    torch.save(payload, tmp_path / "r/last.pt")
    Trainer(tiny_cfg(tiny_isbi, **{**extra, "train.steps": 4}), tmp_path / "r", quiet=True, resume=True).fit()
    with open(tmp_path / "r/log.csv") as fh:
        lr = {int(r["step"]): float(r["lr"]) for r in csv.DictReader(fh)}
    # after step s the rate of step s of the resumed (now 4-step) cosine schedule
    assert lr[3] == pytest.approx(LR * 0.5 * (1 + math.cos(math.pi * 3 / 4)), rel=1e-9)
    assert lr[4] == pytest.approx(0.0, abs=1e-15)

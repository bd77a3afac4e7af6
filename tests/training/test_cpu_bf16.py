"""bfloat16 autocast on a CPU without bfloat16 kernels is emulated and many times slower: the user is told once,
with the way to train in float32, and the recipe is never changed behind their back."""

import warnings

import pytest
import torch

import unet.training.trainer as T
from unet.errors import UnetWarning


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(T, "_SLOW_BF16_WARNED", False)
    return monkeypatch


def _caught(fn):
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        result = fn()
    return result, [w for w in got if issubclass(w.category, UnetWarning)]


def test_native_cpu_bf16_follows_onednn(monkeypatch):
    assert isinstance(T.native_cpu_bf16(), bool)
    assert T.native_cpu_bf16() == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_warns_once_without_bf16_kernels(fresh):
    fresh.setattr(T, "native_cpu_bf16", lambda: False)
    cpu = torch.device("cpu")
    warned, got = _caught(lambda: T.warn_if_slow_bf16("bf16", cpu))
    assert warned and len(got) == 1
    text = str(got[0].message)
    assert "bf16" in text and "train.amp=none" in text and torch.backends.cpu.get_cpu_capability() in text
    again, got = _caught(lambda: T.warn_if_slow_bf16("bf16", cpu))
    assert not again and got == []


@pytest.mark.parametrize("native,amp,device", [(True, "bf16", "cpu"), (False, "none", "cpu"),
                                               (False, "bf16", "meta")])
def test_no_warning_where_bf16_is_fast_or_unused(fresh, native, amp, device):
    fresh.setattr(T, "native_cpu_bf16", lambda: native)
    warned, got = _caught(lambda: T.warn_if_slow_bf16(amp, torch.device(device)))
    assert not warned and got == []


@pytest.mark.parametrize("name,remedy", [("isbi2012", "--profile cpu-float32"), ("dic-hela", "--profile cpu-float32"),
                                         ("phc-u373", "--profile cpu-float32")])
def test_reproduce_names_the_float32_profile(fresh, name, remedy):
    from unet.reproduce.experiment import load_experiment
    from unet.reproduce.runner import _warn_if_slow_bf16, build_config

    fresh.setattr(T, "native_cpu_bf16", lambda: False)
    exp = load_experiment(name)
    cfg = build_config(exp, exp.runs[0], profile="cpu", overrides=["train.device=cpu"])
    assert cfg.train.amp == "bf16"
    warned, got = _caught(lambda: _warn_if_slow_bf16(exp, "cpu", cfg))
    assert warned and remedy in str(got[0].message) and "'cpu'" in str(got[0].message)
    # a float32 profile trains nothing in bfloat16: nothing to say
    fresh.setattr(T, "_SLOW_BF16_WARNED", False)
    f32 = build_config(exp, exp.runs[0], profile="cpu-float32", overrides=["train.device=cpu"])
    warned, got = _caught(lambda: _warn_if_slow_bf16(exp, "cpu-float32", f32))
    assert not warned and got == []


def test_reproduce_without_a_float32_profile_names_the_override(fresh):
    import dataclasses

    from unet.reproduce.experiment import load_experiment
    from unet.reproduce.runner import _warn_if_slow_bf16, build_config

    fresh.setattr(T, "native_cpu_bf16", lambda: False)
    exp = load_experiment("dic-hela")
    exp = dataclasses.replace(exp, profiles={k: v for k, v in exp.profiles.items() if k != "cpu-float32"})
    cfg = build_config(exp, exp.runs[0], profile="cpu", overrides=["train.device=cpu"])
    _, got = _caught(lambda: _warn_if_slow_bf16(exp, "cpu", cfg))
    assert "--set train.amp=none" in str(got[0].message)


@pytest.mark.parametrize("native,said", [(True, "bfloat16 kernels: yes"), (False, "bfloat16 kernels: no")])
def test_info_states_whether_bf16_is_fast_here(monkeypatch, capsys, native, said):
    from unet.cli import main

    monkeypatch.setattr(T, "native_cpu_bf16", lambda: native)
    assert main(["info", "--model", "unet"]) == 0
    out = capsys.readouterr().out
    assert said in out and f"CPU: {torch.backends.cpu.get_cpu_capability()}" in out

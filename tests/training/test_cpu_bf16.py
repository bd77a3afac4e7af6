"""bfloat16 autocast on a CPU without bfloat16 kernels: by default it runs as bfloat16's rounding on float32
kernels (unet.training.bf16), and the user is told once; forced onto oneDNN's emulated kernels, which are many
times slower, the warning names the way out. The recipe (train.amp) is never changed behind the user's back."""

import warnings

import pytest
import torch

import unet.training.trainer as T
from unet.errors import UnetWarning


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(T, "_BF16_SAID", False)
    return monkeypatch


def _caught(fn):
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        result = fn()
    return result, [w for w in got if issubclass(w.category, UnetWarning)]


def test_native_cpu_bf16_follows_onednn(monkeypatch):
    assert isinstance(T.native_cpu_bf16(), bool)
    assert T.native_cpu_bf16() == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_says_once_that_bf16_runs_rounded_without_bf16_kernels(fresh):
    fresh.setattr(T, "native_cpu_bf16", lambda: False)
    cpu = torch.device("cpu")
    warned, got = _caught(lambda: T.warn_if_slow_bf16("bf16", cpu))
    assert warned and len(got) == 1
    text = str(got[0].message)
    assert "float32 kernels with bfloat16's rounding" in text and torch.backends.cpu.get_cpu_capability() in text
    again, got = _caught(lambda: T.warn_if_slow_bf16("bf16", cpu))
    assert not again and got == []


def test_forced_native_kernels_warn_with_the_way_out(fresh):
    fresh.setattr(T, "native_cpu_bf16", lambda: False)
    warned, got = _caught(lambda: T.warn_if_slow_bf16("bf16", torch.device("cpu"), kernels="native"))
    text = str(got[0].message)
    assert warned and "7-12x slower" in text and "train.bf16_kernels at auto" in text and "train.amp=none" in text


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
    cfg = build_config(exp, exp.runs[0], profile="cpu", overrides=["train.device=cpu", "train.bf16_kernels=native"])
    warned, got = _caught(lambda: _warn_if_slow_bf16(exp, "cpu", cfg))
    assert warned and remedy in str(got[0].message) and "'cpu'" in str(got[0].message)
    # a float32 profile trains nothing in bfloat16: nothing to say
    fresh.setattr(T, "_BF16_SAID", False)
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
    cfg = build_config(exp, exp.runs[0], profile="cpu", overrides=["train.device=cpu", "train.bf16_kernels=native"])
    _, got = _caught(lambda: _warn_if_slow_bf16(exp, "cpu", cfg))
    assert "--set train.amp=none" in str(got[0].message)


@pytest.mark.parametrize("native,said", [(True, "bfloat16 kernels: yes"), (False, "bfloat16 kernels: no")])
def test_info_states_whether_bf16_is_fast_here(monkeypatch, capsys, native, said):
    from unet.cli import main

    monkeypatch.setattr(T, "native_cpu_bf16", lambda: native)
    assert main(["info", "--model", "unet"]) == 0
    out = capsys.readouterr().out
    assert said in out and f"CPU: {torch.backends.cpu.get_cpu_capability()}" in out

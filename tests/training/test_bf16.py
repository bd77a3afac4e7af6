"""unet.training.bf16: bfloat16 autocast's rounding on float32 kernels is the bfloat16 recipe, not float32's."""

import pytest
import torch
import torch.nn.functional as F

import unet
from unet.training.bf16 import RoundedBF16, autocast, bf16_kernels, round_bf16
from unet.training.loss import weighted_cross_entropy


def _is_bf16(t: torch.Tensor) -> bool:
    return torch.equal(t, t.to(torch.bfloat16).float())


def test_round_bf16_rounds_values_and_gradients():
    x = torch.tensor([1.0 + 2**-9, 1.0 + 3 * 2**-9, 3.0], requires_grad=True)
    y = round_bf16(x)
    assert y.dtype == torch.float32 and _is_bf16(y) and not _is_bf16(x.detach())
    # round to nearest even: 1 + 2^-9 is half-way between 1 and 1 + 2^-8
    assert y[0].item() == 1.0 and y[1].item() == 1.0 + 2**-7 and y[2].item() == 3.0
    (y * torch.tensor([1.0 + 2**-10, 1.0, 1.0])).sum().backward()
    assert x.grad[0].item() == 1.0  # the gradient was rounded on its way back
    assert round_bf16(torch.tensor([1, 2])).dtype == torch.int64  # not floating point: unchanged


def test_a_convolution_equals_native_bfloat16_to_one_rounding():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3)
    x = torch.randn(1, 3, 20, 20)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        native = conv(x)
    with RoundedBF16():
        rounded = conv(x)
    plain = conv(x)
    assert native.dtype == torch.bfloat16 and rounded.dtype == torch.float32 and _is_bf16(rounded)
    # both accumulate in float32 and round once: at most one bfloat16 step apart (summation order)
    step = native.float().abs().clamp_min(2**-100) * 2**-7
    assert ((rounded - native.float()).abs() <= step * 1.01).all()
    assert (rounded - native.float()).abs().mean() < 0.1 * (plain - native.float()).abs().mean()


def _one_step(kind: str, seed: int = 0, *, channels_last: bool = False):
    torch.manual_seed(seed)
    model = unet.create_model("unet", base_channels=4, depth=2, padding="valid", norm="batch")
    tile = 60
    out = unet.output_size(model, tile)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, tile, tile, generator=g)
    y = torch.randint(0, 2, (2, out, out), generator=g)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    dtype = None if kind == "float32" else torch.bfloat16
    with autocast(torch.device("cpu"), dtype, kernels="rounded" if kind == "rounded" else "native"):
        logits = model(x)
    weighted_cross_entropy(logits.float(), y, None).backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.dim() > 1])
    return logits.float().detach(), grads


def test_rounded_training_step_is_as_close_to_native_bf16_as_native_is_to_itself():
    """Native bfloat16 with another memory layout (other kernels, other summation order) is the
    yardstick: the rounded step stays within it, where float32 is several times further off."""
    native, g_native = _one_step("native")
    native_cl, g_native_cl = _one_step("native", channels_last=True)
    rounded, g_rounded = _one_step("rounded")
    plain, g_plain = _one_step("float32")
    yardstick = (native_cl - native).abs().mean()
    assert _is_bf16(rounded)
    assert (rounded - native).abs().mean() <= 1.5 * yardstick
    assert (plain - native).abs().mean() >= 2 * (rounded - native).abs().mean()
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    assert rel(g_rounded, g_native) <= 1.5 * rel(g_native_cl, g_native)
    assert rel(g_plain, g_native) > rel(g_rounded, g_native)
    # the weights' gradients are bfloat16 values held in float32, as autocast's are
    assert _is_bf16(g_rounded) and not _is_bf16(g_plain)


def test_sums_and_normalisations_round_exact_ops_do_not():
    torch.manual_seed(0)
    a, b = torch.randn(64), torch.randn(64)
    with RoundedBF16():
        s = a + b
        r = torch.relu(a)
        bn = F.batch_norm(a.view(8, 8), None, None, training=True)
    assert _is_bf16(s) and _is_bf16(bn)
    assert torch.equal(r, torch.relu(a))  # ReLU changes no value: left in float32 like its input


@pytest.mark.parametrize("setting,device,native,expected", [
    ("auto", "cpu", True, "native"), ("auto", "cpu", False, "rounded"), ("auto", "cuda", False, "native"),
    ("native", "cpu", False, "native"), ("rounded", "cpu", True, "rounded")])
def test_bf16_kernels_choice(setting, device, native, expected):
    assert bf16_kernels(setting, device, native=native) == expected


def test_bf16_kernels_rejects_unknown_setting():
    with pytest.raises(ValueError, match="auto, native or rounded"):
        bf16_kernels("fast")


@pytest.mark.parametrize("kernels,rounded", [("auto", True), ("native", False)])
def test_trainer_rounds_on_float32_kernels_where_the_cpu_lacks_bf16_kernels(tiny_isbi, tiny_cfg, tmp_path, monkeypatch,
                                                                            kernels, rounded):
    import unet.training.trainer as T
    from unet.checkpoint import read_checkpoint

    entered, real_enter = [], RoundedBF16.__enter__

    def spy(self):
        entered.append(1)
        return real_enter(self)

    monkeypatch.setattr(T, "native_cpu_bf16", lambda: False)
    monkeypatch.setattr(T, "_BF16_SAID", True)
    monkeypatch.setattr(RoundedBF16, "__enter__", spy)
    states = {}
    for amp in ("none", "bf16"):
        cfg = tiny_cfg(tiny_isbi, **{"train.steps": 3, "train.val_every": 100, "train.amp": amp,
                                     "train.bf16_kernels": kernels, "model.unet.dropout": 0.0})
        T.Trainer(cfg, tmp_path / amp, quiet=True).fit()
        states[amp] = read_checkpoint(tmp_path / amp / "last.pt")["state_dict"]
    assert len(entered) == (3 if rounded else 0)  # one forward pass per step, bf16 run only
    diff = max((states["none"][k] - states["bf16"][k]).abs().max().item()
               for k in states["none"] if states["none"][k].is_floating_point())
    assert 0 < diff < 0.05  # bfloat16's rounding moved the weights a little, either way it ran


def test_the_kernels_are_not_part_of_what_a_reproduction_run_trains():
    """Search trainings done on native kernels are found again (``--resume``) on a CPU that rounds instead."""
    from unet.reproduce.experiment import load_experiment
    from unet.reproduce.runner import build_config, config_key

    exp = load_experiment("isbi2012")
    keys = {k: config_key(build_config(exp, exp.runs[0], profile="cpu",
                                       overrides=[f"train.bf16_kernels={k}"]).to_dict())
            for k in ("auto", "native", "rounded")}
    assert len(set(keys.values())) == 1
    other = build_config(exp, exp.runs[0], profile="cpu", overrides=["train.amp=none"]).to_dict()
    assert config_key(other) != keys["auto"]  # float32 is another recipe

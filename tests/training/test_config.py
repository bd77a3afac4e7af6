import re

import pytest

from unet.training.config import ConfigError, load_config, save_config


def test_defaults_are_the_papers_recipe():
    cfg = load_config()
    assert cfg.optim.name == "sgd" and cfg.optim.momentum == 0.99
    assert cfg.train.batch_size == 1 and cfg.train.tile_size == 572
    assert cfg.loss.w0 == 10.0 and cfg.loss.sigma == 5.0
    assert cfg.augment.elastic_grid == 3 and cfg.augment.elastic_sigma == 10.0
    assert cfg.model_kwargs() == {"in_channels": 1, "num_classes": 2, "base_channels": 64, "depth": 4,
                                  "padding": "valid", "norm": None, "upsampling": "transposed", "dropout": 0.5}


def test_file_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("experiment: x\ntrain: {steps: 50}\nmodel: {unet: {base_channels: 8}}\n")
    cfg = load_config(p, overrides=["train.steps=7", "augment.scale=0.2", "loss.class_weights=[1, 3]", "model.name=fcn8s"])
    assert cfg.train.steps == 7 and cfg.loss.class_weights == [1, 3]
    assert cfg.model.unet.base_channels == 8 and cfg.model.name == "fcn8s"
    from unet.training.trainer import _augmentation
    assert _augmentation(cfg).scale == 0.2  # every augment key reaches the augmentation
    assert set(cfg.model_kwargs()) == {"in_channels", "num_classes", "base_channels", "fc_channels", "dropout", "norm"}
    out = save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(out)
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("override, message", [
    ("train.stepz=3", "unknown key 'train.stepz'"),
    ("train.steps=-1", "train.steps must be > 0"),
    ("train.steps=abc", "train.steps must be int"),
    ("optim.name=rmsprop", "optim.name='rmsprop' is not one of"),
    ("eval.metrics=[iou, accuracy]", "unknown metric 'accuracy'"),
    ("loss.class_weights=[1]", "class_weights"),
    ("model.unet.dropout=1.5", "dropout"),
    ("model.unet.depth=9", "model.unet.depth must be <= 6"),
    ("steps", "expected key=value"),
])
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(overrides=[override])


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)


def test_augmentation_defaults_have_one_source():
    """`unet train` (AugmentConfig) and `Augmentation()` (the data API) augment alike by default."""
    import dataclasses

    from unet.data import Augmentation
    from unet.training.config import AugmentConfig, Config
    from unet.training.trainer import _augmentation

    assert _augmentation(Config()) == Augmentation()
    config_defaults = AugmentConfig().model_dump()
    assert config_defaults == {k: v for k, v in dataclasses.asdict(Augmentation()).items() if k in config_defaults}
    # the values that trained every result so far (README: Augmentation)
    assert (Augmentation().rotate, Augmentation().gray_contrast, Augmentation().gray_gamma) == (0.0, 0.2, 0.2)


def test_scientific_notation_in_files_and_overrides(tmp_path):
    # YAML 1.1 reads 1e-4 (no dot) as a string; configs and --set must read it as a number
    p = tmp_path / "c.yaml"
    p.write_text("optim: {lr: 1e-4, weight_decay: 5E-5}\nloss: {w0: .5e1}\ntrain: {steps: 2e3}\n")
    cfg = load_config(p)
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.loss.w0, cfg.train.steps) == (1e-4, 5e-5, 5.0, 2000)
    assert isinstance(cfg.train.steps, int)
    cfg = load_config(p, overrides=["optim.lr=3e-3", "train.steps=1e2", "experiment=run1e5"])
    assert (cfg.optim.lr, cfg.train.steps, cfg.experiment) == (3e-3, 100, "run1e5")
    with pytest.raises(ConfigError, match="train.steps must be int"):
        load_config(overrides=["train.steps=1.5e0"])
    again = load_config(save_config(cfg, tmp_path / "resolved.yaml"))
    assert again.to_dict() == cfg.to_dict()


def test_every_problem_is_listed_in_one_line_naming_its_key():
    with pytest.raises(ConfigError) as err:
        load_config(overrides=["train.stepz=3", "train.steps=-1", "optim.name=rmsprop", "loss.w0=abc"])
    message = str(err.value)
    assert len(message.splitlines()) == 1 and message.startswith("defaults: ")
    for part in ("unknown key 'train.stepz'", "train.steps must be > 0, got -1",
                 "optim.name='rmsprop' is not one of", "loss.w0 must be float, got 'abc'"):
        assert part in message


@pytest.mark.parametrize("override, message", [
    ("train.steps=true", "train.steps must be int, got True"),  # no silent bool -> int
    ("experiment=5", "experiment must be str, got 5"),
    ("data.train=5", "data.train must be str or list, got 5"),
    ("train=[1, 2]", "train must be a mapping"),
])
def test_no_silent_conversions(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(overrides=[override])


def test_normalize_is_typed_and_stored_as_given(tmp_path):
    assert load_config().to_dict()["data"]["normalize"] == {"mode": "percentile", "low": 0.1, "high": 99.9}
    cfg = load_config(overrides=["data.normalize={mode: meanstd}"])
    # checkpoints and config.yaml keep exactly the settings given (a resumed run compares them)
    assert cfg.to_dict()["data"]["normalize"] == {"mode": "meanstd"}
    assert load_config(save_config(cfg, tmp_path / "c.yaml")).to_dict() == cfg.to_dict()
    for bad, message in [("{mode: median}", "data.normalize.mode='median' is not one of"),
                         ("{low: 99, high: 1}", "data.normalize: low (99.0) must be below high (1.0)"),
                         ("{high: 101}", "data.normalize.high must be <= 100"),
                         ("{mode: percentile, lo: 1}", "unknown key 'data.normalize.lo'")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(overrides=[f"data.normalize={bad}"])


def test_monitor_must_be_a_computed_metric():
    # else best.pt would silently never be written
    with pytest.raises(ConfigError, match=r"eval.monitor='rand_error' is not among eval.metrics \[iou, pixel_error\]"):
        load_config(overrides=["eval.monitor=rand_error"])
    with pytest.raises(ConfigError, match="eval.monitor: unknown metric 'loss'"):
        load_config(overrides=["eval.monitor=loss"])
    # the metric's name in the config or in the results (log.csv: val_rand_error)
    for monitor in ("rand", "rand_error"):
        assert load_config(overrides=["eval.metrics=[iou, rand]", f"eval.monitor={monitor}"]).eval.monitor == monitor

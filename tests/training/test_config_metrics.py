"""Metric names in configs (issue 14): the results' names, the older short names as aliases, and
``eval.monitor`` checked against ``eval.metrics`` so that ``best.pt`` cannot silently never be written."""

import pytest

from unet.training.config import ConfigError, load_config


def test_results_names_and_short_aliases_are_accepted():
    cfg = load_config(overrides=["eval.metrics=[iou, pixel_error, rand_error, warping_error, seg]",
                                 "eval.monitor=rand_error", "eval.mode=min"])
    assert cfg.eval.monitor == "rand_error"
    old = load_config(overrides=["eval.metrics=[iou, pixel, rand]", "eval.monitor=rand_error", "eval.mode=min"])
    assert old.eval.metrics == ["iou", "pixel", "rand"]  # kept as written: a resumed run compares its saved config
    assert load_config(overrides=["eval.metrics=[pixel_error]", "eval.monitor=pixel"]).eval.monitor == "pixel"
    assert load_config().eval.metrics == ["iou", "pixel_error"]


@pytest.mark.parametrize("overrides, message", [
    (["eval.metrics=[iou]", "eval.monitor=seg"], "eval.monitor='seg' is not among eval.metrics .iou., so best.pt"),
    (["eval.metrics=[iou, pixel]", "eval.monitor=rand_error"], "eval.monitor='rand_error' is not among"),
    (["eval.monitor=loss"], "eval.monitor: unknown metric 'loss'"),  # never computed at validation
    (["eval.metrics=[iou, accuracy]"], "eval.metrics: unknown metric 'accuracy'"),
])
def test_monitor_must_be_a_computed_metric(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=overrides)

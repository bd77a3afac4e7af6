"""Choosing the image pairs of a run (data.train / data.val, folds): slices and name patterns."""

import pytest

from unet.data.loaders import ImagePair
from unet.data.selection import select_pairs
from unet.errors import ConfigError


def _pairs(names):
    return [ImagePair(name=n, image=f"{n}.tif", mask=None) for n in names]


def test_slices_patterns_all_and_none():
    pairs = _pairs(["01/t000", "01/t001", "02/t000", "02/t005"])
    assert [p.name for p in select_pairs(pairs, "1:3", what="train")] == ["01/t001", "02/t000"]
    assert [p.name for p in select_pairs(pairs, ":-1", what="train")] == ["01/t000", "01/t001", "02/t000"]
    assert [p.name for p in select_pairs(pairs, ["02/*", "*/t001"], what="val")] == ["01/t001", "02/t000", "02/t005"]
    assert select_pairs(pairs, "all", what="train") == pairs
    assert select_pairs(pairs, "none", what="val") == [] and select_pairs(pairs, None, what="val") == []


def test_bad_or_empty_selection_names_the_key():
    pairs = _pairs(["a", "b"])
    with pytest.raises(ConfigError, match=r"data.train: bad slice"):
        select_pairs(pairs, "x:2", what="train")
    with pytest.raises(ConfigError, match=r"data.val='c\*' selects no image \(available: a, b\)"):
        select_pairs(pairs, "c*", what="val")

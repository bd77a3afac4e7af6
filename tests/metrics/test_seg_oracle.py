"""SEG measure against the Cell Tracking Challenge definition (golden vectors)."""

import pytest

import unet.metrics as M

from metrics_oracle import load_arrays, load_cases

CASES = load_cases("seg")


@pytest.mark.parametrize("name", sorted(CASES))
def test_seg_matches_official(name):
    folder, c = CASES[name]
    arrays = load_arrays(folder, name)
    assert M.seg_score(arrays["gt"], arrays["res"]) == pytest.approx(c["expected_seg"], abs=1e-9, rel=0)
    if "per_frame_gt_label_jaccard" in c:
        got = [(t, lab, j) for t, lab, j in M.seg_jaccards(arrays["gt"], arrays["res"])]
        expected = [(t, lab, j) for t, frame in enumerate(c["per_frame_gt_label_jaccard"]) for lab, j in frame]
        assert [(t, lab) for t, lab, _ in got] == [(t, lab) for t, lab, _ in expected]
        assert [j for *_, j in got] == pytest.approx([j for *_, j in expected], abs=1e-12)

"""SEG measure against the Cell Tracking Challenge definition (golden vectors)."""

import json

import pytest

import unet.metrics as M

from metrics_oracle import case_ids, load_arrays


@pytest.fixture(scope="module")
def seg_cases(oracle_dir):
    doc = json.loads((oracle_dir / "seg" / "vectors.json").read_text())
    return {c["name"]: c for c in doc["cases"]}


@pytest.mark.parametrize("name", case_ids("seg"))
def test_seg_matches_official(name, oracle_dir, seg_cases):
    if name not in seg_cases:
        pytest.skip("oracle case absent")
    c = seg_cases[name]
    arrays = load_arrays(oracle_dir, "seg", name)
    assert M.seg_score(arrays["gt"], arrays["res"]) == pytest.approx(c["expected_seg"], abs=1e-9, rel=0)
    if "per_frame_gt_label_jaccard" in c:
        got = [(t, lab, j) for t, lab, j in M.seg_jaccards(arrays["gt"], arrays["res"])]
        expected = [(t, lab, j) for t, frame in enumerate(c["per_frame_gt_label_jaccard"]) for lab, j in frame]
        assert [(t, lab) for t, lab, _ in got] == [(t, lab) for t, lab, _ in expected]
        assert [j for *_, j in got] == pytest.approx([j for *_, j in expected], abs=1e-12)

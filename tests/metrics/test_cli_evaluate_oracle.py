"""``unet evaluate`` on files of golden cases reports the official tools' values."""

import json

import pytest

from unet.cli import main


def test_cli_values_are_the_official_ones(tmp_path):
    """``unet evaluate`` on files reports the golden values of the official tools (tests/fixtures/oracle),
    not only what the library computes."""
    import tifffile
    from metrics_oracle import load_arrays, load_cases

    def write(path, array):
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, array, photometric="minisblack")  # stacks as pages, never RGB

    isbi = {n: fc for n, fc in load_cases("isbi").items() if n in ("c05_merge_split_tradeoff", "c14_float32_threshold_edges",
                                                                    "c19_stack3", "c09_salt_pepper")}
    seg = {n: fc for n, fc in load_cases("seg").items() if n in ("s04_just_over_half", "s09_pooled_not_per_frame",
                                                                  "s11_realistic_perturbed")}
    assert len(isbi) == 4 and len(seg) == 3
    def evaluate(metric, cases, gt_key, pred_key):
        """``unet evaluate`` of the golden cases written as files: its rows by name."""
        for name, (folder, _) in cases.items():
            arrays = load_arrays(folder, name)
            write(tmp_path / metric / "gt" / f"{name}.tif", arrays[gt_key])
            write(tmp_path / metric / "pred" / f"{name}.tif", arrays[pred_key])
        out = tmp_path / f"{metric}.json"
        assert main(["evaluate", str(tmp_path / metric / "pred"), str(tmp_path / metric / "gt"), "--metric", metric,
                     "--json", str(out)]) == 0
        return {r["name"]: r for r in json.loads(out.read_text())["images"]}

    rows = evaluate("isbi", isbi, "labels", "proposal")
    for name, (_, case) in isbi.items():
        e = case["expected"]
        assert rows[name]["pixel_error"] == pytest.approx(e["pixel_error"], abs=1e-9), name
        assert rows[name]["rand_error"] == pytest.approx(e["rand_error"], abs=1e-9), name
        assert rows[name]["warping_error"] == pytest.approx(e["warping_error"], abs=1e-12), name
    rows = evaluate("seg", seg, "gt", "res")
    for name, (_, case) in seg.items():
        assert rows[name]["seg"] == pytest.approx(case["expected_seg"], abs=1e-9), name

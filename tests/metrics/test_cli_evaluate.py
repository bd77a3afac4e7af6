"""``unet evaluate`` through ``unet.cli.main`` on temporary files."""

import csv
import json

import numpy as np
import pytest
from scipy import ndimage

import unet.metrics as M
from unet.cli import main
from unet.io import read_image, write_image


@pytest.fixture
def isbi_pair(isbi2012, tmp_path):
    """Two real ISBI 2012 labels (cropped) and blurred 8-bit proposals, in two folders."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    arrays = {}
    for i in (0, 1):
        gt = read_image(isbi2012 / "train" / "labels" / f"{i}.png")[:192, :192]
        pred = np.round(ndimage.gaussian_filter(gt / 255.0, 1.5) * 255).astype(np.uint8)
        write_image(gt_dir / f"{i}.png", gt)
        write_image(pred_dir / f"{i}.png", pred)
        arrays[str(i)] = (gt, pred)
    return gt_dir, pred_dir, arrays


def test_isbi_json_and_csv_equal_library_values(isbi_pair, tmp_path, capsys, reference):
    gt_dir, pred_dir, arrays = isbi_pair
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    assert main(["evaluate", str(pred_dir), str(gt_dir), "--json", str(out_json), "--csv", str(out_csv)]) == 0
    doc = json.loads(out_json.read_text())
    assert doc["metrics"] == ["isbi"] and doc["matched_by"] == "file stem"
    for row in doc["images"]:
        gt, pred = arrays[row["name"]]
        expected = M.isbi_errors(gt, pred / 255.0)  # 8-bit proposals are scaled to [0, 1]
        for key in ("pixel_error", "rand_error", "warping_error", "splits", "mergers"):
            assert row[key] == expected[key], key
        # and the values are right: independent implementations of the definitions
        assert row["pixel_error"] == pytest.approx(reference.pixel_error(gt, pred / 255.0), abs=1e-12)
        assert row["rand_error"] == pytest.approx(reference.rand_error(gt, pred / 255.0), abs=1e-12)
    for key in ("pixel_error", "rand_error", "warping_error"):
        assert doc["mean"][key] == pytest.approx(np.mean([r[key] for r in doc["images"]]))
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["name"] for r in rows] == ["0", "1", "mean"]
    assert float(rows[0]["rand_error"]) == doc["images"][0]["rand_error"]
    printed = capsys.readouterr().out
    assert "pixel_error" in printed and "mean" in printed


def test_float_stack_against_folder_and_order_matching(isbi_pair, tmp_path, capsys):
    gt_dir, _, arrays = isbi_pair
    probs = np.stack([arrays[k][1] / 255.0 for k in ("0", "1")]).astype(np.float32)
    stack = tmp_path / "probs.tif"
    write_image(stack, probs)
    out = tmp_path / "s.json"
    assert main(["evaluate", str(stack), str(gt_dir), "--metric", "iou", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [r["iou"] for r in doc["images"]] == [M.iou(arrays[k][0], probs[i]) for i, k in enumerate(("0", "1"))]
    # Different stems and no numbers in common: an error, unless --pair-by-order asks for order pairing.
    renamed = tmp_path / "renamed"
    for i, k in enumerate(("a", "b")):
        write_image(renamed / f"pred_{k}.tif", probs[i])
    assert main(["evaluate", str(renamed), str(gt_dir), "--metric", "iou,isbi", "--json", str(out), "--overwrite"]) == 2
    assert "--pair-by-order" in capsys.readouterr().err
    assert main(["evaluate", str(renamed), str(gt_dir), "--metric", "iou,isbi", "--json", str(out), "--overwrite",
                 "--pair-by-order"]) == 0
    assert "sorted order" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["metrics"] == ["iou", "isbi"] and doc["matched_by"].startswith("sorted order")
    with pytest.raises(SystemExit):
        main(["evaluate", str(renamed), str(gt_dir), "--metric", "iou,nope"])


def test_seg_on_cell_tracking_masks(dic_hela, tmp_path, reference):
    masks = sorted((dic_hela / "01" / "masks").glob("man_seg*.tif"))[:2]
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    expected = {}
    for path in masks:
        gt = read_image(path)
        res = np.zeros_like(gt)
        for label in np.unique(gt)[1:]:
            res[ndimage.binary_erosion(gt == label, iterations=3)] = label + 7
        write_image(gt_dir / path.name, gt)
        write_image(pred_dir / f"t{path.stem[-3:]}.tif", res)  # CTC naming: matched by number
        expected[path.stem] = pytest.approx(reference.seg(gt, res), abs=1e-12)
    out = tmp_path / "seg.json"
    assert main(["evaluate", str(pred_dir), str(gt_dir), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["metrics"] == ["seg"]  # instance labels: SEG by default
    assert doc["matched_by"].startswith("number")
    assert {r["name"]: r["seg"] for r in doc["images"]} == expected


def _write_pair(tmp_path, gt, pred, suffix=".tif"):
    write_image(tmp_path / f"gt{suffix}", gt)
    write_image(tmp_path / f"pred{suffix}", pred)
    return str(tmp_path / f"pred{suffix}"), str(tmp_path / f"gt{suffix}")


def _labels(h=32, w=32):
    gt = np.full((h, w), 255, np.uint8)
    gt[:, w // 2] = 0
    return gt


@pytest.mark.parametrize(
    "case",
    ["shape", "empty_gt", "out_of_range", "missing"],
)
def test_errors_exit_2_with_one_line(case, tmp_path, capsys):
    gt = _labels()
    if case == "shape":
        pred, gt_path = _write_pair(tmp_path, gt, np.zeros((32, 30), np.float32))
        message = "shape"
    elif case == "empty_gt":
        pred, gt_path = _write_pair(tmp_path, np.zeros_like(gt), gt / 255.0)
        message = "empty"
    elif case == "out_of_range":
        pred, gt_path = _write_pair(tmp_path, gt, (gt / 255.0 * 2).astype(np.float32))
        message = "[0, 1]"
    else:
        pred, gt_path = str(tmp_path / "nope.tif"), str(tmp_path / "gt.tif")
        write_image(tmp_path / "gt.tif", gt)
        message = "no such file"
    assert main(["evaluate", pred, gt_path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unet evaluate: error:") and message in err and "\n" not in err


def test_outputs_are_not_overwritten_without_flag(tmp_path):
    gt = _labels()
    pred, gt_path = _write_pair(tmp_path, gt, (gt / 255.0).astype(np.float32))
    out = tmp_path / "r.json"
    out.write_text("keep")
    assert main(["evaluate", pred, gt_path, "--json", str(out)]) == 2
    assert out.read_text() == "keep"
    assert main(["evaluate", pred, gt_path, "--json", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text())["images"][0]["warping_error"] == 0.0


def test_seg_with_binary_prediction_uses_connected_components(tmp_path, capsys):
    gt = np.zeros((2, 20, 20), np.uint16)
    gt[0, 2:8, 2:8], gt[0, 10:18, 10:18], gt[1, 5:15, 5:15] = 3, 9, 4
    pred = (gt > 0).astype(np.uint8)  # one value for all objects, in both frames
    pred_path, gt_path = _write_pair(tmp_path, gt, pred)
    out = tmp_path / "seg.json"
    assert main(["evaluate", pred_path, gt_path, "--metric", "seg", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["images"][0]["seg"] == 1.0
    assert "connected components" in capsys.readouterr().out


def test_seg_of_a_probability_map_components_or_seeded_watershed(tmp_path, capsys):
    gt = np.zeros((20, 40), np.uint16)
    gt[2:18, 2:20], gt[2:18, 20:38] = 1, 2  # two touching cells
    prob = np.where(gt > 0, 0.97, 0.02).astype(np.float32)
    prob[2:18, 19:21] = 0.6  # a weak border between them
    pred_path, gt_path = _write_pair(tmp_path, gt, prob)
    out = tmp_path / "seg.json"
    assert main(["evaluate", pred_path, gt_path, "--metric", "seg", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["images"][0]["seg"] == pytest.approx(0.5)  # merged
    assert "components of > 0.5" in capsys.readouterr().out
    assert main(["evaluate", pred_path, gt_path, "--metric", "seg", "--json", str(out), "--overwrite",
                 "--seed-threshold", "0.9"]) == 0
    assert json.loads(out.read_text())["images"][0]["seg"] > 0.9
    assert "seeded watershed" in capsys.readouterr().out
    assert main(["evaluate", pred_path, gt_path, "--metric", "seg", "--seed-threshold", "0.2"]) == 2
    assert "--seed-threshold" in capsys.readouterr().err


def test_threshold_sets_the_foreground_of_a_probability_map_for_seg_and_iou(tmp_path, capsys):
    gt = np.zeros((20, 40), np.uint16)
    gt[2:18, 2:20], gt[2:18, 20:38] = 1, 2
    prob = np.where(gt > 0, 0.97, 0.02).astype(np.float32)
    prob[2:18, 19:21] = 0.02  # a clear border, two pixels wide, that the ground truth gives to the cells
    for rows in (2, 17):  # each cell's first and last row: below 0.5, above 0.4 (the border stays clear)
        prob[rows, 2:19] = prob[rows, 21:38] = 0.45
    pred_path, gt_path = _write_pair(tmp_path, gt, prob)
    out = tmp_path / "seg.json"

    def scores(*extra):
        argv = ["evaluate", pred_path, gt_path, "--metric", "seg,iou", "--json", str(out), "--overwrite", *extra]
        assert main(argv) == 0
        return json.loads(out.read_text())["images"][0]

    paper, grown = scores(), scores("--threshold", "0.4")
    assert paper["seg"] == pytest.approx(14 * 17 / (16 * 18))  # rows 3-16, columns 2-18 / 21-37 of each cell
    assert grown["seg"] == pytest.approx(16 * 17 / (16 * 18)) and grown["iou"] > paper["iou"]
    assert "within > 0.4" in (scores("--threshold", "0.4", "--seed-threshold", "0.9") and capsys.readouterr().out)
    assert main(["evaluate", pred_path, gt_path, "--threshold", "1.5"]) == 2
    assert "--threshold must lie in [0, 1)" in capsys.readouterr().err


def _numbered_folders(tmp_path, pred_names, gt_names):
    """Ground truth ``k`` is a vertical membrane at column ``k``; its prediction is the same image as float."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for k, (p, g) in enumerate(zip(pred_names, gt_names)):
        gt = np.full((16, 40), 255, np.uint8)
        gt[:, 3 + k] = 0
        write_image(gt_dir / g, gt)
        write_image(pred_dir / p, (gt / 255.0).astype(np.float32))
    return pred_dir, gt_dir


def test_predict_outputs_pair_with_their_ground_truth_by_stem(tmp_path):
    # unet predict writes N_prob.tif for N.png; lexical order would put 28_prob before 2_prob but 2.png before 28.png
    numbers = [1, 2, 10, 28, 3]
    pred_dir, gt_dir = _numbered_folders(tmp_path, [f"{n}_prob.tif" for n in numbers], [f"{n}.png" for n in numbers])
    out = tmp_path / "r.json"
    assert main(["evaluate", str(pred_dir), str(gt_dir), "--metric", "iou", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [r["name"] for r in doc["images"]] == ["1", "2", "3", "10", "28"]  # numbers sorted as numbers
    assert all(r["pred"].endswith(f"{r['name']}_prob.tif") for r in doc["images"])
    assert [r["iou"] for r in doc["images"]] == [1.0] * 5  # each scored against its own ground truth


def test_unrelated_names_are_an_error_unless_paired_by_order(tmp_path, capsys):
    pred_dir, gt_dir = _numbered_folders(tmp_path, ["b2.tif", "b10.tif", "b9x.tif"], ["a2.png", "a9.png", "a10.png"])
    assert main(["evaluate", str(pred_dir), str(gt_dir), "--metric", "iou"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot pair" in err and "--pair-by-order" in err and "\n" not in err
    out = tmp_path / "r.json"
    assert main(["evaluate", str(pred_dir), str(gt_dir), "--metric", "iou", "--pair-by-order", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    # natural order on both sides: b2, b9x, b10 <-> a2, a9, a10
    assert [(r["pred"][-7:], r["name"]) for r in doc["images"]] == [
        ("/b2.tif", "a2"), ("b9x.tif", "a9"), ("b10.tif", "a10")]
    assert "sorted order" in capsys.readouterr().out


def test_stack_against_folder_uses_numeric_order(tmp_path):
    gt_dir = tmp_path / "gt"
    probs = []
    for k in range(12):
        gt = np.full((16, 40), 255, np.uint8)
        gt[:, 3 + k] = 0
        write_image(gt_dir / f"{k}.png", gt)
        probs.append(gt / 255.0)
    stack = tmp_path / "probs.tif"
    write_image(stack, np.stack(probs).astype(np.float32))
    out = tmp_path / "r.json"
    assert main(["evaluate", str(stack), str(gt_dir), "--metric", "iou", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [r["iou"] for r in doc["images"]] == [1.0] * 12


def _two_cells_and_noisy_probability(seed=0):
    gt = np.zeros((24, 48), np.uint16)
    gt[3:20, 3:20], gt[3:20, 26:44] = 1, 2
    rng = np.random.default_rng(seed)
    prob = np.where(gt > 0, 0.9, 0.1) + rng.uniform(-0.08, 0.08, gt.shape)  # many grey levels
    return gt, prob.astype(np.float32)


def test_seg_of_an_8bit_probability_map_from_predict(tmp_path, capsys):
    from unet.inference.files import _write_stream, read_output_tag

    gt, prob = _two_cells_and_noisy_probability()
    write_image(tmp_path / "gt.tif", gt)
    as_uint8 = np.round(prob * 255).astype(np.uint8)
    # written the way unet predict --dtype uint8 writes it (tagged as a probability map)
    _write_stream(tmp_path / "p8.tif", iter([iter([as_uint8])]), as_uint8.shape, np.uint8, overwrite=False,
                  kind="prob")
    assert read_output_tag(tmp_path / "p8.tif") == "prob"
    out = tmp_path / "r.json"
    assert main(["evaluate", str(tmp_path / "p8.tif"), str(tmp_path / "gt.tif"), "--metric", "seg",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["images"][0]["seg"] == 1.0  # two cells found, not grey levels as ids
    # an untagged 8-bit PNG is read as labels (and the command says so) unless --pred-kind prob
    write_image(tmp_path / "p8.png", as_uint8)
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "p8.png"), str(tmp_path / "gt.tif"), "--metric", "seg",
                 "--json", str(out), "--overwrite"]) == 0
    assert json.loads(out.read_text())["images"][0]["seg"] < 0.5
    assert "--pred-kind prob" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "p8.png"), str(tmp_path / "gt.tif"), "--metric", "seg",
                 "--json", str(out), "--overwrite", "--pred-kind", "prob"]) == 0
    assert json.loads(out.read_text())["images"][0]["seg"] == 1.0


def test_default_metric_is_decided_from_all_ground_truth_files(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    one_cell = np.zeros((20, 20), np.uint16)
    one_cell[4:12, 4:12] = 5  # alone, this frame looks binary
    three_cells = np.zeros((20, 20), np.uint16)
    three_cells[1:6, 1:6], three_cells[8:14, 8:14], three_cells[15:19, 2:9] = 1, 2, 3
    for name, gt in (("man_seg000.tif", one_cell), ("man_seg001.tif", three_cells)):
        write_image(gt_dir / name, gt)
        write_image(pred_dir / name.replace("man_seg", "mask"), gt)
    out = tmp_path / "r.json"
    assert main(["evaluate", str(pred_dir), str(gt_dir), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["metrics"] == ["seg"]
    assert [r["seg"] for r in doc["images"]] == [1.0, 1.0]

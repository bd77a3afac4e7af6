"""Messages that tell the truth and name the files (issue 12 item 13)."""

import os
import pathlib
import shutil

import numpy as np
import pytest
import tifffile
import yaml

import unet
from unet.cli import main
from unet.data.manifest import sha256_of

SAMPLE = pathlib.Path(unet.__file__).parent / "sample_data" / "isbi2012" / "train"


def error_line(capsys, command):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"unet {command}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_output_with_an_unsupported_extension_is_refused(checkpoint_and_image, tmp_path, capsys):
    ckpt, image = checkpoint_and_image
    assert main(["predict", str(image), "-c", str(ckpt), "-o", str(tmp_path / "x.jpg"), "-q"]) == 2
    line = error_line(capsys, "predict")
    assert "x.jpg: unsupported output type '.jpg'" in line and ".tif" in line and ".zarr" in line
    assert not (tmp_path / "x.jpg").exists()  # no folder named like an image


@pytest.mark.parametrize("extra, words", [([], "not probabilities of dtype float32"),
                                          (["--output", "labels"], "not instance labels"),
                                          (["--dtype", "float16"], "not probabilities of dtype float16")])
def test_png_output_that_cannot_hold_the_values_is_refused_before_predicting(checkpoint_and_image, tmp_path, capsys, monkeypatch,
                                                                                extra, words):
    ckpt, image = checkpoint_and_image
    import unet.inference.files as files

    def no_prediction(*a, **k):
        raise AssertionError("predicted before refusing the output")

    monkeypatch.setattr(files, "predict_strips", no_prediction)
    assert main(["predict", str(image), "-c", str(ckpt), "-o", str(tmp_path / "p.png"), "-q", *extra]) == 2
    assert words in error_line(capsys, "predict")
    assert not (tmp_path / "p.png").exists()


def test_png_of_uint8_probabilities_and_of_a_mask_still_work(checkpoint_and_image, tmp_path):
    ckpt, image = checkpoint_and_image
    for extra in (["--dtype", "uint8"], ["--output", "mask"]):
        out = tmp_path / f"p{len(os.listdir(tmp_path))}.png"
        assert main(["predict", str(image), "-c", str(ckpt), "-o", str(out), "-q", *extra]) == 0
        assert unet.io.read_image(out).dtype == np.uint8


def test_random_bytes_are_not_a_checkpoint(checkpoint_and_image, tmp_path, capsys):
    _, image = checkpoint_and_image
    bad = tmp_path / "random.pt"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert main(["predict", str(image), "-c", str(bad), "-o", str(tmp_path / "o.tif")]) == 2
    line = error_line(capsys, "predict")
    assert "random.pt: not a checkpoint" in line and "pickled" not in line


def test_a_constant_image_is_named_in_a_warning(checkpoint_and_image, tmp_path, capsys):
    ckpt, _ = checkpoint_and_image
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.full((40, 40), 7, np.uint8))
    assert main(["predict", str(flat), "-c", str(ckpt), "-o", str(tmp_path / "o.tif"), "-q"]) == 0
    err = capsys.readouterr().err
    assert f"unet predict: warning: {flat}: the image is constant (every pixel is 7)" in err
    # a training image as well, at load time
    pair = unet.data.ImagePair(image=flat, mask=None, name="flat")
    with pytest.warns(UserWarning, match=r"flat.tif: the image is constant \(every pixel is 7\)"):
        unet.data.load_sample(pair)


def test_data_check_names_the_files_whose_checksum_differs(tmp_path, capsys):
    root = tmp_path / "copy"
    for sub, src in (("images", "images"), ("masks", "labels")):
        shutil.copytree(SAMPLE / src, root / sub)
    known = {f"{sub}/{p.name}": sha256_of(p) for sub in ("images", "masks") for p in sorted((root / sub).iterdir())}
    manifest = {"name": "mine", "title": "sample copy", "loader": "folder", "splits": {"all": {}},
                "known_files": known}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(manifest))
    with open(root / "images" / "3.png", "ab") as fh:
        fh.write(b"x")
    with open(root / "masks" / "28.png", "ab") as fh:
        fh.write(b"x")
    assert main(["data", "check", str(tmp_path / "mine.yaml"), str(root)]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "known SHA-256" in line)
    assert "18/20 present files match" in line and "differ: images/3.png, masks/28.png" in line


@pytest.mark.slow
def test_demo_continues_an_interrupted_run_as_it_suggests(tmp_path, capsys):
    from unet.cli.train import CONFIG_DIR

    out = tmp_path / "demo"
    small = ["--set", "model.unet.base_channels=2", "--set", "model.unet.depth=2", "--set", "train.tile_size=92",
             "--set", "train.checkpoint_every=1", "--quiet"]
    # an interrupted demo: its training has a checkpoint, the demo did not finish
    assert main(["train", "--config", str(CONFIG_DIR / "demo.yaml"), "--out", str(out), "--steps", "1", *small]) == 0
    (out / "curves.png").unlink()
    capsys.readouterr()
    assert main(["demo", "--out", str(out), "--steps", "2", *small]) == 2
    advice = error_line(capsys, "demo")
    assert "--resume" in advice
    assert main(["demo", "--out", str(out), "--steps", "2", "--resume", *small]) == 0
    assert (out / "metrics.json").exists()
    steps = [int(line.split(",")[0]) for line in (out / "log.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2]  # continued from step 1, not started over


def test_several_inputs_into_a_file_name_still_ask_for_a_folder(checkpoint_and_image, tmp_path, capsys):
    ckpt, image = checkpoint_and_image
    other = tmp_path / "img2.tif"
    other.write_bytes(image.read_bytes())
    assert main(["predict", str(image), str(other), "-c", str(ckpt), "-o", str(tmp_path / "x.tif"), "-q"]) == 2
    assert "2 inputs need an output folder" in error_line(capsys, "predict")

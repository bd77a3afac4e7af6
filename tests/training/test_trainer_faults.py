"""A diverged run says truthfully where it can restart from; a NaN training image is refused at load."""

import pathlib

import numpy as np
import pytest
import skimage.io
import tifffile

import unet
from unet.cli import main
from unet.errors import InputFileError
from unet.training.config import load_config
from unet.training.trainer import Trainer, TrainingDiverged

SAMPLE = pathlib.Path(unet.__file__).parent / "sample_data" / "isbi2012" / "train"


def sample_folder(root, n=4, dtype=None):
    """``n`` real 96x96 crops of the shipped ISBI 2012 sample as a folder dataset (TIFF images, PNG masks)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img = skimage.io.imread(SAMPLE / "images" / f"{i}.png")[100:196, 200:296]
        tifffile.imwrite(root / "images" / f"s{i}.tif", img if dtype is None else img.astype(dtype))
        skimage.io.imsave(root / "masks" / f"s{i}.png", skimage.io.imread(SAMPLE / "labels" / f"{i}.png")[100:196, 200:296],
                          check_contrast=False)
    return root


def config(root, **extra):
    values = {"data.dataset": "folder", "data.root": str(root), "data.train": "0:2", "data.val": "2:4",
              "model.unet.base_channels": 2, "model.unet.depth": 2, "train.tile_size": 60, "train.num_workers": 0,
              "train.log_every": 1, "train.threads": 2, "eval.overlays": 0, "train.val_every": 100,
              # a learning rate this large makes the loss overflow within a few steps: a real divergence
              "optim.name": "sgd", "optim.lr": 1e30, "optim.momentum": 0.0}
    values.update(extra)
    return load_config(None, extra=values)


def test_divergence_before_the_first_checkpoint_names_no_checkpoint(tmp_path):
    cfg = config(sample_folder(tmp_path / "d"), **{"train.steps": 20, "train.checkpoint_every": 20})
    with pytest.raises(TrainingDiverged) as info:
        Trainer(cfg, tmp_path / "run", quiet=True).fit()
    message = str(info.value)
    assert not (tmp_path / "run" / "last.pt").exists()
    assert "No checkpoint was saved" in message and "The last good checkpoint is" not in message


def test_divergence_after_overwrite_does_not_name_the_removed_checkpoint(tmp_path, capsys):
    data = sample_folder(tmp_path / "d")
    good = config(data, **{"train.steps": 1, "train.checkpoint_every": 1, "optim.lr": 0.01})
    Trainer(good, tmp_path / "run", quiet=True).fit()
    assert (tmp_path / "run" / "last.pt").exists()
    bad = config(data, **{"train.steps": 20, "train.checkpoint_every": 20})
    with pytest.raises(TrainingDiverged, match="No checkpoint was saved"):
        Trainer(bad, tmp_path / "run", quiet=True, overwrite=True).fit()
    assert not (tmp_path / "run" / "last.pt").exists()


def test_divergence_after_a_checkpoint_names_it_with_its_step(tmp_path):
    cfg = config(sample_folder(tmp_path / "d"), **{"train.steps": 20, "train.checkpoint_every": 1})
    with pytest.raises(TrainingDiverged) as info:
        Trainer(cfg, tmp_path / "run", quiet=True).fit()
    saved = unet.checkpoint.read_checkpoint(tmp_path / "run" / "last.pt")["step"]
    assert f"The last good checkpoint is {tmp_path / 'run' / 'last.pt'} (step {saved})" in str(info.value)


def test_nan_training_image_is_refused_at_load_naming_the_file(tmp_path, capsys):
    data = sample_folder(tmp_path / "d", dtype=np.float32)
    bad = data / "images" / "s1.tif"
    img = tifffile.imread(bad)
    img[5, 7] = np.nan
    img[9, 9] = np.inf
    tifffile.imwrite(bad, img)
    with pytest.raises(InputFileError, match=r"s1.tif: 2 of 9216 pixels are NaN or infinite"):
        Trainer(config(data, **{"train.steps": 1}), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    # the command line: one line, exit 2
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data: {{dataset: folder, root: {data}, train: '0:2', val: '2:4'}}\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"unet train: error: {bad}: 2 of 9216 pixels are NaN or infinite (replace them, e.g. by the "
                   "image's median, or leave the image out)"]


def _log_steps(path):
    import csv

    with open(path, newline="") as fh:
        return [dict(r) for r in csv.DictReader(fh)]


def test_log_rows_are_appended_not_the_file_rewritten(tmp_path, monkeypatch):
    import unet.training.trainer

    cfg = config(sample_folder(tmp_path / "d"), **{"train.steps": 6, "train.checkpoint_every": 3,
                                                   "train.val_every": 3, "optim.lr": 0.01, "optim.name": "adam"})
    real, rewrites = unet.training.trainer.atomic_path, []

    def spy(path, **kw):
        if str(path).endswith("log.csv"):
            rewrites.append(str(path))
        return real(path, **kw)

    monkeypatch.setattr(unet.training.trainer, "atomic_path", spy)  # the trainer's writer of log.csv
    Trainer(cfg, tmp_path / "run", quiet=True).fit()
    rows = _log_steps(tmp_path / "run" / "log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(r["val_iou"] for r in rows if int(r["step"]) in (3, 6))
    assert len(rewrites) == 1  # created once; the six rows were appended


def test_resumed_log_neither_duplicates_nor_loses_rows(tmp_path):
    extra = {"train.steps": 8, "train.checkpoint_every": 3, "train.val_every": 4, "optim.lr": 0.01,
             "optim.name": "adam"}
    cfg = config(sample_folder(tmp_path / "d"), **extra)
    log = tmp_path / "run" / "log.csv"
    # killed after 5 steps, in the middle of writing row 6: the checkpoint is step 3
    Trainer(cfg, tmp_path / "run", quiet=True, stop_after=5).fit()
    before = _log_steps(log)
    assert [int(r["step"]) for r in before] == [1, 2, 3, 4, 5]
    with open(log, "a") as fh:
        fh.write("6,0.69")  # a row cut short by the kill
    Trainer(cfg, tmp_path / "run", quiet=True, resume=True).fit()
    after = _log_steps(log)
    assert [int(r["step"]) for r in after] == list(range(1, 9))  # 4, 5 redone once, 6 not half kept
    assert after[:3] == before[:3]  # the rows the checkpoint covers are kept as they were
    assert all(r["val_iou"] for r in after if int(r["step"]) in (4, 8))

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

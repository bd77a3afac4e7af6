"""Faults of input and environment give one line naming the file and the problem, exit 2, no traceback."""

import errno
import os
import pathlib

import numpy as np
import pytest
import skimage.io
import torch
import yaml

import unet
from unet.cli import main
from unet import errors
from unet.inference import predict_file

SAMPLE = pathlib.Path(unet.__file__).parent / "sample_data" / "isbi2012" / "train"


def sample_folder(root: pathlib.Path, n: int = 4) -> pathlib.Path:
    """A folder dataset of ``n`` real 96x96 crops of the ISBI 2012 sample shipped in the package."""
    for sub, src in (("images", "images"), ("masks", "labels")):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            arr = skimage.io.imread(SAMPLE / src / f"{i}.png")[100:196, 200:296]
            skimage.io.imsave(root / sub / f"s{i}.png", np.ascontiguousarray(arr), check_contrast=False)
    return root


def tiny_config(tmp_path, **extra) -> pathlib.Path:
    data = sample_folder(tmp_path / "data")
    cfg = {"experiment": "t", "data": {"dataset": "folder", "root": str(data), "train": "0:2", "val": "2:4"},
           "model": {"unet": {"base_channels": 2, "depth": 2}},
           "train": {"tile_size": 60, "num_workers": 0, "log_every": 1, "threads": 2, "steps": 2,
                     "val_every": 2, "checkpoint_every": 1},
           "eval": {"overlays": 0}, "optim": {"name": "adam", "lr": 0.01}}
    cfg.update(extra)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith(f"unet {command}: error: ")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


@pytest.mark.parametrize("device, words", [("banana", "unknown device"), ("cuda", "no CUDA GPU"),
                                           ("cpu:x", "unknown device")])
def test_bad_device_is_one_line(checkpoint_and_image, tmp_path, capsys, device, words):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    ckpt, image = checkpoint_and_image
    assert main(["predict", str(image), "-c", str(ckpt), "-o", str(tmp_path / "o.tif"), "--device", device]) == 2
    line = one_error_line(capsys, "predict")
    assert f"--device {device}" in line and words in line
    assert not (tmp_path / "o.tif").exists()


@pytest.mark.parametrize("change, words", [({"model": "resnet"}, "unknown model 'resnet'"),
                                           ({"model_kwargs": {"banana": 3}}, "banana")])
def test_checkpoint_with_unknown_model_or_argument(checkpoint_and_image, tmp_path, capsys, change, words):
    ckpt, image = checkpoint_and_image
    payload = torch.load(ckpt, weights_only=True)
    payload.update(change)
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    assert main(["predict", str(image), "-c", str(bad), "-o", str(tmp_path / "o.tif")]) == 2
    line = one_error_line(capsys, "predict")
    assert str(bad) in line and words in line


def test_train_out_is_a_file(tmp_path, capsys):
    cfg = tiny_config(tmp_path)
    (tmp_path / "run").write_text("not a folder")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "run: is a file" in one_error_line(capsys, "train")


@pytest.mark.parametrize("fault", ["full disk", "read-only"])
def test_train_out_unwritable_or_full(tmp_path, capsys, monkeypatch, fault):
    # root may write anywhere: the faults are injected where the file system would raise them
    cfg = tiny_config(tmp_path)
    out = tmp_path / "run"
    if fault == "full disk":
        real = pathlib.Path.write_bytes

        def write_bytes(self, data):
            if ".part" in self.name:
                real(self, bytes(data)[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(self, data)

        monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)
    else:
        real = pathlib.Path.mkdir

        def mkdir(self, *a, **k):
            if self == out:
                raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), str(self))
            return real(self, *a, **k)

        monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    assert main(["train", "--config", str(cfg), "--out", str(out), "--quiet"]) == 2
    line = one_error_line(capsys, "train")
    if fault == "full disk":
        assert str(out / "config.yaml") in line and "No space left on device" in line
        assert [p.name for p in out.iterdir()] == []  # the partial file is gone
    else:
        assert str(out) in line and "Read-only file system" in line


def test_resume_after_architecture_change(tmp_path, capsys):
    cfg, out = tiny_config(tmp_path), tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), "--quiet", "--set", "train.steps=1"]) == 0
    capsys.readouterr()
    rc = main(["train", "--config", str(cfg), "--out", str(out), "--resume", "--quiet",
               "--set", "model.unet.base_channels=4"])
    assert rc == 2
    line = one_error_line(capsys, "train")
    assert "last.pt" in line and "base_channels 2 -> 4" in line


def test_evaluate_json_folder_with_overwrite(tmp_path, capsys):
    masks = sample_folder(tmp_path / "d", n=1) / "masks"
    (tmp_path / "out.json").mkdir()
    assert main(["evaluate", str(masks), str(masks), "--json", str(tmp_path / "out.json"), "--overwrite"]) == 2
    assert "out.json: is a folder" in one_error_line(capsys, "evaluate")
    assert (tmp_path / "out.json").is_dir()


def test_config_that_is_a_list_and_unparsable_set(tmp_path, capsys):
    cfg = tmp_path / "list.yaml"
    cfg.write_text("- data\n- model\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert "list.yaml: a config is a mapping" in one_error_line(capsys, "train")
    good = tiny_config(tmp_path)
    assert main(["train", "--config", str(good), "--out", str(tmp_path / "r"), "--set", "train.steps=[1,"]) == 2
    assert "--set 'train.steps=[1,': the value is not valid YAML" in one_error_line(capsys, "train")
    assert not (tmp_path / "r").exists()


class _OutOfMemory(torch.nn.Module):
    """A model that runs out of memory, as a big one on a small GPU does."""

    def __init__(self):
        super().__init__()
        self.inner = unet.create_model("unet", base_channels=2, depth=2, padding="same")
        self.in_channels = 1

    def forward(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def test_out_of_memory_is_not_blamed_on_the_input(tmp_path, checkpoint_and_image):
    _, image = checkpoint_and_image
    with pytest.raises(torch.OutOfMemoryError) as info:
        predict_file(_OutOfMemory(), image, tmp_path / "o.tif", tile_size=16)
    message = errors.user_message(info.value)
    assert message.startswith("out of memory") and "--tile-size" in message and str(image) not in message
    assert list(tmp_path.glob("*o.tif*")) == []

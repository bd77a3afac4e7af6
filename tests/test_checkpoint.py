import os
import pickle

import pytest
import torch

import unet
from unet.errors import InputFileError, UserError


def test_round_trip_gives_identical_outputs(tmp_path):
    net = unet.create_model("unet", base_channels=4, depth=2, norm="batch").eval()
    net.down[0][1].running_mean.uniform_()  # buffers travel too
    path = unet.save_checkpoint(net, tmp_path / "m.pt", step=7, note="x")
    loaded, meta = unet.load_checkpoint(path, with_metadata=True)
    x = torch.rand(1, 1, 60, 60)
    with torch.inference_mode():
        assert torch.equal(net(x), loaded(x))
    assert meta == {"step": 7, "note": "x"}
    assert loaded.model_kwargs == {"base_channels": 4, "depth": 2, "norm": "batch"}
    assert not loaded.training


def test_fcn_round_trip(tmp_path):
    net = unet.create_model("fcn16s", base_channels=4, fc_channels=8).eval()
    loaded = unet.load_checkpoint(unet.save_checkpoint(net, tmp_path / "f.pt"))
    x = torch.rand(1, 1, 33, 47)
    with torch.inference_mode():
        assert torch.equal(net(x), loaded(x))


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    net = unet.create_model("unet", base_channels=2, depth=1)
    target = tmp_path / "m.pt"

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        unet.save_checkpoint(net, target)
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    unet.save_checkpoint(net, target)
    with pytest.raises(UserError, match="already exists"):
        unet.save_checkpoint(net, target, overwrite=False)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    good = unet.create_model("unet", base_channels=2, depth=1)
    payload = {"format": "unet-checkpoint", "version": 1, "model": "unet", "model_kwargs": {},
               "state_dict": good.state_dict(), "metadata": {"x": _Payload()}}
    with open(path, "wb") as fh:
        torch.save(payload, fh, pickle_protocol=2)
    with pytest.raises(InputFileError, match="refused"):
        unet.load_checkpoint(path)
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()
    # a bare pickle file, not a torch zip, is refused as well
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(InputFileError):
        unet.load_checkpoint(raw)
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(1)}, p)
    with pytest.raises(InputFileError, match="not a unet checkpoint"):
        unet.load_checkpoint(p)
    with pytest.raises(InputFileError, match="not found"):
        unet.load_checkpoint(tmp_path / "missing.pt")

"""unet export: TorchScript and ONNX equal the PyTorch model on real images at every valid size;
bad requests (existing output, tile-dependent model, missing extra) give one line and exit 2."""

import json
import sys

import numpy as np
import pytest
import torch

import unet
from unet.cli import main
from unet.data.normalize import normalize
from unet.export import export, export_metadata
from unet.export.bioimageio import input_tile
from unet.models.geometry import is_valid_input_size, output_size

from conftest import small_unet

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOL = 1e-4


def _crops(image, sizes):
    """Normalised real-image crops (1, 1, h, w) of the given sizes, mirrored where the image is smaller."""
    from unet.inference.tiling import mirror_indices

    img = normalize(image)
    for h, w in sizes:
        ys = mirror_indices(img.shape[0], 7, h)
        xs = mirror_indices(img.shape[1], 3, w)
        yield torch.from_numpy(np.ascontiguousarray(img[ys][:, xs]))[None, None]


def _reference(model, x):
    with torch.inference_mode():
        return torch.softmax(model(x), dim=1).numpy()


def _check_formats(model, tmp_path, image, sizes, name):
    ts_path = export(model, tmp_path / f"{name}.pt", format="torchscript")
    onnx_path = export(model, tmp_path / f"{name}.onnx", format="onnx")
    scripted = torch.jit.load(str(ts_path))
    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]  # symbolic batch, height, width
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    for x in _crops(image, sizes):
        assert is_valid_input_size(model, tuple(x.shape[-2:]))
        ref = _reference(model, x)
        assert ref.shape[-2:] == output_size(model, tuple(x.shape[-2:]))
        with torch.inference_mode():
            got_ts = scripted(x).numpy()
        got_onnx = session.run(None, {"input": x.numpy()})[0]
        assert got_ts.shape == ref.shape and got_onnx.shape == ref.shape
        assert np.abs(got_ts - ref).max() <= TOL, (name, x.shape)
        assert np.abs(got_onnx - ref).max() <= TOL, (name, x.shape)
        # not trivially equal: a random network's probabilities vary across the image
        assert ref[:, 1].std() > 1e-3


def test_small_network_at_several_valid_sizes(tmp_path, isbi_image):
    model = small_unet(base_channels=8, depth=3)
    # depth 3: valid sizes 92 + 8 k; the smallest, square, rectangular, larger than the 512 px slice
    _check_formats(model, tmp_path, isbi_image, [(92, 92), (124, 140), (252, 188), (540, 316)], "small")


def test_batch_of_two_and_same_padded_network(tmp_path, isbi_image):
    model = small_unet(padding="same", norm="batch")
    onnx_path = export(model, tmp_path / "same.onnx", format="onnx", allow_tile_dependent=True)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = torch.cat(list(_crops(isbi_image, [(50, 37), (50, 37)])))
    x[1] = x[1].flip(-1)
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], _reference(model, x), atol=TOL)


@pytest.mark.slow
def test_paper_network_at_572(tmp_path, isbi_image):
    """The paper's network (random He initialisation) on a 572 px tile of a real ISBI slice."""
    model = unet.create_model("unet").eval()
    x = torch.from_numpy(input_tile(model, normalize(isbi_image)[None]))[None]
    assert tuple(x.shape) == (1, 1, 572, 572)
    ref = _reference(model, x)
    assert ref.shape == (1, 2, 388, 388) and export_metadata(model, {})["halo"] == 92
    scripted = torch.jit.load(str(export(model, tmp_path / "paper.pt", format="torchscript")))
    with torch.inference_mode():
        assert np.abs(scripted(x).numpy() - ref).max() <= TOL
    session = ort.InferenceSession(str(export(model, tmp_path / "paper.onnx", format="onnx")),
                                   providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"input": x.numpy()})[0] - ref).max() <= TOL


def test_dic_hela_frame(tmp_path, shared_data):
    import tifffile

    frame = tifffile.imread(sorted((shared_data / "dic-hela" / "01" / "images").glob("*.tif"))[0])
    model = small_unet(base_channels=8, depth=3)
    _check_formats(model, tmp_path, frame, [(124, 124), (316, 268)], "dic")


def test_metadata_travels_with_the_files(tmp_path, small_checkpoint):
    ckpt, model = small_checkpoint
    onnx_path = export(ckpt, tmp_path / "m.onnx", format="onnx")
    props = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    meta = json.loads(props["unet"])
    assert meta["normalize"] == {"mode": "percentile", "low": 0.1, "high": 99.9}
    assert meta["valid_size"] == {"min": 44, "step": 4} and meta["halo"] == 20  # 44 -> 4 px
    assert is_valid_input_size(model, 44) and not is_valid_input_size(model, 40)
    files = {"unet.json": ""}
    torch.jit.load(str(export(ckpt, tmp_path / "m.pt", format="torchscript")), _extra_files=files)
    assert json.loads(files["unet.json"]) == meta


def test_existing_output_is_kept_without_overwrite(tmp_path, small_checkpoint, capsys):
    ckpt, _ = small_checkpoint
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    assert main(["export", str(ckpt), "-o", str(out), "--format", "onnx"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "--overwrite" in err[0]
    assert out.read_bytes() == b"old"
    assert main(["export", str(ckpt), "-o", str(out), "--format", "onnx", "--overwrite"]) == 0
    onnx.checker.check_model(onnx.load(str(out)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temporary file left


def test_tile_dependent_model_is_refused_with_the_reason(tmp_path, capsys):
    ckpt = unet.save_checkpoint(small_unet(norm="instance"), tmp_path / "inst.pt")
    for fmt, suffix in (("torchscript", "pt"), ("onnx", "onnx"), ("bioimageio", "zip")):
        out = tmp_path / f"out.{suffix}"
        assert main(["export", str(ckpt), "-o", str(out), "--format", fmt]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "InstanceNorm2d" in err[0] and "--allow-tile-dependent" in err[0]
        assert str(ckpt) in err[0] and not out.exists()
    out = tmp_path / "out.onnx"
    assert main(["export", str(ckpt), "-o", str(out), "--format", "onnx", "--allow-tile-dependent"]) == 0
    assert out.is_file()


def test_fcn_is_not_exported(tmp_path, capsys):
    ckpt = unet.save_checkpoint(unet.create_model("fcn8s", base_channels=4, fc_channels=8), tmp_path / "fcn.pt")
    assert main(["export", str(ckpt), "-o", str(tmp_path / "f.pt"), "--format", "torchscript",
                 "--allow-tile-dependent"]) == 2
    assert "only U-Net" in capsys.readouterr().err


@pytest.mark.parametrize("fmt, missing", [("onnx", "onnx"), ("bioimageio", "bioimageio.spec")])
def test_without_the_extra_the_command_says_what_to_install(tmp_path, small_checkpoint, capsys, monkeypatch, fmt,
                                                            missing):
    ckpt, _ = small_checkpoint
    monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
    out = tmp_path / "x.out"
    assert main(["export", str(ckpt), "-o", str(out), "--format", fmt]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and missing in err[0] and "pip install 'unet[export]'" in err[0]
    assert not out.exists()

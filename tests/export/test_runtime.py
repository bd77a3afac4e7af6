"""unet predict with --backend onnxruntime, with .onnx and TorchScript files and bioimage.io packages:
the same overlap-tile prediction as the torch backend within 1e-4."""

import sys
import zipfile

import numpy as np
import pytest
import tifffile
import yaml

from unet.cli import main
from unet.data.normalize import intensity_range, normalize
from unet.export import export
from unet.export.runtime import load_model
from unet.inference import predict_tiled

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

TOL = 1e-4


@pytest.fixture(scope="module")
def setup(tmp_path_factory, small_checkpoint, isbi_image):
    root = tmp_path_factory.mktemp("runtime")
    ckpt, model = small_checkpoint
    image = isbi_image[:200, :150]  # a real ISBI crop, not a multiple of any tile
    tifffile.imwrite(root / "img.tif", image)
    files = {
        "onnx": export(ckpt, root / "m.onnx", format="onnx"),
        "torchscript": export(ckpt, root / "m.pt", format="torchscript"),
    }
    if __import__("importlib").util.find_spec("bioimageio.spec"):
        files["package"] = export(ckpt, root / "m.zip", format="bioimageio")
    return root, ckpt, model, image, files


def _predict(root, model_path, name, *extra):
    out = root / f"{name}.tif"
    assert main(["predict", "-c", str(model_path), str(root / "img.tif"), "-o", str(out), "--tile-size", "48",
                 "-q", "--overwrite", *extra]) == 0
    return tifffile.imread(out)


def test_backends_agree_in_predict_tiled(setup):
    root, ckpt, model, image, files = setup
    x = normalize(image)
    ref = predict_tiled(model, x, tile_size=64)
    for path, backend in [(ckpt, "onnxruntime"), (files["onnx"], None), (files["torchscript"], "torch")]:
        m, settings = load_model(path, backend=backend)
        assert settings == {"mode": "percentile", "low": 0.1, "high": 99.9}
        for tile in (64, 40):
            assert np.abs(predict_tiled(m, x, tile_size=tile) - ref).max() <= TOL, (path.name, tile)
    assert ref[1].std() > 1e-3
    # test-time augmentation: the numpy dihedral mean of exported models equals the torch one
    m, _ = load_model(files["onnx"])
    tta = predict_tiled(model, x[:96, :80], tile_size=64, tta=True)
    assert np.abs(predict_tiled(m, x[:96, :80], tile_size=48, tta=True) - tta).max() <= TOL


def test_cli_predict_backends_and_files(setup):
    root, ckpt, model, image, files = setup
    ref = _predict(root, ckpt, "torch", "--backend", "torch")
    expected = predict_tiled(model, normalize(image, value_range=intensity_range(image)), tile_size=48)[1]
    np.testing.assert_array_equal(ref, expected)
    runs = {"ckpt-ort": (ckpt, "onnxruntime"), "onnx": (files["onnx"], None), "ts": (files["torchscript"], None)}
    if "package" in files:
        runs.update({"pkg-torch": (files["package"], "torch"), "pkg-ort": (files["package"], "onnxruntime")})
    for name, (path, backend) in runs.items():
        got = _predict(root, path, name, *(["--backend", backend] if backend else []))
        assert got.shape == image.shape and np.abs(got - ref).max() <= TOL, name


def test_generic_package_without_unet_config(setup, tmp_path):
    """A bioimage.io U-Net package of the same kind, without our config: geometry and normalisation come from
    its axes and preprocessing."""
    root, ckpt, model, image, files = setup
    if "package" not in files:
        pytest.skip("bioimageio.spec is not installed")
    generic = tmp_path / "generic.zip"
    with zipfile.ZipFile(files["package"]) as src, zipfile.ZipFile(generic, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "rdf.yaml":
                rdf = yaml.safe_load(data)
                del rdf["config"]
                data = yaml.safe_dump(rdf).encode()
            dst.writestr(item, data)
    ref = predict_tiled(model, normalize(image), tile_size=64)
    for backend in ("torch", "onnxruntime"):
        m, settings = load_model(generic, backend=backend)
        assert settings == {"mode": "percentile", "low": 0.1, "high": 99.9}
        assert (m.depth, m.padding, m.in_channels, m.num_classes) == (2, "valid", 1, 2)
        assert np.abs(predict_tiled(m, normalize(image), tile_size=96) - ref).max() <= TOL


def test_wrong_backend_and_missing_runtime_exit_2(setup, capsys, monkeypatch):
    root, ckpt, model, image, files = setup
    out = root / "never.tif"
    assert main(["predict", "-c", str(files["onnx"]), str(root / "img.tif"), "-o", str(out), "--backend", "torch",
                 "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "m.onnx" in err[0] and "onnxruntime" in err[0]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["predict", "-c", str(ckpt), str(root / "img.tif"), "-o", str(out), "--backend", "onnxruntime",
                 "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'unet[export]'" in err[0]
    assert not out.exists()

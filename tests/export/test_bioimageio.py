"""bioimage.io packages: valid under bioimageio.spec, the geometry of a valid U-Net, the checkpoint's
normalisation, test tensors that reproduce, and the committed checkpoints exported in CI."""

import json
import zipfile

import numpy as np
import pytest
import torch
import yaml

import unet
from unet.cli import main
from unet.data.normalize import intensity_range, normalize
from unet.export import export, export_metadata
from unet.export.bioimageio import PAPER, build_rdf, preprocessing
from unet.export.runtime import normalize_from_preprocessing

from conftest import REPO, small_unet

spec = pytest.importorskip("bioimageio.spec")
ort = pytest.importorskip("onnxruntime")

TOL = 1e-4


def _rdf(path):
    with zipfile.ZipFile(path) as zf:
        return yaml.safe_load(zf.read("rdf.yaml")), zf


def _read(path, name):
    import io

    with zipfile.ZipFile(path) as zf:
        return zf.read(name) if not name.endswith(".npy") else np.load(io.BytesIO(zf.read(name)))


def _valid(path):
    descr = spec.load_description(path, perform_io_checks=True)
    assert type(descr).__name__ == "ModelDescr", descr.validation_summary.display() if hasattr(descr, "validation_summary") else descr
    assert descr.validation_summary.status != "failed"
    assert str(descr.format_version).startswith("0.5")
    return descr


def _reproduce(path, model, normalize_settings):
    """The package's test output is the model's output on its test input, normalised like unet predict does."""
    x = _read(path, "test_input.npy")
    expected = _read(path, "test_output.npy")
    keys = {k: normalize_settings[k] for k in ("mode", "low", "high") if k in normalize_settings}
    xn = normalize(x[0], value_range=intensity_range(x[0], **keys))[None]
    with torch.inference_mode():
        ref = torch.softmax(model(torch.from_numpy(xn)), dim=1).numpy()
    assert np.abs(ref - expected).max() <= TOL
    session = ort.InferenceSession(_read(path, "weights.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"input": xn})[0] - expected).max() <= TOL
    return x, expected


def test_package_content_and_test_tensors(tmp_path, small_checkpoint, isbi_image):
    ckpt, model = small_checkpoint
    out = export(ckpt, tmp_path / "small.zip", format="bioimageio", authors=["A. Tester"])
    _valid(out)
    rdf, _ = _rdf(out)
    (inp,), (outp,) = rdf["inputs"], rdf["outputs"]
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    assert inp["axes"][2]["size"] == {"min": 44, "step": 4}  # depth 2: 44 + 4 k, each pooling sees an even size
    assert outp["axes"][3]["size"] == {"tensor_id": "input", "axis_id": "x", "offset": -40}  # halo 20 per side
    steps = [p for p in inp["preprocessing"] if p["id"] != "ensure_dtype"]  # the spec adds dtype casts
    assert [p["id"] for p in steps] == ["scale_range"] and steps[0]["kwargs"]["min_percentile"] == 0.1
    assert normalize_from_preprocessing(inp["preprocessing"]) == rdf["config"]["unet"]["normalize"]
    assert outp["axes"][1]["channel_names"] == ["background", "foreground"]
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"] == model.model_kwargs
    assert PAPER["doi"] in [c.get("doi") for c in rdf["cite"]]
    assert rdf["authors"] == [{"name": "A. Tester"}] and rdf["license"] and rdf["covers"] and rdf["documentation"]
    assert rdf["config"]["unet"]["normalize"] == {"mode": "percentile", "low": 0.1, "high": 99.9}
    x, expected = _reproduce(out, model, rdf["config"]["unet"]["normalize"])
    # the test input is real: the centre of the shipped ISBI slice at the largest valid size up to 572
    assert x.shape == (1, 1, 572, 572) and expected.shape == (1, 2, 532, 532)
    np.testing.assert_array_equal(x[0, 0, 30:542, 30:542], isbi_image)
    # the architecture file stands alone (only torch) and takes the state dict
    ns = {}
    exec(compile(_read(out, "unet_architecture.py").decode(), "unet_architecture.py", "exec"), ns)
    assert "unet" not in ns
    net = ns["ProbabilityNet"](**model.model_kwargs)
    import io

    net.load_state_dict(torch.load(io.BytesIO(_read(out, "weights.pt")), weights_only=True))
    with torch.inference_mode():
        xn = normalize(x[0])[None]
        np.testing.assert_allclose(net.eval()(torch.from_numpy(xn)).numpy(), expected, atol=TOL)


def test_paper_network_geometry_in_the_description():
    model = unet.create_model("unet")
    meta = export_metadata(model, {"mode": "percentile", "low": 0.1, "high": 99.9})
    rdf = build_rdf(meta, dataset="isbi2012", tile_shape=(1, 572, 572), name="paper", authors=["x"],
                    license="MIT", pytorch_version="2.13.0")
    size = rdf["inputs"][0]["axes"][2]["size"]
    assert (572 - size["min"]) % size["step"] == 0 and size["step"] == 16  # the paper's tile is valid
    assert rdf["outputs"][0]["axes"][2]["size"]["offset"] == -184  # 572 -> 388: 92 px per side (Fig. 1)
    assert meta["halo"] == 92
    dois = [c.get("doi") for c in rdf["cite"]]
    assert "10.1371/journal.pbio.1000502" in dois and "10.3389/fnana.2015.00142" in dois


@pytest.mark.parametrize("settings", [
    {"mode": "percentile", "low": 1.0, "high": 99.5}, {"mode": "meanstd"}, {"mode": "minmax"}, {"mode": "none"},
])
def test_preprocessing_round_trip(settings):
    assert normalize_from_preprocessing(preprocessing(settings)) == settings


@pytest.mark.slow
@pytest.mark.parametrize("settings", [{"mode": "percentile", "low": 0.1, "high": 99.9}, {"mode": "meanstd"}])
def test_bioimageio_core_model_test(tmp_path, settings):
    """bioimage.io's own test: it applies the package's preprocessing and reproduces our test output with
    every weight format at several valid sizes and batch sizes."""
    core = pytest.importorskip("bioimageio.core")
    ckpt = unet.save_checkpoint(small_unet(), tmp_path / "m.pt", normalize=settings)
    out = export(ckpt, tmp_path / "m.zip", format="bioimageio")
    summary = core.test_model(out)
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed


@pytest.mark.slow
@pytest.mark.parametrize("ckpt, dataset, first_step", [
    ("results/isbi2012/checkpoints/unet-fold1.pt", "isbi2012", "scale_range"),
    ("results/dic-hela/checkpoints/unet-01-02.pt", "dic-hela", "zero_mean_unit_variance"),
])
def test_committed_checkpoints_export_to_all_formats(tmp_path, capsys, ckpt, dataset, first_step):
    import onnx

    path = REPO / ckpt
    model, meta = unet.load_checkpoint(path, with_metadata=True)
    # checkpoints of the issue-11 reruns are seamless and export as they are; older ones used
    # instance normalisation, which is refused unless the user accepts tile-dependent output
    dependent = unet.tile_dependence(model)
    for fmt, name in (("torchscript", "m.pt"), ("onnx", "m.onnx"), ("bioimageio", "m.zip")):
        args = ["export", str(path), "-o", str(tmp_path / name), "--format", fmt]
        if dependent:
            assert main(args) == 2
            assert "InstanceNorm2d" in capsys.readouterr().err
            args += ["--allow-tile-dependent"]
        assert main(args) == 0
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.onnx")), full_check=True)
    files = {"unet.json": ""}
    torch.jit.load(str(tmp_path / "m.pt"), _extra_files=files)
    assert bool(json.loads(files["unet.json"])["tile_dependence"]) == bool(dependent)
    _valid(tmp_path / "m.zip")
    rdf, _ = _rdf(tmp_path / "m.zip")
    assert dataset in rdf["tags"] and len(rdf["cite"]) >= 2
    assert [p["id"] for p in rdf["inputs"][0]["preprocessing"] if p["id"] != "ensure_dtype"][0] == first_step
    assert ("tile-dependent" in _read(tmp_path / "m.zip", "README.md").decode()) == bool(dependent)
    _reproduce(tmp_path / "m.zip", model, meta["normalize"])

"""Prediction with exported models: ONNX Runtime or TorchScript as the backend of overlap-tile inference.

:func:`load_model` opens a checkpoint, an exported ``.onnx`` or TorchScript
file, or a bioimage.io package, for one of two backends:

* ``"torch"`` - the PyTorch model (checkpoint) or the TorchScript weights;
* ``"onnxruntime"`` - the ONNX graph in an ONNX Runtime session (a checkpoint
  is exported to ONNX in memory first).

Exported networks come as :class:`ExportedModel`, which carries the geometry
that :mod:`unet.inference.tiling` reads (``depth``, ``padding``, channels) and
runs a batch of input tiles itself (``predict_batch``): the tiling, mirroring
and stitching are the same code for every backend.
"""

from __future__ import annotations

import io
import json
import math
import warnings
import zipfile
from pathlib import Path

import numpy as np

from unet.errors import InputFileError, UserError

BACKENDS = ("torch", "onnxruntime")


def dihedral_mean(run, x: np.ndarray) -> np.ndarray:
    """Mean of ``run`` over the 8 flips/rotations by 90 degrees of ``x`` (N, C, H, W), each mapped back.

    The numpy twin of the torch test-time augmentation in :mod:`unet.inference.tiling`
    (same order of the transforms).
    """
    total = None
    for k in range(4):
        for flip in (False, True):
            xt = x[..., ::-1] if flip else x
            y = run(np.ascontiguousarray(np.rot90(xt, k, axes=(-2, -1))))
            y = np.rot90(y, -k, axes=(-2, -1))
            y = y[..., ::-1] if flip else y
            total = y if total is None else total + y
    return np.ascontiguousarray(total / 8, dtype=np.float32)


class ExportedModel:
    """An exported U-Net run on batches of tiles by ONNX Runtime or TorchScript.

    Parameters
    ----------
    run : callable
        float32 (N, C, H, W) normalised tiles -> float32 (N, K, h, w) softmax probabilities.
    metadata : dict
        :func:`unet.export.export_metadata` (``depth``, ``padding``, ``in_channels``,
        ``num_classes``, ``normalize``, ...).
    backend : str
        ``"onnxruntime"`` or ``"torch"``.
    """

    training = False

    def __init__(self, run, metadata: dict, *, backend: str, name: str = "model"):
        self.run, self.metadata, self.backend, self.name = run, dict(metadata), backend, name
        self.depth = int(metadata["depth"])
        self.padding = metadata.get("padding", "valid")
        self.in_channels = int(metadata["in_channels"])
        self.num_classes = int(metadata["num_classes"])
        # memory estimate of tiling.bytes_per_input_pixel
        self.base_channels = int(metadata.get("model_kwargs", {}).get("base_channels", 64))

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def predict_batch(self, batch: np.ndarray, *, tta: bool = False) -> np.ndarray:
        """Softmax probabilities (N, K, h, w) of a float32 batch of normalised input tiles (N, C, H, W)."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return dihedral_mean(self.run, batch) if tta else np.asarray(self.run(batch), dtype=np.float32)

    def __repr__(self):
        return f"ExportedModel({self.name!r}, backend={self.backend!r})"


def onnxruntime_session(data: bytes, *, device=None, threads: int | None = None):
    """An ONNX Runtime session for the serialized model ``data`` (CUDA when asked for and available)."""
    from unet.export import require

    require("onnxruntime", what="the onnxruntime backend")
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    providers = ["CPUExecutionProvider"]
    if device is not None and str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(data, sess_options=options, providers=providers)


def _onnx_model(data: bytes, metadata: dict, name: str, device=None) -> ExportedModel:
    session = onnxruntime_session(data, device=device)
    input_name = session.get_inputs()[0].name

    def run(x):
        return session.run(None, {input_name: x})[0]

    return ExportedModel(run, metadata, backend="onnxruntime", name=name)


def _torchscript_model(data: bytes, metadata: dict, name: str, device=None) -> ExportedModel:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript: see unet.export.torchscript_bytes
        module = torch.jit.load(io.BytesIO(data), map_location=device or "cpu").eval()
    dev = torch.device(device or "cpu")

    def run(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x).to(dev)).float().cpu().numpy()

    return ExportedModel(run, metadata, backend="torch", name=name)


def _onnx_metadata(data: bytes, path) -> dict:
    from unet.export import METADATA_KEY, require

    require("onnx", what="reading an ONNX model")
    import onnx

    try:
        proto = onnx.load_from_string(data)
    except Exception as err:
        raise InputFileError(path, f"not a readable ONNX model ({type(err).__name__}: {err})") from err
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in props:
        raise InputFileError(path, "ONNX model was not exported by unet (no 'unet' metadata: valid sizes and "
                                   "normalisation unknown)")
    return json.loads(props[METADATA_KEY])


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in zf.namelist())


def _is_package(path: Path) -> bool:
    if path.is_dir():
        return (path / "rdf.yaml").is_file() or (path / "bioimageio.yaml").is_file()
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n in ("rdf.yaml", "bioimageio.yaml") for n in zf.namelist())


def load_model(path, *, backend: str | None = None, device=None):
    """Open a model file for prediction.

    Parameters
    ----------
    path : path
        A checkpoint (``unet train``), an ONNX or TorchScript file from
        ``unet export``, or a bioimage.io package (zip or folder).
    backend : {"torch", "onnxruntime"}, optional
        Default: ONNX Runtime for ``.onnx`` files, torch otherwise.
    device : str, optional
        torch device (ONNX Runtime uses CUDA only when asked for and installed).

    Returns
    -------
    model : torch.nn.Module or ExportedModel
        Ready for :func:`unet.inference.predict_tiled` / :func:`unet.inference.predict_file`.
    normalize : dict
        The normalisation settings stored with the model.
    """
    from unet.data.normalize import DEFAULT_NORMALIZE

    path = Path(path)
    if backend is not None and backend not in BACKENDS:
        raise UserError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not path.exists():
        raise InputFileError(path, "model not found")
    name = path.name
    if path.suffix.lower() == ".onnx":
        if backend == "torch":
            raise InputFileError(path, "an ONNX model runs with --backend onnxruntime")
        data = path.read_bytes()
        meta = _onnx_metadata(data, path)
        return _onnx_model(data, meta, name, device), meta["normalize"]
    if _is_package(path):
        return _load_package(path, backend=backend or "torch", device=device)
    if path.is_file() and _is_torchscript(path):
        if backend == "onnxruntime":
            raise InputFileError(path, "a TorchScript model runs with --backend torch (export ONNX for onnxruntime)")
        return _load_torchscript_file(path, device)
    from unet.checkpoint import load_checkpoint

    model, meta = load_checkpoint(path, map_location=device or "cpu", with_metadata=True)
    normalize = dict(meta.get("normalize") or DEFAULT_NORMALIZE)
    if backend == "onnxruntime":
        from unet.export import export_metadata, onnx_bytes
        from unet.export.network import probability_net

        metadata = export_metadata(model, normalize, source=name)
        return _onnx_model(onnx_bytes(probability_net(model.cpu()), metadata), metadata, name, device), normalize
    return model, normalize


def _load_torchscript_file(path: Path, device):
    from unet.export import METADATA_KEY

    with zipfile.ZipFile(path) as zf:
        extra = [n for n in zf.namelist() if n.endswith(f"extra/{METADATA_KEY}.json")]
        if not extra:
            raise InputFileError(path, "TorchScript model was not exported by unet (no unet.json: valid sizes and "
                                       "normalisation unknown)")
        meta = json.loads(zf.read(extra[0]))
    return _torchscript_model(path.read_bytes(), meta, path.name, device), meta["normalize"]


# --------------------------------------------------------------------------- bioimage.io packages


def _read_package_file(path: Path, name: str) -> bytes:
    if path.is_dir():
        return (path / name).read_bytes()
    with zipfile.ZipFile(path) as zf:
        return zf.read(name)


def _source(entry) -> str:
    src = entry.get("source") if isinstance(entry, dict) else entry
    if not isinstance(src, str) or "://" in src:
        raise UserError(f"weights {src!r} are not inside the package")
    return src


def normalize_from_preprocessing(steps: list) -> dict:
    """The :mod:`unet.data.normalize` settings equal to bioimage.io preprocessing ``steps`` (see
    :func:`unet.export.bioimageio.preprocessing`)."""
    from unet.data.normalize import MEANSTD_WIDTH

    ids = [s.get("id") for s in steps if s.get("id") != "ensure_dtype"]
    kw = [s.get("kwargs") or {} for s in steps if s.get("id") != "ensure_dtype"]
    if not ids:
        return {"mode": "none"}
    if ids == ["scale_range"]:
        low, high = float(kw[0].get("min_percentile", 0.0)), float(kw[0].get("max_percentile", 100.0))
        return {"mode": "minmax"} if (low, high) == (0.0, 100.0) else {"mode": "percentile", "low": low, "high": high}
    if ids == ["zero_mean_unit_variance", "scale_linear"] and math.isclose(float(kw[1].get("gain", 1)),
                                                                          1 / (2 * MEANSTD_WIDTH)) \
            and math.isclose(float(kw[1].get("offset", 0)), 0.5):
        return {"mode": "meanstd"}
    raise UserError(f"preprocessing {ids} has no unet normalisation equivalent")


def package_metadata(rdf: dict) -> dict:
    """:func:`unet.export.export_metadata` of a package: its ``config.unet``, or read from the
    description of a generic U-Net package (valid sizes ``min + k * 2**depth``, output smaller by
    twice the halo, one input and one probability output, axes batch, channel, y, x)."""
    from unet.export import METADATA_KEY
    from unet.models.geometry import halo, is_valid_input_size

    own = (rdf.get("config") or {}).get(METADATA_KEY)
    if own:
        return own
    try:
        (inp,), (out,) = rdf["inputs"], rdf["outputs"]
        kinds_in = [a.get("type") for a in inp["axes"]]
        kinds_out = [a.get("type") for a in out["axes"]]
        if kinds_in != ["batch", "channel", "space", "space"] or kinds_out != kinds_in:
            raise UserError(f"axes {kinds_in} -> {kinds_out}, not batch, channel, y, x")
        size = inp["axes"][2]["size"]
        step, minimum = int(size["step"]), int(size["min"])
        depth = int(round(math.log2(step)))
        if 2**depth != step:
            raise UserError(f"size step {step} is not a power of two")
        offset = int(out["axes"][2]["size"].get("offset", 0)) if isinstance(out["axes"][2]["size"], dict) else None
        if offset is None:
            raise UserError("the output size is not given relative to the input")
        model = type("Geometry", (), {"depth": depth, "padding": "valid" if offset < 0 else "same"})
        if -offset != 2 * halo(model) or not is_valid_input_size(model, minimum):
            raise UserError(f"sizes {minimum} + k * {step} with output offset {offset} are not those of a U-Net of "
                            f"depth {depth} with two 3x3 convolutions per level")
        return {"depth": depth, "padding": model.padding, "halo": halo(model),
                "in_channels": len(inp["axes"][1]["channel_names"]),
                "num_classes": len(out["axes"][1]["channel_names"]),
                "normalize": normalize_from_preprocessing(inp.get("preprocessing") or []), "model_kwargs": {}}
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"not a U-Net package this unet can run ({type(err).__name__}: {err})") from err


def _load_package(path: Path, *, backend: str, device):
    import yaml

    names = ("rdf.yaml", "bioimageio.yaml")
    try:
        rdf = None
        for n in names:
            try:
                rdf = yaml.safe_load(_read_package_file(path, n))
                break
            except (KeyError, FileNotFoundError):
                continue
        if not isinstance(rdf, dict) or rdf.get("type") != "model":
            raise UserError("not a bioimage.io model description")
        meta = package_metadata(rdf)
        weights = rdf.get("weights") or {}
        if backend == "onnxruntime":
            if "onnx" not in weights:
                raise UserError("the package has no ONNX weights (use --backend torch)")
            model = _onnx_model(_read_package_file(path, _source(weights["onnx"])), meta, path.name, device)
        else:
            if "torchscript" not in weights:
                raise UserError("the package has no TorchScript weights (use --backend onnxruntime)")
            model = _torchscript_model(_read_package_file(path, _source(weights["torchscript"])), meta, path.name,
                                       device)
    except UserError as err:
        raise InputFileError(path, str(err)) from err
    except (KeyError, OSError, zipfile.BadZipFile, yaml.YAMLError) as err:
        raise InputFileError(path, f"not a readable bioimage.io package ({type(err).__name__}: {err})") from err
    return model, dict(meta["normalize"])

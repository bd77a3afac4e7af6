"""bioimage.io model packages (spec format 0.5) of a U-Net.

The package describes what generic tools get wrong about a valid (unpadded)
U-Net (Ronneberger et al. 2015, Fig. 1 and Sec. 3):

* input height and width are ``min + k * step`` with ``step = 2**depth``
  (every 2x2 max-pooling needs an even size) - a ``ParameterizedSize``;
* the output is smaller than the input by twice the halo (92 px per side for
  the paper's network) - a ``SizeReference`` with ``offset = -2 * halo``, the
  spec's way of saying that the model has already cropped its halo;
* preprocessing is the checkpoint's per-image intensity normalisation
  (:mod:`unet.data.normalize`), postprocessing none: the network's last layer
  is the soft-max, its output the class probabilities.

The zip holds TorchScript, ONNX and PyTorch state-dict weights (with the
architecture as one self-contained Python file and its keyword arguments),
test tensors computed from a real image, a cover (image beside its
prediction), documentation, citations of the paper and the training data, and
the settings ``unet predict`` reads back (``config.unet``).
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from unet.errors import UserError

#: the U-Net paper, cited by every package
PAPER = {
    "text": "Ronneberger O., Fischer P., Brox T. U-Net: Convolutional Networks for Biomedical Image Segmentation. "
            "MICCAI 2015, LNCS 9351, pp. 234-241.",
    "doi": "10.1007/978-3-319-24574-4_28",
}
#: citations requested by the terms of the training data sets (see their PROVENANCE.md)
DATASET_CITATIONS = {
    "isbi2012": [
        {"text": "Cardona A. et al. An Integrated Micro- and Macroarchitectural Analysis of the Drosophila Brain by "
                 "Computer-Assisted Serial Section Electron Microscopy. PLoS Biol 8(10): e1000502 (2010). "
                 "(training data: ISBI 2012 EM segmentation challenge)",
         "doi": "10.1371/journal.pbio.1000502"},
        {"text": "Arganda-Carreras I. et al. Crowdsourcing the creation of image segmentation algorithms for "
                 "connectomics. Front. Neuroanat. 9:142 (2015). (training data: ISBI 2012 challenge)",
         "doi": "10.3389/fnana.2015.00142"},
    ],
    "dic-hela": [
        {"text": "Ulman V. et al. An objective comparison of cell-tracking algorithms. Nature Methods 14, "
                 "1141-1152 (2017). (training data: Cell Tracking Challenge DIC-C2DH-HeLa)",
         "doi": "10.1038/nmeth.4473"},
    ],
}
DATASET_NAMES = {"isbi2012": "ISBI 2012 EM segmentation challenge (ssTEM - Drosophila VNC)",
                 "dic-hela": "Cell Tracking Challenge DIC-C2DH-HeLa"}
#: the paper's input tile (Fig. 1); test tensors use the largest valid size up to it
TEST_TILE = 572
DEFAULT_LICENSE = "CC-BY-4.0"


def default_sample() -> Path:
    """A real image shipped with the package: ISBI 2012 training slice 28 (512 x 512, 8-bit)."""
    return Path(__file__).resolve().parents[1] / "sample_data" / "isbi2012" / "train" / "images" / "28.png"


def _dataset(checkpoint_metadata: dict) -> str | None:
    experiment = str(checkpoint_metadata.get("experiment") or "")
    key = experiment.split("/")[0]
    return key if key in DATASET_CITATIONS else None


def preprocessing(normalize: dict) -> list[dict]:
    """The bioimage.io preprocessing steps equal to :func:`unet.data.normalize.normalize` with ``normalize``.

    Statistics are per image (sample) over channels, height and width, as
    :func:`unet.data.normalize.intensity_range` computes them.
    """
    axes = ["channel", "y", "x"]
    mode = normalize.get("mode", "percentile")
    if mode == "percentile":
        return [{"id": "scale_range", "kwargs": {"axes": axes, "min_percentile": float(normalize.get("low", 0.1)),
                                                 "max_percentile": float(normalize.get("high", 99.9)),
                                                 "eps": 1e-6}}]
    if mode == "minmax":
        return [{"id": "scale_range", "kwargs": {"axes": axes, "min_percentile": 0.0, "max_percentile": 100.0,
                                                 "eps": 1e-6}}]
    if mode == "meanstd":
        from unet.data.normalize import MEANSTD_WIDTH

        # mean -+ MEANSTD_WIDTH std -> 0 and 1:  (x - mean) / std / (2 * width) + 0.5
        return [{"id": "zero_mean_unit_variance", "kwargs": {"axes": axes, "eps": 1e-6}},
                {"id": "scale_linear", "kwargs": {"gain": 1.0 / (2 * MEANSTD_WIDTH), "offset": 0.5}}]
    if mode == "none":
        return []
    raise UserError(f"normalisation mode {mode!r} has no bioimage.io equivalent (use percentile, meanstd, minmax "
                    "or none)")


def input_tile(net, image: np.ndarray) -> np.ndarray:
    """A (C, S, S) float32 tile of raw grey values from the centre of ``image`` (C, H, W).

    ``S`` is the largest valid input size up to the paper's 572 px tile; an image
    smaller than that is extended by mirroring, as overlap-tile prediction does.
    """
    from unet.inference.tiling import mirror_indices
    from unet.models.geometry import nearest_valid_input_sizes

    if net.padding == "valid":
        lower, upper = nearest_valid_input_sizes(net, TEST_TILE)
        size = lower or upper
    else:
        size = min(TEST_TILE, max(image.shape[1:])) // 2**net.depth * 2**net.depth or 2**net.depth
    _, h, w = image.shape
    ys = mirror_indices(h, (h - size) // 2, size)
    xs = mirror_indices(w, (w - size) // 2, size)
    return np.ascontiguousarray(image[:, ys][:, :, xs]).astype(np.float32)


def _read_sample(path: Path, in_channels: int) -> np.ndarray:
    from unet.inference.files import open_image

    array, axes = open_image(path, in_channels=in_channels)
    array = np.asarray(array)
    if any(a in axes for a in "ZTQI"):
        array = np.take(array, 0, axis=next(i for i, a in enumerate(axes) if a in "ZTQI"))
        axes = "".join(a for a in axes if a not in "ZTQI")
    if "C" not in axes:
        array, axes = array[None], "C" + axes
    array = np.moveaxis(array, axes.index("C"), 0)
    if array.shape[0] != in_channels:
        raise UserError(f"{path}: the sample image has {array.shape[0]} channel(s), the model expects {in_channels}")
    return array


def _cover(tile: np.ndarray, probs: np.ndarray, halo: int) -> np.ndarray:
    """RGB uint8: the part of the input the output covers, beside the foreground probability."""
    from unet.inference.files import foreground

    grey = tile[0, halo : tile.shape[1] - halo, halo : tile.shape[2] - halo]
    grey = (grey - grey.min()) / max(float(np.ptp(grey)), 1e-6)
    fg = np.clip(foreground(probs), 0, 1)
    side = np.concatenate([grey, np.ones((grey.shape[0], 8)), fg], axis=1)
    return np.repeat((side * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def _documentation(metadata: dict, dataset: str | None, tile: int) -> str:
    kw = metadata["model_kwargs"]
    valid = metadata["valid_size"]
    norm = metadata["normalize"]
    lines = [
        "# U-Net (Ronneberger, Fischer & Brox 2015)",
        "",
        "Exported with `unet export` from the `unet` package "
        f"({metadata.get('source') or 'a model'}).",
        "",
        "## Network",
        f"- Architecture: U-Net, {kw.get('depth', 4)} poolings, {kw.get('base_channels', 64)} channels at the first "
        f"level, padding `{metadata['padding']}`, normalisation `{kw.get('norm')}`; "
        "`ProbabilityNet` in `unet_architecture.py` with the keyword arguments in `rdf.yaml`.",
        f"- Input: `{metadata['in_channels']}` channel(s), height and width of {valid['min']} + k * {valid['step']} "
        f"pixels (k = 0, 1, ...); each 2x2 max-pooling needs an even size.  Example: {tile} px.",
        f"- Output: the softmax probabilities of {metadata['num_classes']} classes (channel 1 = foreground), "
        f"{2 * metadata['halo']} px smaller than the input: the network uses {metadata['halo']} px of context on "
        "each side (halo) and has already cropped it.",
        "- Images of any size: overlap-tile strategy (paper Fig. 2) - output tiles that partition the image, each "
        f"predicted from an input tile with {metadata['halo']} px more on every side, mirrored beyond the image border.",
        f"- Preprocessing: per-image intensity normalisation `{json.dumps(norm)}` (see `rdf.yaml`).",
        "",
    ]
    if metadata.get("tile_dependence"):
        lines += ["## Caution: tile-dependent prediction",
                  f"This network's prediction depends on the tile size: {metadata['tile_dependence']}.  Use large tiles "
                  "and the same tile size everywhere.", ""]
    lines += ["## Training data",
              (f"{DATASET_NAMES[dataset]}; cite the references in `rdf.yaml` and respect the data set's terms."
               if dataset else "Not recorded in the checkpoint."), "",
              "## Use",
              "- `unet predict --checkpoint this.zip IMAGE -o OUT.tif [--backend onnxruntime]`",
              "- Fiji (deepImageJ), ilastik, napari (bioimage.io plugin): import the zip as a bioimage.io model.",
              ""]
    return "\n".join(lines)


def _channel_names(n: int, prefix: str) -> list[str]:
    if prefix == "class" and n == 2:
        return ["background", "foreground"]
    return [f"{prefix}{i}" for i in range(n)]


def build_rdf(metadata: dict, *, dataset: str | None, tile_shape, name: str, authors, license: str,
              pytorch_version: str) -> dict:
    """The ``rdf.yaml`` content (files named relative to the package root)."""
    valid = metadata["valid_size"]
    offset = -2 * metadata["halo"]
    space_in = [{"type": "space", "id": a, "size": {"min": valid["min"], "step": valid["step"]}} for a in ("y", "x")]
    space_out = [{"type": "space", "id": a, "size": {"tensor_id": "input", "axis_id": a, "offset": offset}}
                 for a in ("y", "x")]
    kwargs = dict(metadata["model_kwargs"])
    cite = [dict(PAPER)] + [dict(c) for c in DATASET_CITATIONS.get(dataset, [])]
    arch = {"source": "unet_architecture.py", "callable": "ProbabilityNet", "kwargs": kwargs}
    return {
        "format_version": "0.5.4",
        "type": "model",
        "name": name,
        "description": "U-Net (Ronneberger et al. 2015) for 2-D segmentation: softmax probabilities of "
                       f"{metadata['num_classes']} classes; valid (unpadded) convolutions, input {valid['min']} + "
                       f"k * {valid['step']} px, output {-offset} px smaller (halo {metadata['halo']} px per side)."
                       + (f" Trained on {DATASET_NAMES[dataset]}." if dataset else ""),
        "authors": [{"name": a} for a in authors],
        "cite": cite,
        "license": license,
        "documentation": "README.md",
        "covers": ["cover.png"],
        "tags": ["unet", "segmentation", "2d", "pytorch", "onnx", "torchscript", "probability-map"]
                + ([dataset] if dataset else []),
        "inputs": [{
            "id": "input",
            "description": "raw image; normalised per image by the preprocessing",
            "axes": [{"type": "batch"}, {"type": "channel", "channel_names": _channel_names(metadata["in_channels"], "channel")},
                     *space_in],
            "test_tensor": {"source": "test_input.npy"},
            "sample_tensor": {"source": "sample_input.png"} if metadata["in_channels"] == 1 else None,
            "data": {"type": "float32"},
            "preprocessing": preprocessing(metadata["normalize"]),
        }],
        "outputs": [{
            "id": "probabilities",
            "description": "softmax class probabilities (channel 1: foreground)",
            "axes": [{"type": "batch"},
                     {"type": "channel", "channel_names": _channel_names(metadata["num_classes"], "class")},
                     *space_out],
            "test_tensor": {"source": "test_output.npy"},
            "data": {"type": "float32", "range": [0.0, 1.0]},
        }],
        "weights": {
            "pytorch_state_dict": {"source": "weights.pt", "architecture": arch, "pytorch_version": pytorch_version},
            "torchscript": {"source": "weights_torchscript.pt", "pytorch_version": pytorch_version,
                            "parent": "pytorch_state_dict"},
            "onnx": {"source": "weights.onnx", "opset_version": metadata.get("onnx_opset"), "parent": "pytorch_state_dict"},
        },
        "config": {"unet": metadata},
    }


def _write_package_files(root: Path, net, metadata: dict, *, dataset, tile: np.ndarray, probs: np.ndarray) -> None:
    """The files the description names: test tensors, sample, cover, documentation, source, three weight formats."""
    import torch

    from unet.export import onnx_bytes, torchscript_bytes
    from unet.export.network import architecture_source
    from unet.io import write_image

    np.save(root / "test_input.npy", tile[None])
    np.save(root / "test_output.npy", probs)
    if metadata["in_channels"] == 1:
        write_image(root / "sample_input.png", np.clip(tile[0], 0, 255).astype(np.uint8))
    write_image(root / "cover.png", _cover(tile, probs[0], metadata["halo"]))
    (root / "README.md").write_text(_documentation(metadata, dataset, tile.shape[-1]))
    (root / "unet_architecture.py").write_text(architecture_source())
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
    (root / "weights.pt").write_bytes(buf.getvalue())
    (root / "weights_torchscript.pt").write_bytes(torchscript_bytes(net, metadata))
    (root / "weights.onnx").write_bytes(onnx_bytes(net, metadata))


def write_package(net, out, *, metadata: dict, checkpoint_metadata: dict, overwrite: bool = False, sample=None,
                  authors=None, license: str | None = None, name: str | None = None) -> Path:
    """Write the bioimage.io package of ``net`` (a :class:`ProbabilityNet`) to the zip ``out``, atomically.

    The description is validated with ``bioimageio.spec`` before the zip is
    moved into place; an invalid package raises :class:`UserError` and leaves
    nothing at ``out``.
    """
    import getpass

    import torch
    from bioimageio.spec import ValidationContext, build_description, save_bioimageio_package

    from unet.data.normalize import intensity_range, normalize
    from unet.export import ONNX_OPSET
    from unet.io import atomic_path

    out = Path(out)
    metadata = dict(metadata, onnx_opset=ONNX_OPSET)
    sample = Path(sample) if sample is not None else default_sample()
    image = _read_sample(sample, metadata["in_channels"])
    tile = input_tile(net, image)
    settings = {k: metadata["normalize"][k] for k in ("mode", "low", "high") if k in metadata["normalize"]}
    normed = normalize(tile, value_range=intensity_range(tile, **settings))
    with torch.inference_mode():
        probs = net(torch.from_numpy(normed)[None]).numpy()
    dataset = _dataset(checkpoint_metadata)
    name = name or "U-Net " + (f"{DATASET_NAMES[dataset]} " if dataset else "") + \
        f"{metadata['model_kwargs'].get('base_channels', 64)} channels depth {metadata['depth']}"
    authors = list(authors or [getpass.getuser()])
    metadata["test_tensors"] = {"sample": sample.name, "tile": int(tile.shape[-1])}
    rdf = build_rdf(metadata, dataset=dataset, tile_shape=tile.shape, name=name, authors=authors,
                    license=license or DEFAULT_LICENSE, pytorch_version=torch.__version__.split("+")[0])
    if rdf["inputs"][0]["sample_tensor"] is None:
        del rdf["inputs"][0]["sample_tensor"]
    with tempfile.TemporaryDirectory(prefix=".unet-export-") as tmp:
        root = Path(tmp)
        _write_package_files(root, net, metadata, dataset=dataset, tile=tile, probs=probs)
        with ValidationContext(root=root, perform_io_checks=True):
            descr = build_description(rdf)
        summary = descr.validation_summary
        if summary.status == "failed":
            errors = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in summary.errors)
            raise UserError(f"{out}: the bioimage.io description is invalid ({errors})")
        with atomic_path(out, overwrite=overwrite) as part:
            part.unlink()
            save_bioimageio_package(descr, output_path=part)
    return out

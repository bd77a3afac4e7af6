"""Models that leave the project: TorchScript, ONNX and bioimage.io model packages.

:func:`export` turns a checkpoint into

* ``"torchscript"`` - a scripted module (``torch.jit.load``) returning softmax
  class probabilities for any valid input size;
* ``"onnx"`` - the same network as an ONNX graph (opset :data:`ONNX_OPSET`)
  with symbolic batch, height and width, checked with ``onnx.checker``;
* ``"bioimageio"`` - a bioimage.io model package (spec format 0.5, a zip; see
  :mod:`unet.export.bioimageio`) holding TorchScript, ONNX and PyTorch
  state-dict weights, the valid sizes, the normalisation, test tensors from
  a real image, citations, documentation and a cover.

Each file carries the settings prediction needs (:func:`export_metadata`:
architecture, normalisation, valid sizes, halo), so ``unet predict`` accepts
it as the model (:mod:`unet.export.runtime`).  ONNX and bioimage.io need the
optional packages of ``pip install 'unet[export]'``.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

from unet.errors import UserError

FORMATS = ("torchscript", "onnx", "bioimageio")
#: ONNX operator set of the exported graphs (17: the oldest with every operator used here
#: that current runtimes - ONNX Runtime, deepImageJ's, OpenCV's - all read)
ONNX_OPSET = 17
#: key under which exported files store :func:`export_metadata` (TorchScript extra file,
#: ONNX metadata_props, bioimage.io ``config``)
METADATA_KEY = "unet"
EXTRA_HINT = "pip install 'unet[export]'"


def require(*modules: str, what: str) -> None:
    """Raise :class:`UserError` naming the missing optional packages and how to install them."""
    import importlib

    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(f"{what} needs the optional package(s) {', '.join(missing)}: install them with {EXTRA_HINT}")


def export_metadata(model, normalize: dict, *, source: str | None = None) -> dict:
    """Plain settings stored in every exported file: what prediction needs besides the graph.

    ``valid_size`` gives the smallest valid input size and the step between
    valid sizes (2**depth, paper Sec. 3); ``halo`` is the context lost per side
    (92 px for the paper's network, Fig. 1); the output is ``input - 2 * halo``.
    """
    from unet.models.geometry import halo, nearest_valid_input_sizes
    from unet.models.seamless import tile_dependence

    kwargs = dict(getattr(model, "model_kwargs", {}))
    valid = getattr(model, "padding", "valid") == "valid"
    return {
        "format": "unet-export",
        "version": 1,
        "model": getattr(model, "model_name", "unet"),
        "model_kwargs": kwargs,
        "normalize": dict(normalize),
        "in_channels": int(model.in_channels),
        "num_classes": int(model.num_classes),
        "depth": int(model.depth),
        "padding": model.padding,
        "halo": int(halo(model)),
        "valid_size": {"min": int(nearest_valid_input_sizes(model, 1)[1]) if valid else 1,
                       "step": 2**model.depth if valid else 1},
        "output": "softmax probabilities (N, num_classes, H - 2*halo, W - 2*halo)",
        "tile_dependence": tile_dependence(model),
        "source": source,
    }


def _load(checkpoint_or_model, normalize):
    from unet.data.normalize import DEFAULT_NORMALIZE

    if isinstance(checkpoint_or_model, (str, os.PathLike)):
        from unet.checkpoint import load_checkpoint

        model, meta = load_checkpoint(checkpoint_or_model, with_metadata=True)
        return model, dict(normalize or meta.get("normalize") or DEFAULT_NORMALIZE), meta, Path(checkpoint_or_model)
    model = getattr(checkpoint_or_model, "module", checkpoint_or_model)
    return model, dict(normalize or DEFAULT_NORMALIZE), {}, None


def scripted(net):
    """``torch.jit.script`` of a :class:`unet.export.network.ProbabilityNet` (its TorchScript compiler warnings hidden)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.script(net)


def torchscript_bytes(net, metadata: dict) -> bytes:
    """The scripted network as the bytes of a ``torch.jit.save`` file, with ``metadata`` as ``unet.json``."""
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        # torch 2.13 deprecates TorchScript for torch.export, but the consumers of these files
        # (deepImageJ, bioimage.io, C++ libtorch) read TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(scripted(net), buf, _extra_files={f"{METADATA_KEY}.json": json.dumps(metadata)})
    return buf.getvalue()


def onnx_bytes(net, metadata: dict, *, opset: int = ONNX_OPSET) -> bytes:
    """The network as a checked ONNX model (dynamic batch, height, width), with ``metadata`` in ``metadata_props``."""
    require("onnx", what="ONNX export")
    import onnx
    import torch

    from unet.models.geometry import nearest_valid_input_sizes

    size = nearest_valid_input_sizes(net, 1)[1] if net.padding == "valid" else 2**net.depth
    example = torch.zeros(1, net.in_channels, size, size)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript-based exporter (dynamo=False) takes dynamic_axes directly and needs no onnxscript;
        # torch deprecates it in favour of torch.export, which cannot express "16 m + 60" input sizes
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (example,), buf, dynamo=False, opset_version=opset, input_names=["input"],
                          output_names=["output"], do_constant_folding=True,
                          dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                        "output": {0: "batch", 2: "out_height", 3: "out_width"}})
    proto = onnx.load_from_string(buf.getvalue())
    proto.doc_string = "U-Net (Ronneberger, Fischer & Brox 2015): softmax class probabilities; input sizes " \
                       f"{metadata['valid_size']['min']} + k * {metadata['valid_size']['step']}, output smaller by " \
                       f"2 * {metadata['halo']} px"
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()


def export(checkpoint_or_model, out, *, format: str, overwrite: bool = False, allow_tile_dependent: bool = False,
           normalize: dict | None = None, sample=None, authors=None, license: str | None = None,
           name: str | None = None) -> Path:
    """Export a checkpoint (or a U-Net) to TorchScript, ONNX or a bioimage.io model package.

    Parameters
    ----------
    checkpoint_or_model : path or torch.nn.Module
        A checkpoint from ``unet train`` (its normalisation settings are used)
        or a U-Net from :func:`unet.create_model`.
    out : path
        Target file (``.pt``, ``.onnx``, ``.zip``); written atomically.
    format : {"torchscript", "onnx", "bioimageio"}
    overwrite : bool
        Replace an existing ``out`` (otherwise :class:`UserError`).
    allow_tile_dependent : bool
        Export a network whose overlap-tile prediction depends on the tile size
        (instance/group/layer normalisation, same padding; see
        :func:`unet.models.seamless.tile_dependence`).  Refused by default.
    normalize : dict, optional
        Normalisation settings for a model (default: the checkpoint's).
    sample : path, optional
        bioimage.io only: the real image the test tensors and cover come from
        (default: an ISBI 2012 slice shipped in ``unet/sample_data``).
    authors : list of str, optional
        bioimage.io only: names of the model's authors.
    license : str, optional
        bioimage.io only: SPDX licence of the weights (default CC-BY-4.0).
    name : str, optional
        bioimage.io only: the model's name.

    Returns
    -------
    Path
        ``out``.
    """
    from unet.export.network import probability_net
    from unet.io import atomic_path
    from unet.models.seamless import tile_dependence

    if format not in FORMATS:
        raise UserError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise UserError(f"{out}: already exists (pass --overwrite to replace it)")
    if format == "onnx":
        require("onnx", what="ONNX export")
    elif format == "bioimageio":
        require("onnx", "bioimageio.spec", what="bioimage.io export")
    model, settings, meta, ckpt = _load(checkpoint_or_model, normalize)
    reason = tile_dependence(model)
    if reason and not allow_tile_dependent:
        where = f"{ckpt}: " if ckpt else ""
        raise UserError(f"{where}refusing to export a model whose prediction depends on the tile size: {reason} "
                        "(pass --allow-tile-dependent to export it anyway)")
    net = probability_net(model)
    metadata = export_metadata(model, settings, source=ckpt.name if ckpt else None)
    if format == "bioimageio":
        from unet.export.bioimageio import write_package

        return write_package(net, out, metadata=metadata, checkpoint_metadata=meta, overwrite=overwrite, sample=sample,
                             authors=authors, license=license, name=name)
    data = torchscript_bytes(net, metadata) if format == "torchscript" else onnx_bytes(net, metadata)
    with atomic_path(out, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return out

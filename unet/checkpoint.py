"""Safe model checkpoints.

A checkpoint is a ``torch.save`` file holding only tensors and plain Python
values (dicts, lists, strings, numbers)::

    {"format": "unet-checkpoint", "version": 1,
     "model": "unet", "model_kwargs": {...},
     "state_dict": {...}, "metadata": {...}, **extra}

It is written atomically (temporary file, then rename) and read with
``torch.load(weights_only=True)``, whose restricted unpickler refuses any
other object: a file carrying a pickled class or function is rejected with a
clear error, and nothing in it runs.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import torch

from unet.errors import InputFileError
from unet.io import atomic_path
from unet.models import create_model, list_models, unwrap

FORMAT = "unet-checkpoint"
VERSION = 1


def save_checkpoint(model, path, *, overwrite: bool = True, extra: dict | None = None, **metadata) -> Path:
    """Save ``model`` (built by :func:`unet.create_model`) and ``metadata`` to ``path``.

    Parameters
    ----------
    model : torch.nn.Module
        A model from :func:`unet.create_model` (it carries ``model_name`` and
        ``model_kwargs``); a DDP/compiled wrapper is unwrapped.
    path : str or Path
        Target file; written atomically.
    overwrite : bool
        Replace an existing file (default True: checkpoints are refreshed
        during training).
    extra : dict, optional
        Further top-level entries (e.g. optimiser state for resuming); they must
        be tensors or plain Python values.
    **metadata
        Plain values stored under ``"metadata"`` (step, metrics, config, ...).
    """
    model = unwrap(model)
    if not hasattr(model, "model_name"):
        raise ValueError("model has no 'model_name': build it with unet.create_model(...)")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.model_name,
        "model_kwargs": dict(model.model_kwargs),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": dict(metadata),
    }
    if extra:
        payload.update(extra)
    buffer = io.BytesIO()  # serialised first, so that a full disk is an OSError of a plain write, not a torch error
    torch.save(payload, buffer)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return Path(path)


def read_checkpoint(path) -> dict:
    """Load a checkpoint dictionary without executing anything from the file."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "checkpoint not found")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not a checkpoint
        raise InputFileError(path, "not a checkpoint: not a file written by torch.save (corrupt, truncated or "
                                   "another format)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputFileError(
            path,
            "refused to load: the file contains pickled Python objects that are not plain weights "
            f"(only tensors and plain values are accepted; nothing was executed). Detail: {str(err).splitlines()[0]}",
        ) from err
    except Exception as err:
        raise InputFileError(path, f"not a readable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputFileError(path, f"not a unet checkpoint (missing format={FORMAT!r})")
    if payload.get("version", 0) > VERSION:
        raise InputFileError(path, f"checkpoint version {payload['version']} is newer than this unet supports ({VERSION})")
    return payload


def check_finite_weights(state_dict: dict, path) -> None:
    """:class:`InputFileError` if any weight is NaN or infinite (every prediction would be NaN)."""
    bad = [k for k, v in state_dict.items()
           if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise InputFileError(path, f"{len(bad)} of {len(state_dict)} weight tensors hold NaN or infinite values "
                                   f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): the model is unusable "
                                   "(a diverged training?)")


def build_model(payload: dict, path) -> torch.nn.Module:
    """The (untrained) model a checkpoint describes; an unknown name or argument names the file."""
    name, kwargs = payload.get("model"), payload.get("model_kwargs", {})
    if name not in list_models():
        raise InputFileError(path, f"checkpoint names an unknown model {name!r} (this unet has "
                                   f"{', '.join(list_models())}); it was written by another program or version")
    if not isinstance(kwargs, dict):
        raise InputFileError(path, f"model arguments must be a mapping, got {type(kwargs).__name__}")
    try:
        return create_model(name, **kwargs)
    except (TypeError, ValueError) as err:
        raise InputFileError(path, f"model arguments {kwargs} do not fit model {name!r} ({err})") from err


def load_checkpoint(path, *, map_location="cpu", with_metadata: bool = False):
    """Rebuild the model saved in ``path`` and load its weights.

    Returns
    -------
    model : torch.nn.Module
        In eval mode, on ``map_location``.
    metadata : dict
        Only if ``with_metadata=True``.
    """
    payload = read_checkpoint(path)
    check_finite_weights(payload["state_dict"], path)
    model = build_model(payload, path)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise InputFileError(path, f"weights do not fit model {payload['model']!r}: {err}") from err
    model.to(map_location).eval()
    if with_metadata:
        return model, payload.get("metadata", {})
    return model

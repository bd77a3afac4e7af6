"""Model registry: one factory, :func:`create_model`, over registered networks.

As in timm, each architecture registers a builder under a name; the factory
records the name and keyword arguments on the model so that a checkpoint can
rebuild it (:mod:`unet.checkpoint`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # annotations only: ``import unet.models`` stays free of torch (start-up time)
    import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    """Decorator registering ``fn(**kwargs) -> nn.Module`` under ``name``."""

    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    _import_builtin()
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model.

    Parameters
    ----------
    name : str
        ``"unet"`` (the paper's network; see :class:`unet.models.unet_paper.UNet`),
        ``"fcn32s"``, ``"fcn16s"`` or ``"fcn8s"`` (Long et al. 2015 baseline).
    **kwargs
        Keyword-only options of that model.

    Returns
    -------
    torch.nn.Module
        The model, with ``model_name`` and ``model_kwargs`` attributes.

    Examples
    --------
    >>> import unet
    >>> net = unet.create_model("unet")            # the paper's network
    >>> small = unet.create_model("unet", base_channels=16, depth=3)
    """
    _import_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    model = _REGISTRY[name](**kwargs)
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    return model


def unwrap(model):
    """The network inside a DistributedDataParallel / torch.compile wrapper.

    The wrappers hide the attributes this package reads: the geometry
    (``depth``, ``padding``) and the registry's ``model_name`` / ``model_kwargs``.
    """
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def _import_builtin():
    # Registration happens on import of the architecture modules; imported here, not at the top, because
    # they import register_model from this module (an import cycle) and torch, which `import unet.models` does not need.
    from unet.models import fcn, unet_paper  # noqa: F401


def encoder_parameters(model: nn.Module):
    """Parameters of the model's encoder (contracting path / VGG backbone)."""
    return model.encoder_parameters()


def freeze_encoder(model: nn.Module, freeze: bool = True) -> nn.Module:
    """Freeze (feature extraction) or unfreeze (fine-tuning) the encoder in place.

    Frozen parameters get ``requires_grad=False``; normalisation layers in the
    encoder keep their running statistics (see ``model.train`` override).
    """
    for p in encoder_parameters(model):
        p.requires_grad_(not freeze)
    model.encoder_frozen = freeze
    return model

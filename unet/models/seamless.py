"""Whether a network's overlap-tile prediction depends on the tile (paper Sec. 2, Fig. 2).

The overlap-tile strategy "allows the seamless segmentation of arbitrarily
large images" (Ronneberger et al. 2015, Sec. 2) only if, in eval mode, each
output pixel is a function of its receptive field alone.  Two things break it:

* per-sample statistics inside the network: instance, group and layer
  normalisation (and batch normalisation without running statistics) normalise
  every tile by its own mean and variance, so a tile of empty background is
  scaled up to noise;
* zero ("same") padding: every tile border is an artificial image border.
  Overlapping tiles are blended (:mod:`unet.inference.tiling`), which is only
  approximate.

Batch normalisation in eval mode (running statistics) and no normalisation
(the paper) are seamless.
"""

from __future__ import annotations

import torch.nn as nn

#: layers that normalise each sample (tile) by its own statistics
PER_SAMPLE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm)
#: layers that pool over the whole tile
GLOBAL_POOLS = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
                nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)

#: what to do when a model is tile-dependent (appended to the warnings of the prediction functions)
ADVICE = ("predict with one tile covering the image (tile_size / --tile-size >= the image, with a larger "
          "memory limit) for a result independent of the tiling, or train a seamless model: valid padding "
          "with norm 'batch' or 'none' (README, 'Seamless models')")


def _unwrap(model):
    model = getattr(model, "module", model)  # DistributedDataParallel
    return getattr(model, "_orig_mod", model)  # torch.compile


def tile_dependence(model) -> str | None:
    """Why the eval-mode output of ``model`` depends on the tile it is given, or None when seamless.

    Parameters
    ----------
    model : torch.nn.Module
        A U-Net, FCN or any network (wrapped in DDP / ``torch.compile`` or not).

    Returns
    -------
    str or None
        One sentence naming the cause(s): per-sample normalisation layers
        (instance / group / layer normalisation, batch normalisation without
        running statistics), global pooling, or same padding (tiles are
        blended, approximately); None when each output pixel depends on its
        receptive field only, as for the paper's valid-convolution U-Net with no
        normalisation or with batch normalisation in eval mode.

    Examples
    --------
    >>> import unet
    >>> tile_dependence(unet.create_model("unet", base_channels=8, depth=2)) is None
    True
    >>> tile_dependence(unet.create_model("unet", base_channels=8, depth=2, norm="instance"))
    'per-sample normalisation (InstanceNorm2d, 10 layers): each tile is normalised by its own statistics'
    """
    model = _unwrap(model)
    if not isinstance(model, nn.Module):  # an exported model (unet.export.runtime) says it in its metadata
        meta = getattr(model, "metadata", None) or {}
        if "tile_dependence" in meta:
            return meta["tile_dependence"] or None
    found: dict[str, int] = {}
    pools: dict[str, int] = {}
    for m in model.modules() if isinstance(model, nn.Module) else ():
        name = type(m).__name__
        if isinstance(m, PER_SAMPLE_NORMS) or (isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                and not m.track_running_stats):
            found[name] = found.get(name, 0) + 1
        elif isinstance(m, GLOBAL_POOLS):
            pools[name] = pools.get(name, 0) + 1
    reasons = []
    if found:
        layers = ", ".join(found)
        n = sum(found.values())
        reasons.append(f"per-sample normalisation ({layers}, {n} layer{'s' if n > 1 else ''}): "
                       "each tile is normalised by its own statistics")
    if pools:
        reasons.append(f"global pooling ({', '.join(pools)}) over each tile")
    if getattr(model, "padding", None) != "valid":
        reasons.append("same (zero) padding: every tile border is an image border, overlapping tiles are "
                       "blended (approximate)")
    return "; ".join(reasons) or None


def is_seamless(model) -> bool:
    """True if overlap-tile prediction with ``model`` does not depend on the tile size."""
    return tile_dependence(model) is None

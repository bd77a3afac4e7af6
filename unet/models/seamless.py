"""Is a network's overlap-tile prediction seamless?

The paper's valid U-Net sees only real (or mirrored) image context: each output
pixel depends on a fixed window of input pixels, so overlap-tile prediction
(Ronneberger et al. 2015, Fig. 2) gives the same probabilities for any tile
size.  Two things break this:

* zero-padded ("same") convolutions see zeros at every tile border, so a pixel
  near a border of one tile is predicted differently in the next;
* normalisation over the spatial extent of the input (instance, group or layer
  normalisation) computes its statistics over the whole tile, so every output
  pixel depends on every input pixel of the tile.

Batch normalisation in eval mode uses fixed running statistics and stays
seamless.
"""

from __future__ import annotations

import torch.nn as nn

#: normalisation layers whose statistics are computed over the tile itself
_TILE_STATISTICS = (
    (nn.InstanceNorm2d, "instance normalisation"),
    (nn.GroupNorm, "group normalisation"),
    (nn.LayerNorm, "layer normalisation"),
)


def tile_dependence(model) -> str | None:
    """Why the network's prediction depends on the tile size, or None if it is seamless.

    Parameters
    ----------
    model : torch.nn.Module
        Any network of this package (a DDP / compiled wrapper is unwrapped).

    Returns
    -------
    str or None
        A short reason (e.g. ``"it uses instance normalisation, whose statistics
        are computed over each tile"``), or None when overlap-tile prediction
        gives the same result for any tile size (the paper's valid U-Net).
    """
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    reasons = []
    if getattr(model, "padding", "valid") != "valid":
        reasons.append("its convolutions are zero-padded ('same'), so tile borders see zeros instead of image")
    found = []
    if isinstance(model, nn.Module):
        for module in model.modules():
            if isinstance(module, nn.InstanceNorm2d) and module.track_running_stats:
                continue  # fixed running statistics in eval mode, like batch normalisation
            for cls, name in _TILE_STATISTICS:
                if isinstance(module, cls) and name not in found:
                    found.append(name)
    if found:
        reasons.append(f"it uses {' and '.join(found)}, whose statistics are computed over each tile")
    return "; ".join(reasons) or None

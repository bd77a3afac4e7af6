"""Precise batch normalisation: re-estimate the running statistics after training.

Batch normalisation trains on each batch's own statistics but predicts with
running averages (exponential, momentum 0.1) of statistics from weights that
kept changing.  With the paper's batches of one large tile (Sec. 3) the two
can disagree badly.  Re-estimating the statistics with the final weights, as
the equally weighted mean over many training tiles (Wu & Johnson 2021,
"Rethinking 'Batch' in BatchNorm", "precise BN"), makes eval mode match what
the network saw - and, unlike instance normalisation, keeps prediction
seamless: every output pixel depends on its receptive field only
(:func:`unet.models.seamless.tile_dependence`).
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn


def batchnorm_layers(model: nn.Module) -> list:
    """Batch-normalisation layers of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace the running statistics of every batch-norm layer by their mean over ``batches``.

    Each batch-norm layer normalises with its batch's statistics (training
    mode) while everything else runs in eval mode (dropout off, as in
    prediction); the running mean and variance become the equally weighted
    averages of the batch statistics (``momentum=None``).  Weights are not
    changed.  The model's mode and the layers' momentum are restored.

    Parameters
    ----------
    model : torch.nn.Module
    batches : iterable of tensors (N, C, H, W)
        Training tiles, already on the model's device.

    Returns
    -------
    int
        Number of tiles seen (0 if the model has no batch normalisation: nothing done).
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches
        m.train()
    n = 0
    try:
        for x in batches:
            model(x)
            n += int(x.shape[0])
    finally:
        for m, mom in zip(layers, momenta):
            m.momentum = mom
        model.train(was_training)
    return n

"""Training losses: the paper's weighted cross-entropy (eq. 1), Dice, and their sum.

Every loss takes raw network scores ``logits`` (N, K, H, W), integer targets
(N, H, W) in ``0..K-1`` or :data:`IGNORE_INDEX` for unannotated pixels, and an
optional per-pixel weight map (N, H, W) (paper eq. 2, :func:`unet.weight_map`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: target value of pixels that carry no annotation; they add nothing to any loss
IGNORE_INDEX = 255


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                           *, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pixel-wise softmax cross-entropy weighted per pixel (paper eq. 1).

    The paper's energy is ``E = sum_x w(x) log p_l(x)(x)`` (to be maximised);
    we minimise its negative divided by the number of annotated pixels, so the
    learning rate does not depend on the tile size.  Pixels whose target is
    ``ignore_index`` are excluded from both the sum and the count.
    """
    valid = target != ignore_index
    nll = F.cross_entropy(logits.float(), torch.where(valid, target, 0).long(), reduction="none")
    if weight is not None:
        nll = nll * weight.float()
    n = valid.sum().clamp_min(1)
    return (nll * valid).sum() / n


def dice_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
              *, ignore_index: int = IGNORE_INDEX, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice loss, 1 - mean over foreground classes of 2|P∩T| / (|P| + |T|) (Milletari et al. 2016).

    Computed over the whole batch; ignored pixels are left out; ``weight`` is
    not used (Dice has its own class balance).
    """
    valid = (target != ignore_index).unsqueeze(1).float()
    prob = torch.softmax(logits.float(), dim=1) * valid
    onehot = F.one_hot(torch.where(target == ignore_index, 0, target).long(), logits.shape[1])
    onehot = onehot.permute(0, 3, 1, 2).float() * valid
    dims = (0, 2, 3)
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice[1:].mean()  # class 0 is background


def ce_dice_loss(logits, target, weight=None, *, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Weighted cross-entropy plus Dice."""
    return weighted_cross_entropy(logits, target, weight, ignore_index=ignore_index) + dice_loss(
        logits, target, ignore_index=ignore_index
    )


def skeleton_recall_loss(logits: torch.Tensor, skeleton: torch.Tensor, *, channel: int = 0) -> torch.Tensor:
    """1 - soft recall of the background class on its tubed skeleton (Kirchhoff et al. 2024, ECCV).

    ``skeleton`` (N, H, W) marks the centre lines of the target's membranes
    (:func:`unet.data.weights.membrane_skeleton`); the loss is ``1 - sum(p_c *
    S) / sum(S)`` over the batch, with ``p_c`` the softmax probability of class
    ``channel`` (0: background / membrane).  It is 0 for a batch without
    skeleton pixels.  Added to the pixel-wise loss with weight
    ``loss.skeleton_recall`` (beyond the paper).
    """
    skel = skeleton.float()
    total = skel.sum()
    if total == 0:
        return logits.float().sum() * 0.0  # keeps the graph (and the device) of a normal loss
    prob = torch.softmax(logits.float(), dim=1)[:, channel]
    return 1.0 - (prob * skel).sum() / total


LOSSES = {
    "weighted_ce": weighted_cross_entropy,
    "ce": lambda logits, target, weight=None, **kw: weighted_cross_entropy(logits, target, None, **kw),
    "dice": dice_loss,
    "ce_dice": ce_dice_loss,
}


def get_loss(name: str):
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}") from None

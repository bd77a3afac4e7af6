import math

import pytest
import torch

from unet.training.loss import IGNORE_INDEX, dice_loss, get_loss, weighted_cross_entropy


def test_weighted_ce_equals_hand_computation():
    # one image, two classes, 1x3 pixels
    logits = torch.tensor([[[[2.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]]]])  # (1, 2, 1, 3)
    target = torch.tensor([[[0, 1, IGNORE_INDEX]]])
    weight = torch.tensor([[[1.0, 10.0, 5.0]]])
    p0 = math.exp(2) / (math.exp(2) + 1)  # pixel 0, class 0
    p1 = math.exp(1) / (math.exp(0) + math.exp(1))  # pixel 1, class 1
    expected = -(1.0 * math.log(p0) + 10.0 * math.log(p1)) / 2  # ignored pixel: not summed, not counted
    got = weighted_cross_entropy(logits, target, weight)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # unit weights reduce to the plain mean cross-entropy over annotated pixels
    plain = get_loss("ce")(logits, target, weight)
    assert plain.item() == pytest.approx(-(math.log(p0) + math.log(p1)) / 2, rel=1e-6)


def test_ignored_pixels_get_no_gradient():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    target = torch.randint(0, 2, (1, 4, 4))
    target[0, :2] = IGNORE_INDEX
    weighted_cross_entropy(logits, target, torch.rand(1, 4, 4)).backward()
    assert torch.all(logits.grad[0, :, :2] == 0)
    assert torch.any(logits.grad[0, :, 2:] != 0)


def test_dice_perfect_and_worst():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 2:6, 2:6] = 1
    perfect = torch.stack([(1 - target) * 50.0, target * 50.0], 1).float()
    assert dice_loss(perfect, target, eps=1e-6).item() == pytest.approx(0.0, abs=1e-5)
    worst = torch.stack([target * 50.0, (1 - target) * 50.0], 1).float()
    assert dice_loss(worst, target, eps=1e-6).item() == pytest.approx(1.0, abs=1e-5)


def test_unknown_loss():
    with pytest.raises(ValueError, match="unknown loss"):
        get_loss("focal")


def test_skeleton_recall_is_the_missed_fraction_of_the_centre_lines():
    from unet.training.loss import skeleton_recall_loss

    skel = torch.zeros(1, 8, 8, dtype=torch.bool)
    skel[0, :, 3] = True  # a vertical centre line of 8 px
    membrane = torch.zeros(1, 2, 8, 8)
    membrane[:, 0] = 20.0  # every pixel confidently membrane (class 0)
    assert skeleton_recall_loss(membrane, skel).item() < 1e-6
    gap = membrane.clone()
    gap[0, :, 2:4, 3] = torch.tensor([0.0, 20.0])[:, None]  # 2 of the 8 line pixels called cell
    assert skeleton_recall_loss(gap, skel).item() == pytest.approx(2 / 8, abs=1e-6)
    logits = torch.zeros(1, 2, 8, 8, requires_grad=True)
    skeleton_recall_loss(logits, skel).backward()
    assert logits.grad[0, 0, :, 3].lt(0).all()  # raising membrane scores on the line lowers the loss
    assert logits.grad[0, :, :, [0, 1, 2, 4, 5, 6, 7]].abs().max() == 0  # off the line: no gradient
    empty = torch.zeros(1, 2, 8, 8, requires_grad=True)
    out = skeleton_recall_loss(empty, torch.zeros(1, 8, 8, dtype=torch.bool))
    out.backward()
    assert out.item() == 0 and empty.grad.abs().max() == 0

import pytest
import torch

import unet
from unet.models.geometry import input_size_for_output


def test_paper_network_parameter_count_and_tile_geometry():
    net = unet.create_model("unet")
    assert sum(p.numel() for p in net.parameters()) == 31_030_658
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert len(convs) == 23  # paper Sec. 2
    assert unet.output_size(net, 572) == 388
    assert unet.halo(net) == 92
    assert net.down[0][0].padding == (0, 0)


@pytest.mark.slow
def test_paper_network_maps_572_to_388():
    net = unet.create_model("unet").eval()
    with torch.inference_mode():
        out = net(torch.zeros(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)


def test_he_initialisation_std():
    net = unet.create_model("unet", base_channels=32)
    conv = net.up_conv[0][0]  # 3x3 conv on 512 concatenated channels
    n = conv.in_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / n) ** 0.5, rel=0.05)
    up = net.up[0].up  # 2x2 stride-2 up-conv: one tap per input channel
    assert up.weight.std().item() == pytest.approx((2 / up.in_channels) ** 0.5, rel=0.05)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_geometry_helpers_agree_with_forward_pass(depth):
    net = unet.create_model("unet", base_channels=2, depth=depth, dropout=0.0).eval()
    lo, hi = unet.nearest_valid_input_sizes(net, 10)
    checked = 0
    for size in range(hi, hi + 2**depth * 3):
        valid = unet.is_valid_input_size(net, size)
        if valid:
            with torch.inference_mode():
                out = net(torch.zeros(1, 1, size, size + 2**depth))
            assert out.shape[-2:] == unet.output_size(net, (size, size + 2**depth))
            assert size - out.shape[-1] + 2**depth == 2 * unet.halo(net)
            checked += 1
        else:
            with pytest.raises(ValueError, match="nearest valid"):
                net(torch.zeros(1, 1, size, size))
            lo2, hi2 = unet.nearest_valid_input_sizes(net, size)
            assert lo2 < size < hi2
            assert unet.is_valid_input_size(net, lo2) and unet.is_valid_input_size(net, hi2)
            assert not any(unet.is_valid_input_size(net, s) for s in range(lo2 + 1, hi2))
    assert checked == 3


def test_invalid_size_error_names_nearest_valid_sizes():
    net = unet.create_model("unet", base_channels=2)
    with pytest.raises(ValueError, match=r"512 \(nearest valid: 508 or 524\)"):
        unet.check_input_size(net, 512)
    with pytest.raises(ValueError, match="at least"):
        unet.check_input_size(net, 20)


def test_input_size_for_output():
    net = unet.create_model("unet", base_channels=2)
    for out in (1, 100, 388, 389, 500):
        s = input_size_for_output(net, out)
        assert unet.output_size(net, s) >= out
        lo, _ = unet.nearest_valid_input_sizes(net, s - 1)
        assert lo is None or unet.output_size(net, lo) < out


@pytest.mark.parametrize("size", [(37, 50), (16, 16), (1, 9), (101, 64)])
@pytest.mark.parametrize("norm", [None, "batch", "group", "instance"])
def test_same_padding_any_size(size, norm):
    net = unet.create_model("unet", base_channels=4, depth=3, padding="same", norm=norm).eval()
    with torch.inference_mode():
        out = net(torch.rand(1, 1, *size))
    assert out.shape == (1, 2, *size)
    assert unet.output_size(net, size) == size


def test_bilinear_upsampling_and_channels():
    net = unet.create_model("unet", in_channels=3, num_classes=4, base_channels=4, depth=2,
                            upsampling="bilinear").eval()
    size = unet.nearest_valid_input_sizes(net, 60)[1]
    with torch.inference_mode():
        out = net(torch.rand(2, 3, size, size))
    assert out.shape == (2, 4, unet.output_size(net, size), unet.output_size(net, size))


def test_bad_options_raise():
    with pytest.raises(ValueError, match="padding"):
        unet.create_model("unet", padding="full")
    with pytest.raises(ValueError, match="norm"):
        unet.create_model("unet", norm="layer", base_channels=2)
    with pytest.raises(ValueError, match="unknown model"):
        unet.create_model("resnet")
    with pytest.raises(TypeError):
        unet.create_model("unet", 64)  # options are keyword-only


def test_dropout_only_in_training_mode():
    # seeded and wide enough that the bottleneck has live features (2 channels could all be 0 after
    # the ReLU for some initialisations, and then dropout changes nothing: a flaky test)
    torch.manual_seed(0)
    net = unet.create_model("unet", base_channels=8, depth=2, dropout=0.5)
    x = torch.rand(1, 1, *(unet.nearest_valid_input_sizes(net, 50)[1],) * 2)
    net.eval()
    with torch.inference_mode():
        assert torch.equal(net(x), net(x))
    net.train()
    torch.manual_seed(0)
    a = net(x)
    b = net(x)
    assert not torch.equal(a, b)

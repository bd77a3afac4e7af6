import pytest
import torch

import unet
from unet.models import freeze_encoder
from unet.models.fcn import bilinear_kernel, load_vgg16_encoder

SMALL = dict(base_channels=4, fc_channels=8)


@pytest.mark.parametrize("name", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize("size", [(32, 32), (64, 48), (37, 101), (5, 3), (100, 100)])
def test_output_cropped_to_input(name, size):
    net = unet.create_model(name, **SMALL).eval()
    with torch.inference_mode():
        out = net(torch.rand(1, 1, *size))
    assert out.shape == (1, 2, *size)
    assert unet.halo(net) == 0


def test_vgg16_layout_and_fusion_layers():
    net = unet.create_model("fcn8s", in_channels=3)
    convs = [m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 and [c.out_channels for c in convs] == [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6
    assert net.fc6.kernel_size == (7, 7) and net.fc6.out_channels == 4096
    assert hasattr(net, "score_pool3") and hasattr(net, "score_pool4")
    assert not hasattr(unet.create_model("fcn32s", **SMALL), "score_pool4")
    assert not hasattr(unet.create_model("fcn16s", **SMALL), "score_pool3")


def test_upsampling_initialised_to_bilinear():
    # a constant score map stays constant (away from the border) after bilinear upsampling
    net = unet.create_model("fcn32s", **SMALL)
    up = net.upscore_final
    y = up(torch.ones(1, 2, 4, 4))
    assert torch.allclose(y[..., 32:-32, 32:-32], torch.ones(1), atol=1e-6)
    k = bilinear_kernel(1, 4)[0, 0]
    assert torch.allclose(k[1:3, 1:3], torch.full((2, 2), 0.5625))


def test_freeze_encoder_keeps_encoder_weights_after_step():
    torch.manual_seed(0)
    net = unet.create_model("fcn8s", **SMALL)
    freeze_encoder(net, True)
    enc = {n: p.detach().clone() for n, p in net.named_parameters() if n.startswith(("encoder", "fc6", "fc7"))}
    head = {n: p.detach().clone() for n, p in net.named_parameters() if n.startswith("score_fr")}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    loss = net(torch.rand(2, 1, 32, 32)).square().mean()
    loss.backward()
    opt.step()
    for n, p in net.named_parameters():
        if n in enc:
            assert torch.equal(p, enc[n]), n
    assert any(not torch.equal(dict(net.named_parameters())[n], v) for n, v in head.items())
    freeze_encoder(net, False)
    assert all(p.requires_grad for p in net.parameters())


def test_freeze_unet_encoder():
    net = unet.create_model("unet", base_channels=2, depth=2)
    freeze_encoder(net)
    frozen = {id(p) for p in net.encoder_parameters()}
    assert frozen and all(not p.requires_grad for p in net.encoder_parameters())
    assert all(p.requires_grad for p in net.parameters() if id(p) not in frozen)


def test_load_vgg16_state_dict(tmp_path):
    # a torchvision-layout VGG-16 state dict (random values, the real keys and shapes)
    torch.manual_seed(1)
    shapes = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256),
              14: (256, 256), 17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512),
              26: (512, 512), 28: (512, 512)}
    sd = {}
    for i, (co, ci) in shapes.items():
        sd[f"features.{i}.weight"] = torch.randn(co, ci, 3, 3)
        sd[f"features.{i}.bias"] = torch.randn(co)
    sd["classifier.0.weight"] = torch.randn(4096, 512 * 7 * 7)
    sd["classifier.0.bias"] = torch.randn(4096)
    sd["classifier.3.weight"] = torch.randn(4096, 4096)
    sd["classifier.3.bias"] = torch.randn(4096)
    path = tmp_path / "vgg16.pth"
    torch.save(sd, path)
    net = unet.create_model("fcn8s", in_channels=1)
    load_vgg16_encoder(net, path)
    assert torch.allclose(net.encoder.block1[0].weight, sd["features.0.weight"].mean(1, keepdim=True))
    assert torch.equal(net.encoder.block5[4].weight, sd["features.28.weight"])
    assert torch.equal(net.fc6.weight.flatten(1), sd["classifier.0.weight"])
    assert torch.equal(net.fc7.weight.flatten(1), sd["classifier.3.weight"])


def test_normalised_encoder_is_vgg16_bn_and_refuses_vgg16_weights():
    net = unet.create_model("fcn8s", norm="batch", **SMALL)
    bns = [m for m in net.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    convs = [m for m in net.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(bns) == len(convs) == 13 and all(c.bias is None for c in convs)
    out = net.train()(torch.rand(2, 1, 40, 40))
    assert out.shape == (2, 2, 40, 40)
    with pytest.raises(ValueError, match="no normalisation"):
        load_vgg16_encoder(net, {})

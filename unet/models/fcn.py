"""Fully convolutional network baseline (FCN-32s/16s/8s) of Long, Shelhamer & Darrell (2015).

Reference
---------
J. Long, E. Shelhamer, T. Darrell. Fully Convolutional Networks for Semantic
Segmentation. CVPR 2015.  The U-Net paper builds on this architecture (Sec. 1).

The encoder is VGG-16 (Simonyan & Zisserman 2015): five blocks of 2-2-3-3-3
3x3 convolutions with 2x2 max-pooling, then fc6/fc7 recast as 7x7 and 1x1
convolutions.  Class scores from fc7 (and, for 16s/8s, from pool4 and pool3)
are fused and upsampled by learnable transposed convolutions initialised to
bilinear interpolation; the output is cropped to the input size, so every
command can swap ``fcn8s`` for ``unet``.

Deviation from the Caffe original: convolutions use padding 1 and pooling uses
``ceil_mode`` instead of conv1_1's 100-pixel padding; the output still covers
exactly the input, for any input size.

Loading VGG-16 weights (no download at run time)
-----------------------------------------------
:func:`load_vgg16_encoder` takes a torchvision ``vgg16`` state dict (a ``.pth``
file saved with ``torch.save(vgg16().state_dict(), path)``).  Keys map as::

    features.{0,2}            -> encoder.block1.{0,2}   (conv1_1, conv1_2)
    features.{5,7}            -> encoder.block2.{0,2}
    features.{10,12,14}       -> encoder.block3.{0,2,4}
    features.{17,19,21}       -> encoder.block4.{0,2,4}
    features.{24,26,28}       -> encoder.block5.{0,2,4}
    classifier.0 (Linear)     -> fc6 (reshaped to 4096 x 512 x 7 x 7)
    classifier.3 (Linear)     -> fc7 (reshaped to 4096 x 4096 x 1 x 1)

For ``in_channels != 3`` conv1_1's RGB filters are averaged over the colour
axis and repeated for each input channel.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from unet.models import register_model
from unet.models.layers import he_normal_, norm_layer

VGG16_BLOCKS = (2, 2, 3, 3, 3)
_TV_FEATURE_INDEX = {  # torchvision vgg16.features index of each conv
    (1, 0): 0, (1, 1): 2,
    (2, 0): 5, (2, 1): 7,
    (3, 0): 10, (3, 1): 12, (3, 2): 14,
    (4, 0): 17, (4, 1): 19, (4, 2): 21,
    (5, 0): 24, (5, 1): 26, (5, 2): 28,
}


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Weights making a transposed convolution a per-channel bilinear upsampling (Long et al. Sec. 3.3)."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = np.ogrid[:kernel_size, :kernel_size]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    w = np.zeros((channels, channels, kernel_size, kernel_size), dtype=np.float32)
    w[range(channels), range(channels)] = filt
    return torch.from_numpy(w)


def _upsample(channels: int, stride: int) -> nn.ConvTranspose2d:
    up = nn.ConvTranspose2d(channels, channels, 2 * stride, stride=stride, padding=stride // 2, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 2 * stride))
    return up


class VGG16Encoder(nn.Module):
    def __init__(self, in_channels: int, base_channels: int, norm: str | None = None):
        super().__init__()
        self.norm = None if norm in (None, "none") else norm
        cin = in_channels
        for i, n in enumerate(VGG16_BLOCKS, start=1):
            cout = base_channels * 2 ** min(i - 1, 3)  # 64, 128, 256, 512, 512
            layers = []
            for _ in range(n):
                if self.norm is None:
                    layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
                else:  # as VGG-16-BN: a normalisation after every convolution
                    layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), norm_layer(self.norm, cout),
                               nn.ReLU(inplace=True)]
                cin = cout
            setattr(self, f"block{i}", nn.Sequential(*layers))
        self.out_channels = cin
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)

    def forward(self, x):
        feats = []
        for i in range(1, len(VGG16_BLOCKS) + 1):
            x = self.pool(getattr(self, f"block{i}")(x))
            feats.append(x)
        return feats  # pool1 .. pool5


class FCN(nn.Module):
    """FCN-32s / 16s / 8s with a VGG-16-style encoder.

    Parameters
    ----------
    variant : {32, 16, 8}
        Output stride of the coarsest prediction that is fused: 32 uses fc7
        only, 16 adds pool4, 8 adds pool4 and pool3 (Long et al. Sec. 4.2).
    in_channels, num_classes : int
        As for :class:`unet.models.unet_paper.UNet` (defaults 1 and 2).
    base_channels : int
        Channels of the first VGG block (VGG-16: 64).
    fc_channels : int
        Channels of fc6/fc7 (VGG-16: 4096).
    dropout : float
        Dropout after fc6 and fc7 (VGG-16: 0.5).
    norm : {None, "batch", "instance", "group"}
        Normalisation after every encoder convolution (VGG-16: none; VGG-16-BN:
        batch), as ``norm`` of :class:`unet.models.unet_paper.UNet`.
    """

    padding = "same"  # any input size; output cropped to the input

    def __init__(self, *, variant: int = 8, in_channels: int = 1, num_classes: int = 2,
                 base_channels: int = 64, fc_channels: int = 4096, dropout: float = 0.5,
                 norm: str | None = None):
        super().__init__()
        if variant not in (8, 16, 32):
            raise ValueError(f"variant must be 8, 16 or 32, got {variant}")
        self.variant = variant
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = 5
        self.encoder = VGG16Encoder(in_channels, base_channels, norm)
        c5 = self.encoder.out_channels
        self.fc6 = nn.Conv2d(c5, fc_channels, 7, padding=3)
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        he_normal_(self)
        if variant <= 16:
            self.score_pool4 = nn.Conv2d(base_channels * 8, num_classes, 1)
            self.upscore2 = _upsample(num_classes, 2)
            # Long et al. zero-initialise the new score layers so training starts from the coarser net
            nn.init.zeros_(self.score_pool4.weight)
            nn.init.zeros_(self.score_pool4.bias)
        if variant == 8:
            self.score_pool3 = nn.Conv2d(base_channels * 4, num_classes, 1)
            self.upscore_pool4 = _upsample(num_classes, 2)
            nn.init.zeros_(self.score_pool3.weight)
            nn.init.zeros_(self.score_pool3.bias)
        self.upscore_final = _upsample(num_classes, variant)

    def encoder_parameters(self):
        yield from self.encoder.parameters()
        yield from self.fc6.parameters()
        yield from self.fc7.parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pool1, pool2, pool3, pool4, pool5 = self.encoder(x)
        y = self.drop(torch.relu(self.fc6(pool5)))
        y = self.drop(torch.relu(self.fc7(y)))
        y = self.score_fr(y)
        if self.variant <= 16:
            p4 = self.score_pool4(pool4)
            y = self.upscore2(y)[..., : p4.shape[-2], : p4.shape[-1]] + p4
        if self.variant == 8:
            p3 = self.score_pool3(pool3)
            y = self.upscore_pool4(y)[..., : p3.shape[-2], : p3.shape[-1]] + p3
        return self.upscore_final(y)[..., :h, :w]


def load_vgg16_encoder(model: FCN, state_dict_or_path) -> FCN:
    """Copy VGG-16 weights (torchvision layout) into ``model``'s encoder and fc6/fc7.

    The file is read with ``torch.load(weights_only=True)``: nothing in it is executed.
    See the module docstring for the key mapping.
    """
    if model.encoder.norm is not None:
        raise ValueError(f"VGG-16 weights have no normalisation layers; build the FCN with norm=None, "
                         f"not {model.encoder.norm!r}")
    sd = state_dict_or_path
    if not isinstance(sd, dict):
        sd = torch.load(sd, map_location="cpu", weights_only=True)
    own = {}
    for (blk, j), idx in _TV_FEATURE_INDEX.items():
        for kind in ("weight", "bias"):
            src = sd[f"features.{idx}.{kind}"]
            if (blk, j, kind) == (1, 0, "weight") and src.shape[1] != model.in_channels:
                src = src.mean(dim=1, keepdim=True).repeat(1, model.in_channels, 1, 1)
            own[f"encoder.block{blk}.{2 * j}.{kind}"] = src
    fc6 = model.fc6.weight
    own["fc6.weight"] = sd["classifier.0.weight"].reshape(fc6.shape)
    own["fc6.bias"] = sd["classifier.0.bias"]
    own["fc7.weight"] = sd["classifier.3.weight"].reshape(model.fc7.weight.shape)
    own["fc7.bias"] = sd["classifier.3.bias"]
    current = model.state_dict()
    for k, v in own.items():
        if current[k].shape != v.shape:
            raise ValueError(f"VGG-16 weight {k}: shape {tuple(v.shape)} does not fit the model's {tuple(current[k].shape)}")
    model.load_state_dict(own, strict=False)
    return model


for _v in (32, 16, 8):
    register_model(f"fcn{_v}s")(lambda _v=_v, **kw: FCN(variant=_v, **kw))

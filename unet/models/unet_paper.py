"""The U-Net of Ronneberger, Fischer & Brox (2015), Fig. 1, and its variants.

Registered as ``create_model("unet")`` (builder :func:`unet`); the module is
named after the paper so that it is not mistaken for the package ``unet``.

Reference
---------
O. Ronneberger, P. Fischer, T. Brox. U-Net: Convolutional Networks for
Biomedical Image Segmentation. MICCAI 2015, LNCS 9351, pp. 234-241.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from unet.models import register_model
from unet.models.geometry import check_input_size
from unet.models.layers import he_normal_, norm_layer


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by a ReLU (Sec. 2).

    With ``padding="valid"`` each convolution is unpadded and loses one pixel
    per side, as in the paper.
    """

    def __init__(self, cin: int, cout: int, *, padding: str, norm: str | None):
        pad = 0 if padding == "valid" else 1
        bias = norm is None  # a bias before a normalisation layer is redundant
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=pad, bias=bias),
            norm_layer(norm, cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=pad, bias=bias),
            norm_layer(norm, cout),
            nn.ReLU(inplace=True),
        )


class UpConv(nn.Module):
    """Upsampling of the feature map that halves the number of channels (Sec. 2)."""

    def __init__(self, cin: int, cout: int, *, upsampling: str):
        super().__init__()
        if upsampling == "transposed":
            # the paper's "2x2 convolution ('up-convolution')"
            self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        elif upsampling == "bilinear":
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(cin, cout, 1),
            )
        else:
            raise ValueError(f"upsampling must be 'transposed' or 'bilinear', got {upsampling!r}")

    def forward(self, x):
        return self.up(x)


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop the centre of ``x`` (N, C, H, W) to ``height`` x ``width`` (the paper's skip crop)."""
    dy = (x.shape[-2] - height) // 2
    dx = (x.shape[-1] - width) // 2
    return x[..., dy : dy + height, dx : dx + width]


class UNet(nn.Module):
    """U-Net: contracting path, expanding path, crop-and-concatenate skips.

    The defaults build the paper's network exactly (Fig. 1, Sec. 2): 23
    convolutional layers, 64 -> 1024 channels, unpadded 3x3 convolutions with
    ReLU, 2x2 max-pooling with stride 2, 2x2 up-convolutions halving the
    channels, a final 1x1 convolution to ``num_classes`` maps, dropout at the
    end of the contracting path (Sec. 3.1) and He initialisation (Sec. 3).  It
    has 31,030,658 parameters and maps a 572x572 tile to 388x388.

    Parameters
    ----------
    in_channels : int
        Image channels (paper: 1, grey-value microscopy).
    num_classes : int
        Output maps (paper: 2, cell / background, Sec. 3 softmax).
    base_channels : int
        Feature channels at the first level, doubled after every pooling
        (paper: 64).
    depth : int
        Number of 2x2 max-poolings (paper: 4).
    padding : {"valid", "same"}
        ``"valid"``: unpadded convolutions, output smaller than input by
        the halo (paper).  ``"same"``: zero-padded convolutions, output the
        size of the input; inputs whose size is not a multiple of ``2**depth``
        are mirror-padded up to the next multiple and the output is cropped
        back.
    norm : {None, "batch", "instance", "group"}
        Normalisation after each convolution (paper: none).
    upsampling : {"transposed", "bilinear"}
        2x2 up-convolution (paper) or bilinear upsampling + 1x1 convolution.
    dropout : float
        Dropout probability at the end of the contracting path (paper: drop-out
        layers there, Sec. 3.1; 0.5 as in the released Caffe model).
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 2,
        base_channels: int = 64,
        depth: int = 4,
        padding: str = "valid",
        norm: str | None = None,
        upsampling: str = "transposed",
        dropout: float = 0.5,
    ):
        super().__init__()
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = depth
        self.padding = padding
        chans = [base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for c in chans[:-1]:
            self.down.append(DoubleConv(cin, c, padding=padding, norm=norm))
            cin = c
        self.pool = nn.MaxPool2d(2, 2)
        self.bottom = DoubleConv(chans[-2], chans[-1], padding=padding, norm=norm)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for c_hi, c_lo in zip(chans[::-1][:-1], chans[::-1][1:]):
            self.up.append(UpConv(c_hi, c_lo, upsampling=upsampling))
            self.up_conv.append(DoubleConv(2 * c_lo, c_lo, padding=padding, norm=norm))
        self.head = nn.Conv2d(chans[0], num_classes, 1)
        he_normal_(self)

    def encoder_parameters(self):
        """Parameters of the contracting path (including the bottom block)."""
        yield from self.down.parameters()
        yield from self.bottom.parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding == "valid":
            check_input_size(self, tuple(x.shape[-2:]))
            return self._forward(x)
        h, w = x.shape[-2:]
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            # mirror padding keeps image statistics at the border; reflect needs pad < size
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        return self._forward(x)[..., :h, :w]

    def _forward(self, x):
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottom(x))
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips)):
            x = up(x)
            x = conv(torch.cat([center_crop(skip, x.shape[-2], x.shape[-1]), x], dim=1))
        return self.head(x)


@register_model("unet")
def unet(**kwargs) -> UNet:
    """The paper's U-Net (defaults) or a variant (see :class:`UNet`)."""
    return UNet(**kwargs)

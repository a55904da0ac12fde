"""Small models for the tiling tests (tests/test_tile.py), with the numbers derived by hand that
the tests need: the alignment (input pixels per output period) and the output jump."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class UNet(nn.Module):
    """Two 2× max-pool levels, transposed convs up (k2 s2, and k3 s2 p1 op1: phase-dependent), skip
    concatenations. Alignment 4 (two stride-2 pools), output jump 1."""

    align = (4, 4)
    jump = (1, 1)

    def __init__(self, c_in: int = 1, c: int = 3):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU())
        self.pool1 = nn.MaxPool2d(2)
        self.enc2 = nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU())
        self.pool2 = nn.MaxPool2d(2)
        self.mid = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU())
        self.up2 = nn.ConvTranspose2d(2 * c, 2 * c, 2, stride=2)
        self.dec2 = nn.Sequential(nn.Conv2d(4 * c, c, 3, padding=1), nn.ReLU())
        self.up1 = nn.ConvTranspose2d(c, c, 3, stride=2, padding=1, output_padding=1)
        self.dec1 = nn.Conv2d(2 * c, 2, 3, padding=1)

    def forward(self, x):
        a = self.enc1(x)
        b = self.enc2(self.pool1(a))
        m = self.mid(self.pool2(b))
        d = self.dec2(torch.cat([self.up2(m), b], 1))
        return self.dec1(torch.cat([self.up1(d), a], 1))


class CausalStack(nn.Module):
    """WaveNet-like causal 1-D stack: left padding 2d, kernel 3, dilations 1 2 4 8. Unit t sees
    [t - 30, t]: halo 30 before, 0 after; alignment 1."""

    align = (1,)
    jump = (1,)
    halo = ((30, 0),)

    def __init__(self, c: int = 3):
        super().__init__()
        layers = []
        for k, d in enumerate((1, 2, 4, 8)):
            layers += [nn.ConstantPad1d((2 * d, 0), 0.0), nn.Conv1d(1 if k == 0 else c, c, 3, dilation=d),
                       nn.ReLU()]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class Conv3d(nn.Module):
    """A 3-D encoder-decoder: stride 2 on the first two axes only, a dilated conv, a transposed
    conv back; anisotropic kernels. Alignment (2, 2, 1), output jump 1."""

    align = (2, 2, 1)
    jump = (1, 1, 1)

    def __init__(self, c: int = 2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(1, c, (3, 3, 5), padding=(1, 1, 2)), nn.ReLU(),
            nn.Conv3d(c, c, (3, 3, 1), stride=(2, 2, 1), padding=(1, 1, 0)), nn.ReLU(),
            nn.Conv3d(c, c, 3, padding=2, dilation=2), nn.ReLU(),
            nn.ConvTranspose3d(c, 1, (2, 2, 1), stride=(2, 2, 1)))

    def forward(self, x):
        return self.net(x)


class Block(nn.Module):
    """Residual block with one dilated 3×3 conv."""

    def __init__(self, c: int, d: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=d, dilation=d)

    def forward(self, x):
        return F.relu(x + self.conv(x))


class DilatedSeg(nn.Module):
    """A dilated-ResNet-like segmentation net: stride-2 stem and pool (jump 4), residual blocks at
    dilation 2 and 4 instead of more strides, a 1×1 head, bilinear ×4 back to the input grid.
    Alignment 4, output jump 1."""

    align = (4, 4)
    jump = (1, 1)

    def __init__(self, c: int = 4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.MaxPool2d(3, stride=2, padding=1))
        self.layer1 = Block(c, 2)
        self.layer2 = Block(c, 4)
        self.head = nn.Conv2d(c, 2, 1)
        self.up = nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False)

    def forward(self, x):
        return self.up(self.head(self.layer2(self.layer1(self.stem(x)))))


class WithGroupNorm(nn.Module):
    """conv → GroupNorm (statistics over the whole input) → conv: a global path at 'norm'."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.out = nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x):
        return self.out(F.relu(self.norm(self.conv(x))))


class SE(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(c, c, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(self.pool(x)))


class WithSE(nn.Module):
    """Local blocks, then a squeeze-and-excitation gate inside 'blocks.1.se': global at
    'blocks.1.se.pool'."""

    def __init__(self, c: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, padding=1)
        self.blocks = nn.Sequential(
            nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU()),
            nn.ModuleDict({"conv": nn.Conv2d(c, c, 3, padding=1), "se": SE(c)}))
        self.head = nn.Conv2d(c, 1, 1)

    def forward(self, x):
        x = self.blocks[0](self.stem(x))
        x = self.blocks[1]["se"](self.blocks[1]["conv"](x))
        return self.head(x)


class SamePad(nn.Module):
    """TensorFlow-style 'same' padding computed from the input size before a stride-2 conv: the
    left pad is 0 for even lengths and 1 for odd ones, so the geometry depends on the size."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3, stride=2)
        self.out = nn.Conv1d(2, 1, 3, padding=1)

    def forward(self, x):
        n = x.shape[-1]
        total = max((math.ceil(n / 2) - 1) * 2 + 3 - n, 0)
        x = F.pad(x, (total // 2, total - total // 2))
        return self.out(F.relu(self.conv(x)))


class Gappy(nn.Module):
    """A transposed conv whose kernel (1) is smaller than its stride (2): every other unit reads
    no input pixel (it is the bias alone), then a 3-tap conv reads across the gaps."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose1d(1, 2, 1, stride=2)
        self.conv = nn.Conv1d(2, 1, 3, padding=1)

    def forward(self, x):
        return self.conv(self.up(x))

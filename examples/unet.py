"""A plain 2-D U-Net (Ronneberger et al. 2015 layout with 'same' padding): per level two 3×3
conv + BatchNorm + ReLU, 2× max pooling down, 2×2 stride-2 transposed convolutions up, skip
concatenations, a 1×1 head. Used by ``benchmarks/tile_speed.py`` and the README's tiling picture.

    rflens tile examples/unet.py:build --input 1x2048x2048 --tile 512 --check

``build(channels=1, base=8, levels=3, classes=2)``: ``levels`` poolings make the output grid
period ``2**levels`` input pixels (tiles start at multiples of it). Weights are PyTorch's random
initialisation; nothing is downloaded.
"""

from __future__ import annotations

import torch
from torch import nn


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class UNet(nn.Module):
    def __init__(self, channels: int = 1, base: int = 8, levels: int = 3, classes: int = 2):
        super().__init__()
        widths = [base * 2 ** k for k in range(levels + 1)]
        self.down = nn.ModuleList([_double_conv(channels, widths[0])] +
                                  [_double_conv(widths[k], widths[k + 1]) for k in range(levels)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[k + 1], widths[k], 2, stride=2)
                                 for k in reversed(range(levels))])
        self.merge = nn.ModuleList([_double_conv(2 * widths[k], widths[k])
                                    for k in reversed(range(levels))])
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


def build(channels: int = 1, base: int = 8, levels: int = 3, classes: int = 2) -> UNet:
    torch.manual_seed(0)
    return UNet(channels, base, levels, classes).eval()

"""Small models shared by several test files."""

from __future__ import annotations

import torch
from torch import nn


class Flip(nn.Module):
    """A conv, a flip along the width (an op rflens does not follow), another conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3)
        self.after = nn.Conv2d(1, 1, 3)

    def forward(self, x):
        return self.after(torch.flip(self.conv(x), dims=[3]))


class ScaleNet(nn.Module):
    """conv(3→4) → ReLU → strided conv(4→4): two layers, a few random parameters per draw."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1, stride=2)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))

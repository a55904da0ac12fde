"""Small PyTorch models exported to ONNX by tests/test_onnx.py (kept tiny for test time)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinyUNet(nn.Module):
    """Two strided downsamplings, two transposed-conv upsamplings (one with output_padding, one
    with padding), skip concatenations, a bilinear resize to the input size."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU())
        self.down1 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.down2 = nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU())
        self.up2 = nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1)
        self.dec2 = nn.Conv2d(12, 6, 3, padding=1)
        self.up1 = nn.ConvTranspose2d(6, 4, 2, stride=2)
        self.dec1 = nn.Conv2d(8, 3, 1)
        self.head = nn.Conv2d(3, 1, 3, dilation=2)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.down1(e1)
        b = self.down2(e2)
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        y = self.head(d1)
        return F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False)


class CausalTCN(nn.Module):
    """A causal dilated 1-D net (WaveNet/TCN style): left padding by ``(k-1)*d``, dilations 1..8."""

    def __init__(self, channels: int = 4, kernel: int = 3) -> None:
        super().__init__()
        self.kernel = kernel
        self.inp = nn.Conv1d(1, channels, 1)
        self.blocks = nn.ModuleList(nn.Conv1d(channels, channels, kernel, dilation=d) for d in (1, 2, 4, 8))
        self.out = nn.Conv1d(channels, 1, 1)

    def forward(self, x):
        h = self.inp(x)
        for conv in self.blocks:
            h = h + torch.relu(conv(F.pad(h, ((self.kernel - 1) * conv.dilation[0], 0))))
        return self.out(h)


def deeplab_backbone() -> nn.Module:
    """torchvision's DeepLabV3-MobileNetV3 backbone (dilated, strided; its feature extractor)."""
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
    return model.backbone

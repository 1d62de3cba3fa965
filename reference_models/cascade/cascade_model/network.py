"""A small residual-free 3D U-Net (nnU-Net's plain design, scaled down for CPU training)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["UNet3D"]


class _ConvBlock(nn.Sequential):
    """Two 3x3x3 convolutions, each followed by instance norm and leaky ReLU (nnU-Net's block)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(
            nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.LeakyReLU(0.01, inplace=True),
        )


class UNet3D(nn.Module):
    """3D U-Net with strided-convolution downsampling and transposed-convolution upsampling.

    Parameters
    ----------
    in_channels
        Image channels (1 for CT).
    num_classes
        Output channels (logits), background included.
    features
        Channels per resolution level, finest first; each level after the first halves the
        resolution, so input sizes must be multiples of ``2 ** (len(features) - 1)``.

    Examples
    --------
    >>> net = UNet3D(1, 3, features=(4, 8))
    >>> net(torch.zeros(1, 1, 8, 8, 8)).shape
    torch.Size([1, 3, 8, 8, 8])
    """

    def __init__(self, in_channels: int, num_classes: int, features: tuple[int, ...]) -> None:
        super().__init__()
        self.features = tuple(features)
        self.encoders = nn.ModuleList()
        previous = in_channels
        for level, width in enumerate(self.features):
            self.encoders.append(_ConvBlock(previous, width, stride=1 if level == 0 else 2))
            previous = width
        self.upsamplers = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for width in reversed(self.features[:-1]):
            self.upsamplers.append(nn.ConvTranspose3d(previous, width, 2, stride=2, bias=False))
            self.decoders.append(_ConvBlock(2 * width, width, stride=1))
            previous = width
        self.head = nn.Conv3d(previous, num_classes, 1)

    @property
    def divisor(self) -> int:
        """Every input size must be a multiple of this."""
        return 2 ** (len(self.features) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
        for upsample, decoder, skip in zip(self.upsamplers, self.decoders, reversed(skips[:-1])):
            x = decoder(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)

"""Convolutional building blocks sized from the image resolution (DCGAN, Radford et al. 2016).

A resolution R is reached from an s0 x s0 seed by n stride-2 steps, with s0 * 2**n == R and s0 as
small as possible but >= 4 (or R's odd factor): 8 -> 4*2, 28 -> 7*4, 32 -> 4*8, 64 -> 4*16.
Channels halve on the way up (and double on the way down), starting from `width`.
"""

from __future__ import annotations

import torch
from torch import nn


def resolution_plan(size: int) -> tuple[int, int]:
    """(s0, n_steps) for a square image of side `size`."""
    n = 0
    while size % (2 ** (n + 1)) == 0 and size // (2 ** (n + 1)) >= 4:
        n += 1
    return size // (2**n), n


def _channels(width: int, n: int) -> list[int]:
    """Channels from the lowest resolution up: [width*2^n, ..., width], capped at width*8."""
    return [width * min(2 ** (n - i), 8) for i in range(n + 1)]


class ConvDecoder(nn.Module):
    """z (B, in_dim) -> (B, C, H, W) pre-activation output. Used as G and as the VAE decoder."""

    def __init__(self, in_dim: int, image_shape: tuple[int, int, int], width: int) -> None:
        super().__init__()
        c, h, w = image_shape
        if h != w:
            raise ValueError(f"square images only, got {h}x{w}")
        self.s0, n = resolution_plan(h)
        chans = _channels(width, n)
        self.c0 = chans[0]
        self.project = nn.Sequential(
            nn.Linear(in_dim, self.c0 * self.s0 * self.s0), nn.BatchNorm1d(self.c0 * self.s0 * self.s0), nn.ReLU()
        )
        ups: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            ups += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
        self.up = nn.Sequential(*ups)
        self.out = nn.Conv2d(chans[-1], c, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(z).view(-1, self.c0, self.s0, self.s0)
        return self.out(self.up(h))


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> (B, feature_dim). Used as D's trunk and the VAE encoder. No batch norm, so it
    works with R1 penalties and spectral norm and does not mix real and fake statistics."""

    def __init__(self, image_shape: tuple[int, int, int], width: int, spectral_norm: bool = False) -> None:
        super().__init__()
        c, h, _ = image_shape
        s0, n = resolution_plan(h)
        chans = list(reversed(_channels(width, n)))
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = [sn(nn.Conv2d(c, chans[0], 3, 1, 1)), nn.LeakyReLU(0.2)]
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [sn(nn.Conv2d(a, b, 4, 2, 1)), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.feature_dim = chans[-1] * s0 * s0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

"""Per-scale projection layers: RD++'s feature projection, which REASON reuses as its anomaly-suppression layers.

Each scale gets an independent stack of four conv3x3 (bias) → InstanceNorm2d (no affine) → LeakyReLU(0.01) steps
at unchanged resolution, with channels C → C/2 → C/4 → C/2 → C (RD++ ``MultiProjectionLayer``; for the ResNet-18
teacher this is RD++'s ``base=16``). InstanceNorm without running statistics behaves identically in training and
inference and exports as ``InstanceNormalization``.
"""

from __future__ import annotations

import itertools

from torch import Tensor, nn


class ProjectionLayer(nn.Sequential):
    """C → C/2 → C/4 → C/2 → C, each step conv3x3 + InstanceNorm + LeakyReLU."""

    def __init__(self, channels: int) -> None:
        widths = [channels, channels // 2, channels // 4, channels // 2, channels]
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(widths):
            layers += [nn.Conv2d(cin, cout, kernel_size=3, padding=1), nn.InstanceNorm2d(cout), nn.LeakyReLU(0.01)]
        super().__init__(*layers)


class MultiProjection(nn.Module):
    """One :class:`ProjectionLayer` per teacher scale."""

    def __init__(self, channels: tuple[int, int, int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(ProjectionLayer(c) for c in channels)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        return [layer(f) for layer, f in zip(self.layers, features, strict=True)]

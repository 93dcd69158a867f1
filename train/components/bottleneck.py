"""The OCBE bottleneck of RD4AD: multi-scale feature fusion (MFF) followed by a one-class embedding (OCE).

Generic in the teacher's channels ``(c1, c2, c3)``; for the ResNets it equals the official ``BN_layer`` except for
its ``conv4``/``bn4``, which the official forward never uses and which are therefore left out.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backbones import TeacherSpec
from .blocks import conv3x3, down_stage, init_resnet_weights


def _conv_bn_relu(inplanes: int, planes: int, stride: int) -> list[nn.Module]:
    return [conv3x3(inplanes, planes, stride), nn.BatchNorm2d(planes), nn.ReLU(inplace=True)]


class MultiScaleFusion(nn.Module):
    """MFF: bring the three teacher maps to the coarsest resolution and concatenate them (3·c3 channels).

    ``T1`` goes through two stride-2 conv-BN-ReLU (c1 → c2 → c3), ``T2`` through one (c2 → c3), ``T3`` is kept.
    """

    def __init__(self, channels: tuple[int, int, int]) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.branch1 = nn.Sequential(*_conv_bn_relu(c1, c2, 2), *_conv_bn_relu(c2, c3, 2))
        self.branch2 = nn.Sequential(*_conv_bn_relu(c2, c3, 2))
        self.out_channels = 3 * c3

    def forward(self, features: list[Tensor]) -> Tensor:
        f1, f2, f3 = features
        return torch.cat([self.branch1(f1), self.branch2(f2), f3], dim=1)


class OneClassEmbedding(nn.Module):
    """OCE: a freshly initialised ResNet stage (stride 2) producing the compact embedding φ (2·c3 channels)."""

    def __init__(self, spec: TeacherSpec, in_channels: int) -> None:
        super().__init__()
        expansion = 4 if spec.block == "bottleneck" else 1
        planes = 2 * spec.channels[2] // expansion
        self.stage = down_stage(spec.block, in_channels, planes, spec.oce_blocks, spec.width_per_group)
        self.out_channels = planes * expansion

    def forward(self, x: Tensor) -> Tensor:
        return self.stage(x)


class OCBE(nn.Module):
    """Fusion followed by one-class embedding; ``fusion`` is MFF for RD4AD."""

    def __init__(self, spec: TeacherSpec, fusion: nn.Module | None = None) -> None:
        super().__init__()
        self.fusion = fusion if fusion is not None else MultiScaleFusion(spec.channels)
        self.embedding = OneClassEmbedding(spec, self.fusion.out_channels)
        init_resnet_weights(self)

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.embedding(self.fusion(features))

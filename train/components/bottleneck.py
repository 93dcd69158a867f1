"""The OCBE bottleneck: a fusion of the three teacher scales followed by a one-class embedding (OCE).

Fusions: RD4AD's multi-scale feature fusion (MFF; also RD++ and REASON) and DRD's cascade fusion (MFCF).

Generic in the teacher's channels ``(c1, c2, c3)``; for the ResNets they equal the official ``BN_layer`` modules
except for ``conv4``/``bn4``, which no official forward uses and which are therefore left out.
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


class CascadeFusion(nn.Module):
    """DRD's multi-feature cascade fusion (MFCF): fuse the scales one after the other, then compress to c3.

    ``a = CBR_s2(T1)`` (c1 → c2), ``b = CBR_s2([a, T2])`` (2·c2 → 2·c3), ``c = CBR([b, T3])`` (3·c3 → c3), where
    CBR is conv3x3 → BN → ReLU. For the wide ResNet this is 256 → 512, 1024 → 2048, 3072 → 1024 channels, DRD's
    ``BN_layer`` without its unused ``conv4``/``bn4``.
    """

    def __init__(self, channels: tuple[int, int, int]) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.stage1 = nn.Sequential(*_conv_bn_relu(c1, c2, 2))
        self.stage2 = nn.Sequential(*_conv_bn_relu(2 * c2, 2 * c3, 2))
        self.stage3 = nn.Sequential(*_conv_bn_relu(3 * c3, c3, 1))
        self.out_channels = c3

    def forward(self, features: list[Tensor]) -> Tensor:
        f1, f2, f3 = features
        a = torch.cat([self.stage1(f1), f2], dim=1)
        b = torch.cat([self.stage2(a), f3], dim=1)
        return self.stage3(b)


class OneClassEmbedding(nn.Module):
    """OCE: a freshly initialised ResNet stage (stride 2) producing the compact embedding φ.

    φ has ``spec.embedding_channels`` channels, 2·c3 (the papers') when that is None.

    Args:
        spec: Teacher spec (block type, channels, embedding channels).
        in_channels: Channels of the fused input.
        blocks: Residual blocks; the teacher spec's default when None (REASON uses 3 for ResNet-18).
    """

    def __init__(self, spec: TeacherSpec, in_channels: int, blocks: int | None = None) -> None:
        super().__init__()
        expansion = 4 if spec.block == "bottleneck" else 1
        planes = (spec.embedding_channels or 2 * spec.channels[2]) // expansion
        self.stage = down_stage(spec.block, in_channels, planes, blocks or spec.oce_blocks, spec.width_per_group)
        self.out_channels = planes * expansion

    def forward(self, x: Tensor) -> Tensor:
        return self.stage(x)


class OCBE(nn.Module):
    """Fusion followed by one-class embedding; ``fusion`` is MFF unless given (DRD: :class:`CascadeFusion`)."""

    def __init__(self, spec: TeacherSpec, fusion: nn.Module | None = None, oce_blocks: int | None = None) -> None:
        super().__init__()
        self.fusion = fusion if fusion is not None else MultiScaleFusion(spec.channels)
        self.embedding = OneClassEmbedding(spec, self.fusion.out_channels, oce_blocks)
        init_resnet_weights(self)

    def forward(self, features: list[Tensor]) -> Tensor:
        return self.embedding(self.fusion(features))

"""The reverse (student) decoder: a ResNet run backwards from φ to the three teacher resolutions."""

from __future__ import annotations

from torch import Tensor, nn

from ..backbones import TeacherSpec
from .blocks import init_resnet_weights, up_stage


class ReverseDecoder(nn.Module):
    """Three upsampling stages: φ (2·c3, S/32) → c3 (S/16) → c2 (S/8) → c1 (S/4).

    For the ResNet teachers this is RD4AD's ``de_wide_resnet50_2`` ([3, 4, 6] bottlenecks) or ``de_resnet18``
    ([2, 2, 2] basic blocks). When the teacher's features are signed (EfficientNet), the last block of each stage
    has no final ReLU, so that the student can reproduce negative values.

    Returns the outputs in teacher order ``[S1, S2, S3]``.
    """

    def __init__(self, spec: TeacherSpec, in_channels: int) -> None:
        super().__init__()
        expansion = 4 if spec.block == "bottleneck" else 1
        c1, c2, c3 = spec.channels
        stages = []
        inplanes = in_channels
        for out, blocks in zip((c3, c2, c1), spec.decoder_blocks, strict=True):
            stages.append(
                up_stage(spec.block, inplanes, out // expansion, blocks, spec.width_per_group,
                         final_relu=spec.features_nonnegative)
            )
            inplanes = out
        self.stage3, self.stage2, self.stage1 = stages
        init_resnet_weights(self)

    def forward(self, embedding: Tensor) -> list[Tensor]:
        s3 = self.stage3(embedding)
        s2 = self.stage2(s3)
        s1 = self.stage1(s2)
        return [s1, s2, s3]

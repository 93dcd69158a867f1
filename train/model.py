"""The one model assembly shared by every method: teacher → (projection) → fusion + OCE → decoder.

Methods differ only in which optional parts they plug in (see ``train.methods``) and in their training extras.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .backbones import TeacherSpec
from .components.bottleneck import OCBE
from .components.decoder import ReverseDecoder


class ReverseDistillationNet(nn.Module):
    """Frozen teacher and trainable student of reverse distillation.

    Args:
        spec: The teacher's spec (channels and student shape).
        teacher: The frozen teacher (from ``train.backbones.build_teacher``).
        projection: Optional per-scale module applied to the teacher features before the bottleneck
            (RD++'s projection, REASON's suppression layers); ``None`` for RD4AD.
        fusion: Fusion module of the bottleneck; RD4AD's multi-scale fusion when ``None``.
        oce_blocks: Blocks of the one-class embedding; the teacher spec's default when ``None``.

    ``forward`` returns ``(teacher_features, student_features)``, two lists of three maps with equal shapes.
    """

    def __init__(
        self,
        spec: TeacherSpec,
        teacher: nn.Module,
        projection: nn.Module | None = None,
        fusion: nn.Module | None = None,
        oce_blocks: int | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.teacher = teacher
        self.projection = projection
        self.bottleneck = OCBE(spec, fusion, oce_blocks)
        self.decoder = ReverseDecoder(spec, self.bottleneck.embedding.out_channels)

    def encode(self, x: Tensor) -> list[Tensor]:
        """Teacher features of normalised images, without gradients."""
        with torch.no_grad():
            return self.teacher(x)

    def project(self, teacher_features: list[Tensor]) -> list[Tensor]:
        """Teacher features after the optional projection (what the bottleneck sees)."""
        return self.projection(teacher_features) if self.projection is not None else teacher_features

    def decode(self, teacher_features: list[Tensor]) -> list[Tensor]:
        """Student features reconstructed from (projected) teacher features."""
        return self.decoder(self.bottleneck(self.project(teacher_features)))

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        teacher_features = self.encode(x)
        return teacher_features, self.decode(teacher_features)

    def train(self, mode: bool = True) -> ReverseDistillationNet:
        """Set train/eval mode; the teacher always stays in eval mode (ImageNet batch-norm statistics)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def student_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters: everything except the teacher."""
        return [p for name, p in self.named_parameters() if not name.startswith("teacher.")]

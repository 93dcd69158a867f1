"""RD4AD (Deng & Li, CVPR 2022): reverse distillation from a one-class embedding.

Follows the official code's behaviour: the knowledge-distillation loss is a cosine distance between each sample's
*flattened* C·H·W teacher and student maps (the paper's equation is per pixel; the code, which produced the
published numbers, flattens), summed over the three scales and averaged over the batch. One Adam optimiser over
bottleneck and decoder, lr 0.005, betas (0.5, 0.999), no weight decay, no schedule.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..backbones import TeacherSpec
from ..model import ReverseDistillationNet
from .base import Method


def flattened_cosine_loss(teacher: list[Tensor], student: list[Tensor]) -> Tensor:
    """Σ over scales of the batch mean of 1 − cos(flatten(T_k), flatten(S_k))."""
    loss = teacher[0].new_zeros(())
    for t, s in zip(teacher, student, strict=True):
        loss = loss + (1.0 - F.cosine_similarity(t.flatten(1), s.flatten(1), dim=1)).mean()
    return loss


class RD4AD(Method):
    """RD4AD: MFF + OCE bottleneck, reverse decoder, flattened-cosine loss."""

    name = "rd4ad"

    def build(self, spec: TeacherSpec, teacher: torch.nn.Module) -> ReverseDistillationNet:
        return ReverseDistillationNet(spec, teacher)

    def optimizers(self, net: ReverseDistillationNet, lr: float) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(net.student_parameters(), lr=lr, betas=(0.5, 0.999))]

    def training_step(self, net: ReverseDistillationNet, images: Tensor) -> dict[str, Tensor]:
        teacher, student = net(images)
        return {"loss": flattened_cosine_loss(teacher, student)}

"""RD4AD (Deng & Li, CVPR 2022): reverse distillation from a one-class embedding.

Follows the official code's behaviour: the knowledge-distillation loss is a cosine distance between each sample's
*flattened* C·H·W teacher and student maps (the paper's equation is per pixel; the code, which produced the
published numbers, flattens), summed over the three scales and averaged over the batch. One Adam optimiser over
bottleneck and decoder, lr 0.005, betas (0.5, 0.999), no weight decay, no schedule.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..backbones import TeacherSpec
from ..graph import DetectorGraph
from ..losses import flattened_cosine_loss, sum_over_scales
from ..model import ReverseDistillationNet
from .base import Method


class RD4AD(Method):
    """RD4AD: MFF + OCE bottleneck, reverse decoder, flattened-cosine loss."""

    name = "rd4ad"

    def build(self, spec: TeacherSpec, teacher: torch.nn.Module) -> ReverseDistillationNet:
        return ReverseDistillationNet(spec, teacher)

    def optimizers(self, net: ReverseDistillationNet, lr: float) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(net.student_parameters(), lr=lr, betas=(0.5, 0.999))]

    def training_step(
        self, net: ReverseDistillationNet, images: Tensor, graph: DetectorGraph
    ) -> dict[str, Tensor]:
        teacher, student = net(graph.normalize(images))
        return {"loss": sum_over_scales(flattened_cosine_loss, teacher, student)}

"""RD4AD (Deng & Li, CVPR 2022): reverse distillation from a one-class embedding.

Follows the official code's behaviour: the knowledge-distillation loss is a cosine distance between each sample's
*flattened* C·H·W teacher and student maps (the paper's equation is per pixel; the code, which produced the
published numbers, flattens), summed over the three scales and averaged over the batch. One Adam optimiser over
bottleneck and decoder, lr 0.005, betas (0.5, 0.999), no weight decay, no schedule.

Option ``hard_mining`` (off by default, not the paper's): the same loss with the gradient damped at the easiest
positions (:func:`~train.losses.hard_mined`), as ReContrast (NeurIPS 2023) and Dinomaly (CVPR 2025) train their
reverse-distillation students.

Option ``kd_loss``: ``"flattened"`` (default, the official code's) or ``"pixel"``: the paper's equation, 1 − cos over
channels at each position, averaged over positions; the anomaly map is that same per-position distance, so a student
trained on it is pushed to keep every position of a good image low, not only the map as a whole.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from ..backbones import TeacherSpec
from ..graph import DetectorGraph
from ..losses import flattened_cosine_loss, hard_mined, pixel_cosine_loss
from ..model import ReverseDistillationNet
from .base import Method


class RD4AD(Method):
    """RD4AD: MFF + OCE bottleneck, reverse decoder, flattened-cosine loss.

    Args:
        hard_mining: Share of positions in [0, 1) (over each batch and scale) whose gradient is damped to
            :data:`~train.losses.HARD_MINING_FACTOR` because the student already restores them best; 0 (default)
            is the paper's loss. ReContrast and Dinomaly use 0.9.
        kd_loss: ``"flattened"`` (default: the official code's cosine over each sample's flattened maps) or
            ``"pixel"`` (the paper's equation: per-position cosine over channels, averaged).
    """

    name = "rd4ad"

    option_names = ("hard_mining", "kd_loss")

    KD_LOSSES: ClassVar[dict[str, Callable[[Tensor, Tensor], Tensor]]] = {
        "flattened": flattened_cosine_loss, "pixel": pixel_cosine_loss}

    def __init__(self, hard_mining: float = 0.0, kd_loss: str = "flattened") -> None:
        super().__init__()
        if not 0.0 <= float(hard_mining) < 1.0:
            raise ValueError(f"hard_mining must be in [0, 1), got {hard_mining!r}")
        if kd_loss not in self.KD_LOSSES:
            raise ValueError(f"kd_loss must be one of {sorted(self.KD_LOSSES)}, got {kd_loss!r}")
        self.hard_mining = float(hard_mining)
        self.kd_loss = kd_loss
        self.options = {**({"hard_mining": self.hard_mining} if self.hard_mining else {}),
                        **({"kd_loss": kd_loss} if kd_loss != "flattened" else {})}

    def build(self, spec: TeacherSpec, teacher: torch.nn.Module) -> ReverseDistillationNet:
        return ReverseDistillationNet(spec, teacher)

    def optimizers(self, net: ReverseDistillationNet, lr: float) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(net.student_parameters(), lr=lr, betas=(0.5, 0.999))]

    def training_step(
        self, net: ReverseDistillationNet, images: Tensor, graph: DetectorGraph
    ) -> dict[str, Tensor]:
        teacher, student = net(graph.normalize(images))
        distance = self.KD_LOSSES[self.kd_loss]
        loss = sum(distance(t, hard_mined(t, s, self.hard_mining)) for t, s in zip(teacher, student, strict=True))
        return {"loss": loss}

"""What a training method provides: how to build the network, its optimisers and one training step."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import Tensor

from ..backbones import TeacherSpec
from ..model import ReverseDistillationNet


class Method(abc.ABC):
    """A reverse-distillation method (RD4AD, ...).

    Attributes:
        name: Registry name, used by ``--method``.
        combine: How the anomaly-map head fuses the scales (``sum`` or ``mean``).
        default_lr: Learning rate of the student (decoder and bottleneck).
    """

    name: ClassVar[str]
    combine: ClassVar[str] = "sum"
    default_lr: ClassVar[float] = 0.005

    @abc.abstractmethod
    def build(self, spec: TeacherSpec, teacher: torch.nn.Module) -> ReverseDistillationNet:
        """Assemble the network around a frozen teacher."""

    @abc.abstractmethod
    def optimizers(self, net: ReverseDistillationNet, lr: float) -> list[torch.optim.Optimizer]:
        """The optimisers; each is stepped after every training step."""

    @abc.abstractmethod
    def training_step(self, net: ReverseDistillationNet, images: Tensor) -> dict[str, Tensor]:
        """Compute the losses on a batch of normalised good images.

        Returns:
            A dict of scalar losses; ``"loss"`` is the one back-propagated.
        """

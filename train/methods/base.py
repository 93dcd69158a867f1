"""What a training method provides: how to build the network, its optimisers and one training step."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ..backbones import TeacherSpec
from ..graph import InputNormalizer
from ..model import ReverseDistillationNet


class Method(abc.ABC):
    """A reverse-distillation method (RD4AD, RD++, DRD, REASON).

    A method plugs optional parts into the one model assembly (:class:`ReverseDistillationNet`), chooses the
    anomaly-map head's options for the exported graph, and computes its training losses, including any
    training-only extras (pseudo-anomalies, feature noise). Nothing training-only enters the exported graph.

    Attributes:
        name: Registry name, used by ``--method``.
        combine: How the anomaly-map head fuses the scales (``sum`` or ``mean``).
        default_lr: Learning rate of the student (decoder and bottleneck).
        accumulation_steps: Training steps whose gradients are accumulated before each optimiser step.
        options: Method-specific options (validated by the subclass).
    """

    name: ClassVar[str]
    combine: ClassVar[str] = "sum"
    default_lr: ClassVar[float] = 0.005
    accumulation_steps: ClassVar[int] = 1

    def __init__(self, **options: Any) -> None:
        if options:
            raise ValueError(f"method {self.name} takes no options, got {sorted(options)}")
        self.options: dict[str, Any] = {}
        self.setup(0)

    def setup(self, seed: int) -> None:
        """Seed the method's own random draws (pseudo-anomalies, noise)."""
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)

    def graph_options(self) -> dict[str, Any]:
        """Options of the anomaly-map head in the deployable graph (``DetectorGraph`` keyword arguments)."""
        return {"combine": self.combine, "refinement": False}

    @abc.abstractmethod
    def build(self, spec: TeacherSpec, teacher: torch.nn.Module) -> ReverseDistillationNet:
        """Assemble the network around a frozen teacher."""

    @abc.abstractmethod
    def optimizers(self, net: ReverseDistillationNet, lr: float) -> list[torch.optim.Optimizer]:
        """The optimisers; each is stepped every ``accumulation_steps`` training steps."""

    @abc.abstractmethod
    def training_step(
        self, net: ReverseDistillationNet, images: Tensor, normalizer: InputNormalizer
    ) -> dict[str, Tensor]:
        """Compute the losses on a batch of good images.

        Args:
            net: The network (in train mode).
            images: (N, S, S, 3) uint8 RGB, as the deployed graph receives them.
            normalizer: The graph's input normalisation (``normalizer(images)``; ``normalizer.from_unit(x)`` for
                (N, 3, S, S) float images in [0, 1], e.g. synthesised pseudo-anomalies).

        Returns:
            A dict of scalar losses; ``"loss"`` is the one back-propagated.
        """


def unit_images(images: Tensor) -> Tensor:
    """(N, S, S, 3) uint8 → (N, 3, S, S) float32 in [0, 1]."""
    return images.permute(0, 3, 1, 2).float() / 255.0

"""What a training method provides: how to build the network, its optimisers and one training step."""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from sdk.errors import RdedgeError

from ..backbones import TeacherSpec
from ..graph import DetectorGraph
from ..model import ReverseDistillationNet


class MethodOptionError(RdedgeError, ValueError):
    """An unknown method, or an option the method does not have or cannot take."""


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

    option_names: ClassVar[tuple[str, ...]] = ()
    """The options ``--method-option`` may set (keyword arguments of the subclass's constructor)."""

    def __init__(self) -> None:
        self.options: dict[str, Any] = {}
        self.setup(0)  # the trainer calls setup(seed, device) again

    @classmethod
    def create(cls, **options: Any) -> Method:
        """Instantiate with options, refusing unknown ones with a :class:`MethodOptionError` that lists the valid
        ones."""
        unknown = sorted(set(options) - set(cls.option_names))
        if unknown:
            valid = ", ".join(cls.option_names) if cls.option_names else "none"
            raise MethodOptionError(f"method {cls.name} has no option {', '.join(map(repr, unknown))}; valid: {valid}")
        try:
            return cls(**options)
        except (TypeError, ValueError) as exc:
            raise MethodOptionError(f"method {cls.name}: {exc}") from exc

    def setup(self, seed: int, device: torch.device | str = "cpu") -> None:
        """Seed the method's own random draws (pseudo-anomalies, noise) for a model on ``device``.

        Three sources, all from ``seed``: ``rng`` (NumPy) and ``generator`` (a CPU torch generator) draw host-side
        decisions (patch sizes, positions: Python numbers and 0-d tensors); ``device_generator`` draws tensors on
        the model's device (noise, permutations), so nothing a step makes crosses devices. On the CPU it is
        ``generator`` itself, so CPU runs draw exactly the same sequence as before devices existed; on CUDA it is a
        CUDA generator (reproducible per device); devices without generators (``meta``) draw with the CPU one.
        """
        self.device = torch.device(device)
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.device_generator = self.generator
        if self.device.type == "cuda":
            self.device_generator = torch.Generator(device=self.device).manual_seed(seed)

    def random_state(self) -> dict[str, Any]:
        """The state of the method's random sources (for resumable runs; see :meth:`restore_random_state`)."""
        state: dict[str, Any] = {"rng": self.rng.bit_generator.state, "generator": self.generator.get_state()}
        if self.device_generator is not self.generator:
            state["device_generator"] = self.device_generator.get_state()
        return state

    def restore_random_state(self, state: dict[str, Any]) -> None:
        """Continue the random draws where :meth:`random_state` left them (after :meth:`setup` on the same device)."""
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(state["generator"])
        if self.device_generator is not self.generator:
            self.device_generator.set_state(state["device_generator"])

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
        self, net: ReverseDistillationNet, images: Tensor, graph: DetectorGraph
    ) -> dict[str, Tensor]:
        """Compute the losses on a batch of good images.

        Args:
            net: The network (in train mode).
            images: (N, H, W, 3) uint8 RGB, as the deployed graph receives them.
            graph: The deployable graph around ``net``: its input normalisation (``graph.normalize(images)``;
                ``graph.normalize.from_unit(x)`` for (N, 3, H, W) float images in [0, 1], e.g. synthesised
                pseudo-anomalies) and its anomaly-map head (``graph.head``), so that training computes maps as the
                exported graph does.

        Returns:
            A dict of scalar losses; ``"loss"`` is the one back-propagated.
        """


def unit_images(images: Tensor) -> Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32 in [0, 1]."""
    return images.permute(0, 3, 1, 2).float() / 255.0

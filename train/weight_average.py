"""An exponential moving average of the student's weights, exported instead of the last step's (option).

RD's students train with Adam at a high rate (0.005, β₁ 0.5) and no schedule, and the exported weights are the last
step's. On a small set the loss can jump in the last epochs (KolektorSDD, 250 strips: a mean epoch loss of 0.53 rose
to 0.73 in the run's last epoch, and every good part then scored three times higher); an average of the last few
hundred steps' weights (Polyak averaging, as mean-teacher and EMA-weight training keep) does not follow one bad step.
Off by default: the papers export the last step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class WeightAverage:
    """Exponential moving average of every non-teacher parameter and buffer of a network.

    After each optimiser step, ``average ← d·average + (1 − d)·weights`` with ``d = min(decay, (1 + n) / (10 + n))``
    at the n-th update (the usual warm-up, so the first steps' random weights fade fast); integer buffers (batch-norm
    counters) are copied. Batch-norm running statistics are averaged like the weights.

    Args:
        net: The network being trained; parameters and buffers whose names start with ``teacher.`` are not
            averaged (the teacher is frozen).
        decay: Weight of the running average at each update, in (0, 1).
    """

    def __init__(self, net: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"weight average decay must be in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.updates = 0
        self.average = {name: tensor.detach().clone() for name, tensor in net.state_dict().items()
                        if not name.startswith("teacher.")}

    def update(self, net: nn.Module) -> None:
        """Fold the network's current weights into the average (call after each optimiser step)."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = net.state_dict()
        with torch.no_grad():
            for name, average in self.average.items():
                if average.is_floating_point():
                    average.lerp_(current[name].detach(), 1.0 - decay)
                else:
                    average.copy_(current[name])

    def copy_to(self, net: nn.Module) -> None:
        """Load the averaged weights into the network (the teacher's stay as they are)."""
        missing = set(self.average) - set(net.state_dict())
        if missing:
            raise ValueError(f"the network has no {sorted(missing)[:3]}: not the network this average was made for")
        net.load_state_dict(self.average, strict=False)

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue the average exactly."""
        return {"decay": self.decay, "updates": self.updates,
                "average": {name: tensor.detach().cpu() for name, tensor in self.average.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue an average saved by :meth:`state_dict` (same network, same decay)."""
        if set(state["average"]) != set(self.average):
            raise ValueError("the saved weight average is not of this network")
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        for name, tensor in state["average"].items():
            self.average[name].copy_(tensor)

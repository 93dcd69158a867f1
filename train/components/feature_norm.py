"""Per-channel standardisation of the teacher's features, fitted once on the good training images.

The anomaly map is 1 − cos between teacher and student features. On raw features a few channels of large
magnitude dominate that cosine; a defect that shows in low-variance channels (a thin crack on a grey surface)
moves the map little. Standardising every channel with its mean and standard deviation over the good training
images (a diagonal Mahalanobis view, as PaDiM's per-position statistics, but one pair per channel) gives every
channel an equal say. The statistics are frozen buffers of the teacher, so the student learns to reconstruct
standardised features, the exported graph carries the affine (one Sub and one Mul per scale) and there is still one
forward path. Off by default (``TrainConfig.feature_norm``): the papers compare raw features, and measured with
RD4AD it was worse than raw features on all four public sets (image AUROC on KolektorSDD 0.875 → 0.638, tire
0.879 → 0.716, ELPV 0.947 → 0.920; ``benchmarks/results/accuracy.md``): equal weight also lifts the channels that
vary only with noise on good parts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

MIN_STD = 1e-4
"""Floor of a channel's standard deviation: a channel constant on good images must not turn into infinite gain."""


class FeatureStandardizer(nn.Module):
    """``(f − mean) / std`` per channel of each of the teacher's three feature maps.

    Args:
        channels: Channels of each feature map.

    The buffers start as the identity (mean 0, std 1) and are set by :meth:`fit` or loaded from a checkpoint.
    """

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        self.scales = len(channels)
        for i, c in enumerate(channels):
            self.register_buffer(f"mean{i}", torch.zeros(1, c, 1, 1))
            self.register_buffer(f"inv_std{i}", torch.ones(1, c, 1, 1))

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        if len(features) != self.scales:
            raise ValueError(f"expected {self.scales} feature maps, got {len(features)}")
        return [
            (f - getattr(self, f"mean{i}").to(f.dtype)) * getattr(self, f"inv_std{i}").to(f.dtype)
            for i, f in enumerate(features)
        ]

    @torch.no_grad()
    def fit(self, teacher: Callable[[Tensor], list[Tensor]], images: np.ndarray,
            normalize: Callable[[Tensor], Tensor], *, batch_size: int = 16, device: torch.device | str = "cpu",
            progress: bool = True) -> FeatureStandardizer:
        """Set mean and standard deviation of every channel over all positions of the teacher's features.

        Args:
            teacher: The raw teacher (features before this module).
            images: (N, H, W, 3) uint8 RGB good training images, as the graph takes them.
            normalize: The graph's input normaliser (uint8 → the teacher's input).
            batch_size: Images per teacher pass.
            device: Where the teacher runs.
            progress: Show a progress bar.

        Returns:
            ``self``.

        Raises:
            ValueError: No images.
        """
        if len(images) == 0:
            raise ValueError("feature standardisation needs at least one training image")
        sums: list[Tensor] = []
        squares: list[Tensor] = []
        positions: list[int] = []
        for start in tqdm(range(0, len(images), batch_size), desc="feature statistics", disable=not progress,
                          leave=False):
            batch = torch.from_numpy(images[start : start + batch_size]).to(device)
            features = [f.double() for f in teacher(normalize(batch))]
            if not sums:
                sums = [torch.zeros(f.shape[1], dtype=torch.float64, device=f.device) for f in features]
                squares = [torch.zeros_like(s) for s in sums]
                positions = [0] * len(features)
            for i, f in enumerate(features):
                sums[i] += f.sum(dim=(0, 2, 3))
                squares[i] += (f * f).sum(dim=(0, 2, 3))
                positions[i] += f.shape[0] * f.shape[2] * f.shape[3]
        for i, (total, n) in enumerate(zip(sums, positions, strict=True)):
            mean = total / n
            var = (squares[i] / n - mean * mean).clamp_min(0)
            buffer = getattr(self, f"mean{i}")
            buffer.copy_(mean.to(buffer).view_as(buffer))
            getattr(self, f"inv_std{i}").copy_((1.0 / var.sqrt().clamp_min(MIN_STD)).to(buffer).view_as(buffer))
        return self

"""Distances between teacher and student feature lists shared by the methods' losses."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def flattened_cosine_loss(a: Tensor, b: Tensor) -> Tensor:
    """Batch mean of 1 − cos between each sample's flattened C·H·W maps (RD4AD's code-level KD loss)."""
    return (1.0 - F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)).mean()


def pixel_cosine_loss(a: Tensor, b: Tensor) -> Tensor:
    """Mean over batch and positions of 1 − cos over channels (per-pixel cosine distance)."""
    return (1.0 - F.cosine_similarity(a, b, dim=1)).mean()


def channel_cosine_loss(a: Tensor, b: Tensor) -> Tensor:
    """Mean over batch and channels of 1 − cos between each channel's H·W spatial vectors (DRD's per-image term)."""
    return (1.0 - F.cosine_similarity(a.flatten(2), b.flatten(2), dim=2)).mean()


def sum_over_scales(loss: Callable[[Tensor, Tensor], Tensor], teacher: list[Tensor], student: list[Tensor]) -> Tensor:
    """Σ_k loss(teacher_k, student_k)."""
    total = loss(teacher[0], student[0])
    for t, s in zip(teacher[1:], student[1:], strict=True):
        total = total + loss(t, s)
    return total


HARD_MINING_FACTOR = 0.1
"""Gradient share kept at the easy positions by :func:`hard_mined` (ReContrast, NeurIPS 2023, and Dinomaly, CVPR
2025, use 0.1)."""


def hard_mined(teacher: Tensor, student: Tensor, easy_share: float, factor: float = HARD_MINING_FACTOR) -> Tensor:
    """The student map with its gradient damped where it already matches the teacher ("hard mining").

    The forward value is ``student`` unchanged, so any loss computed on it has the same value. In the backward pass
    the gradient reaching ``student`` is multiplied by ``factor`` at the ``easy_share`` of positions (over the
    batch) whose per-position cosine distance to the teacher is smallest, and kept whole at the rest: training leans
    on the normal regions the student restores worst, instead of sharpening ones it already restores well.

    Args:
        teacher: (N, C, H, W) teacher features (targets; no gradient flows to them through the mask).
        student: (N, C, H, W) student features.
        easy_share: Share of positions in [0, 1) whose gradient is damped; 0 returns ``student`` itself.
        factor: Gradient multiplier at the damped positions.

    Returns:
        A tensor equal to ``student`` whose gradient is damped at the easy positions.
    """
    if not 0.0 <= easy_share < 1.0:
        raise ValueError(f"easy_share must be in [0, 1), got {easy_share!r}")
    if easy_share == 0.0:
        return student
    with torch.no_grad():
        distance = 1.0 - F.cosine_similarity(teacher, student, dim=1)  # (N, H, W)
        flat = distance.flatten()
        k = max(1, int(easy_share * flat.numel()))
        threshold = flat.kthvalue(k).values
        weight = torch.where(distance <= threshold, factor, 1.0).unsqueeze(1).to(student.dtype)
    frozen = student.detach()
    return frozen + weight * (student - frozen)  # equals student exactly; gradient × weight

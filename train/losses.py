"""Distances between teacher and student feature lists shared by the methods' losses."""

from __future__ import annotations

from collections.abc import Callable

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

"""DRD pseudo-abnormal images: self cut-paste with additive blending, and their soft target map (training only).

Following the official ``psedu_generate`` / ``cut`` / ``paste_patch`` (describing, not copying):

* per batch, one patch side t: with probability 0.2 from [150, 200], 0.3 from [64, 100], 0.5 from [10, 32]
  (inclusive; at 256 px, scaled with the model size otherwise);
* per image: cut a t × t patch at x ∈ [0, W − t), y ∈ [0, H − t) from the same image, one pixel narrower (shorter)
  when x − t (y − t) is odd; paste it at x' ∈ [1, W − w − 1), y' ∈ [1, H − h − 1) as ``patch + 0.2 · region``
  (values may exceed 1; no clipping);
* the soft target is 1 − cos over RGB between the normalised pseudo-abnormal and original images: 0 wherever
  nothing changed, in (0, 2] inside the pasted region.

All draws come from one seeded NumPy generator (the official code mixes Python's and NumPy's global generators).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

SIZE_RANGES = ((150, 200), (64, 100), (10, 32))
SIZE_WEIGHTS = (0.2, 0.3, 0.5)
BLEND = 0.2


def draw_patch_side(rng: np.random.Generator, image_size: int) -> int:
    """One patch side for a batch, scaled from the 256-px ranges."""
    low, high = SIZE_RANGES[int(rng.choice(len(SIZE_RANGES), p=SIZE_WEIGHTS))]
    side = int(rng.integers(low, high + 1))
    return max(2, min(round(side * image_size / 256), image_size - 4))


def cut_paste(images: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """Make pseudo-abnormal images by self cut-paste.

    Args:
        images: (N, 3, H, W) float in [0, 1].
        rng: Random draws.

    Returns:
        ``(pseudo, pasted)``: (N, 3, H, W) images and (N, H, W) bool masks of the pasted regions.
    """
    n, _, height, width = images.shape
    t = draw_patch_side(rng, min(height, width))
    pseudo = images.clone()
    pasted = torch.zeros((n, height, width), dtype=torch.bool, device=images.device)
    for i in range(n):
        x = int(rng.integers(0, width - t))
        y = int(rng.integers(0, height - t))
        pw = t - 1 if (x - t) % 2 else t
        ph = t - 1 if (y - t) % 2 else t
        patch = images[i, :, y : y + ph, x : x + pw]
        px = int(rng.integers(1, width - pw - 1))
        py = int(rng.integers(1, height - ph - 1))
        pseudo[i, :, py : py + ph, px : px + pw] = patch + BLEND * images[i, :, py : py + ph, px : px + pw]
        pasted[i, py : py + ph, px : px + pw] = True
    return pseudo, pasted


SEGMENTATION_TARGETS = ("cosine", "difference")
"""Soft targets of DRD's segmentation loss: the paper's RGB cosine, or the intensity difference (grey images)."""


def similarity_target(pseudo_normalized: Tensor, normalized: Tensor) -> Tensor:
    """Soft target map: 1 − cos over the RGB channels of the normalised images, (N, H, W) (the paper's)."""
    return 1.0 - F.cosine_similarity(pseudo_normalized, normalized, dim=1)


def difference_target(pseudo_normalized: Tensor, normalized: Tensor) -> Tensor:
    """Soft target map for grey images: the mean absolute difference over channels of the normalised images,
    clipped to [0, 2] (the cosine target's range), (N, H, W).

    On a grey image (R = G = B) a pasted patch changes the intensity, not the colour: the normalised pixel vectors
    of the patch and of what it covers point almost the same way, so the paper's 1 − cos is ~0 where the image
    changed (measured on KolektorSDD strips: 0.004 mean inside the pasted boxes, against 0.39 on MVTec bottle) and
    the segmentation loss teaches nothing. The difference sees intensity changes on grey and colour images alike.
    """
    return (pseudo_normalized - normalized).abs().mean(dim=1).clamp(max=2.0)


def segmentation_target(kind: str, pseudo_normalized: Tensor, normalized: Tensor) -> Tensor:
    """The soft target named ``kind`` (one of :data:`SEGMENTATION_TARGETS`)."""
    if kind == "cosine":
        return similarity_target(pseudo_normalized, normalized)
    if kind == "difference":
        return difference_target(pseudo_normalized, normalized)
    raise ValueError(f"segmentation_target must be one of {SEGMENTATION_TARGETS}, got {kind!r}")

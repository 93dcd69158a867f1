"""The selection set: what rdedge chooses settings on, built from held-out good images only, never test images.

Held-out good training images against copies of them with synthetic defects: one self cut-paste (DRD's
pseudo-anomaly) and one simplex-noise box (RD++'s) per image, with the masks of the changed regions. The head study
(``benchmarks.scores``) chooses the image score on it, and the INT8 export (:mod:`export.int8_layers`) decides which
layers may run in INT8 on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def synthetic_defects(images: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Copies of good images with synthetic defects: one self cut-paste (DRD) and one simplex-noise box (RD++) each.

    Args:
        images: (N, H, W, 3) uint8 RGB good images at the model size.
        seed: Seed of the draws (same seed, same defects).

    Returns:
        ``(defective, masks)``: (2N, H, W, 3) uint8 RGB (the N cut-paste copies, then the N noise copies) and
        (2N, H, W) bool masks of the regions each one changed.
    """
    import torch

    from train.methods.drd.synthesis import cut_paste
    from train.methods.rdpp.synthesis import SimplexNoiseAnomaly

    rng = np.random.default_rng(seed)
    unit = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    pasted = [cut_paste(unit[i : i + 1], rng) for i in range(len(unit))]
    noisy, noise_masks = SimplexNoiseAnomaly(min(images.shape[1:3]), seed=seed)(unit, rng)
    both = torch.cat([*(p for p, _ in pasted), noisy]).clamp(0.0, 1.0) * 255.0
    masks = torch.cat([*(m for _, m in pasted), noise_masks])
    return both.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy(), masks.numpy()


@dataclass(frozen=True)
class SelectionSet:
    """Good images and their synthetically defective copies, labelled and masked.

    Attributes:
        images: (M, H, W, 3) uint8 RGB: the N good images first, then their 2N defective copies.
        labels: (M,) int: 0 good, 1 defective.
        masks: (M, H, W) bool: empty for good images, the changed region for defective ones.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray

    @classmethod
    def from_good(cls, good: np.ndarray, seed: int = 0) -> SelectionSet:
        """Build the set from (N, H, W, 3) uint8 held-out good images (N ≥ 1)."""
        if len(good) == 0:
            raise ValueError("a selection set needs at least one held-out good image")
        defective, masks = synthetic_defects(good, seed)
        return cls(
            images=np.concatenate([good, defective]),
            labels=np.r_[np.zeros(len(good), dtype=int), np.ones(len(defective), dtype=int)],
            masks=np.concatenate([np.zeros(good.shape[:3], dtype=bool), masks]),
        )

    def subset(self, n_good: int) -> SelectionSet:
        """The first ``n_good`` good images and their defective copies (a smaller set for quick comparisons)."""
        n = int((self.labels == 0).sum())
        if n_good >= n:
            return self
        keep = np.r_[np.arange(n_good), n + np.arange(n_good), 2 * n + np.arange(n_good)]
        return SelectionSet(self.images[keep], self.labels[keep], self.masks[keep])

"""The papers' host-side post-processing, as a reference for the in-graph head.

The official RD-family test scripts take teacher and student features from PyTorch, compute
``1 − F.cosine_similarity`` per scale, upsample with ``F.interpolate(bilinear, align_corners=True)``, fuse, copy
to NumPy and smooth with ``scipy.ndimage.gaussian_filter(σ=4)``; the image score is the map's maximum, or DRD's
refined score. This module does exactly that, in NumPy/SciPy, for two uses:

* the export self-check and the tests, in float64 (so that the reference's own rounding is negligible);
* the benchmark's "papers' way" runner, in float32 as the papers run it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter, uniform_filter

from sdk.contract import ImageSize

SIGMA = 4.0


def refined_scores(distances: list[np.ndarray], upsampled: list[np.ndarray], scores: np.ndarray) -> np.ndarray:
    """DRD's detection refinement in NumPy: ``score · (1 + max(M_k*))`` with k* the least-variance upsampled map.

    Args:
        distances: Per-scale distance maps at native resolution, each (N, h_k, w_k).
        upsampled: The same maps upsampled, each (N, H, W).
        scores: (N,) maxima of the smoothed fused maps.
    """
    peaks = np.stack([d.reshape(len(d), -1).max(axis=1) for d in distances], axis=1)
    variances = np.stack([u.reshape(len(u), -1).var(axis=1, ddof=1) for u in upsampled], axis=1)
    flattest = variances.argmin(axis=1)
    return scores * (1.0 + peaks[np.arange(len(scores)), flattest])


def image_scores(maps: np.ndarray, image_score: str = "max", top_fraction: float = 0.01) -> np.ndarray:
    """(N, H, W) smoothed maps → (N,) image scores: the maximum, or the mean of the top ``top_fraction`` pixels."""
    flat = maps.reshape(len(maps), -1)
    if image_score == "max":
        return flat.max(axis=1)
    if image_score != "top_mean":
        raise ValueError(f"unknown image score {image_score!r}")
    count = max(1, round(flat.shape[1] * top_fraction))
    return np.partition(flat, flat.shape[1] - count, axis=1)[:, -count:].mean(axis=1)


def pooled(features: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, h, w) features averaged over ``size`` x ``size`` neighbourhoods, zeros beyond the borders."""
    if size == 1:
        return features
    return torch.from_numpy(uniform_filter(features.detach().numpy(), size=(1, 1, size, size), mode="constant"))


def papers_postprocess(
    teacher: list[torch.Tensor],
    student: list[torch.Tensor],
    image_size: ImageSize | int,
    *,
    combine: str = "sum",
    refinement: bool = False,
    image_score: str = "max",
    top_fraction: float = 0.01,
    map_strides: tuple[int, ...] = (4, 8, 16),
    sigma: float = SIGMA,
    feature_pool: int = 1,
    dtype: torch.dtype = torch.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher/student features → (smoothed maps (N, H, W), scores (N,)) the way the official scripts compute them
    (over the feature levels of ``map_strides``, of strides 4, 8 and 16, smoothed with ``sigma``; the papers use all
    three and σ = 4). ``feature_pool`` > 1 first averages each feature map over ``feature_pool`` x ``feature_pool``
    neighbourhoods with SciPy's ``uniform_filter`` (zeros beyond the borders), as PatchCore aggregates patches."""
    size = tuple(ImageSize.parse(image_size))
    levels = [(4, 8, 16).index(s) for s in map_strides]
    teacher, student = ([pooled(f[i].to(dtype), feature_pool) for i in levels] for f in (teacher, student))
    distances, upsampled = [], []
    with torch.no_grad():
        for t, s in zip(teacher, student, strict=True):
            d = 1.0 - F.cosine_similarity(t, s, dim=1)
            distances.append(d.numpy())
            upsampled.append(
                F.interpolate(d.unsqueeze(1), size=size, mode="bilinear", align_corners=True).squeeze(1).numpy()
            )
    fused = np.sum(upsampled, axis=0)
    if combine == "mean":
        fused = fused / len(upsampled)
    maps = np.stack([gaussian_filter(m, sigma=sigma, mode="reflect") for m in fused])
    scores = image_scores(maps, image_score, top_fraction)
    if refinement:
        scores = refined_scores(distances, upsampled, scores)
    return maps, scores

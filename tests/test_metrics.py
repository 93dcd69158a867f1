"""Metrics (sdk.metrics), with AUPRO checked against a brute-force evaluation of its definition."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sdk import metrics


def brute_force_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """The pooled PRO definition evaluated threshold by threshold (slow, obviously correct)."""
    regions = []
    for i in range(len(masks)):
        labelled, n = ndimage.label(masks[i], structure=np.ones((3, 3)))
        regions += [(i, labelled == r) for r in range(1, n + 1)]
    good = ~masks
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fpr = (pred & good).sum() / good.sum()
        pro = np.mean([pred[i][r].mean() for i, r in regions])
        points.append((fpr, pro))
    fpr, pro = np.array(points).T
    grid = np.linspace(0, fpr_limit, 20001)
    return float(np.trapezoid(np.interp(grid, fpr, pro), grid) / fpr_limit)


def test_aupro_matches_brute_force_on_real_shapes(bottle_dir):
    from sdk.image import read_image, resize_mask

    rng = np.random.default_rng(0)
    gt = sorted((bottle_dir / "ground_truth").glob("*/*.png"))[:3]
    masks = np.stack([resize_mask(read_image(p), 32) for p in gt] + [np.zeros((32, 32), bool)])
    maps = masks * rng.uniform(0.3, 1.0, masks.shape) + rng.uniform(0, 0.6, masks.shape)
    maps = np.round(maps, 2)  # ties, as real maps have
    assert metrics.aupro(masks, maps) == pytest.approx(brute_force_aupro(masks, maps), abs=2e-3)


def test_aupro_perfect_and_random_maps():
    rng = np.random.default_rng(1)
    masks = np.zeros((4, 96, 96), bool)
    masks[0, 10:50, 10:50] = masks[1, 40:90, 20:60] = True
    assert metrics.aupro(masks, masks.astype(float) + rng.uniform(0, 0.1, masks.shape)) == pytest.approx(1.0)
    # a map unrelated to the masks gives PRO ≈ FPR, so the normalised area ≈ 0.15
    assert metrics.aupro(masks, rng.uniform(size=masks.shape)) == pytest.approx(0.15, abs=0.02)
    assert metrics.aupro(np.zeros_like(masks), rng.uniform(size=masks.shape)) is None


def test_auroc_and_f1():
    assert metrics.image_auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert metrics.image_auroc([0, 0], [0.1, 0.2]) is None
    masks = np.array([[[True, False], [False, False]]])
    assert metrics.pixel_auroc(masks, np.array([[[0.9, 0.1], [0.2, 0.3]]])) == 1.0
    assert metrics.f1_at_threshold([0, 1, 1], [0.1, 0.9, 0.2], threshold=0.5) == pytest.approx(2 / 3)
    assert metrics.f1_at_threshold([0, 0], [0.1, 0.9], threshold=0.5) is None

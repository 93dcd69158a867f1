"""The nearest-neighbour baseline of the accuracy benchmark (benchmarks/patchcore.py), on real bottle images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks.patchcore import PatchNearestNeighbour, greedy_coreset
from sdk.datasets import load_dataset, load_prepared
from sdk.evaluate import evaluate_detector


def test_greedy_coreset_covers_every_cluster_before_repeating_one():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(6, 200, generator=generator) * 50.0  # projected to 128 dimensions on the way
    points = torch.cat([c + torch.randn(300, 200, generator=generator) for c in centres])
    picked = greedy_coreset(points, 6)
    assert sorted(int(i) // 300 for i in picked) == [0, 1, 2, 3, 4, 5]
    assert torch.equal(greedy_coreset(points, 6), picked)  # seeded
    assert torch.equal(greedy_coreset(points[:5], 9), torch.arange(5))  # asking for more keeps all


def test_baseline_finds_real_bottle_defects_with_a_calibrated_threshold(bottle_subset: Path):
    dataset = load_dataset(str(bottle_subset))
    baseline = PatchNearestNeighbour("efficientnet_lite0", 128)
    baseline.fit(load_prepared(dataset.train, 128, progress=False),
                 load_prepared(dataset.validation, 128, progress=False))
    assert 0 < baseline.bank.shape[0] <= round(0.1 * len(dataset.train) * 16 * 16) + 1  # a 10 % coreset
    assert np.isfinite(baseline.threshold) and baseline.threshold > baseline.calibration.mean
    metrics = evaluate_detector(baseline, dataset.test, progress=False)
    assert metrics["image_auroc"] >= 0.9 and metrics["pixel_auroc"] >= 0.9
    results = baseline.predict_batch([s.load_image() for s in dataset.test[:2]])
    assert results[0].anomaly_map.shape == (128, 128) and results[0].input_size == (256, 256)

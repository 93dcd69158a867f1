"""Evaluate a :class:`~sdk.detector.Detector` on a dataset's test split, from the detector's own outputs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from . import metrics
from .datasets import Sample
from .detector import Detector


@dataclass
class ScoredTestSet:
    """The detector's outputs on a test set, one entry per sample, in order.

    Attributes:
        labels: (N,) 0 good, 1 defective.
        defects: Defect type of each sample (``good`` for good ones).
        scores: (N,) image scores.
        threshold: The image threshold the detector applied.
        maps: (N, H, W) anomaly maps at model size, where the set has pixel annotations (else None).
        masks: (N, H, W) ground-truth masks at model size, likewise.
        seconds: Wall time of the scoring.
    """

    labels: np.ndarray
    defects: list[str]
    scores: np.ndarray
    threshold: float
    maps: np.ndarray | None = None
    masks: np.ndarray | None = None
    seconds: float = 0.0

    def metrics(self) -> dict[str, Any]:
        """``image_auroc``, ``pixel_auroc``, ``aupro``, ``f1`` (None where undefined, e.g. no masks), ``n_images``,
        ``n_anomalous``, ``threshold`` and ``seconds``."""
        annotated = self.maps is not None and self.masks is not None
        return {
            "image_auroc": metrics.image_auroc(self.labels, self.scores),
            "pixel_auroc": metrics.pixel_auroc(self.masks, self.maps) if annotated else None,
            "aupro": metrics.aupro(self.masks, self.maps) if annotated else None,
            "f1": metrics.f1_at_threshold(self.labels, self.scores, self.threshold),
            "n_images": len(self.labels),
            "n_anomalous": int(self.labels.sum()),
            "threshold": self.threshold,
            "seconds": self.seconds,
        }


def score_test_set(
    detector: Detector, samples: Sequence[Sample], *, batch_size: int = 8, progress: bool = True
) -> ScoredTestSet:
    """Score every test sample; keep the maps and masks (at model resolution, masks resized the same way and
    half-intensity binarised) where the set has pixel annotations."""
    if not samples:
        raise ValueError("no test samples to evaluate")
    size = detector.image_size
    annotated = all(s.has_mask_annotation for s in samples)
    scores = np.empty(len(samples), dtype=np.float64)
    maps = np.empty((len(samples), *size), dtype=np.float32) if annotated else None
    masks = np.empty((len(samples), *size), dtype=bool) if annotated else None
    started = time.perf_counter()
    bar = tqdm(total=len(samples), desc="evaluate", disable=not progress, leave=False)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        results = detector.predict_batch([s.load_image() for s in chunk], anomaly_maps=annotated or None)
        for i, (sample, result) in enumerate(zip(chunk, results, strict=True), start=start):
            scores[i] = result.score
            if maps is not None and masks is not None:
                maps[i] = result.anomaly_map
                masks[i] = sample.load_mask(size)
        bar.update(len(chunk))
    bar.close()
    return ScoredTestSet(labels=np.array([s.label for s in samples]), defects=[s.defect for s in samples],
                      scores=scores, threshold=detector.threshold, maps=maps, masks=masks,
                      seconds=round(time.perf_counter() - started, 2))


def evaluate_detector(
    detector: Detector, samples: Sequence[Sample], *, batch_size: int = 8, progress: bool = True
) -> dict[str, Any]:
    """Score every test sample and compute the metrics (:meth:`ScoredTestSet.metrics`).

    Pixel metrics are computed at model resolution against masks resized the same way (half-intensity binarised).
    """
    return score_test_set(detector, samples, batch_size=batch_size, progress=progress).metrics()

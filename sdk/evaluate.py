"""Evaluate a :class:`~sdk.detector.Detector` on a dataset's test split, from the detector's own outputs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from . import metrics
from .datasets import Sample
from .detector import Detector


def evaluate_detector(
    detector: Detector, samples: Sequence[Sample], *, batch_size: int = 8, progress: bool = True
) -> dict[str, Any]:
    """Score every test sample and compute the metrics.

    Pixel metrics are computed at model resolution against masks resized the same way (half-intensity binarised).

    Returns:
        ``image_auroc``, ``pixel_auroc``, ``aupro``, ``f1`` (None where undefined, e.g. no masks), ``n_images``,
        ``n_anomalous``, ``threshold`` and ``seconds``.
    """
    if not samples:
        raise ValueError("no test samples to evaluate")
    size = detector.image_size
    annotated = all(s.has_mask_annotation for s in samples)
    labels = np.array([s.label for s in samples])
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
            if annotated:
                maps[i] = result.anomaly_map
                masks[i] = sample.load_mask(size)
        bar.update(len(chunk))
    bar.close()
    return {
        "image_auroc": metrics.image_auroc(labels, scores),
        "pixel_auroc": metrics.pixel_auroc(masks, maps) if annotated else None,
        "aupro": metrics.aupro(masks, maps) if annotated else None,
        "f1": metrics.f1_at_threshold(labels, scores, detector.threshold),
        "n_images": len(samples),
        "n_anomalous": int(labels.sum()),
        "threshold": detector.threshold,
        "seconds": round(time.perf_counter() - started, 2),
    }

"""Anomaly-detection metrics: image AUROC, pixel AUROC, AUPRO and image F1 (needs scipy and scikit-learn).

* AUROC: ``sklearn.metrics.roc_auc_score`` over images, and over all pixels of all test images.
* AUPRO: the standard pooled definition (Bergmann et al., MVTec AD): for every threshold, the per-region overlap
  is averaged over **all** connected ground-truth regions of all test images, and the false-positive rate is taken
  over **all** defect-free pixels of all test images; the PRO curve is integrated over FPR ∈ [0, 0.3] and divided
  by 0.3. (This is *not* the per-image variant in RD4AD's ``compute_pro``; numbers from the two differ.)
* F1: ``sklearn.metrics.f1_score`` of the image verdicts at a given threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _sklearn_metrics():
    try:
        from sklearn import metrics
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("metrics need scikit-learn and scipy: pip install 'rdedge[eval]'") from exc
    return metrics


def image_auroc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Image-level AUROC; None when only one class is present."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return None
    return float(_sklearn_metrics().roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float | None:
    """Pixel-level AUROC over all pixels of (N, H, W) boolean masks and float maps; None without both classes."""
    truth = masks.reshape(-1)
    if truth.all() or not truth.any():
        return None
    return float(_sklearn_metrics().roc_auc_score(truth, maps.reshape(-1).astype(np.float64)))


def pro_curve(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> tuple[np.ndarray, np.ndarray] | None:
    """The pooled per-region-overlap curve up to ``fpr_limit``: (false-positive rates, PRO), one point per distinct
    threshold, the last point interpolated at exactly ``fpr_limit``.

    Args:
        masks: (N, H, W) boolean ground truth.
        maps: (N, H, W) anomaly maps.
        fpr_limit: Upper bound of the false-positive rate.

    Returns:
        ``(fpr, pro)`` from (0, 0); None without any defect region or defect-free pixel.
    """
    from scipy import ndimage

    masks = masks.astype(bool)
    # Each defect pixel weighs 1 / (region area · number of regions); each good pixel weighs 1 / (good pixels).
    region_weight = np.zeros(masks.shape, dtype=np.float64)
    n_regions = 0
    for i in range(len(masks)):
        labelled, count = ndimage.label(masks[i], structure=np.ones((3, 3)))  # 8-connectivity
        for region in range(1, count + 1):
            where = labelled == region
            region_weight[i][where] = 1.0 / where.sum()
        n_regions += count
    n_good = int((~masks).sum())
    if n_regions == 0 or n_good == 0:
        return None
    scores = maps.reshape(-1).astype(np.float64)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    defect = masks.reshape(-1)[order]
    fpr = np.cumsum(~defect) / n_good
    pro = np.cumsum(region_weight.reshape(-1)[order]) / n_regions
    # One curve point per distinct threshold: the last index of each run of equal scores.
    last = np.r_[np.nonzero(np.diff(sorted_scores))[0], len(sorted_scores) - 1]
    fpr = np.r_[0.0, fpr[last]]
    pro = np.r_[0.0, pro[last]]
    keep = fpr <= fpr_limit
    fpr_cut, pro_cut = fpr[keep], pro[keep]
    if fpr_cut[-1] < fpr_limit:  # interpolate the curve at exactly fpr_limit
        j = np.searchsorted(fpr, fpr_limit)
        f0, f1, p0, p1 = fpr[j - 1], fpr[j], pro[j - 1], pro[j]
        pro_at = p0 + (p1 - p0) * (fpr_limit - f0) / (f1 - f0) if f1 > f0 else p1
        fpr_cut, pro_cut = np.r_[fpr_cut, fpr_limit], np.r_[pro_cut, pro_at]
    return fpr_cut, pro_cut


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float | None:
    """Normalised area under the pooled per-region-overlap curve up to ``fpr_limit`` (:func:`pro_curve`).

    Returns:
        The area divided by ``fpr_limit`` (1.0 is perfect); None without any defect region or defect-free pixel.
    """
    curve = pro_curve(masks, maps, fpr_limit)
    if curve is None:
        return None
    return float(_sklearn_metrics().auc(*curve) / fpr_limit)


def f1_at_threshold(labels: Sequence[int], scores: Sequence[float], threshold: float) -> float | None:
    """F1 of the verdicts ``score > threshold``; None when there is no anomalous image."""
    labels = np.asarray(labels)
    if not labels.any():
        return None
    predictions = np.asarray(scores) > threshold
    return float(_sklearn_metrics().f1_score(labels, predictions, zero_division=0.0))

"""An evaluation report to decide with: ``rdedge evaluate MODEL --report DIR``.

One self-contained HTML page (every figure inline as a PNG data URI; no script, stylesheet or font from anywhere;
it opens from disk with no server and no network) plus the same figures as PNG files:

* ROC curve (image level) and PRO curve (pixel level, up to the AUPRO's FPR limit), with their areas;
* score histograms of good and defective test images with the threshold drawn on them;
* a per-defect-type table (count, image AUROC against the good images, recall at the threshold) and the
  confusion counts at the threshold;
* the worst cases, top missed defects and top false alarms: each as the image, the ground-truth outline and the
  heat-map overlay;
* the model card: method, teacher, input size, precision, training data and seed, metrics.

Plots are drawn with matplotlib (``pip install rdedge[report]``), imported only here.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from . import metrics
from .datasets import Sample
from .detector import Detector
from .errors import RdedgeError
from .evaluate import ScoredTestSet, score_test_set
from .fileio import atomic_folder
from .visualize import overlay

WORST_CASES = 4
"""Missed defects and false alarms shown, each."""
FIGURES = ("roc", "pro", "histogram")


def import_pyplot() -> Any:
    """matplotlib's pyplot on its file-only backend, or an error saying how to install it."""
    try:
        import matplotlib
    except ImportError as exc:
        raise RdedgeError("the evaluation report draws its plots with matplotlib: pip install rdedge[report]") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def roc_figure(scores: ScoredTestSet) -> Any:
    """The image-level ROC curve with its area."""
    from sklearn.metrics import roc_curve

    plt = import_pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.2))
    fpr, tpr, _ = roc_curve(scores.labels, scores.scores)
    auroc = metrics.image_auroc(scores.labels, scores.scores)
    ax.plot(fpr, tpr, color="#1f5fa8", label=f"image ROC (AUROC {auroc:.3f})")
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1)
    ax.set(xlabel="false-positive rate (good images)", ylabel="true-positive rate (defective images)",
           xlim=(0, 1), ylim=(0, 1.02), title="Image-level ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def pro_figure(scores: ScoredTestSet, fpr_limit: float = 0.3) -> Any | None:
    """The pixel-level per-region-overlap curve up to ``fpr_limit`` with its normalised area (None without masks)."""
    if scores.maps is None or scores.masks is None:
        return None
    curve = metrics.pro_curve(scores.masks, scores.maps, fpr_limit)
    if curve is None:
        return None
    plt = import_pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.2))
    fpr, pro = curve
    area = metrics.aupro(scores.masks, scores.maps, fpr_limit)
    ax.plot(fpr, pro, color="#a8321f", label=f"PRO (AUPRO {area:.3f}, FPR ≤ {fpr_limit:g})")
    ax.set(xlabel="false-positive rate (good pixels)", ylabel="per-region overlap", xlim=(0, fpr_limit),
           ylim=(0, 1.02), title="Pixel-level PRO curve")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def histogram_figure(scores: ScoredTestSet) -> Any:
    """Score histograms of good and defective images, with the threshold as a labelled vertical line."""
    plt = import_pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    bins = np.histogram_bin_edges(np.r_[scores.scores, scores.threshold], bins=30)
    ax.hist(scores.scores[scores.labels == 0], bins=bins, alpha=0.6, color="#2e8b57", label="good")
    ax.hist(scores.scores[scores.labels == 1], bins=bins, alpha=0.6, color="#c0392b", label="defective")
    ax.axvline(scores.threshold, color="black", linestyle="--", linewidth=1.5, label="threshold")
    ax.set(xlabel="image score", ylabel="test images", title=f"Scores against the threshold ({scores.threshold:.4g})")
    ax.legend()
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class DefectRow:
    """One defect type: images, image AUROC against every good image, recall at the threshold."""

    defect: str
    count: int
    image_auroc: float | None
    recall: float


def per_defect(scores: ScoredTestSet) -> list[DefectRow]:
    """One row per defect type (good images excluded), by name."""
    good = scores.labels == 0
    rows = []
    for defect in sorted({d for d, label in zip(scores.defects, scores.labels, strict=True) if label == 1}):
        mine = np.array([d == defect for d in scores.defects])
        both = good | mine
        rows.append(DefectRow(defect, int(mine.sum()),
                              metrics.image_auroc(scores.labels[both], scores.scores[both]),
                              float((scores.scores[mine] > scores.threshold).mean())))
    return rows


def confusion(scores: ScoredTestSet) -> dict[str, int]:
    """Counts at the threshold: defects caught and missed, good parts rejected and passed."""
    rejected = scores.scores > scores.threshold
    defective = scores.labels == 1
    return {"caught": int((rejected & defective).sum()), "missed": int((~rejected & defective).sum()),
            "false_alarms": int((rejected & ~defective).sum()), "passed": int((~rejected & ~defective).sum())}


def worst_cases(scores: ScoredTestSet, n: int = WORST_CASES) -> dict[str, list[int]]:
    """Indices of the lowest-scored defective images and the highest-scored good ones (whether or not past the
    threshold: the cases closest to being wrong when none is)."""
    defective, good = np.nonzero(scores.labels == 1)[0], np.nonzero(scores.labels == 0)[0]
    return {"missed": defective[np.argsort(scores.scores[defective], kind="stable")][:n].tolist(),
            "false_alarms": good[np.argsort(-scores.scores[good], kind="stable")][:n].tolist()}


def case_panel(detector: Detector, sample: Sample) -> np.ndarray:
    """Image | ground-truth outline | heat-map overlay, side by side (BGR), at the image's size (at most 320 px)."""
    image = sample.load_image()
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(1, int(image.max())))
    result = detector(image, anomaly_maps=True)
    outline = image.copy()
    mask = sample.load_mask(image.shape[:2]) if sample.has_mask_annotation else None
    if mask is not None and mask.any():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(outline, contours, -1, (0, 255, 0), max(1, image.shape[1] // 200))
    panel = cv2.hconcat([image, outline, overlay(image, result)])
    scale = min(1.0, 960 / panel.shape[1])
    return cv2.resize(panel, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else panel


def png_bytes(figure_or_image: Any) -> bytes:
    """PNG bytes of a matplotlib figure (closed afterwards) or a BGR image."""
    if isinstance(figure_or_image, np.ndarray):
        ok, data = cv2.imencode(".png", figure_or_image)
        if not ok:
            raise RdedgeError("could not encode a report image as PNG")
        return data.tobytes()
    buffer = io.BytesIO()
    figure_or_image.savefig(buffer, format="png", dpi=110)
    import_pyplot().close(figure_or_image)
    return buffer.getvalue()


def model_card(detector: Detector, evaluation: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, value) rows: what the model is, what it was trained on, how it scored here."""
    m = detector.metadata
    training = m.training
    data = training.get("category") or training.get("dataset") or training.get("data") or "?"
    length = (f"{training['epochs_run']} epochs" if training.get("epochs_run") else "") + (
        f", {training['optimiser_steps']} optimiser steps" if training.get("optimiser_steps") else "")

    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    return [("method", m.method), ("teacher", m.backbone), ("input size (h x w)", str(m.image_size)),
            ("precision", m.precision), ("runtime", detector.backend_name), ("training data", str(data)),
            ("training", f"{training.get('n_train', '?')} good images; {length.strip(', ') or '?'}; seed "
                         f"{training.get('seed', '?')}"),
            ("threshold (image score)", f"{detector.threshold:.5g} (calibrated: {m.calibration.rule_text}; "
                                        f"{m.calibration.source})"),
            *[(label, f(evaluation.get(k))) for k, label in (("image_auroc", "image AUROC"), ("pixel_auroc",
              "pixel AUROC"), ("aupro", "AUPRO (FPR ≤ 0.3)"), ("f1", "F1 at the threshold"))],
            ("test images", f"{evaluation['n_images']} ({evaluation['n_anomalous']} defective)")]


def write_report(detector: Detector, samples: Sequence[Sample], out: str | os.PathLike[str], *,
                 dataset_name: str = "", batch_size: int = 8, progress: bool = True,
                 n_worst: int = WORST_CASES) -> tuple[Path, dict[str, Any]]:
    """Evaluate ``detector`` on ``samples`` and write the report folder (``index.html`` and the PNG figures).

    The folder is written under a temporary name and renamed into place (an existing report is replaced only once
    the new one is complete).

    Returns:
        ``(index.html path, metrics)``; the metrics are :func:`sdk.evaluate.evaluate_detector`'s.
    """
    import_pyplot()  # fail before scoring when matplotlib is missing
    scores = score_test_set(detector, samples, batch_size=batch_size, progress=progress)
    evaluation = scores.metrics()
    figures = {"roc": roc_figure(scores), "pro": pro_figure(scores), "histogram": histogram_figure(scores)}
    images = {name: png_bytes(fig) for name, fig in figures.items() if fig is not None}
    cases = worst_cases(scores, n_worst)
    for kind, indices in cases.items():
        for rank, i in enumerate(indices, start=1):
            images[f"{kind}_{rank}"] = png_bytes(case_panel(detector, samples[i]))
    page = render_html(detector, scores, evaluation, images, cases, samples, dataset_name)
    out = Path(out)
    with atomic_folder(out) as staging:
        for name, data in images.items():
            (staging / f"{name}.png").write_bytes(data)
        (staging / "index.html").write_text(page, encoding="utf-8")
    return out / "index.html", evaluation


def render_html(detector: Detector, scores: ScoredTestSet, evaluation: dict[str, Any], images: dict[str, bytes],
                cases: dict[str, list[int]], samples: Sequence[Sample], dataset_name: str) -> str:
    """The report page: every image inline, nothing loaded from elsewhere."""

    def img(name: str, alt: str) -> str:
        data = base64.b64encode(images[name]).decode("ascii")
        return f'<img id="{name}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'

    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    e = html.escape
    card = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in model_card(detector, evaluation))
    defects = "".join(f"<tr><td>{e(r.defect)}</td><td>{r.count}</td><td>{f(r.image_auroc)}</td>"
                      f"<td>{r.recall:.0%}</td></tr>" for r in per_defect(scores))
    counts = confusion(scores)
    curves = img("roc", "image-level ROC curve") + (img("pro", "pixel-level PRO curve") if "pro" in images else
                                                    "<p>No pixel annotations: no PRO curve.</p>")
    worst = []
    titles = {
        "missed": (f"Top missed defects ({counts['missed']} missed; the lowest-scored defective images)"
                   if counts["missed"] else "No defect missed: the lowest-scored defective images"),
        "false_alarms": (f"Top false alarms ({counts['false_alarms']} good images rejected; the highest-scored)"
                         if counts["false_alarms"] else "No false alarm: the highest-scored good images"),
    }
    for kind, title in titles.items():
        worst.append(f'<h3 id="{kind}-title">{e(title)}</h3>')
        if not cases[kind]:
            worst.append("<p>None in this test set.</p>")
        for rank, i in enumerate(cases[kind], start=1):
            verdict = "rejected" if scores.scores[i] > scores.threshold else "passed"
            worst.append(f'<figure class="case">{img(f"{kind}_{rank}", samples[i].name)}<figcaption>'
                         f"{e(samples[i].name)}: score {scores.scores[i]:.4g} ({verdict}); image | ground truth "
                         "(green) | heat map</figcaption></figure>")
    title = f"rdedge evaluation: {detector.metadata.method} on {dataset_name or 'the test set'}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.2em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}
.figures img {{ max-width: 49%; }} .case img {{ max-width: 100%; }} figure {{ margin: 0.5em 0 1em; }}
</style></head>
<body>
<h1>{e(title)}</h1>
<p>{e(datetime.datetime.now().isoformat(timespec="seconds"))}; model <code>{e(str(detector.backend.path))}</code>.</p>
<h2>Model card</h2>
<table id="model-card">{card}</table>
<h2>Curves</h2>
<div class="figures">{curves}</div>
<h2>Scores against the threshold</h2>
{img("histogram", "score histograms with the threshold")}
<h2>At the threshold</h2>
<table id="confusion"><tr><th></th><th>rejected</th><th>passed</th></tr>
<tr><th>defective</th><td>{counts["caught"]} caught</td><td>{counts["missed"]} missed</td></tr>
<tr><th>good</th><td>{counts["false_alarms"]} false alarms</td><td>{counts["passed"]} passed</td></tr></table>
<h2>By defect type</h2>
<table id="defects"><tr><th>defect</th><th>images</th><th>image AUROC (vs good)</th><th>recall at threshold</th></tr>
{defects}</table>
<h2>Worst cases</h2>
{"".join(worst)}
</body></html>
"""

"""``rdedge evaluate --report``: the report of a real bottle model, checked in its files and in headless Chromium
(Debian's ``chromium``, driven by Playwright) as a person opens it, from disk. Screenshots are kept in
``test-artifacts/`` (``$RDEDGE_TEST_ARTIFACTS``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from rdedge.main import main
from sdk import Detector
from sdk.datasets import load_dataset
from sdk.evaluate import score_test_set
from tests.conftest import ARTIFACTS


@pytest.fixture(scope="module")
def report(tiny_run, bottle_subset, tmp_path_factory) -> tuple[Path, dict]:
    """The tiny bottle model's report on the real bottle test subset, written by the command → (index.html, the
    metrics of the same model on the same images)."""
    out = tmp_path_factory.mktemp("report") / "bottle"
    assert main(["evaluate", str(tiny_run[0]), "--data", str(bottle_subset.parent), "--category", "bottle",
                 "--report", str(out), "--quiet"]) == 0
    detector = Detector(tiny_run[1].path)
    metrics = score_test_set(detector, load_dataset(str(bottle_subset.parent), "bottle").test, progress=False).metrics()
    return out / "index.html", metrics


def test_report_files_hold_every_part_and_nothing_from_elsewhere(report):
    page, metrics = report
    folder = page.parent
    names = sorted(p.name for p in folder.iterdir())
    assert {"index.html", "roc.png", "pro.png", "histogram.png", "missed_1.png", "false_alarms_1.png"} <= set(names)
    assert not [n for n in names if n.startswith(".")]  # written whole, no staging left
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["'](?!data:)""", text)  # every image inline; no link to anywhere
    assert "<script" not in text and "<link" not in text and "@import" not in text
    assert f"{metrics['image_auroc']:.4f}" in text and f"{metrics['pixel_auroc']:.4f}" in text
    assert "broken_large" in text and "contamination" in text


def test_report_figures_draw_what_they_say(tiny_run, bottle_subset):
    from sdk.report import confusion, histogram_figure, per_defect, pro_figure, worst_cases

    detector = Detector(tiny_run[1].path)
    scores = score_test_set(detector, load_dataset(str(bottle_subset.parent), "bottle").test, progress=False)
    figure = histogram_figure(scores)
    (line,) = [ln for ln in figure.axes[0].lines if ln.get_label() == "threshold"]
    assert list(line.get_xdata()) == [detector.threshold, detector.threshold]
    heights = [sum(p.get_height() for p in c.patches) for c in figure.axes[0].containers]
    assert heights == [(scores.labels == 0).sum(), (scores.labels == 1).sum()]  # every image in its histogram
    pro = pro_figure(scores)
    (curve,) = pro.axes[0].lines
    assert curve.get_xdata()[-1] == pytest.approx(0.3) and "AUPRO" in curve.get_label()
    counts = confusion(scores)
    assert sum(counts.values()) == len(scores.labels) == 10
    assert counts["caught"] + counts["missed"] == 6
    rows = {r.defect: r for r in per_defect(scores)}
    assert set(rows) == {"broken_large", "contamination"} and rows["broken_large"].count == 3
    cases = worst_cases(scores, 2)
    assert all(scores.labels[i] == 1 for i in cases["missed"]) and all(scores.labels[i] == 0
                                                                       for i in cases["false_alarms"])
    assert scores.scores[cases["missed"][0]] == scores.scores[scores.labels == 1].min()
    assert scores.scores[cases["false_alarms"][0]] == scores.scores[scores.labels == 0].max()


def test_report_opens_from_disk_in_chromium_with_its_curves_rendered_and_no_network(report, browser):
    page_path, metrics = report
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(page_path.as_uri())
    images = page.evaluate("Array.from(document.images).map(i => [i.id, i.complete, i.naturalWidth, "
                           "i.getBoundingClientRect().width])")
    rendered = {name: (complete and width > 0 and shown > 0) for name, complete, width, shown in images}
    assert {"roc", "pro", "histogram", "missed_1", "false_alarms_1"} <= set(rendered) and all(rendered.values())
    assert all(url.startswith(("file:", "data:")) for url in requests), requests  # nothing outside the machine
    confusion = page.locator("#confusion").inner_text()
    assert "caught" in confusion and "false alarms" in confusion
    card = page.locator("#model-card").inner_text()
    assert "rd4ad" in card and "efficientnet_lite0" in card and f"{metrics['image_auroc']:.4f}" in card
    assert page.locator("#defects tr").count() == 3  # header + broken_large + contamination
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    import cv2

    pixels = cv2.imread(str(shot))
    assert pixels.shape[0] > 2000 and np.std(pixels) > 20  # a long page with figures on it, not a blank one
    page.close()

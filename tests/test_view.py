"""``rdedge view``: the live page on a real bottle model and a bottle video, used as a person would, in headless
Chromium (Debian's ``chromium`` driven by Playwright): frames shown, counters advancing, a threshold changed from the
page changing the verdicts at once, an image uploaded and scored. Screenshots are kept in ``test-artifacts/``."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.soak import bottle_frames, write_video
from sdk import Detector
from sdk.view import BOUNDARY, THUMBNAIL_SIDE, LineView, jpeg
from tests.conftest import ARTIFACTS, wait_until
from tests.triton_server import free_ports


@pytest.fixture(scope="module")
def video(bottle_subset: Path, tmp_path_factory) -> Path:
    return write_video(bottle_frames(bottle_subset, 128), tmp_path_factory.mktemp("view") / "bottle.avi", 24)


@pytest.fixture(scope="module")
def live(tiny_onnx: Path, video: Path):
    """The view of the tiny bottle model on the looping bottle video, served by uvicorn on 127.0.0.1."""
    import uvicorn

    view = LineView(Detector(tiny_onnx), video, loop=True).start()
    port = free_ports(1)[0]
    server = uvicorn.Server(uvicorn.Config(view.app(), host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_until(lambda: server.started, 20)
    yield view, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    view.stop()


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def post(url: str, data: bytes, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_mjpeg_stream_sends_decodable_annotated_frames_of_the_model_size_or_larger(live, video):
    _, base = live
    parts = []
    with urllib.request.urlopen(f"{base}/stream/0.mjpg", timeout=10) as response:
        assert response.headers["Content-Type"] == f"multipart/x-mixed-replace; boundary={BOUNDARY}"
        buffer = b""
        while len(parts) < 5:
            buffer += response.read1(65536)
            while b"\r\n\r\n" in buffer:
                head, rest = buffer.split(b"\r\n\r\n", 1)
                length = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.startswith(b"Content-Length")))
                if len(rest) < length + 2:
                    break
                parts.append(rest[:length])
                buffer = rest[length + 2 :]
    height, width = cv2.VideoCapture(str(video)).read()[1].shape[:2]
    for part in parts:
        frame = cv2.imdecode(np.frombuffer(part, np.uint8), cv2.IMREAD_COLOR)
        assert frame.shape == (height, width, 3)  # the overlay at the video's size
    view, _ = live
    sequence, _ = view.frame(0)
    later = view.frame(0, after=sequence, timeout=5)
    assert later is not None and later[0] > sequence  # the stream waits for a newer frame: none is sent twice
    assert view.served["frames"] >= len(parts)  # what the pages were sent is counted


def test_reject_thumbnails_are_drawn_when_first_asked_for_and_then_kept(tiny_onnx: Path, video: Path):
    detector = Detector(tiny_onnx)
    detector.threshold = -1e9  # every frame a reject
    view = LineView(detector, video, loop=True).start()
    try:
        assert wait_until(lambda: view.counters["rejects"] >= 3, 20)
    finally:
        view.stop()
    pending = [r for r in view.rejects if r.result is not None]
    assert pending  # the frames not shown on the page: kept small and undrawn until a page asks for them
    reject = pending[-1]
    bare = cv2.imdecode(np.frombuffer(jpeg(reject.picture), np.uint8), cv2.IMREAD_COLOR)
    data = view.reject_thumbnail(reject.number)
    picture = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    side = max(cv2.VideoCapture(str(video)).read()[1].shape[:2])
    assert picture is not None and max(picture.shape[:2]) == min(side, THUMBNAIL_SIDE)  # shrunk, never enlarged
    assert np.abs(picture.astype(int) - bare.astype(int)).mean() > 1.0  # the heat map blended in on request
    assert reject.result is None  # its result released once drawn
    assert view.reject_thumbnail(reject.number) is data  # encoded once, then served as kept
    assert view.reject_thumbnail(-1) is None  # not kept: None, the route answers 404


def test_the_view_scores_every_frame_but_sends_at_most_its_display_rate(tiny_onnx: Path, video: Path):
    view = LineView(Detector(tiny_onnx), video, loop=True, display_fps=4.0).start()
    try:
        assert wait_until(lambda: view.frame(0, timeout=0.1) is not None, 20)
        first_frames, (first_shown, _) = view.counters["frames"], view.frame(0)
        started = time.monotonic()
        time.sleep(2.0)
        shown = view.frame(0)[0] - first_shown
        frames = view.counters["frames"] - first_frames
        elapsed = time.monotonic() - started
    finally:
        view.stop()
    assert 1 <= shown <= 4.0 * elapsed + 1
    assert frames > shown * 2  # the tiny model scores far more than 4 frames a second: only the shown are capped


@pytest.mark.parametrize("bad", [0, -3, float("inf"), float("nan"), "fast"])
def test_the_view_refuses_a_display_rate_that_is_not_above_zero(tiny_onnx: Path, video: Path, bad):
    with pytest.raises(ValueError, match="display rate"):
        LineView(Detector(tiny_onnx), video, display_fps=bad)


def test_the_api_refuses_bad_thresholds_and_uploads_with_a_message(live):
    view, base = live
    before = view.detector.threshold
    for bad in (b'{"threshold": "high"}', b'{"threshold": null}', b"not json", b'{"threshold": 1e999}'):
        status, answer = post(f"{base}/api/threshold", bad, "application/json")
        assert status == 400 and "threshold" in answer["error"], (bad, answer)
    assert view.detector.threshold == before
    status, answer = post(f"{base}/api/score", b"\x89PNG broken", "application/octet-stream")
    assert status == 400 and "not an image" in answer["error"]


def test_the_live_page_in_chromium_shows_frames_counts_and_takes_a_threshold_and_an_upload(live, browser,
                                                                                          bottle_subset, tiny_onnx):
    view, base = live
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(base + "/")
    page.wait_for_function("parseInt(document.getElementById('frames').textContent) > 0", timeout=20000)
    first = int(page.locator("#frames").inner_text())
    page.wait_for_function(f"parseInt(document.getElementById('frames').textContent) > {first + 5}", timeout=20000)
    assert page.evaluate("document.getElementById('live-0').naturalWidth") > 0  # the MJPEG stream is drawn

    low = get_json(f"{base}/api/state")["last"][0]["score"] / 10.0
    page.fill("#threshold", f"{low:.6g}")
    page.click("#apply")
    page.wait_for_function(f"Math.abs(parseFloat(document.getElementById('threshold-value').textContent) - {low}) "
                           f"< {low} * 1e-4")  # the new value shown
    assert view.detector.threshold == pytest.approx(low, rel=1e-5)  # applied at once
    page.wait_for_function("document.querySelector('#last-0 .ANOMALY') !== null", timeout=20000)
    rejects = int(page.locator("#rejects-count").inner_text())
    page.wait_for_function(f"parseInt(document.getElementById('rejects-count').textContent) > {rejects}")
    page.wait_for_function("document.querySelectorAll('#rejects img').length > 0")
    assert view.state()["threshold_log"][-1]["to"] == pytest.approx(low, rel=1e-5)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "view.png"), full_page=True)

    page.fill("#threshold", "1e6")
    page.click("#apply")
    page.wait_for_function("document.querySelector('#last-0 .OK') !== null", timeout=20000)  # verdicts follow
    frozen = int(page.locator("#rejects-count").inner_text())
    time.sleep(1.0)
    assert int(page.locator("#rejects-count").inner_text()) == frozen  # nothing above 1e6: no new rejects

    image = sorted((bottle_subset / "test" / "broken_large").glob("*.png"))[0]
    page.set_input_files("#upload", str(image))
    page.wait_for_function("document.getElementById('upload-result').textContent.startsWith('score')")
    expected = Detector(tiny_onnx)(str(image)).score
    assert float(page.locator("#upload-result").inner_text().split()[1]) == pytest.approx(expected, rel=1e-3)
    assert page.evaluate("document.getElementById('upload-overlay').naturalWidth") > 0
    assert all(url.startswith(base) or url.startswith("data:") for url in requests), requests  # nowhere else
    page.close()

"""Streams: real video files and real loopback network cameras (MJPEG over HTTP, RTSP with RTP/JPEG, on 127.0.0.1)
through ``Detector.stream``; reconnection, frame accounting, batching across sources, overlays, clean stop, threads."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks.soak import bottle_frames, soak, write_video
from sdk import Backoff, Detector, SourceError, SourceOpenTimeout
from sdk import sources as sources_module
from sdk.capture_process import ProcessCapture, capture_processes
from sdk.image import list_images
from sdk.reader import FrameReader
from sdk.sources import blocked_opens, csi_pipeline, describe, is_live, open_within, usb_pipeline
from sdk.stream import Stream

from .conftest import REPO, wait_until
from .loopback import MjpegServer
from .rtsp_server import RtspServer


@pytest.fixture(scope="module")
def det(tiny_onnx: Path) -> Detector:
    return Detector(tiny_onnx)


@pytest.fixture(scope="module")
def frames(bottle_subset: Path) -> list[np.ndarray]:
    return bottle_frames(bottle_subset, 96)


@pytest.fixture(scope="module")
def video(frames, tmp_path_factory) -> Path:
    return write_video(frames, tmp_path_factory.mktemp("video") / "bottle.avi", 24)


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("rdedge-reader")]


def decoded(video: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    out = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return out
        out.append(frame)


def test_every_frame_mode_scores_each_frame_in_order_like_single_calls(det: Detector, video: Path):
    with det.stream(video) as stream:  # a file: every-frame mode by default
        results = list(stream)
    expected = det.predict_batch(decoded(video))
    assert [r.frame_index for r in results] == list(range(24))
    assert {r.source_id for r in results} == {str(video)}
    np.testing.assert_allclose([r.score for r in results], [e.score for e in expected], rtol=1e-5)
    assert all(r.latency_ms > 0 and r.dropped == 0 for r in results)
    assert [r.timestamp for r in results] == sorted(r.timestamp for r in results)
    stats = stream.stats[0]
    assert (stats.read, stats.processed, stats.dropped, stats.finished) == (24, 24, 0, True)
    assert not reader_threads()


def test_latest_frame_mode_drops_frames_and_counts_every_one(det: Detector, video: Path):
    with det.stream(video, mode="latest") as stream:
        results = list(stream)
    stats = stream.stats[0]
    assert stats.read == 24 and stats.read == stats.processed + stats.dropped
    assert stats.processed == len(results) >= 1
    indices = [r.frame_index for r in results]
    assert indices == sorted(set(indices))
    assert not reader_threads()


def test_leaving_the_loop_early_stops_the_reader_and_accounts_the_rest(det: Detector, video: Path):
    with det.stream(video) as stream:
        for i, _ in enumerate(stream):
            if i == 2:
                break
    assert not reader_threads()
    stats = stream.stats[0]
    assert stats.processed == 3 and stats.read == stats.processed + stats.dropped


def test_an_exception_in_line_code_still_stops_the_stream(det: Detector, video: Path):
    with pytest.raises(KeyError), det.stream(video) as stream:
        for _ in stream:
            raise KeyError("line code failed")
    assert not reader_threads()


def test_max_frames_and_overlays(det: Detector, video: Path):
    with det.stream(video, max_frames=5, overlay=True) as stream:
        results = list(stream)
    assert len(results) == 5
    for r in results:
        assert r.overlay is not None and r.overlay.shape == r.frame.shape and r.overlay.dtype == np.uint8
        assert np.abs(r.overlay.astype(int) - r.frame.astype(int)).mean() > 1.0  # heat map drawn
    with det.stream(video, max_frames=1) as stream:
        plain = next(iter(stream))
    assert plain.overlay is None and plain.frame is None  # only when asked


def test_several_sources_share_one_inference_call(det: Detector, video: Path, frames, tmp_path: Path):
    other = write_video(frames[::-1], tmp_path / "other.avi", 10)
    batch_sizes = []
    infer = det.backend.infer

    def spy(batch):  # records the batch size, then runs the real backend
        batch_sizes.append(len(batch))
        return infer(batch)

    det.backend.infer = spy
    try:
        with det.stream([video, other]) as stream:
            results = list(stream)
    finally:
        det.backend.infer = infer
    by_source = {s: [r.frame_index for r in results if r.source_id == s] for s in (str(video), str(other))}
    assert by_source == {str(video): list(range(24)), str(other): list(range(10))}
    assert max(batch_sizes) == 2 and sum(batch_sizes) == 34


class _ScriptedCapture:
    """Stands in for ``cv2.VideoCapture`` at the ``opener`` seam, to deliver frames no real camera file holds."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = list(frames)

    def isOpened(self) -> bool:  # OpenCV's name
        return True

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def release(self) -> None:
        pass


def test_unusable_frames_are_skipped_counted_and_never_stop_the_stream(det: Detector, frames, video: Path):
    script = [frames[0], np.zeros((0, 0, 3), np.uint8), frames[1], np.full((8, 8, 3), np.nan, np.float32),
              np.zeros((4, 4, 3), np.int64), frames[2]]
    with Stream(det, video, mode="every", opener=lambda _: _ScriptedCapture(script)) as stream:
        results = list(stream)
    assert [r.frame_index for r in results] == [0, 2, 5]
    stats = stream.stats[0]
    assert (stats.read, stats.processed, stats.invalid, stats.dropped) == (6, 3, 3, 3)
    assert all(np.isfinite(r.score) for r in results)


class _BlockingOpen:
    """Stands in for a capture library's open that blocks until ``gate`` is set (as OpenCV's GStreamer open can:
    ``tests/gstreamer_checks.py`` shows it with the real library), then returns a capture that records its
    release."""

    def __init__(self, frames: list[np.ndarray] | None = None) -> None:
        self.gate = threading.Event()
        self.capture = _ScriptedCapture(frames or [])
        self.released = threading.Event()
        self.capture.release = self.released.set
        self.calls = 0

    def __call__(self) -> _ScriptedCapture:
        self.calls += 1
        self.gate.wait()
        return self.capture


def test_an_opening_that_blocks_is_given_up_in_time_and_released_when_it_returns():
    blocking = _BlockingOpen()
    started = time.monotonic()
    with pytest.raises(SourceOpenTimeout, match=r"'cam' did not finish within 0\.2 s"):
        open_within(blocking, 0.2, "cam")
    assert 0.2 <= time.monotonic() - started < 2.0
    assert [name.split(" ")[0] for name in blocked_opens()] == ["cam"]
    blocking.gate.set()  # the library returns at last: nobody wants the capture any more
    assert blocking.released.wait(5.0) and wait_until(lambda: not blocked_opens())


def test_an_opening_in_time_returns_its_capture_or_its_error():
    blocking = _BlockingOpen()
    blocking.gate.set()
    assert open_within(blocking, 5.0, "cam") is blocking.capture and not blocking.released.is_set()

    def refused():
        raise ConnectionRefusedError("refused")

    with pytest.raises(ConnectionRefusedError):
        open_within(refused, 5.0, "cam")
    assert not blocked_opens()


def test_no_new_opening_starts_while_too_many_are_blocked(monkeypatch):
    monkeypatch.setattr(sources_module, "MAX_BLOCKED_OPENS", 1)
    first, second = _BlockingOpen(), _BlockingOpen()
    with pytest.raises(SourceOpenTimeout):
        open_within(first, 0.1, "cam")
    second.gate.set()
    with pytest.raises(SourceError, match="1 earlier openings are still blocked"):
        open_within(second, 5.0, "cam")  # refused at once, without calling the library
    assert second.calls == 0
    first.gate.set()
    assert wait_until(lambda: not blocked_opens())
    assert open_within(second, 5.0, "cam") is second.capture


def test_a_reconnection_whose_opening_blocks_goes_on_with_the_next_attempt(frames):
    """The stream seen in CI: the camera restarted, one reopening blocked for ever, the reader waited with it."""
    first, stuck, back = _BlockingOpen(frames[:3]), _BlockingOpen(), _BlockingOpen(frames[3:6])
    first.gate.set()
    back.gate.set()
    attempts = iter([first, stuck, back])
    reader = FrameReader("rtsp://camera.local/stream", mode="every", live=True,
                         backoff=Backoff(initial_s=0.01, max_attempts=5),
                         opener=lambda source: open_within(next(attempts), 0.3, describe(source)))
    reader.start()
    taken = []

    def six_taken() -> bool:
        if (frame := reader.take()) is not None:
            taken.append(frame.index)
        return len(taken) == 6

    assert wait_until(six_taken)
    reader.stop()
    assert taken == list(range(6)) and reader.stats.reconnects == 1
    stuck.gate.set()
    assert stuck.released.wait(5.0) and wait_until(lambda: not blocked_opens())


def test_a_first_opening_that_blocks_raises_source_open_timeout(det: Detector):
    blocking = _BlockingOpen()
    with pytest.raises(SourceOpenTimeout, match=r"cannot open video source 'rtsp://cam/1': .* within 0\.2 s"):
        det.stream("rtsp://cam/1", opener=lambda source: open_within(blocking, 0.2, describe(source))).start()
    blocking.gate.set()
    assert blocking.released.wait(5.0)


def test_sources_that_cannot_be_opened_raise_source_error(det: Detector, tmp_path: Path):
    with pytest.raises(SourceError, match="not found"):
        det.stream(tmp_path / "missing.mp4")
    not_a_video = tmp_path / "notes.avi"
    not_a_video.write_text("not a video")
    with pytest.raises(SourceError, match="cannot open"), det.stream(not_a_video):
        pass
    assert not reader_threads()


def test_unavailable_camera_url_and_pipeline_say_why(det: Detector):
    import glob

    from sdk.sources import opencv_has_gstreamer

    if not glob.glob("/dev/video*"):
        with pytest.raises(SourceError, match="no camera at index 7"):
            det.stream(7).start()
    with pytest.raises(SourceError, match="unreachable"):
        det.stream("http://127.0.0.1:9/none.mjpg").start()  # port 9 (discard): connection refused
    if not opencv_has_gstreamer():
        with pytest.raises(SourceError, match="without GStreamer"):
            det.stream(usb_pipeline()).start()
    assert not reader_threads()


def test_source_kinds_and_pipelines():
    assert is_live(0) and is_live("0") and is_live("rtsp://10.0.0.5/stream") and is_live(usb_pipeline())
    assert not is_live("line3/part.mp4")
    assert describe(0) == describe("0") == "camera:0"  # the CLI's "0" is camera 0, in results and logs alike
    assert describe("rtsp://user:secret@10.0.0.5:554/s") == "rtsp://***@10.0.0.5:554/s"
    csi = csi_pipeline(sensor_id=1, width=1280, height=720, fps=60, output_width=640, output_height=360)
    assert csi.startswith("nvarguscamerasrc sensor-id=1 !") and "memory:NVMM" in csi
    assert "framerate=(fraction)60/1" in csi and "width=(int)640, height=(int)360, format=(string)BGRx" in csi
    assert csi.endswith("appsink drop=true max-buffers=1 sync=false")
    usb = usb_pipeline("/dev/video2", 1920, 1080, 30, mjpeg=True)
    assert usb.startswith("v4l2src device=/dev/video2 ! image/jpeg") and "jpegdec" in usb
    assert "format=(string)BGR" in usb


# ------------------------------------------------------------------------------ loopback network stream


@pytest.mark.parametrize("isolate", [False, True], ids=["in_process", "isolated"])
@pytest.mark.parametrize("server", [MjpegServer, RtspServer], ids=["http_mjpeg", "rtsp"])
def test_live_stream_reconnects_after_the_source_is_killed_and_restarted(det: Detector, frames, server, isolate):
    camera = server(frames)
    camera.start()
    results = []
    try:
        with det.stream(camera.url, backoff=Backoff(initial_s=0.1, max_s=0.5), isolate=isolate) as stream:
            assert stream.readers[0].mode == "latest"
            killed_at = restarted = None
            deadline = time.monotonic() + 60
            for item in stream:
                results.append(item)
                if killed_at is None and len(results) == 5:
                    camera.kill()
                    killed_at = len(results)
                    time.sleep(1.0)  # down for a while: the reader fails and retries with back-off
                    camera.start()
                    restarted = True
                if restarted and stream.stats[0].reconnects >= 1 and len(results) >= killed_at + 5:
                    break
                assert time.monotonic() < deadline, "stream did not resume"
    finally:
        if camera.server is not None:
            camera.kill()
    stats = stream.stats[0]
    assert stats.reconnects >= 1
    indices = [r.frame_index for r in results]
    assert indices == sorted(set(indices))  # none lost from the list, none repeated, counting on after reconnect
    assert len(results) >= killed_at + 5 and stats.processed == len(results)
    assert stats.read == stats.processed + stats.dropped
    assert not reader_threads() and not capture_processes()


# ------------------------------------------------------------------------------- isolated capture


def test_isolated_capture_gives_the_frames_of_a_direct_read_and_ends_its_process(video: Path):
    capture = ProcessCapture(video)
    assert capture.isOpened() and capture_processes() == [capture.pid]
    frames = []
    while (frame := capture.read())[0]:
        frames.append(frame[1])
    direct = decoded(video)
    assert len(frames) == len(direct) == 24
    assert all(np.array_equal(a, b) for a, b in zip(frames, direct, strict=True))
    capture.release()
    capture.release()  # twice is fine
    assert not capture.isOpened() and capture.read() == (False, None) and not capture_processes()
    assert not ProcessCapture(video.with_name("missing.avi")).isOpened() and not capture_processes()


def test_isolated_capture_notices_a_source_that_hangs(frames):
    camera = MjpegServer(frames)
    camera.start()
    try:
        capture = ProcessCapture(camera.url, read_timeout_s=0.5)
        assert capture.read()[0]
        camera.paused = True  # connection open, nothing sent: a read in-process would wait for FFmpeg's time-out
        time.sleep(0.3)
        started = time.monotonic()
        while capture.read()[0]:  # the frames already in the pipe, then the time-out
            pass
        assert time.monotonic() - started < 2.0  # FFmpeg's own read time-out is 5 s
        assert not capture.isOpened() and capture.read() == (False, None)  # failed for good: reopen instead
        capture.release()
    finally:
        camera.kill()
    assert not capture_processes()


def test_isolated_capture_ends_when_its_parent_dies(frames):
    """A parent killed outright (no clean-up runs) while its child waits inside a read: the child must not stay
    behind holding the camera. FFmpeg's read time-out (5 s) would end it later; Linux ends it at once."""
    camera = MjpegServer([cv2.resize(f, (32, 32)) for f in frames[:4]], fps=5)  # small and slow: the pipe never fills
    camera.start()
    script = ("import time; from sdk.capture_process import ProcessCapture; "
              f"c = ProcessCapture({camera.url!r}); print(c.pid if c.isOpened() else -1, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        child = int(parent.stdout.readline())
        assert child > 0 and process_state(child) != "gone"
        camera.paused = True  # the child now waits inside OpenCV's read
        time.sleep(0.5)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 2.5
        while process_state(child) not in ("gone", "zombie") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_state(child) in ("gone", "zombie"), "the capture process outlived its parent"
    finally:
        parent.kill()
        camera.kill()


def process_state(pid: int) -> str:
    """``running`` (or sleeping), ``zombie`` (ended, not yet reaped) or ``gone``."""
    try:
        state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State"))
    except (OSError, StopIteration):
        return "gone"
    return "zombie" if "Z" in state.split(":", 1)[1] else "running"


def test_isolate_and_opener_do_not_go_together(det: Detector, video: Path):
    with pytest.raises(ValueError, match="give no opener"):
        det.stream(video, isolate=True, opener=ProcessCapture)


def test_a_live_source_that_stays_down_is_given_up_after_max_attempts(det: Detector, frames):
    camera = MjpegServer(frames)
    camera.start()
    with det.stream(camera.url, backoff=Backoff(initial_s=0.05, max_s=0.1, max_attempts=3)) as stream:
        results = []
        for item in stream:
            results.append(item)
            if len(results) == 2:
                camera.kill()
    assert len(results) >= 2
    stats = stream.stats[0]
    assert stats.finished and "gave up after 3" in stats.error and stats.read == stats.processed + stats.dropped


# ------------------------------------------------------------------------------------- threads, soak


def test_one_detector_from_several_threads_matches_one_thread(det: Detector, bottle_subset: Path):
    paths = list_images(bottle_subset / "test" / "good")[:3] + list_images(bottle_subset / "test" / "broken_large")[:3]
    images = [cv2.imread(str(p)) for p in paths] * 4
    sequential = [det(image) for image in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        parallel = list(pool.map(det, images))
    for a, b in zip(sequential, parallel, strict=True):
        assert a.score == b.score and a.is_anomaly == b.is_anomaly
        np.testing.assert_array_equal(a.anomaly_map, b.anomaly_map)


def test_short_soak_accounts_for_every_frame(det: Detector, frames, tmp_path: Path):
    video = write_video(frames, tmp_path / "soak.avi", 300)
    every = soak(det, video, mode="every", warmup=50)
    assert every["accounted"] and every["processed"] == every["results"] == every["read"] == 300
    assert every["frame_indices_increasing"] and every["rss_growth_mb"] is not None
    latest = soak(det, video, mode="latest", warmup=0)
    assert latest["accounted"] and latest["read"] == 300 and latest["results"] == latest["processed"]
    isolated = soak(det, video, mode="every", warmup=50, isolate=True)
    assert isolated["accounted"] and isolated["processed"] == isolated["read"] == 300
    assert isolated["rss_warm_mb"] > every["rss_warm_mb"] + 20  # the child (Python, numpy, OpenCV) is counted

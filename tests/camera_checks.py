"""Camera checks that need a real V4L2 device: run inside the VM of :mod:`tests.camera_vm` by ``test_camera.py``.

Not collected on its own (the name does not start with ``test_``): ``test_camera.py`` boots the VM, where the
kernel's ``vivid`` driver provides ``/dev/video0``, and runs this file there with pytest, once with the project's
environment (PyPI OpenCV: V4L2, no GStreamer) and once with Debian's OpenCV (V4L2 and GStreamer 1.22), then reads
the JUnit reports. ``RDEDGE_TEST_MODEL`` names the exported ONNX model to use; ``RDEDGE_VM_OUT``, if set, a folder
that receives a JSON record per check (what the outer test reports).

The camera's drop-out is vivid's "Disconnect" control, which makes the driver act as a USB camera that was
unplugged: the device node stops answering (``ENODEV``) and comes back once every handle to it is closed, as a
re-plugged camera would.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from sdk import Backoff, Detector
from sdk.sources import blocked_opens, csi_pipeline, opencv_has_gstreamer, usb_pipeline

from .rtsp_server import RtspServer

DEVICE = "/dev/video0"
FAST_BACKOFF = Backoff(initial_s=0.1, factor=2.0, max_s=0.5, max_attempts=60)  # gives up after ~30 s
needs_gstreamer = pytest.mark.skipif(not opencv_has_gstreamer(), reason="this OpenCV is built without GStreamer")


# ------------------------------------------------------------------------------------------- V4L2 controls


class QueryCtrl(ctypes.Structure):
    """``struct v4l2_queryctrl`` (linux/videodev2.h)."""

    _fields_ = [("id", ctypes.c_uint32), ("type", ctypes.c_uint32), ("name", ctypes.c_char * 32),
                ("minimum", ctypes.c_int32), ("maximum", ctypes.c_int32), ("step", ctypes.c_int32),
                ("default_value", ctypes.c_int32), ("flags", ctypes.c_uint32), ("reserved", ctypes.c_uint32 * 2)]


class Control(ctypes.Structure):
    """``struct v4l2_control``."""

    _fields_ = [("id", ctypes.c_uint32), ("value", ctypes.c_int32)]


def _iowr(number: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (ord("V") << 8) | number


VIDIOC_S_CTRL = _iowr(28, ctypes.sizeof(Control))
VIDIOC_QUERYCTRL = _iowr(36, ctypes.sizeof(QueryCtrl))
V4L2_CTRL_FLAG_NEXT_CTRL = 0x80000000


def control_ids(device: str = DEVICE) -> dict[str, int]:
    """The device's controls, name to id (enumerated with ``VIDIOC_QUERYCTRL`` and ``V4L2_CTRL_FLAG_NEXT_CTRL``)."""
    found: dict[str, int] = {}
    fd = os.open(device, os.O_RDWR)
    try:
        query = QueryCtrl(id=V4L2_CTRL_FLAG_NEXT_CTRL)
        while True:
            try:
                fcntl.ioctl(fd, VIDIOC_QUERYCTRL, query)
            except OSError:
                return found
            found[query.name.decode()] = query.id
            query = QueryCtrl(id=query.id | V4L2_CTRL_FLAG_NEXT_CTRL)
    finally:
        os.close(fd)


def unplug(device: str = DEVICE) -> None:
    """Simulate a USB unplug of the vivid camera (its "Disconnect" button control)."""
    disconnect = control_ids(device)["Disconnect"]
    fd = os.open(device, os.O_RDWR)
    try:
        fcntl.ioctl(fd, VIDIOC_S_CTRL, Control(id=disconnect, value=1))
    finally:
        os.close(fd)  # the device returns once every handle is closed, ours included


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def det() -> Detector:
    model = os.environ.get("RDEDGE_TEST_MODEL")
    if not model:
        pytest.fail("RDEDGE_TEST_MODEL must name an exported model (set by test_camera.py)", pytrace=False)
    return Detector(model)


@pytest.fixture
def camera() -> str:
    """The V4L2 device; a check that needs it fails (never skips) without it."""
    if not Path(DEVICE).exists():
        pytest.fail(f"{DEVICE} is missing: run this file inside the VM (tests/camera_vm.py)", pytrace=False)
    return DEVICE


def record(name: str, **values: object) -> None:
    """Keep what a check saw, for the outer test's report."""
    out = os.environ.get("RDEDGE_VM_OUT")
    if out:
        values = {"check": name, "python": sys.executable, "opencv": cv2.__version__, **values}
        with open(Path(out) / "records.jsonl", "a") as f:
            f.write(json.dumps(values) + "\n")


def stream_and_unplug(det: Detector, source: int | str, unplug_after: int = 3, resume_for: int = 3,
                      **options: object):
    """Stream from the camera, unplug it after ``unplug_after`` results and go on until it has come back."""
    results = []
    deadline = time.monotonic() + 60
    with det.stream(source, backoff=FAST_BACKOFF, **options) as stream:
        for item in stream:
            results.append(item)
            if len(results) == unplug_after:
                unplug()
            if stream.stats[0].reconnects >= 1 and len(results) >= unplug_after + resume_for:
                break
            assert time.monotonic() < deadline, f"stream did not resume: {stream.stats[0]}"
    return results, stream.stats[0]


def check_results(results, stats, source_id: str, shape: tuple[int, int]) -> None:
    indices = [r.frame_index for r in results]
    assert indices == sorted(set(indices)), "frame indices must increase, none repeated"
    assert all(r.source_id == source_id for r in results)
    assert all(np.isfinite(r.score) and r.latency_ms > 0 for r in results)
    assert all(r.result.input_size == shape for r in results)
    assert stats.processed == len(results) and stats.read == stats.processed + stats.dropped


# --------------------------------------------------------------------------------------------- camera index


def test_camera_index_streams_results(det: Detector, camera: str):
    with det.stream(0, max_frames=6, keep_frames=True) as stream:
        results = list(stream)
    assert len(results) == 6 and stream.readers[0].mode == "latest"
    height, width, channels = results[0].frame.shape  # what the backend negotiated (vivid offers up to 4K)
    assert channels == 3
    check_results(results, stream.stats[0], "camera:0", (height, width))
    timestamps = [r.timestamp for r in results]
    assert timestamps == sorted(timestamps)
    record("camera index", frames=len(results), resolution=f"{width}x{height}", dropped=stream.stats[0].dropped,
           mean_latency_ms=float(np.mean([r.latency_ms for r in results])))


def test_camera_index_survives_an_unplug(det: Detector, camera: str):
    results, stats = stream_and_unplug(det, 0)
    assert stats.reconnects >= 1
    check_results(results, stats, "camera:0", results[0].result.input_size)
    record("camera index unplugged and back", results=len(results), reconnects=stats.reconnects,
           dropped=stats.dropped)


def test_camera_index_survives_an_unplug_after_an_earlier_stream(det: Detector, camera: str):
    """A line process that stopped and restarted its stream: the first stream must not keep the device open."""
    with det.stream(0, max_frames=3) as stream:
        assert len(list(stream)) == 3
    results, stats = stream_and_unplug(det, 0)
    assert stats.reconnects >= 1
    check_results(results, stats, "camera:0", results[0].result.input_size)
    record("camera index restarted, then unplugged and back", results=len(results), reconnects=stats.reconnects)


def test_rdedge_predict_on_a_camera_index_writes_video_and_log(camera: str, tmp_path: Path):
    out, log = tmp_path / "out", tmp_path / "line.csv"
    done = subprocess.run([sys.executable, "-m", "rdedge", "predict", os.environ["RDEDGE_TEST_MODEL"], "0",
                           "--max-frames", "5", "--out", str(out), "--log", str(log)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = log.read_text().splitlines()
    assert len(rows) == 6 and rows[1].split(",")[0] == "camera:0"  # header + 5 results
    videos = list(out.glob("*_overlay.mp4"))
    assert len(videos) == 1
    capture = cv2.VideoCapture(str(videos[0]))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    record("rdedge predict 0", rows=len(rows) - 1, video=videos[0].name)


# ------------------------------------------------------------------------------------- GStreamer pipelines


@needs_gstreamer
def test_usb_pipeline_streams_results(det: Detector, camera: str):
    pipeline = usb_pipeline(camera, width=640, height=360, fps=25)
    with det.stream(pipeline, max_frames=6, keep_frames=True) as stream:
        results = list(stream)
    assert len(results) == 6 and results[0].frame.shape == (360, 640, 3)
    check_results(results, stream.stats[0], pipeline, (360, 640))
    record("usb_pipeline (v4l2src)", frames=len(results), pipeline=pipeline)


@needs_gstreamer
def test_usb_pipeline_survives_an_unplug(det: Detector, camera: str):
    pipeline = usb_pipeline(camera, width=640, height=480, fps=25)
    results, stats = stream_and_unplug(det, pipeline)
    assert stats.reconnects >= 1
    check_results(results, stats, pipeline, (480, 640))
    record("usb_pipeline unplugged and back", results=len(results), reconnects=stats.reconnects)


@needs_gstreamer
def test_usb_pipeline_restarted_then_unplugged_survives_when_isolated(det: Detector, camera: str):
    """In-process, the first pipeline's leaked descriptor keeps the unplugged camera away for good (README);
    ``isolate=True`` reads in a child process, and the leak ends with it."""
    pipeline = usb_pipeline(camera, width=640, height=480, fps=25)
    with det.stream(pipeline, max_frames=3, isolate=True) as stream:
        assert len(list(stream)) == 3
    results, stats = stream_and_unplug(det, pipeline, isolate=True)
    assert stats.reconnects >= 1
    check_results(results, stats, pipeline, (480, 640))
    record("usb_pipeline isolated, restarted, then unplugged and back", results=len(results),
           reconnects=stats.reconnects)


@needs_gstreamer
def test_csi_pipeline_text_runs_with_stock_stand_ins_for_nvidia_elements(det: Detector):
    """The CSI pipeline's caps and structure, with ``nvarguscamerasrc``/``nvvidconv`` (Jetson only) replaced by
    ``videotestsrc``/``videoflip ! videoconvert ! videoscale`` and NVMM memory by system memory: a check of the
    text our helper writes, not of the Jetson camera stack."""
    pipeline = csi_pipeline(sensor_id=0, width=1280, height=720, fps=30, flip=2, output_width=640,
                            output_height=360)
    stand_in = (pipeline.replace("nvarguscamerasrc sensor-id=0", "videotestsrc is-live=true")
                .replace("(memory:NVMM)", "").replace("nvvidconv flip-method=2", "videoflip method=2 ! "
                                                      "videoconvert ! videoscale"))
    assert "nv" not in stand_in.replace("convert", "")
    with det.stream(stand_in, max_frames=3, keep_frames=True) as stream:
        results = list(stream)
    assert len(results) == 3 and results[0].frame.shape == (360, 640, 3)
    record("csi_pipeline text with stand-ins", frames=len(results))


@needs_gstreamer
def test_rtsp_pipeline_through_gstreamer_survives_a_camera_restart(det: Detector):
    frames = [np.full((240, 320, 3), v, np.uint8) for v in range(0, 250, 10)]
    camera = RtspServer(frames)
    camera.start()
    pipeline = (f"rtspsrc location={camera.url} protocols=tcp latency=0 ! rtpjpegdepay ! jpegdec ! videoconvert ! "
                "video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false")
    results = []
    try:
        with det.stream(pipeline, backoff=FAST_BACKOFF) as stream:
            deadline = time.monotonic() + 60
            for item in stream:
                results.append(item)
                if len(results) == 3:
                    camera.kill()
                    time.sleep(1.0)
                    camera.start()
                if stream.stats[0].reconnects >= 1 and len(results) >= 6:
                    break
                assert time.monotonic() < deadline, f"stream did not resume: {stream.stats[0]}"
    finally:
        if camera.server is not None:
            camera.kill()
    check_results(results, stream.stats[0], pipeline, (240, 320))
    # rtspsrc sometimes blocks OpenCV's open for ever after the refused connection; such openings are given up
    # (sdk.sources.open_within) and the next attempt reconnects
    record("rtspsrc pipeline, camera restarted", results=len(results), reconnects=stream.stats[0].reconnects,
           openings_given_up=len(blocked_opens()))

"""Video sources: what a source string names, how OpenCV opens it, and GStreamer pipelines for cameras.

A source is a camera index (``0``), a video file, a URL (``rtsp://``, ``http://``, ``udp://``, ...) or a GStreamer
pipeline string (anything containing ``!``; needs OpenCV built with GStreamer, as on JetPack). :func:`csi_pipeline`
and :func:`usb_pipeline` build the Jetson CSI (``nvarguscamerasrc``) and USB (``v4l2src``) pipelines. Opening a
GStreamer pipeline is given up after :data:`PIPELINE_OPEN_TIMEOUT_S` and retried (:func:`open_within`).
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol

import cv2
import numpy as np

from .errors import SourceError, SourceOpenTimeout

LOG = logging.getLogger("rdedge.stream")
Source = int | str | os.PathLike[str]
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mjpg")


class Capture(Protocol):
    """What a reader needs from an opened source (``cv2.VideoCapture`` has it)."""

    def isOpened(self) -> bool: ...  # OpenCV's name
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def release(self) -> None: ...


def camera_index(source: Source) -> int | None:
    """The camera index a source names (an int, or a string of digits as the CLI passes it), else ``None``."""
    if isinstance(source, int):
        return source
    text = os.fspath(source)
    return int(text) if text.isdigit() else None


def is_live(source: Source) -> bool:
    """Whether a source is live (camera, URL, GStreamer pipeline) rather than a file that can be read to its end."""
    if camera_index(source) is not None:
        return True
    text = os.fspath(source)
    return text.lower().startswith(URL_SCHEMES) or "!" in text


def describe(source: Source) -> str:
    """A short, stable id for a source, used as ``StreamResult.source_id`` (credentials in URLs are hidden)."""
    if (index := camera_index(source)) is not None:
        return f"camera:{index}"
    text = os.fspath(source)
    if text.lower().startswith(URL_SCHEMES) and "@" in text.split("/", 3)[2]:
        scheme, rest = text.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return text


PIPELINE_OPEN_TIMEOUT_S = 10.0
"""How long opening a GStreamer pipeline may take in-process before it is given up (see :func:`open_within`)."""


def open_capture(source: Source, *, timeout_s: float = 5.0,
                 pipeline_timeout_s: float | None = PIPELINE_OPEN_TIMEOUT_S) -> cv2.VideoCapture:
    """Open a source with OpenCV: the camera index, GStreamer pipeline or file/URL backend as appropriate.

    Network sources get open and read time-outs (FFmpeg backend), so a dead stream is noticed within
    ``timeout_s`` instead of blocking for minutes. A GStreamer pipeline is opened within ``pipeline_timeout_s``
    (:func:`open_within`; ``None``: no limit): OpenCV waits without limit for the pipeline to start, and
    GStreamer's ``rtspsrc`` (1.22) can leave it waiting for ever after a refused connection, as from a camera that
    is rebooting (measured with Debian's OpenCV 4.6: 9 of 100 opens of a refused ``rtspsrc`` pipeline on a busy
    2-core machine; none when idle). A camera index opens with OpenCV's own V4L2 backend on Linux (see
    :func:`camera_backend`).

    Raises:
        SourceOpenTimeout: A pipeline did not open in time.
    """
    if (index := camera_index(source)) is not None:
        return cv2.VideoCapture(index, camera_backend())
    text = os.fspath(source)
    if "!" in text:
        if pipeline_timeout_s is None:
            return cv2.VideoCapture(text, cv2.CAP_GSTREAMER)
        return open_within(lambda: cv2.VideoCapture(text, cv2.CAP_GSTREAMER), pipeline_timeout_s,
                           describe(source))
    if text.lower().startswith(URL_SCHEMES):
        ms = int(timeout_s * 1000)
        return cv2.VideoCapture(text, cv2.CAP_FFMPEG,
                                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    return cv2.VideoCapture(text)


MAX_BLOCKED_OPENS = 8
"""Given-up openings still blocked in a process beyond which :func:`open_within` starts no more (each holds a
thread and whatever the capture library allocated)."""
_BLOCKED_OPENS: set[str] = set()
_BLOCKED_LOCK = threading.Lock()
_OPEN_COUNTER = itertools.count(1)


def blocked_opens() -> list[str]:
    """Sources whose in-process opening was given up and is still blocked (each holds a thread and a pipeline)."""
    with _BLOCKED_LOCK:
        return sorted(_BLOCKED_OPENS)


def open_within(open_source: Callable[[], Capture], timeout_s: float, source_id: str) -> Capture:
    """Run ``open_source`` on a helper thread and wait at most ``timeout_s`` for it.

    A call into a capture library cannot be interrupted. When it takes too long it is given up: the helper thread
    goes on, releases the capture if the call ever returns, and meanwhile shows in :func:`blocked_opens`. The
    caller gets :class:`SourceOpenTimeout` and can retry, so a stream's reconnection goes on. What a blocked call
    holds is only freed with the process: ``isolate=True`` opens each source in a child process, which is killed
    instead. Once :data:`MAX_BLOCKED_OPENS` openings are blocked, no new one is started.

    Raises:
        SourceOpenTimeout: ``open_source`` did not return within ``timeout_s``.
        SourceError: :data:`MAX_BLOCKED_OPENS` openings are already blocked in this process.
        Exception: Whatever ``open_source`` raised in time.
    """
    with _BLOCKED_LOCK:
        if len(_BLOCKED_OPENS) >= MAX_BLOCKED_OPENS:
            raise SourceError(f"not opening {source_id!r}: {len(_BLOCKED_OPENS)} earlier openings are still blocked "
                              "in this process; restart it, or stream with isolate=True")
    lock = threading.Lock()
    finished = threading.Event()
    outcome: dict[str, Any] = {}
    key = f"{source_id} (thread {next(_OPEN_COUNTER)})"

    def run() -> None:
        try:
            capture, error = open_source(), None
        except Exception as exc:  # handed to the caller below
            capture, error = None, exc
        with lock:
            given_up = outcome.get("given_up", False)
            outcome.update(capture=capture, error=error)
            finished.set()
        if given_up:
            if capture is not None:
                capture.release()
            with _BLOCKED_LOCK:
                _BLOCKED_OPENS.discard(key)
            LOG.warning("the given-up opening of %s returned at last; released", source_id)

    threading.Thread(target=run, name=f"rdedge-open-{source_id}", daemon=True).start()
    finished.wait(timeout_s)
    with lock:
        if not finished.is_set():
            outcome["given_up"] = True
            with _BLOCKED_LOCK:
                _BLOCKED_OPENS.add(key)
                blocked = len(_BLOCKED_OPENS)
            LOG.error("opening %s did not finish within %.0f s; given up (%d opening(s) still blocked in this "
                      "process; isolate=True opens sources in a child process that is killed instead)",
                      source_id, timeout_s, blocked)
            raise SourceOpenTimeout(f"opening {source_id!r} did not finish within {timeout_s:g} s")
    if outcome["error"] is not None:
        raise outcome["error"]
    return outcome["capture"]


def camera_backend() -> int:
    """The OpenCV backend for camera indices: ``CAP_V4L2`` on Linux where OpenCV has it, else ``CAP_ANY``.

    An OpenCV built with GStreamer (Debian's, JetPack's) would otherwise open an index as a ``v4l2src`` pipeline,
    and GStreamer's v4l2 plugin (1.22, measured in ``tests/camera_vm.py``) keeps a descriptor on the device open
    after every pipeline closed normally: a camera unplugged later never comes back to that process. OpenCV's V4L2
    backend closes the device on release.
    """
    if sys.platform.startswith("linux") and cv2.videoio_registry.hasBackend(cv2.CAP_V4L2):
        return cv2.CAP_V4L2
    return cv2.CAP_ANY


def opencv_has_gstreamer() -> bool:
    """Whether this OpenCV build can open GStreamer pipelines (the PyPI wheels cannot; JetPack's OpenCV can)."""
    info = cv2.getBuildInformation()
    start = info.find("GStreamer:")
    return start >= 0 and info[start:start + 60].split(":", 1)[1].strip().upper().startswith("YES")


def open_hint(source: Source) -> str:
    """Why a source may have failed to open, for the error message ("" when there is nothing specific to say)."""
    if (index := camera_index(source)) is not None:
        return f" (no camera at index {index}? check /dev/video* and that no other program holds it)"
    text = os.fspath(source)
    if "!" in text and not opencv_has_gstreamer():
        return (" (this OpenCV is built without GStreamer, as the PyPI wheels are: use the system OpenCV, e.g. "
                "JetPack's python3-opencv, or a build with -DWITH_GSTREAMER=ON)")
    if text.lower().startswith(URL_SCHEMES):
        return " (unreachable, refused or not a video stream; check the URL, credentials and network)"
    return " (not a video OpenCV can decode?)"


def csi_pipeline(sensor_id: int = 0, width: int = 1920, height: int = 1080, fps: int = 30, flip: int = 0,
                 output_width: int | None = None, output_height: int | None = None) -> str:
    """GStreamer pipeline for a Jetson CSI camera (``nvarguscamerasrc``), delivering BGR frames to OpenCV.

    The ISP works in NVMM memory; ``nvvidconv`` converts (and optionally scales and flips) to BGRx, and the appsink
    keeps only the newest buffer (``drop=true max-buffers=1``), matching the stream's latest-frame mode.
    """
    ow, oh = output_width or width, output_height or height
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, framerate=(fraction){fps}/1, "
        f"format=(string)NV12 ! nvvidconv flip-method={flip} ! "
        f"video/x-raw, width=(int){ow}, height=(int){oh}, format=(string)BGRx ! videoconvert ! "
        "video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false"
    )


def usb_pipeline(device: str = "/dev/video0", width: int = 1280, height: int = 720, fps: int = 30,
                 mjpeg: bool = False) -> str:
    """GStreamer pipeline for a USB (UVC) camera through ``v4l2src``, delivering BGR frames to OpenCV.

    Args:
        device: The V4L2 device node.
        width: Capture width.
        height: Capture height.
        fps: Frame rate asked of the camera.
        mjpeg: Ask the camera for MJPEG (most UVC cameras give high resolutions at full rate only so) and decode it.
    """
    caps = f"width=(int){width}, height=(int){height}, framerate=(fraction){fps}/1"
    decode = f"image/jpeg, {caps} ! jpegdec" if mjpeg else f"video/x-raw, {caps}"
    return (f"v4l2src device={device} ! {decode} ! videoconvert ! video/x-raw, format=(string)BGR ! "
            "appsink drop=true max-buffers=1 sync=false")



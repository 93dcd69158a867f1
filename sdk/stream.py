"""Score frames from cameras, video files, network streams and GStreamer pipelines as they arrive.

``Detector.stream(source)`` returns a :class:`Stream`: an iterator of :class:`StreamResult` and a context manager.

* **Sources.** A camera index (``0``), a video file, a URL (``rtsp://``, ``http://``, ``udp://``, ...) or a
  GStreamer pipeline string (anything containing ``!``; needs OpenCV built with GStreamer, as on JetPack).
  :func:`csi_pipeline` and :func:`usb_pipeline` build the Jetson CSI (``nvarguscamerasrc``) and USB (``v4l2src``)
  pipelines. Several sources may be given at once: each inference call then batches the frames that are ready.
* **Two reading modes.** ``latest`` (default for live sources): a reader thread keeps only the newest frame, so
  inference never works on a stale frame; frames replaced before they were scored are counted as dropped.
  ``every`` (default for files): a reader thread decodes ahead into a short queue and waits when it is full, so
  every frame is scored.
* **Reconnection.** When a live source stops delivering (camera unplugged, network cut), the reader releases it
  and reopens it with exponential back-off (:class:`Backoff`) until it comes back or ``max_attempts`` is spent;
  results already produced are never lost and frame indices keep counting. A file simply ends. Opening a
  GStreamer pipeline is given up after :data:`PIPELINE_OPEN_TIMEOUT_S` and retried (:func:`open_within`).
* **Accounting.** For every source, ``read == processed + dropped`` once the stream is closed (frames left
  unscored at close, and frames that cannot be used, count as dropped). :attr:`Stream.stats` gives the counters.
* **Clean stop.** Leaving the ``with`` block (or :meth:`Stream.close`) stops and joins every reader thread and
  releases every capture, also when the loop is left by an exception.

Frames that cannot be used (empty, wrong dtype) are skipped and counted, never raised: one bad frame must not stop
a production line. Errors opening a source for the first time are raised, since that is a configuration mistake.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from .errors import RdedgeError, SourceError, SourceOpenTimeout
from .image import to_rgb_uint8

if TYPE_CHECKING:
    from .detector import Detector, Result

LOG = logging.getLogger("rdedge.stream")
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mjpg")
Source = int | str | os.PathLike[str]


class Capture(Protocol):
    """What a reader needs from an opened source (``cv2.VideoCapture`` has it)."""

    def isOpened(self) -> bool: ...  # OpenCV's name
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def release(self) -> None: ...


# ------------------------------------------------------------------------------------------------ sources


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


# ------------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class Backoff:
    """Reconnection schedule for live sources: wait ``initial_s``, then multiply by ``factor`` up to ``max_s``.

    Attributes:
        initial_s: First wait after a failure.
        factor: Growth of the wait after each failed attempt.
        max_s: Longest wait.
        max_attempts: Failed attempts in a row before the source is given up (``None``: never give up).
    """

    initial_s: float = 0.5
    factor: float = 2.0
    max_s: float = 10.0
    max_attempts: int | None = None

    def delays(self) -> Iterator[float]:
        """The successive waits."""
        delay, attempt = self.initial_s, 0
        while self.max_attempts is None or attempt < self.max_attempts:
            yield delay
            delay = min(delay * self.factor, self.max_s)
            attempt += 1


@dataclass
class SourceStats:
    """Counters of one source. Once its stream is closed, ``read == processed + dropped``.

    Attributes:
        source_id: The source's id.
        read: Frames delivered by the source.
        processed: Frames scored.
        dropped: Frames not scored: replaced by a newer one (latest mode), unusable, or left at close.
        invalid: Of the dropped, frames that could not be used (empty, wrong type).
        reconnects: Successful reopenings after the source stopped delivering.
        finished: Whether the source has ended (file end, or given up after ``max_attempts``).
        error: Why the source was given up, if it was.
    """

    source_id: str
    read: int = 0
    processed: int = 0
    dropped: int = 0
    invalid: int = 0
    reconnects: int = 0
    finished: bool = False
    error: str | None = None


@dataclass
class Frame:
    """One frame as read: the image, its index in its source (0-based, across reconnections) and capture time."""

    image: np.ndarray
    index: int
    timestamp: float


class FrameReader:
    """Reads one source on a background thread, in ``latest`` or ``every`` mode (see the module text).

    Args:
        source: Camera index, file, URL or GStreamer pipeline.
        mode: ``latest`` or ``every``.
        live: Whether the source is live (reconnect on failure) or a file (end on failure).
        backoff: Reconnection schedule for live sources.
        opener: Opens the source; :func:`open_capture` by default (a seam for other capture libraries).
        queue_size: Frames decoded ahead in ``every`` mode.
    """

    def __init__(self, source: Source, *, mode: str, live: bool, backoff: Backoff | None = None,
                 opener: Callable[[Source], Capture] = open_capture, queue_size: int = 4,
                 on_change: Callable[[], None] | None = None) -> None:
        if mode not in ("latest", "every"):
            raise ValueError(f"mode must be 'latest' or 'every', got {mode!r}")
        self.source = source
        self.mode = mode
        self.live = live
        self.backoff = backoff or Backoff()
        self.stats = SourceStats(describe(source))
        self._opener = opener
        self._lock = threading.Lock()
        self._latest: Frame | None = None
        self._queue: queue.Queue[Frame] = queue.Queue(maxsize=max(1, queue_size))
        self._stop = threading.Event()
        self._capture: Capture | None = None
        self._thread: threading.Thread | None = None
        self._on_change = on_change or (lambda: None)
        self._open_error: Exception | None = None

    def start(self) -> None:
        """Open the source (raising :class:`SourceError` when it cannot be opened at all) and start reading."""
        self._capture = self._open()
        if self._capture is None:
            if isinstance(self._open_error, SourceOpenTimeout):
                raise SourceOpenTimeout(f"cannot open video source {self.stats.source_id!r}: {self._open_error}")
            raise SourceError(f"cannot open video source {self.stats.source_id!r}{open_hint(self.source)}")
        self._thread = threading.Thread(target=self._run, name=f"rdedge-reader-{self.stats.source_id}", daemon=True)
        self._thread.start()

    def _open(self) -> Capture | None:
        self._open_error = None
        try:
            capture = self._opener(self.source)
        except Exception as exc:  # any opener failure means "not available now"
            LOG.warning("opening %s failed: %s", self.stats.source_id, exc)
            self._open_error = exc
            return None
        if capture is None or not capture.isOpened():
            if capture is not None:
                capture.release()
            return None
        return capture

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                ok, image = self._capture.read() if self._capture is not None else (False, None)
                if ok and image is not None:
                    self._deliver(image)
                    continue
                if not self.live:
                    break  # end of file
                if not self._reconnect():
                    break
        finally:
            if self._capture is not None:
                self._capture.release()
                self._capture = None
            with self._lock:
                self.stats.finished = True
            self._on_change()

    def _reconnect(self) -> bool:
        LOG.warning("%s stopped delivering frames; reconnecting", self.stats.source_id)
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        for delay in self.backoff.delays():
            if self._stop.wait(delay):
                return False
            self._capture = self._open()
            if self._capture is not None:
                with self._lock:
                    self.stats.reconnects += 1
                LOG.warning("%s reconnected", self.stats.source_id)
                return True
        with self._lock:
            self.stats.error = f"gave up after {self.backoff.max_attempts} reconnection attempts"
        LOG.error("%s: %s", self.stats.source_id, self.stats.error)
        return False

    def _deliver(self, image: np.ndarray) -> None:
        with self._lock:
            frame = Frame(image, self.stats.read, time.time())
            self.stats.read += 1
            if self.mode == "latest":
                if self._latest is not None:
                    self.stats.dropped += 1
                self._latest = frame
        if self.mode == "latest":
            self._on_change()
            return
        while not self._stop.is_set():  # every-frame mode: wait for room, never drop
            try:
                self._queue.put(frame, timeout=0.1)
            except queue.Full:
                continue
            self._on_change()
            return
        with self._lock:
            self.stats.dropped += 1  # stopping: the frame was read but will not be scored

    def take(self) -> Frame | None:
        """The next frame to score, without waiting; ``None`` when none is ready."""
        if self.mode == "every":
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                return None
        with self._lock:
            frame, self._latest = self._latest, None
            return frame

    @property
    def exhausted(self) -> bool:
        """Whether the source has ended and every frame it read has been taken."""
        with self._lock:
            pending = self._latest is not None if self.mode == "latest" else not self._queue.empty()
            return self.stats.finished and not pending

    def record(self, *, processed: int = 0, invalid: int = 0) -> int:
        """Count frames taken and scored (``processed``) or found unusable (``invalid``); returns ``dropped``."""
        with self._lock:
            self.stats.processed += processed
            self.stats.invalid += invalid
            self.stats.dropped += invalid
            return self.stats.dropped

    def stop(self, join_timeout: float = PIPELINE_OPEN_TIMEOUT_S + 5.0) -> None:
        """Stop reading, join the thread, release the source and count any frame left unscored as dropped."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(join_timeout)
            if self._thread.is_alive():
                LOG.error("reader thread of %s did not stop within %.0f s", self.stats.source_id, join_timeout)
        with self._lock:
            left = (self._latest is not None) + self._queue.qsize()
            self._latest = None
            while not self._queue.empty():
                self._queue.get_nowait()
            self.stats.dropped += left

    @property
    def alive(self) -> bool:
        """Whether the reader thread is running."""
        return self._thread is not None and self._thread.is_alive()


# ------------------------------------------------------------------------------------------------- stream


@dataclass
class StreamResult:
    """A scored frame, with what line code needs to log and trace it.

    Attributes:
        result: The detector's :class:`~sdk.detector.Result` (score, verdict, maps).
        source_id: Which source the frame came from.
        frame_index: The frame's index in its source (0-based; keeps counting across reconnections).
        timestamp: Capture time (``time.time()`` when the frame was read).
        latency_ms: From capture to result (waiting, pre-processing, inference).
        dropped: Frames of this source dropped so far.
        frame: The frame as read (BGR), when asked for (``keep_frames`` or ``overlay``).
        overlay: The annotated frame (heat map, mask contours, score and verdict), when asked for.
    """

    result: Result
    source_id: str
    frame_index: int
    timestamp: float
    latency_ms: float
    dropped: int
    frame: np.ndarray | None = field(default=None, repr=False)
    overlay: np.ndarray | None = field(default=None, repr=False)

    @property
    def score(self) -> float:
        """Raw image score."""
        return self.result.score

    @property
    def is_anomaly(self) -> bool:
        """Verdict at the threshold in force."""
        return self.result.is_anomaly

    def as_record(self) -> dict[str, Any]:
        """A flat, JSON- and CSV-friendly record of this result (see :func:`sdk.records.result_record`)."""
        from .records import result_record

        return result_record(self.result, self.source_id, frame=self.frame_index, timestamp=self.timestamp,
                             latency_ms=self.latency_ms, dropped=self.dropped)


class Stream:
    """Iterate over scored frames of one or more sources (see the module text). Use as a context manager.

    Args:
        detector: The detector that scores the frames.
        sources: One source, or a sequence of sources batched together.
        mode: ``latest``, ``every`` or ``auto`` (``latest`` for live sources, ``every`` for files).
        max_batch: Frames per inference call at most (default: the number of sources).
        overlay: Make an annotated frame for each result.
        keep_frames: Attach the frame as read to each result.
        rgb: Whether frames are RGB (OpenCV sources give BGR).
        backoff: Reconnection schedule for live sources.
        max_frames: Stop after this many results (``None``: until every source ends).
        opener: Opens a source (default :func:`open_capture`).
        queue_size: Frames decoded ahead per source in ``every`` mode.
        isolate: Read each source in a child process (:class:`sdk.capture_process.ProcessCapture`), so that
            what the capture stack leaks (GStreamer's v4l2 plugin keeps the camera open) ends with the process at
            each reconnection, and a source that hangs is noticed. Not with ``opener``.
    """

    def __init__(self, detector: Detector, sources: Source | Sequence[Source], *, mode: str = "auto",
                 max_batch: int | None = None, overlay: bool = False, keep_frames: bool = False, rgb: bool = False,
                 backoff: Backoff | None = None, max_frames: int | None = None,
                 opener: Callable[[Source], Capture] | None = None, queue_size: int = 4,
                 isolate: bool = False) -> None:
        if mode not in ("auto", "latest", "every"):
            raise ValueError(f"mode must be 'auto', 'latest' or 'every', got {mode!r}")
        if isolate and opener is not None:
            raise ValueError("isolate=True reads through sdk.capture_process.ProcessCapture: give no opener")
        if isolate:
            from .capture_process import ProcessCapture

            opener = ProcessCapture
        if isinstance(sources, (str, int, os.PathLike)):
            sources = [sources]
        if not sources:
            raise ValueError("at least one source is needed")
        for s in sources:
            if not isinstance(s, int) and not is_live(s) and not Path(os.fspath(s)).is_file():
                raise SourceError(f"video file not found: {os.fspath(s)}")
        self.detector = detector
        self._arrived = threading.Event()
        self.readers = [
            FrameReader(s, mode=("latest" if is_live(s) else "every") if mode == "auto" else mode, live=is_live(s),
                        backoff=backoff, opener=opener or open_capture, queue_size=queue_size,
                        on_change=self._arrived.set)
            for s in sources
        ]
        self.max_batch = max_batch or len(self.readers)
        self.overlay = overlay
        self.keep_frames = keep_frames or overlay
        self.rgb = rgb
        self.max_frames = max_frames
        self._started = False
        self._closed = False
        self._produced = 0
        self._next = 0

    def __enter__(self) -> Stream:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> None:
        """Open every source and start the reader threads (done by ``with`` or the first iteration)."""
        if self._started:
            return
        self._started = True
        try:
            for reader in self.readers:
                reader.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop and join every reader thread and release the sources. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        for reader in self.readers:
            reader.stop()

    @property
    def stats(self) -> list[SourceStats]:
        """The counters of each source."""
        return [r.stats for r in self.readers]

    def __iter__(self) -> Iterator[StreamResult]:
        self.start()
        try:
            while not self._closed and (self.max_frames is None or self._produced < self.max_frames):
                frames = self._gather()
                if frames is None:
                    return
                yield from self._score(frames)
        finally:
            self.close()

    def _gather(self) -> list[tuple[FrameReader, Frame]] | None:
        """Frames ready to score, round-robin over the sources; ``None`` once every source is exhausted."""
        while True:
            self._arrived.clear()  # before looking: a frame arriving from now on wakes the wait below
            batch: list[tuple[FrameReader, Frame]] = []
            limit = self.max_batch
            if self.max_frames is not None:
                limit = min(limit, self.max_frames - self._produced)
            n = len(self.readers)
            for k in range(n):
                reader = self.readers[(self._next + k) % n]
                frame = reader.take()
                while frame is not None:
                    batch.append((reader, frame))
                    if len(batch) >= limit or len(self.readers) > 1:
                        break  # several sources: one frame each per call, so no source starves the others
                    frame = reader.take()
                if len(batch) >= limit:
                    break
            self._next = (self._next + 1) % n
            if batch:
                return batch
            if all(r.exhausted for r in self.readers):
                return None
            self._arrived.wait(0.5)

    def _score(self, frames: list[tuple[FrameReader, Frame]]) -> list[StreamResult]:
        usable: list[tuple[FrameReader, Frame, np.ndarray]] = []
        for reader, frame in frames:
            try:
                usable.append((reader, frame, to_rgb_uint8(frame.image, rgb=self.rgb)))
            except RdedgeError as exc:
                LOG.warning("%s frame %d skipped: %s", reader.stats.source_id, frame.index, exc)
                reader.record(invalid=1)
        if not usable:
            return []
        results = self.detector.predict_batch([rgb for _, _, rgb in usable], rgb=True)
        done = time.time()
        out = []
        for (reader, frame, _), result in zip(usable, results, strict=True):
            dropped = reader.record(processed=1)
            item = StreamResult(result, reader.stats.source_id, frame.index, frame.timestamp,
                                (done - frame.timestamp) * 1000.0, dropped,
                                frame=frame.image if self.keep_frames else None)
            if self.overlay:
                from .visualize import overlay

                item.overlay = overlay(frame.image, result, rgb=self.rgb)
            out.append(item)
        self._produced += len(out)
        return out

"""Reading one source on a background thread: reading modes, reconnection with back-off, frame accounting.

* **Two reading modes.** ``latest`` (default for live sources): a reader thread keeps only the newest frame, so
  inference never works on a stale frame; frames replaced before they were scored are counted as dropped.
  ``every`` (default for files): a reader thread decodes ahead into a short queue and waits when it is full, so
  every frame is scored.
* **Reconnection.** When a live source stops delivering (camera unplugged, network cut), the reader releases it
  and reopens it with exponential back-off (:class:`Backoff`) until it comes back or ``max_attempts`` is spent;
  frame indices keep counting. A file simply ends.
* **Accounting.** ``read == processed + dropped`` once the reader is stopped (:class:`SourceStats`).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .errors import SourceError, SourceOpenTimeout
from .sources import LOG, PIPELINE_OPEN_TIMEOUT_S, Capture, Source, describe, open_capture, open_hint


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



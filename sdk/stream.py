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
  GStreamer pipeline is given up after :data:`PIPELINE_OPEN_TIMEOUT_S` and retried (:func:`sdk.sources.open_within`).
* **Accounting.** For every source, ``read == processed + dropped`` once the stream is closed (frames left
  unscored at close, and frames that cannot be used, count as dropped). :attr:`Stream.stats` gives the counters.
* **Clean stop.** Leaving the ``with`` block (or :meth:`Stream.close`) stops and joins every reader thread and
  releases every capture, also when the loop is left by an exception.

Sources are classified and opened by :mod:`sdk.sources`; each is read by a :class:`sdk.reader.FrameReader`.

Frames that cannot be used (empty, wrong dtype) are skipped and counted, never raised: one bad frame must not stop
a production line. Errors opening a source for the first time are raised, since that is a configuration mistake.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .capture_process import ProcessCapture
from .errors import RdedgeError, SourceError
from .image import to_rgb_uint8
from .reader import Backoff, Frame, FrameReader, SourceStats
from .records import result_record
from .result import Result
from .sources import LOG, Capture, Source, is_live, open_capture
from .visualize import overlay as draw_overlay

if TYPE_CHECKING:
    from .detector import Detector


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
        results = self.detector.predict_batch([rgb for _, _, rgb in usable], rgb=True,
                                              anomaly_maps=True if self.overlay else None)
        done = time.time()
        out = []
        for (reader, frame, _), result in zip(usable, results, strict=True):
            dropped = reader.record(processed=1)
            item = StreamResult(result, reader.stats.source_id, frame.index, frame.timestamp,
                                (done - frame.timestamp) * 1000.0, dropped,
                                frame=frame.image if self.keep_frames else None)
            if self.overlay:
                item.overlay = draw_overlay(frame.image, result, rgb=self.rgb)
            out.append(item)
        self._produced += len(out)
        return out

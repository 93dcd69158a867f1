"""Writers for what ``rdedge predict`` produces: a result log (CSV, JSON Lines or JSON) and an annotated video.

Both are built so that a crash or a Ctrl-C loses nothing already produced and leaves no half-written file:

* CSV and JSON Lines logs are appended and flushed one record at a time (a live stream may run for days); an
  existing log is continued, never truncated: a CSV keeps its one header (a CSV with other columns is refused,
  not mixed). A ``.json`` log (one array) keeps the records it already holds and is rewritten atomically when
  closed.
* An annotated video is written to a temporary file beside the destination, completed and renamed when closed
  (also after an error or Ctrl-C: what was recorded is kept); a destination that existed is never left
  half-overwritten.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import cv2
import numpy as np

from .errors import RdedgeError
from .fileio import publish, temporary_beside, write_text_atomic

if TYPE_CHECKING:
    from .result import Result

LOG_FIELDS = ("source", "frame", "timestamp", "score", "normalized_score", "is_anomaly", "threshold",
              "pixel_threshold", "latency_ms", "inference_ms", "dropped", "error")
LOG_SUFFIXES = (".csv", ".jsonl", ".json")


def result_record(result: Result, source: str, *, frame: int | None = None, timestamp: float | None = None,
                  latency_ms: float | None = None, dropped: int | None = None) -> dict[str, Any]:
    """One log record (the keys of :data:`LOG_FIELDS`) for a result; ``latency_ms`` defaults to inference time."""
    return {
        "source": source, "frame": frame, "timestamp": round(time.time() if timestamp is None else timestamp, 6),
        "score": result.score, "normalized_score": result.normalized_score, "is_anomaly": result.is_anomaly,
        "threshold": result.threshold, "pixel_threshold": result.pixel_threshold,
        "latency_ms": round(result.latency_ms if latency_ms is None else latency_ms, 3),
        "inference_ms": round(result.latency_ms, 3), "dropped": dropped, "error": None,
    }


class ResultLog:
    """A log of results, one record per image or frame, in the format the file suffix names.

    Args:
        path: ``.csv``, ``.jsonl`` or ``.json``; an existing log is continued (see the module text).

    Raises:
        RdedgeError: Another suffix, or an existing file that is not a log of this format.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.format = self.path.suffix.lower()
        if self.format not in LOG_SUFFIXES:
            raise RdedgeError(f"log file must end in {', '.join(LOG_SUFFIXES)}, got {self.path.name}")
        self.records = 0
        self._json: list[dict[str, Any]] = []
        self._file: IO[str] | None = None
        self._csv: csv.DictWriter[str] | None = None
        if self.format == ".json":
            self._json = self._existing_json()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header_needed = self.format == ".csv" and self._check_csv_header()
        self._file = self.path.open("a", encoding="utf-8", newline="")
        if self.format == ".csv":
            self._csv = csv.DictWriter(self._file, fieldnames=LOG_FIELDS, extrasaction="ignore")
            if header_needed:
                self._csv.writeheader()
                self._file.flush()

    def _check_csv_header(self) -> bool:
        """Whether a CSV needs its header written (new or empty file); refuses one with other columns."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return True
        with self.path.open(encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), [])
        if tuple(header) != LOG_FIELDS:
            raise RdedgeError(f"{self.path} is a CSV with other columns ({', '.join(header[:4])}, ...): not "
                              "appending to it; log to a new file")
        return False

    def _existing_json(self) -> list[dict[str, Any]]:
        """The records an existing ``.json`` log holds (kept when it is rewritten)."""
        if not self.path.is_file():
            return []
        try:
            records = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RdedgeError(f"{self.path} exists but is not a JSON log ({exc}): log to a new file") from exc
        if not isinstance(records, list):
            raise RdedgeError(f"{self.path} exists but is not a JSON array of records: log to a new file")
        return records

    def write(self, record: dict[str, Any]) -> None:
        """Add one record (keys from :data:`LOG_FIELDS`; missing ones are left empty)."""
        record = {k: record.get(k) for k in LOG_FIELDS}
        self.records += 1
        if self.format == ".json":
            self._json.append(record)
            return
        assert self._file is not None
        if self._csv is not None:
            self._csv.writerow({k: "" if v is None else v for k, v in record.items()})
        else:
            self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Finish the log (for ``.json``: write the whole array atomically)."""
        if self.format == ".json":
            write_text_atomic(self.path, json.dumps(self._json, indent=1) + "\n")
        elif self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ResultLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AnnotatedVideoWriter:
    """Write frames to a video (``mp4v`` for ``.mp4``/``.m4v``/``.mov``, ``MJPG`` otherwise) atomically.

    The writer opens on the first frame (whose size fixes the video's); later frames of another size are resized.

    Args:
        path: Destination video file.
        fps: Frame rate written in the file.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float = 25.0) -> None:
        self.path = Path(path)
        self.fps = fps if fps and np.isfinite(fps) and fps > 0 else 25.0
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._tmp: Path | None = None

    def write(self, frame: np.ndarray) -> None:
        """Append a BGR uint8 frame."""
        if self._writer is None:
            self._tmp = temporary_beside(self.path)
            codec = "mp4v" if self.path.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"
            h, w = frame.shape[:2]
            self._size = (w, h)
            self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*codec), self.fps, self._size)
            if not self._writer.isOpened():
                self._tmp.unlink(missing_ok=True)
                self._writer = None
                raise RdedgeError(f"OpenCV cannot write {self.path} with codec {codec}")
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(frame)
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        """Finish the file and rename it onto the destination (``keep=False``: discard it)."""
        if self._writer is None or self._tmp is None:
            return
        self._writer.release()
        self._writer = None
        if keep and self.frames:
            publish(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> AnnotatedVideoWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Also on an error or Ctrl-C (the normal way to stop a live stream): the frames written so far are results
        # already produced; releasing the writer completes the file before it is renamed.
        self.close()

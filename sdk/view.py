"""A live line view in the browser: ``rdedge view MODEL SOURCE...``.

One background thread runs :meth:`Detector.stream` over the sources with overlays; a small Starlette app serves:

* ``/``: the page (inline HTML, CSS and JavaScript; it loads nothing from anywhere else);
* ``/stream/N.mjpg``: source N's annotated frames as MJPEG (``multipart/x-mixed-replace``), each frame sent once,
  at most :data:`DISPLAY_FPS` per second (every frame is scored and counted);
* ``/api/state``: counters (frames, rejects, dropped, reconnects), the last result per source, the threshold,
  the last rejects;
* ``POST /api/threshold`` (``{"threshold": x}``): applied at once to the next frames, logged;
* ``POST /api/score`` (the bytes of an image file): scores one uploaded image → score, verdict, overlay;
* ``/rejects/K.jpg``: thumbnails of the last rejects.

Starlette (with uvicorn to serve it) is a well-kept ASGI toolkit that streams responses natively, which is all MJPEG
needs, without the schema layer of FastAPI or the front-end bundle of Gradio: ``pip install rdedge[view]``. The
server binds 127.0.0.1 unless told otherwise: the page changes the line's threshold and has no authentication.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import html
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .detector import Detector
from .errors import InvalidInputError, RdedgeError
from .sources import Source, describe

logger = logging.getLogger("rdedge.view")
MAX_REJECTS = 8
DISPLAY_FPS = 10.0
"""Frames per second the page is sent at most, per source: every frame is scored and counted, but only this many
are drawn and JPEG-encoded (a reject is only shrunk, and drawn when a page asks for its thumbnail), so that
watching does not take the cores inference needs."""
THUMBNAIL_SIDE = 160
DISPLAY_SIDE = 480
"""Longest side of the frames sent to the page (the page shows them at most that large)."""
BOUNDARY = "rdedge-frame"
STATE_POLL_MS = 1000
"""How often the page asks for the counters and the last verdicts (the frames themselves stream at their own rate,
each drawn with its score and verdict): each poll costs the browser a request, a layout and a paint."""


def check_display_fps(value: float | str) -> float:
    """A display rate (frames per second sent to the page): a finite number above zero.

    Raises:
        ValueError: Not a number, zero, negative, infinite or nan.
    """
    try:
        fps = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"display rate is not a number: {value!r}") from None
    if not 0 < fps < float("inf"):
        raise ValueError(f"display rate must be above 0 frames per second, not {value}")
    return fps


def import_server() -> tuple[Any, Any]:
    """(starlette, uvicorn), or an error saying how to install them."""
    try:
        import starlette
        import uvicorn
    except ImportError as exc:
        raise RdedgeError("the live view needs starlette and uvicorn: pip install rdedge[view]") from exc
    return starlette, uvicorn


def display_overlay(frame: np.ndarray, result: Any, side: int = DISPLAY_SIDE) -> np.ndarray:
    """The overlay the page shows, drawn on the frame scaled down to at most ``side`` pixels (the page shows it at
    most that large; drawing and encoding full-size frames takes the cores inference needs)."""
    from .visualize import overlay

    h, w = frame.shape[:2]
    scale = side / max(h, w)
    if scale >= 1.0:
        return overlay(frame, result)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = cv2.resize(frame, (size[1], size[0]), interpolation=shrink_interpolation(scale))
    return overlay(small, dataclasses.replace(result, input_size=size, _full_map=None))


def shrink_interpolation(scale: float) -> int:
    """OpenCV's interpolation for shrinking a frame by ``scale`` (< 1) for the page: bilinear down to half size
    (a 640 px frame drawn at 480 px: 0.2 ms where area averaging takes 2 ms of the cores inference needs), area
    averaging below that, where bilinear would alias."""
    return cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA


def shrink(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """``image`` (BGR or grey) scaled to at most ``side`` pixels on its longest side, as BGR."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    h, w = image.shape[:2]
    scale = min(1.0, side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image[..., :3], size, interpolation=shrink_interpolation(scale))


def blend_heat_map(small: np.ndarray, result: Any) -> np.ndarray:
    """``small`` (a frame already at thumbnail size) with ``result``'s heat map blended in, drawn at that size."""
    if result.anomaly_map is None:
        return small
    from .visualize import blend_heat

    h, w = small.shape[:2]
    return blend_heat(small, cv2.resize(result.anomaly_map, (w, h), interpolation=cv2.INTER_LINEAR),
                      result.pixel_threshold)


def jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RdedgeError("could not encode a frame as JPEG")
    return data.tobytes()


@dataclass
class Reject:
    """One rejected frame, kept for the page's thumbnails."""

    number: int
    source: str
    frame_index: int
    score: float
    time: float
    picture: np.ndarray
    """The frame (or its overlay) already shrunk to thumbnail size, BGR."""
    result: Any = None
    """The frame's result while its heat map is still to be blended into ``picture`` (None: nothing to draw)."""
    _jpeg: bytes | None = dataclasses.field(default=None, repr=False)

    @property
    def thumbnail(self) -> bytes:
        """The thumbnail as JPEG, drawn and encoded when first asked for: on a fast line most rejects scroll off the
        page unseen, and drawing them all would take the cores inference needs."""
        if self._jpeg is None:
            self._jpeg = jpeg(self.picture if self.result is None else blend_heat_map(self.picture, self.result))
            self.result = None
        return self._jpeg


class LineView:
    """The live view's state, fed by one background thread running the detector's stream.

    Args:
        detector: The detector (its threshold is the one the page changes).
        sources: Video sources (cameras, files, URLs, pipelines), as for :meth:`Detector.stream`.
        loop: Start a source list again when every source has ended (for video files: a demo or a test).
        max_rejects: How many of the last rejects to keep as thumbnails.
        display_fps: Frames per second sent to the page at most, per source (:data:`DISPLAY_FPS`; None: all).
        stream_options: Further :class:`sdk.stream.Stream` options (``mode``, ``backoff``, ``isolate``...).
    """

    def __init__(self, detector: Detector, sources: Source | Sequence[Source], *, loop: bool = False,
                 max_rejects: int = MAX_REJECTS, display_fps: float | None = DISPLAY_FPS,
                 stream_options: dict[str, Any] | None = None) -> None:
        self.detector = detector
        self.sources = [sources] if isinstance(sources, (str, int)) or not isinstance(sources, Sequence) else list(
            sources)
        self.source_ids = [describe(s) for s in self.sources]
        self.loop = loop
        self.stream_options = stream_options or {}
        self.display_interval = 0.0 if display_fps is None else 1.0 / check_display_fps(display_fps)
        self._shown_at: dict[int, float] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._frames: dict[int, tuple[int, bytes]] = {}  # source index -> (sequence number, JPEG)
        self._last: dict[int, dict[str, Any]] = {}
        self.counters = {"frames": 0, "rejects": 0, "dropped": 0, "reconnects": 0, "loops": 0}
        self.served = {"frames": 0, "states": 0}
        """What the pages were sent: MJPEG frames (all streams) and answers to ``/api/state``."""
        self._finished_counts = {"dropped": 0, "reconnects": 0}
        self.max_rejects = max_rejects
        # twice as many thumbnails kept as listed: a page loading the listed ones finds them though new rejects came
        self.rejects: collections.deque[Reject] = collections.deque(maxlen=2 * max_rejects)
        self.threshold_log: list[dict[str, Any]] = []
        self.error: str | None = None
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the stream ------------------------------------------------------------------------------------------

    def start(self) -> LineView:
        """Start the stream thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="rdedge-view", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the stream thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        index = {source_id: i for i, source_id in enumerate(self.source_ids)}
        try:
            while not self._stop.is_set():
                # Overlays are drawn here, for the frames shown and the rejects only; a remote detector that sends no
                # maps by default is asked for them through the stream's overlays.
                options = {"keep_frames": True, "overlay": not self.detector.anomaly_maps, **self.stream_options}
                with self.detector.stream(self.sources, **options) as stream:
                    for item in stream:
                        self._publish(index.get(item.source_id, 0), item)
                        self._count_stream(stream, final=False)
                        if self._stop.is_set():
                            break
                self._count_stream(stream, final=True)
                if not self.loop:
                    return
                with self._lock:
                    self.counters["loops"] += 1
        except Exception as exc:  # shown on the page and logged; the server keeps serving the last state
            logger.exception("the live view's stream stopped")
            self.error = f"{type(exc).__name__}: {exc}"

    def _count_stream(self, stream: Any, final: bool) -> None:
        """Dropped frames and reconnections: those of finished loops plus the running stream's."""
        totals = {k: sum(getattr(s, k) for s in stream.stats) for k in self._finished_counts}
        with self._lock:
            for key, value in totals.items():
                self.counters[key] = self._finished_counts[key] + value
                if final:
                    self._finished_counts[key] += value

    def _publish(self, i: int, item: Any) -> None:
        result = item.result
        now = time.monotonic()
        show = now - self._shown_at.get(i, -math.inf) >= self.display_interval
        drawn = None
        if show:
            drawn = item.overlay if item.overlay is not None else display_overlay(item.frame, result)
        frame = jpeg(drawn) if drawn is not None else None
        if show:
            self._shown_at[i] = now
        with self._changed:
            if frame is not None:
                sequence = self._frames.get(i, (0, b""))[0] + 1
                self._frames[i] = (sequence, frame)
            self.counters["frames"] += 1
            self._last[i] = {"source": item.source_id, "frame_index": item.frame_index, "score": result.score,
                             "normalized_score": result.normalized_score, "is_anomaly": result.is_anomaly,
                             "threshold": result.threshold, "latency_ms": item.latency_ms}
            if result.is_anomaly:
                self.counters["rejects"] += 1
                drawn_already = drawn if drawn is not None else item.overlay
                picture = shrink(drawn_already if drawn_already is not None else item.frame)
                self.rejects.append(Reject(self.counters["rejects"], item.source_id, item.frame_index,
                                           result.score, time.time(), picture,
                                           result if drawn_already is None else None))
            if frame is not None:  # wake the pages' streams only for a new frame to send
                self._changed.notify_all()

    # --- what the page reads and changes ------------------------------------------------------------------------

    def frame(self, i: int, after: int = 0, timeout: float = 1.0) -> tuple[int, bytes] | None:
        """Source ``i``'s newest annotated frame once its sequence number passes ``after`` (None on time-out)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._frames.get(i, (0, b""))[0] <= after:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return None
                self._changed.wait(left)
            return self._frames[i]

    def state(self) -> dict[str, Any]:
        """Everything the page shows, JSON-ready."""
        with self._lock:
            return {"counters": dict(self.counters), "threshold": self.detector.threshold,
                    "calibrated_threshold": self.detector.metadata.calibration.threshold,
                    "sources": self.source_ids, "last": [self._last.get(i) for i in range(len(self.source_ids))],
                    "rejects": [{"number": r.number, "source": r.source, "frame_index": r.frame_index,
                                 "score": r.score, "time": r.time}
                                for r in list(reversed(self.rejects))[: self.max_rejects]],
                    "threshold_log": list(self.threshold_log[-10:]), "running": self.running, "error": self.error,
                    "seconds": round(time.monotonic() - self.started, 1)}

    def reject_thumbnail(self, number: int) -> bytes | None:
        """Reject ``number``'s thumbnail as JPEG (None once it is no longer kept)."""
        with self._lock:
            reject = next((r for r in self.rejects if r.number == number), None)
        return None if reject is None else reject.thumbnail  # drawn outside the lock: the stream thread goes on

    def set_threshold(self, value: object) -> float:
        """Apply a new image threshold at once (the next frames use it) and log it.

        Raises:
            InvalidInputError: Not a finite number.
        """
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InvalidInputError(f"the threshold must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise InvalidInputError(f"the threshold must be finite, got {value!r}")
        with self._lock:
            previous = self.detector.threshold
            self.detector.threshold = number
            self.threshold_log.append({"time": time.time(), "from": previous, "to": number})
        logger.info("threshold changed from %.6g to %.6g from the live page", previous, number)
        return number

    def score_upload(self, data: bytes) -> dict[str, Any]:
        """Score one uploaded image file → score, verdict and the overlay as a JPEG data URI.

        Raises:
            InvalidInputError: Not a decodable image.
        """
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED) if data else None
        if image is None:
            raise InvalidInputError("the upload is not an image file OpenCV can decode (PNG, JPEG, BMP, TIFF...)")
        from .visualize import overlay

        result = self.detector(image, anomaly_maps=True)
        data_uri = "data:image/jpeg;base64," + base64.b64encode(jpeg(overlay(image, result))).decode("ascii")
        return {"score": result.score, "normalized_score": result.normalized_score,
                "is_anomaly": result.is_anomaly, "threshold": result.threshold, "overlay": data_uri}

    # --- the web app ------------------------------------------------------------------------------------------

    def app(self) -> Any:
        """The Starlette application serving this view."""
        import_server()
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
        from starlette.routing import Route

        async def page(request: Request) -> Response:
            return HTMLResponse(render_page(self))

        async def state(request: Request) -> Response:
            self.served["states"] += 1
            return JSONResponse(self.state())

        async def threshold(request: Request) -> Response:
            try:
                body = await request.json()
            except ValueError:
                return JSONResponse({"error": 'the body must be JSON: {"threshold": number}'}, status_code=400)
            try:
                value = self.set_threshold(body.get("threshold") if isinstance(body, dict) else None)
            except InvalidInputError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse({"threshold": value})

        async def score(request: Request) -> Response:
            data = await request.body()
            try:
                answer = await asyncio.to_thread(self.score_upload, data)
            except InvalidInputError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            return JSONResponse(answer)

        async def reject(request: Request) -> Response:
            thumbnail = self.reject_thumbnail(int(request.path_params["number"]))
            if thumbnail is None:
                return Response(status_code=404)
            return Response(thumbnail, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

        async def stream(request: Request) -> Response:
            i = int(request.path_params["index"])
            if not 0 <= i < len(self.source_ids):
                return Response(status_code=404)

            async def frames() -> Any:
                sequence = 0
                while not await request.is_disconnected():
                    try:
                        got = await asyncio.to_thread(self.frame, i, sequence, 0.5)
                    except RuntimeError:  # the server is shutting down its thread pool
                        return
                    if got is None:
                        continue
                    sequence, data = got
                    self.served["frames"] += 1
                    yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                           ).encode() + data + b"\r\n"

            return StreamingResponse(frames(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                     headers={"Cache-Control": "no-store"})

        return Starlette(routes=[
            Route("/", page), Route("/api/state", state), Route("/api/threshold", threshold, methods=["POST"]),
            Route("/api/score", score, methods=["POST"]), Route("/rejects/{number:int}.jpg", reject),
            Route("/stream/{index:int}.mjpg", stream),
        ])


def render_page(view: LineView) -> str:
    """The live page: inline HTML, CSS and JavaScript only (nothing from any other host)."""
    e = html.escape
    m = view.detector.metadata
    streams = "".join(f'<figure><img id="live-{i}" src="/stream/{i}.mjpg" alt="{e(s)}"><figcaption>{e(s)}: '
                      f'<span id="last-{i}">waiting for frames</span></figcaption></figure>'
                      for i, s in enumerate(view.source_ids))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>rdedge live: {e(m.method)}</title>
<style>
body {{ font-family: sans-serif; margin: 1em; color: #222; }} figure {{ display: inline-block; margin: 0 1em 1em 0; }}
figure img, #upload-overlay {{ max-width: 640px; max-height: 480px; }}
.counters span {{ margin-right: 1.2em; font-size: 1.2em; }}
.ANOMALY {{ color: #c0392b; font-weight: bold; }} .OK {{ color: #2e8b57; font-weight: bold; }}
#rejects img {{ margin: 2px; border: 2px solid #c0392b; }}
</style></head>
<body>
<h1>rdedge live: {e(m.method)} / {e(m.backbone)}, {e(str(m.image_size))}, {e(m.precision)}</h1>
<div class="counters">frames <span id="frames">0</span> rejects <span id="rejects-count">0</span>
dropped <span id="dropped">0</span> reconnects <span id="reconnects">0</span></div>
<p>threshold <b id="threshold-value">{view.detector.threshold:.6g}</b>
(calibrated {m.calibration.threshold:.6g})
<input id="threshold" type="number" step="any" value="{view.detector.threshold:.6g}">
<button id="apply">apply</button> <span id="threshold-message"></span></p>
<p id="error" class="ANOMALY"></p>
{streams}
<h2>Last rejects</h2><div id="rejects"></div>
<h2>Score one image</h2>
<input id="upload" type="file" accept="image/*"> <span id="upload-result"></span><br><img id="upload-overlay" alt="">
<script>
// The page's own work runs on the cores inference needs when the browser is on the line PC: the state is polled
// once every STATE_MS, and only what changed is written to the page (each write costs a layout and a paint).
const STATE_MS = {STATE_POLL_MS};
function put(id, value, asHtml) {{
  const node = document.getElementById(id);
  const key = String(value);
  if (node.dataset.shown === key) return;
  node.dataset.shown = key;
  if (asHtml) node.innerHTML = key; else node.textContent = key;
}}
async function refresh() {{
  const s = await (await fetch("/api/state")).json();
  put("frames", s.counters.frames);
  put("rejects-count", s.counters.rejects);
  put("dropped", s.counters.dropped);
  put("reconnects", s.counters.reconnects);
  put("threshold-value", s.threshold.toPrecision(6));
  put("error", s.error || "");
  s.last.forEach((r, i) => {{
    if (!r) return;
    const v = r.is_anomaly ? "ANOMALY" : "OK";
    put("last-" + i, `frame ${{r.frame_index}}: score ${{r.score.toPrecision(4)}} <span class="${{v}}">${{v}}</span>`,
        true);
  }});
  const box = document.getElementById("rejects");
  const want = s.rejects.map(r => r.number).join(",");
  if (box.dataset.shown !== want) {{
    box.dataset.shown = want;
    box.innerHTML = s.rejects.map(r => `<img src="/rejects/${{r.number}}.jpg" ` +
      `title="${{r.source}} frame ${{r.frame_index}}: ${{r.score.toPrecision(4)}}">`).join("");
  }}
}}
document.getElementById("apply").onclick = async () => {{
  const value = parseFloat(document.getElementById("threshold").value);
  const r = await fetch("/api/threshold", {{method: "POST", headers: {{"Content-Type": "application/json"}},
                                            body: JSON.stringify({{threshold: value}})}});
  const answer = await r.json();
  document.getElementById("threshold-message").textContent = r.ok ? "applied" : answer.error;
  refresh();
}};
document.getElementById("upload").onchange = async (event) => {{
  const file = event.target.files[0];
  if (!file) return;
  const r = await fetch("/api/score", {{method: "POST", body: file}});
  const a = await r.json();
  const out = document.getElementById("upload-result");
  if (!r.ok) {{ out.textContent = a.error; return; }}
  const v = a.is_anomaly ? "ANOMALY" : "OK";
  out.innerHTML = `score ${{a.score.toPrecision(4)}} <span class="${{v}}">${{v}}</span>`;
  document.getElementById("upload-overlay").src = a.overlay;
}};
refresh();
setInterval(refresh, STATE_MS);
</script>
</body></html>
"""


def serve(view: LineView, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the view's server until interrupted (Ctrl-C), then stop the stream."""
    _, uvicorn = import_server()
    view.start()
    try:
        uvicorn.run(view.app(), host=host, port=port, log_level="warning")
    finally:
        view.stop()


__all__ = ["LineView", "render_page", "serve"]

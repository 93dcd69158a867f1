"""Does the live page keep up? Frames per second of ``Detector.stream`` alone against the same stream inside
``rdedge view`` with a browser-like client reading the MJPEG stream, on the same bottle video, in one process.

Rows (each timed over the whole video, every-frame mode, so that no frame is skipped):

* ``Detector.stream`` alone, without and with overlays (the view draws overlays: the like-for-like row);
* the live view's stream thread (overlays, JPEG encoding, counters) while an HTTP client reads ``/stream/0.mjpg``
  and polls ``/api/state`` every 300 ms as the page does; and the frames that client received.

Writes ``benchmarks/results/view.md``. Run: ``python -m benchmarks.view [--run RUN_DIR] [--frames N]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import socket
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from sdk.fileio import write_text_atomic

from .latency import RESULTS_DIR

TARGET = 0.90
"""The page may not slow inference by more than 10 %: view fps ≥ 0.9 x stream fps."""


def view_display_fps() -> float:
    from sdk.view import DISPLAY_FPS

    return DISPLAY_FPS


def stream_fps(detector: Any, video: Path, overlay: bool) -> tuple[int, float]:
    started = time.perf_counter()
    with detector.stream(video, overlay=overlay, mode="every") as stream:
        n = sum(1 for _ in stream)
    return n, n / (time.perf_counter() - started)


def view_fps(detector: Any, video: Path) -> dict[str, float]:
    """The live view on ``video`` with one MJPEG client and one state poller, until the video ends."""
    import uvicorn

    from sdk.view import BOUNDARY, LineView

    view = LineView(detector, video, stream_options={"mode": "every"})
    with socket.socket() as probe:  # a port free on 127.0.0.1 now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(view.app(), host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=1))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    received = [0]
    stop = threading.Event()

    def client() -> None:
        marker = f"--{BOUNDARY}".encode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stream/0.mjpg", timeout=30) as response:
            while not stop.is_set():
                chunk = response.read1(1 << 16)
                if not chunk:
                    return
                received[0] += chunk.count(marker)

    def poller() -> None:
        while not stop.is_set():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=5) as response:
                json.loads(response.read())
            time.sleep(0.3)

    readers = [threading.Thread(target=client, daemon=True), threading.Thread(target=poller, daemon=True)]
    for t in readers:
        t.start()
    time.sleep(0.5)  # the client is connected before the first frame
    started = time.perf_counter()
    view.start()
    while view.running:
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    time.sleep(0.5)
    stop.set()
    server.should_exit = True
    frames = view.counters["frames"]
    return {"frames": frames, "fps": frames / seconds, "shown": received[0], "shown_fps": received[0] / seconds}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.soak import bottle_frames, write_video
    from sdk import Detector

    from .accuracy import mvtec_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/accuracy/bottle/rd4ad", help="run folder or model (default: the "
                        "bottle recipe model)")
    parser.add_argument("--frames", type=int, default=300, help="video length in frames (default: %(default)s)")
    parser.add_argument("--size", type=int, default=640, help="video frame side (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each row (default: 2)")
    parser.add_argument("--out", default=str(RESULTS_DIR / "view.md"), help="markdown output")
    args = parser.parse_args(argv)
    from sdk.backends import resolve_model

    model = resolve_model(args.run)
    detector = Detector(model)
    with tempfile.TemporaryDirectory() as tmp:
        video = write_video(bottle_frames(Path(mvtec_root()) / "bottle", args.size), Path(tmp) / "bottle.avi",
                            args.frames)
        detector.warmup()
        rows: dict[str, list[float]] = {"plain": [], "overlay": [], "view": [], "shown": []}
        for _ in range(args.rounds):  # interleaved, so that a slow moment of the machine hits every row
            rows["plain"].append(stream_fps(detector, video, overlay=False)[1])
            rows["overlay"].append(stream_fps(detector, video, overlay=True)[1])
            measured = view_fps(detector, video)
            rows["view"].append(measured["fps"])
            rows["shown"].append(measured["shown_fps"])
            print(json.dumps({k: round(v[-1], 2) for k, v in rows.items()}), flush=True)
    best = {k: max(v) for k, v in rows.items()}
    ratio = best["view"] / best["plain"]  # against inference alone: the view draws only what it shows
    lines = [
        "# The live page against the stream alone",
        "",
        f"{datetime.date.today().isoformat()}; {platform.machine()} CPU, 2 cores, no GPU; model `{model}` "
        f"({detector.metadata.method}/{detector.metadata.backbone}, {detector.metadata.image_size}, ONNX Runtime); "
        f"a {args.frames}-frame {args.size}x{args.size} MJPG video of bottle images; every-frame mode; best of "
        f"{args.rounds} interleaved rounds. Reproduce: `python -m benchmarks.view`.",
        "",
        "| row | frames/s | vs `Detector.stream` alone |",
        "|---|---:|---:|",
        f"| `Detector.stream` alone, no overlays | {best['plain']:.1f} | 1.00 |",
        f"| `Detector.stream` alone, an overlay drawn for every frame | {best['overlay']:.1f} | "
        f"{best['overlay'] / best['plain']:.2f} |",
        f"| live view: every frame scored and counted, {view_display_fps():g} frames/s drawn and sent, a page "
        f"connected | {best['view']:.1f} | {ratio:.2f} |",
        f"| live view: frames received by the page's MJPEG client | {best['shown']:.1f} | - |",
        "",
        f"Target: the page slows inference by at most 10 % (ratio ≥ {TARGET}): **{ratio:.2f}, "
        f"{'met' if ratio >= TARGET else 'not met'}**. The page polls `/api/state` every 300 ms; every frame is scored "
        "and counted, but only the frames shown (at most `sdk.view.DISPLAY_FPS` per second per source) and the "
        "rejects are drawn and JPEG-encoded: encoding every 640x640 frame cost 22 % of the frame rate on these 2 cores "
        "(measured before the cap: 42.4 against 54.5 frames/s with overlays). A client slower than that gets the "
        "newest frame; missed frames are not queued.",
    ]
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does the live page keep up? Frames per second of ``Detector.stream`` alone against the same stream inside
``rdedge view`` while a page watches it, on the same bottle video.

Rows (each timed from its 61st frame to the end of the video, every-frame mode, so that no frame is skipped):

* ``Detector.stream`` alone, without and with overlays (the view draws overlays: the like-for-like row);
* the live view with no page open (what serving costs by itself);
* the live view's stream thread (overlays, JPEG encoding, counters) while, in a process of its own as a browser is,
  an HTTP client reads ``/stream/0.mjpg`` and polls ``/api/state`` as often as the page does (and counts the
  frames it received), and while the page itself is open in headless Chromium (Debian's ``chromium``), opened as a
  user's browser opens it (``chromium --headless URL``: the judged row) and driven by Playwright as the tests drive it
  (the automation's own traffic included), also started with ``nice -n N`` (``--browser-nice N``).

Each row also gives the CPU cores busy during its timing: the inference process's (all its threads) and the page
client's (its process and every process it started: Chromium's browser, renderer and GPU processes). Writes
``benchmarks/results/view.md``. Run: ``python -m benchmarks.view [--run RUN_DIR] [--frames N]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sdk.fileio import write_text_atomic

from .latency import RESULTS_DIR

TARGET = 0.90
"""The page may not slow inference by more than 10 %: view fps ≥ 0.9 x stream fps."""


def view_display_fps() -> float:
    from sdk.view import DISPLAY_FPS

    return DISPLAY_FPS


WARMUP_FRAMES = 60
"""Frames of every run left out of its timing: start-up (the reader's first decode, a page's first paint) is not
the steady rate a line runs at."""


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and all its descendants, from ``/proc`` (Linux;
    NaN elsewhere or once ``pid`` has gone). Children already reaped count through their parent's ``cutime``."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent pid, CPU seconds)
    for entry in Path("/proc").glob("[0-9]*/stat") if Path("/proc").is_dir() else ():
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # a process that ended while being read
        stats[int(entry.parent.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]) / ticks)
    if pid not in stats:
        return math.nan
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        total += stats[current][1]
        pending.extend(child for child, (parent, _) in stats.items() if parent == current)
    return total


def stream_fps(detector: Any, video: Path, overlay: bool) -> dict[str, float]:
    """Steady frames per second of ``Detector.stream`` alone over ``video`` (after :data:`WARMUP_FRAMES`), and the
    cores this process kept busy meanwhile (``{"fps", "cores"}``)."""
    n, started, cpu = 0, 0.0, 0.0
    with detector.stream(video, overlay=overlay, mode="every") as stream:
        for _ in stream:
            n += 1
            if n == WARMUP_FRAMES:
                started, cpu = time.perf_counter(), time.process_time()
    seconds = time.perf_counter() - started
    return {"fps": (n - WARMUP_FRAMES) / seconds, "cores": (time.process_time() - cpu) / seconds}


PAGE_CLIENT = r"""
import json, sys, threading, time, urllib.request
port, boundary, poll_seconds = int(sys.argv[1]), sys.argv[2].encode(), float(sys.argv[3])
received = 0
def poll():
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/state", timeout=5) as response:
                json.loads(response.read())
        except OSError:
            return
        time.sleep(poll_seconds)
threading.Thread(target=poll, daemon=True).start()
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stream/0.mjpg", timeout=30) as response:
        print("connected", flush=True)
        while chunk := response.read1(1 << 16):
            received += chunk.count(b"--" + boundary)
            sys.stderr.write(f"{received}\n")
except Exception:
    pass
"""
"""What a page does, in a process of its own as a browser is: read ``/stream/0.mjpg`` (frames counted on stderr)
and poll ``/api/state`` every ``sdk.view.STATE_POLL_MS``."""

PLAYWRIGHT_CLIENT = r"""
import sys
from playwright.sync_api import sync_playwright
with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=sys.argv[2], args=sys.argv[3:])
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{sys.argv[1]}/", wait_until="domcontentloaded")
    page.wait_for_selector("#live-0", state="attached", timeout=60000)
    page.wait_for_timeout(3000)  # the stream request open, the state polled, the browser's start-up work done
    print("connected", flush=True)
    sys.stdin.read()
    browser.close()
"""
"""The live page in headless Chromium (Debian's ``chromium``) driven by Playwright, as the tests drive it, open until
stdin closes: the automation (its driver process, the events it asks Chromium for) costs CPU that a user's browser
does not spend."""

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
"""Headless Chromium as root on a closed network: no sandbox, and none of its background connections (the browser
tests use the same list)."""


def chromium() -> str | None:
    """Debian's chromium, when installed (the browser rows are skipped otherwise)."""
    import shutil

    return shutil.which("chromium")


def playwright_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("playwright") is not None


PAGE_START_SECONDS = 3.0
"""Time a page is given after its first request to the state (Chromium's start-up work, the stream request open)
before the timing starts."""


def view_fps(detector: Any, video: Path, client: str = "process", display_fps: float | None = None,
             nice: int = 0) -> dict[str, float]:
    """The live view on ``video`` until the video ends, with the page's client in a process of its own.

    Args:
        detector: The detector the view streams with.
        video: The video file.
        client: ``"process"`` (:data:`PAGE_CLIENT`: reads the MJPEG stream, counts frames, polls the state),
            ``"browser"`` (the page in ``chromium --headless``, as a user's browser opens it), ``"playwright"``
            (:data:`PLAYWRIGHT_CLIENT`: the page in headless Chromium driven by Playwright) or ``"none"`` (no page).
        display_fps: Frames sent to the page per second (None: :data:`sdk.view.DISPLAY_FPS`, the default).
        nice: Niceness added to the client's process (and so to the browser it starts), as ``nice -n`` would: what
            a user can do without root to let inference go first.

    Returns:
        ``{"frames", "fps", "shown", "shown_fps", "served_fps", "cores", "client_cores"}``: ``shown`` counted by the
        ``process`` client only (else NaN); ``served_fps``: frames the server sent to the page per second during
        the timing; ``cores``, ``client_cores``: CPU cores busy in this process and in the client's process tree
        during the timing (``client_cores`` 0 with no client).

    Raises:
        RuntimeError: The client did not connect, or a page was open but was sent no frame during the timing.
    """
    import subprocess
    import sys

    import uvicorn

    from sdk.view import BOUNDARY, STATE_POLL_MS, LineView

    view = LineView(detector, video, display_fps=display_fps or view_display_fps(), stream_options={"mode": "every"})
    with socket.socket() as probe:  # a port free on 127.0.0.1 now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(view.app(), host="127.0.0.1", port=port, log_level="critical",
                                           timeout_graceful_shutdown=1))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    counts: list[str] = []
    page = None
    profile = tempfile.TemporaryDirectory() if client == "browser" else None
    if client != "none":
        if client == "browser":
            command = [str(chromium()), "--headless", *CHROMIUM_ARGS, f"--user-data-dir={profile.name}",
                       f"http://127.0.0.1:{port}/"]
        elif client == "playwright":
            command = [sys.executable, "-c", PLAYWRIGHT_CLIENT, str(port), str(chromium()), *CHROMIUM_ARGS]
        else:
            command = [sys.executable, "-c", PAGE_CLIENT, str(port), BOUNDARY, str(STATE_POLL_MS / 1000)]
        if nice:  # a prefix, not preexec_fn: the server's threads are running
            command = ["nice", "-n", str(nice), *command]
        page = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdout=subprocess.DEVNULL if client == "browser" else subprocess.PIPE)
        threading.Thread(target=lambda: counts.extend(page.stderr), daemon=True).start()
        if client == "browser":  # a plain browser says nothing: its first state request says the page is up
            deadline = time.monotonic() + 60
            while view.served["states"] == 0 and page.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            connected = view.served["states"] > 0
            time.sleep(PAGE_START_SECONDS)
        else:
            connected = page.stdout.readline().strip() == "connected"
        if not connected:
            page.kill()
            raise RuntimeError(f"the {client} client did not connect: {''.join(counts[-5:])}")
        time.sleep(0.5)
    run_started = time.perf_counter()
    view.start()
    while view.counters["frames"] < WARMUP_FRAMES and view.running:
        time.sleep(0.002)
    started, first, first_served = time.perf_counter(), view.counters["frames"], view.served["frames"]
    cpu, client_cpu = time.process_time(), tree_cpu_seconds(page.pid) if page else 0.0
    while view.running:
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    served = view.served["frames"] - first_served
    cores = (time.process_time() - cpu) / seconds
    client_cores = (tree_cpu_seconds(page.pid) - client_cpu) / seconds if page else 0.0
    run_seconds = time.perf_counter() - run_started
    if page:
        time.sleep(0.3)
        page.stdin.close()
        page.terminate()
        page.wait(10)
    if profile is not None:
        profile.cleanup()
    server.should_exit = True
    if page and not served:
        raise RuntimeError(f"the {client} client was open but the server sent it no frame during the timing")
    frames = view.counters["frames"] - first
    shown = int(counts[-1]) if client == "process" and counts and counts[-1].strip().isdigit() else math.nan
    return {"frames": frames, "fps": frames / seconds, "shown": shown, "shown_fps": shown / run_seconds,
            "served_fps": served / seconds, "cores": cores, "client_cores": client_cores}


def main(argv: list[str] | None = None) -> int:
    from benchmarks.soak import bottle_frames, write_video
    from sdk import Detector
    from sdk.view import STATE_POLL_MS, check_display_fps

    from .accuracy import mvtec_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="runs/accuracy/bottle/rd4ad", help="run folder or model (default: the "
                        "bottle recipe model)")
    parser.add_argument("--frames", type=int, default=900, help="video length in frames (default: %(default)s)")
    parser.add_argument("--size", type=int, default=640, help="video frame side (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of each row (default: %(default)s)")
    parser.add_argument("--display-fps", type=check_display_fps, nargs="+", default=None, metavar="FPS",
                        help="display rates of the live view to measure, each a row of its own (default: "
                             "sdk.view.DISPLAY_FPS, the rate `rdedge view` shows by default)")
    parser.add_argument("--browser-nice", type=int, default=None, metavar="N",
                        help="also measure the page in Chromium started with `nice -n N` (what a user can do without "
                             "root to let inference go first), a row per display rate")
    parser.add_argument("--out", default=str(RESULTS_DIR / "view.md"), help="markdown output")
    args = parser.parse_args(argv)
    if args.browser_nice is not None and not 1 <= args.browser_nice <= 19:
        parser.error("--browser-nice: a niceness from 1 to 19")
    if args.frames <= WARMUP_FRAMES:
        parser.error(f"--frames must exceed the {WARMUP_FRAMES} start-up frames left out of every timing")
    from sdk.backends import resolve_model

    model = resolve_model(args.run)
    detector = Detector(model)
    with tempfile.TemporaryDirectory() as tmp:
        video = write_video(bottle_frames(Path(mvtec_root()) / "bottle", args.size), Path(tmp) / "bottle.avi",
                            args.frames)
        detector.warmup()
        rates = args.display_fps or [view_display_fps()]
        browsers = [*(["browser"] if chromium() else []), *(["playwright"] if chromium() and playwright_installed()
                                                               else []),
                    *(["browser-nice"] if chromium() and args.browser_nice else [])]
        clients = [f"{c}@{r:g}" for r in rates for c in ("none", "process", *browsers)]
        rows: dict[str, list[float]] = {"plain": [], "overlay": [], **{c: [] for c in clients}}
        cores: dict[str, list[tuple[float, float]]] = {k: [] for k in rows}  # (inference process, client)
        for _ in range(args.rounds):  # interleaved, so that a slow moment of the machine hits every row
            for key, overlay in (("plain", False), ("overlay", True)):
                measured = stream_fps(detector, video, overlay=overlay)
                rows[key].append(measured["fps"])
                cores[key].append((measured["cores"], 0.0))
            for key in clients:
                client, rate = key.split("@")
                measured = view_fps(detector, video, client.removesuffix("-nice"), float(rate),
                                    nice=args.browser_nice if client == "browser-nice" else 0)
                rows[key].append(measured["fps"])
                cores[key].append((measured["cores"], measured["client_cores"]))
                if client == "process":
                    rows.setdefault(f"shown@{rate}", []).append(measured["shown_fps"])
                if client == "browser":
                    rows.setdefault(f"sent@{rate}", []).append(measured["served_fps"])
            print(json.dumps({k: round(v[-1], 2) for k, v in rows.items()}), flush=True)
    best = {k: max(v) for k, v in rows.items()}
    # Against inference alone (the view draws only what it shows), round by round: a slow moment of the machine
    # hits every row of a round; the median of those ratios is the figure judged.
    ratios = {c: [view / plain for view, plain in zip(rows[c], rows["plain"], strict=True)] for c in clients}
    median = {c: statistics.median(r) for c, r in ratios.items()}
    default = f"{view_display_fps():g}"
    judged_key = f"browser@{default}" if f"browser@{default}" in median else f"process@{default}"
    judged = median.get(judged_key)

    def cpu(key: str) -> str:
        process = statistics.median(c[0] for c in cores[key])
        client = statistics.median(c[1] for c in cores[key])
        return f"{process:.2f} | {client:.2f}" if key not in ("plain", "overlay") else f"{process:.2f} | -"

    def view_row(key: str) -> str:
        client, rate = key.split("@")
        who = {"none": "no page open",
               "process": "the page's requests from a process of its own (MJPEG stream read, `/api/state` polled "
                          f"every {STATE_POLL_MS} ms)",
               "playwright": "the page open in headless Chromium driven by Playwright, as the tests drive it (the "
                             "automation's own work included)",
               }.get(client, "the page open in headless Chromium (`chromium --headless URL`, as a user's browser "
                             "opens it)"
                     + (f", started with `nice -n {args.browser_nice}`" if client == "browser-nice" else ""))
        note = " (the default)" if rate == default else f" (`--display-fps {rate}`)"
        cell = f"**{median[key]:.2f}** (rounds: {', '.join(f'{r:.2f}' for r in ratios[key])})"
        return f"| live view at {rate} frames/s shown{note}, {who} | {best[key]:.1f} | {cell} | {cpu(key)} |"

    judged_text = (f"**{judged:.2f}, {'met' if judged >= TARGET else 'not met'}**" if judged is not None
                   else "not measured (the default display rate was not among `--display-fps`)")
    if judged is not None and judged_key.startswith("browser"):
        process, client = (statistics.median(c[i] for c in cores[judged_key]) for i in (0, 1))
        alone = statistics.median(c[0] for c in cores["plain"])
        judged_text += (f". The browser itself kept {client:.2f} of the {os.cpu_count()} cores busy, and the "
                        f"inference process got {process:.2f} cores instead of {alone:.2f} alone "
                        f"({process / alone:.0%}: the steadier measure of the page's cost, since single rounds' frame "
                        "rates vary more than the page costs)")
    lines = [
        "# The live page against the stream alone",
        "",
        f"{datetime.date.today().isoformat()}; {platform.machine()} CPU, {os.cpu_count()} cores, no GPU; model "
        f"`{model}` ({detector.metadata.method}/{detector.metadata.backbone}, {detector.metadata.image_size}, ONNX "
        f"Runtime); a {args.frames}-frame {args.size}x{args.size} MJPG video of bottle images; every-frame mode; "
        f"{args.rounds} interleaved rounds. frames/s: the best round; ratio: the median of the rounds' own ratios "
        "(view / stream alone in the same round); CPU cores: median over the rounds of the CPU time used during the "
        "timing / its length, in the inference process (all threads: ONNX Runtime's, the reader's, the view's "
        "server) and in the page client's process tree (Chromium: all its processes). Reproduce: "
        "`python -m benchmarks.view"
        f"{' --display-fps ' + ' '.join(f'{r:g}' for r in rates) if args.display_fps else ''}"
        f"{f' --browser-nice {args.browser_nice}' if args.browser_nice else ''}`.",
        "",
        "| row | frames/s | vs `Detector.stream` alone | CPU cores: inference process | CPU cores: page client |",
        "|---|---:|---:|---:|---:|",
        f"| `Detector.stream` alone, no overlays | {best['plain']:.1f} | 1.00 | {cpu('plain')} |",
        f"| `Detector.stream` alone, an overlay drawn for every frame | {best['overlay']:.1f} | "
        f"{statistics.median(o / p for o, p in zip(rows['overlay'], rows['plain'], strict=True)):.2f} | "
        f"{cpu('overlay')} |",
        *(view_row(c) for c in clients),
        *(f"| frames received by the page's MJPEG reader (at most {r:g}/s are sent) | {best[f'shown@{r:g}']:.1f} "
          "| - | - | - |" for r in rates),
        *(f"| frames sent to the page in `chromium --headless` (at most {r:g}/s) | "
          f"{statistics.median(rows[f'sent@{r:g}']):.1f} (median) | - | - | - |"
          for r in rates if f"sent@{r:g}" in rows),
        "",
        f"Target: the page slows inference by at most 10 % (ratio ≥ {TARGET}; judged at the default display rate, "
        f"on the {'Chromium' if judged_key.startswith('browser') else 'separate-process'} row): {judged_text}. "
        "In the live view every frame is scored and counted, but only "
        "the frames shown (at most `sdk.view.DISPLAY_FPS` per second per source, drawn at most "
        "`sdk.view.DISPLAY_SIDE` px) and the rejects are drawn and JPEG-encoded: encoding every 640x640 frame cost "
        "22 % of the frame rate on these 2 cores (measured before the cap). A client slower than that gets the newest "
        "frame; missed frames are not queued. The page's client runs in a process of its own, as a browser does: "
        "HTTP clients in the benchmark's own process took the GIL from the stream thread and measured the benchmark, "
        "not the page (median 0.84 over 7 rounds that way).",
    ]
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

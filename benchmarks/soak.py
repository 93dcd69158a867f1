"""Soak test: stream thousands of frames of a real video through ``Detector.stream`` and watch memory and frames.

Makes a video from the MVTec bottle images (train/good and every test folder, in turn, resized to ``--size``;
MJPG in an AVI container, written to a temporary folder and deleted afterwards), then streams it in
``every``-frame mode (each frame scored) and in ``latest``-frame mode (the reader decodes as fast as it can and
the scorer takes only the newest frame, as for a camera). Prints, for each mode, frames read / processed /
dropped and whether they add up, throughput, and resident memory (RSS) after warm-up and at the end.

Run: ``python -m benchmarks.soak MODEL.onnx [--frames 10000] [--isolate]`` (``RDEDGE_MVTEC_ROOT`` points at the MVTec
root); ``--isolate`` adds each mode with the video read in a child process (``isolate=True``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sdk.fileio import write_text_atomic

from .latency import RESULTS_DIR

MB = 1024.0 * 1024.0


def rss_bytes(pid: int | None = None) -> int | None:
    """Resident memory of a process, this one by default (Linux ``/proc``, else psutil when installed, else
    ``None``)."""
    try:
        with open(f"/proc/{pid or 'self'}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:  # e.g. the process has ended
        return None


def bottle_frames(category_dir: Path, size: int) -> list[np.ndarray]:
    """Every bottle image (train/good, then each test folder), resized to ``size`` x ``size``, BGR uint8."""
    from sdk.image import list_images, read_image, resize_image

    folders = [category_dir / "train" / "good", *sorted(p for p in (category_dir / "test").iterdir() if p.is_dir())]
    frames = [resize_image(read_image(p), size) for folder in folders for p in list_images(folder)]
    if not frames:
        raise FileNotFoundError(f"no images under {category_dir}")
    return [f if f.ndim == 3 else cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) for f in frames]


def write_video(frames: list[np.ndarray], path: Path, n_frames: int, fps: float = 30.0) -> Path:
    """Write ``n_frames`` frames, cycling through ``frames``, as an MJPG AVI (OpenCV's always-available codec)."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} (MJPG)")
    try:
        for i in range(n_frames):
            writer.write(frames[i % len(frames)])
    finally:
        writer.release()
    return path


def capture_children_rss_bytes() -> int:
    """Resident memory of this process's capture children (``isolate=True``; 0 when there are none)."""
    from sdk.capture_process import capture_processes

    return sum(rss_bytes(pid) or 0 for pid in capture_processes())


def soak(detector: Any, video: Path, *, mode: str, warmup: int = 200, max_frames: int | None = None,
         isolate: bool = False) -> dict[str, Any]:
    """Stream ``video`` through ``detector`` and report frames and memory.

    With ``isolate``, the video is read in a child process (``Detector.stream(..., isolate=True)``) and the RSS
    figures are this process's plus the child's.

    Returns:
        ``read``, ``processed``, ``dropped``, ``accounted`` (read == processed + dropped), ``results`` (results
        yielded), ``frame_indices_increasing``, ``seconds``, ``fps`` (results per second), ``rss_warm_mb``,
        ``rss_end_mb``, ``rss_max_mb`` and ``rss_growth_mb`` (end minus after warm-up).
    """
    results = 0
    last_index = -1
    increasing = True
    rss_warm = rss_max = None
    child_rss = 0  # last reading while the capture child ran (it ends with the video, before the last results)

    def children() -> int:
        nonlocal child_rss
        if isolate:
            child_rss = capture_children_rss_bytes() or child_rss
        return child_rss

    start = time.perf_counter()
    with detector.stream(video, mode=mode, max_frames=max_frames, isolate=isolate) as stream:
        for item in stream:
            increasing &= item.frame_index > last_index
            last_index = item.frame_index
            results += 1
            if results == warmup:
                own = rss_bytes()
                rss_warm = rss_max = None if own is None else own + children()
                start = time.perf_counter()
            elif results > warmup and results % 100 == 0:
                rss_max = max(rss_max or 0, (rss_bytes() or 0) + children())
    seconds = time.perf_counter() - start
    own = rss_bytes()
    rss_end = None if own is None else own + child_rss
    stats = stream.stats[0]
    timed = results - warmup if results > warmup else results

    def mb(v: int | None) -> float | None:
        return None if v is None else v / MB

    return {
        "mode": f"{mode}, isolated" if isolate else mode, "read": stats.read, "processed": stats.processed,
        "dropped": stats.dropped,
        "accounted": stats.read == stats.processed + stats.dropped, "results": results,
        "frame_indices_increasing": increasing, "reconnects": stats.reconnects, "seconds": seconds,
        "fps": timed / seconds if seconds > 0 else float("nan"), "rss_warm_mb": mb(rss_warm),
        "rss_end_mb": mb(rss_end), "rss_max_mb": mb(max(rss_max or 0, rss_end or 0) or None),
        "rss_growth_mb": None if rss_warm is None or rss_end is None else (rss_end - rss_warm) / MB,
    }


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def f(v: float | None, digits: int = 1) -> str:
        return "n/a" if v is None else f"{v:.{digits}f}"

    lines = [
        "# Soak: streaming a real video through Detector.stream",
        "",
        f"{datetime.date.today().isoformat()}; {os.cpu_count()} CPU cores ({platform.machine()}), ONNX Runtime; "
        f"`python -m benchmarks.soak {args.model} --frames {args.frames}{' --isolate' if args.isolate else ''}`. "
        f"Video: the MVTec bottle images in turn, {args.size}x{args.size}, MJPG, {args.frames} frames. RSS after "
        f"{args.warmup} warm-up results and at the end; throughput over the results after warm-up. Isolated rows "
        "(`isolate=True`): the video is read in a child process and RSS is this process's plus the child's (its "
        "last reading: the child ends with the video, before the last results).",
        "",
        "| mode | read | processed | dropped | read = processed + dropped | results/s | RSS warm (MB) | "
        "RSS end (MB) | RSS max (MB) | growth (MB) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['read']} | {r['processed']} | {r['dropped']} | {'yes' if r['accounted'] else 'NO'} "
            f"| {f(r['fps'])} | {f(r['rss_warm_mb'])} | {f(r['rss_end_mb'])} | {f(r['rss_max_mb'])} | "
            f"{f(r['rss_growth_mb'])} |"
        )
    lines += ["", "In `latest` mode the reader decodes the file as fast as it can, standing in for a camera faster "
              "than the model: most frames are dropped by design, and every one is counted. Its reader decodes at "
              "full speed on the same cores as the model, hence fewer results per second than `every` on a small "
              "CPU.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="exported .onnx (or .engine) model")
    parser.add_argument("--frames", type=int, default=10_000, help="frames in the video (default: 10000)")
    parser.add_argument("--size", type=int, default=320, help="frame side in pixels (default: 320)")
    parser.add_argument("--warmup", type=int, default=200, help="results before the RSS baseline (default: 200)")
    parser.add_argument("--modes", default="every,latest", help="comma-separated stream modes (default: both)")
    parser.add_argument("--isolate", action="store_true",
                        help="also run each mode with isolate=True (the video read in a child process)")
    parser.add_argument("--category", default=None,
                        help="MVTec category folder (default: $RDEDGE_MVTEC_ROOT/bottle)")
    parser.add_argument("--out", default=str(RESULTS_DIR / "soak.md"), help="markdown output")
    args = parser.parse_args(argv)
    from sdk import Detector

    category = Path(args.category or Path(os.environ.get("RDEDGE_MVTEC_ROOT", "../shared/data/mvtec")) / "bottle")
    detector = Detector(args.model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        video = write_video(bottle_frames(category, args.size), Path(tmp) / "bottle.avi", args.frames)
        print(f"video: {video.stat().st_size / MB:.0f} MB, {args.frames} frames", flush=True)
        for mode in args.modes.split(","):
            for isolate in (False, True) if args.isolate else (False,):
                rows.append(soak(detector, video, mode=mode, warmup=args.warmup, isolate=isolate))
                print(rows[-1], flush=True)
    text = markdown(rows, args)
    write_text_atomic(Path(args.out), text)
    print(text + f"\nwritten to {args.out}")
    return 0 if all(r["accounted"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

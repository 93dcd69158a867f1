"""Soak test: stream thousands of frames of a real video through ``Detector.stream`` and watch memory and frames.

Makes a video from the MVTec bottle images (train/good and every test folder, in turn, resized to ``--size``;
MJPG in an AVI container, written to a temporary folder and deleted afterwards), then streams it in
``every``-frame mode (each frame scored) and in ``latest``-frame mode (the reader decodes as fast as it can and
the scorer takes only the newest frame, as for a camera). Prints, for each mode, frames read / processed /
dropped and whether they add up, throughput, and resident memory (RSS) after warm-up and at the end.

Run: ``python -m benchmarks.soak MODEL.onnx [--frames 10000]`` (``RDEDGE_MVTEC_ROOT`` points at the MVTec root).
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


def rss_bytes() -> int | None:
    """Resident memory of this process (Linux ``/proc``, else psutil when installed, else ``None``)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def bottle_frames(category_dir: Path, size: int) -> list[np.ndarray]:
    """Every bottle image (train/good, then each test folder), resized to ``size`` x ``size``, BGR uint8."""
    from sdk.image import list_images, read_image, resize_square

    folders = [category_dir / "train" / "good", *sorted(p for p in (category_dir / "test").iterdir() if p.is_dir())]
    frames = [resize_square(read_image(p), size) for folder in folders for p in list_images(folder)]
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


def soak(detector: Any, video: Path, *, mode: str, warmup: int = 200, max_frames: int | None = None,
         ) -> dict[str, Any]:
    """Stream ``video`` through ``detector`` and report frames and memory.

    Returns:
        ``read``, ``processed``, ``dropped``, ``accounted`` (read == processed + dropped), ``results`` (results
        yielded), ``frame_indices_increasing``, ``seconds``, ``fps`` (results per second), ``rss_warm_mb``,
        ``rss_end_mb``, ``rss_max_mb`` and ``rss_growth_mb`` (end minus after warm-up).
    """
    results = 0
    last_index = -1
    increasing = True
    rss_warm = rss_max = None
    start = time.perf_counter()
    with detector.stream(video, mode=mode, max_frames=max_frames) as stream:
        for item in stream:
            increasing &= item.frame_index > last_index
            last_index = item.frame_index
            results += 1
            if results == warmup:
                rss_warm = rss_max = rss_bytes()
                start = time.perf_counter()
            elif results > warmup and results % 100 == 0:
                rss = rss_bytes()
                rss_max = max(rss_max or 0, rss or 0)
    seconds = time.perf_counter() - start
    rss_end = rss_bytes()
    stats = stream.stats[0]
    timed = results - warmup if results > warmup else results

    def mb(v: int | None) -> float | None:
        return None if v is None else v / MB

    return {
        "mode": mode, "read": stats.read, "processed": stats.processed, "dropped": stats.dropped,
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
        f"`python -m benchmarks.soak {args.model} --frames {args.frames}`. Video: the MVTec bottle images in turn, "
        f"{args.size}x{args.size}, MJPG, {args.frames} frames. RSS after {args.warmup} warm-up results and at the "
        "end; throughput over the results after warm-up.",
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
            rows.append(soak(detector, video, mode=mode, warmup=args.warmup))
            print(rows[-1], flush=True)
    text = markdown(rows, args)
    write_text_atomic(Path(args.out), text)
    print(text + f"\nwritten to {args.out}")
    return 0 if all(r["accounted"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""``rdedge predict``: score images, folders, videos, cameras or streams; overlays, annotated videos and a log."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sdk.errors import RdedgeError

from ..arguments import add_backend_argument, add_model_argument, add_threshold_arguments

NAME = "predict"
HELP = "Score images, folders, videos, cameras or streams; optionally write overlays, videos and a log."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser, ".onnx (or .xml, .engine)")
    add_backend_argument(parser)
    parser.add_argument(
        "inputs", nargs="+",
        help="image files, folders of images, video files, stream URLs (rtsp://, http://, ...), camera indices "
             "(0, 1, ...) or GStreamer pipelines (quoted, containing '!')",
    )
    parser.add_argument("--out", default=None,
                        help="folder for annotated output: <name>_overlay.png per image, <name>_overlay.mp4 per "
                             "video or stream; none when omitted")
    parser.add_argument("--log", default=None,
                        help="result log: .csv or .jsonl (appended to an existing log, one header, flushed per "
                             "result) or .json (one array: existing records kept, the whole file rewritten "
                             "atomically at the end)")
    add_threshold_arguments(parser)
    parser.add_argument("--mode", choices=("auto", "latest", "every"), default="auto",
                        help="video reading: latest frame only (default for live sources) or every frame (default "
                             "for files)")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="stop each video or stream after this many results (default: until it ends; Ctrl-C "
                             "stops a live stream cleanly)")
    parser.add_argument("--isolate", action="store_true",
                        help="read each video or stream in a child process, restarted at each reconnection: what "
                             "the capture stack leaks or hangs on (e.g. GStreamer's v4l2src) ends with it")
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of annotated videos (default: the file's, or 25 for live sources)")


def is_stream_input(item: str) -> bool:
    """Whether a ``predict`` input is a video file, URL, camera index or GStreamer pipeline (else images)."""
    from sdk.sources import VIDEO_SUFFIXES, is_live

    return is_live(item) or Path(item).suffix.lower() in VIDEO_SUFFIXES


def run(args: argparse.Namespace) -> int:
    from sdk.backends import resolve_model
    from sdk.detector import Detector
    from sdk.records import ResultLog

    detector = Detector(resolve_model(args.model), backend=args.backend, threshold=args.threshold,
                        pixel_threshold=args.pixel_threshold)
    out_dir = Path(args.out) if args.out else None
    used_names: set[str] = set()
    failures = found = 0
    log = ResultLog(args.log) if args.log else None
    print("input\tscore\tnormalized\tverdict")
    try:
        for item in args.inputs:
            if is_stream_input(item):
                found += 1
                failures += predict_stream(detector, item, args, out_dir, used_names, log)
            else:
                n, bad = predict_images(detector, item, out_dir, used_names, log)
                found, failures = found + n, failures + bad
    except KeyboardInterrupt:
        print("stopped (Ctrl-C); results so far are kept", file=sys.stderr)
    finally:
        if log is not None:
            log.close()
    if not found:
        from sdk.image import IMAGE_SUFFIXES

        print(f"no images found (suffixes: {', '.join(IMAGE_SUFFIXES)})", file=sys.stderr)
        return 1
    return 1 if failures else 0


def print_result(name: str, result) -> None:
    verdict = "ANOMALY" if result.is_anomaly else "OK"
    print(f"{name}\t{result.score:.5f}\t{result.normalized_score:.3f}\t{verdict}", flush=True)


def predict_images(detector, item: str, out_dir: Path | None, used_names: set[str], log) -> tuple[int, int]:
    """Score an image file or a folder of images; returns (images found, failures)."""
    import cv2

    from sdk.fileio import atomic_path
    from sdk.image import list_images, read_image
    from sdk.records import result_record
    from sdk.visualize import overlay

    p = Path(item)
    paths = list_images(p) if p.is_dir() else [p]
    failures = 0
    for path in paths:
        try:
            image = read_image(path)
            result = detector(image)
        except RdedgeError as exc:
            failures += 1
            print(f"{path}\terror: {exc}", file=sys.stderr)
            if log is not None:
                log.write({"source": str(path), "timestamp": round(time.time(), 6), "error": str(exc)})
            continue
        print_result(str(path), result)
        if log is not None:
            log.write(result_record(result, str(path)))
        if out_dir is not None:
            target = out_dir / overlay_name(path, used_names)
            with atomic_path(target) as tmp:
                ok, encoded = cv2.imencode(".png", overlay(image, result))
                if not ok:
                    raise RdedgeError(f"could not encode overlay for {path}")
                tmp.write_bytes(encoded.tobytes())
    return len(paths), failures


def predict_stream(detector, source: str, args: argparse.Namespace, out_dir: Path | None, used_names: set[str],
                   log) -> int:
    """Score a video file or live source, writing an annotated video and log records; returns 1 on failure."""
    import cv2

    from sdk.records import AnnotatedVideoWriter
    from sdk.sources import describe, is_live

    fps = args.fps
    if fps is None and not is_live(source):
        capture = cv2.VideoCapture(source)
        fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else None
        capture.release()
    video = None
    if out_dir is not None:
        stem = Path(source).stem if not is_live(source) else "".join(
            c if c.isalnum() else "_" for c in describe(source))[:60]
        video = AnnotatedVideoWriter(out_dir / overlay_name(Path(stem + ".mp4"), used_names, suffix=".mp4"), fps or 25)
    try:
        with detector.stream(source, mode=args.mode, max_frames=args.max_frames, overlay=video is not None,
                             isolate=args.isolate) as stream:
            for item in stream:
                print_result(f"{item.source_id}#{item.frame_index}", item.result)
                if log is not None:
                    log.write(item.as_record())
                if video is not None:
                    video.write(item.overlay)
    except RdedgeError as exc:
        print(f"{describe(source)}\terror: {exc}", file=sys.stderr)
        if log is not None:
            log.write({"source": describe(source), "error": str(exc)})
        return 1
    finally:
        if video is not None:
            video.close()
    stats = stream.stats[0]
    print(f"{stats.source_id}: read {stats.read}, scored {stats.processed}, dropped {stats.dropped} "
          f"({stats.invalid} unusable), reconnects {stats.reconnects}"
          + (f", annotated video {video.path}" if video is not None and video.frames else ""), file=sys.stderr)
    return 1 if stats.error else 0


def overlay_name(path: Path, used: set[str], suffix: str = ".png") -> str:
    """``<stem>_overlay.png``, prefixed by the parent folder (then numbered) when that name is already used."""
    candidates = [f"{path.stem}_overlay{suffix}", f"{path.parent.name}_{path.stem}_overlay{suffix}"]
    candidates += [f"{path.parent.name}_{path.stem}_{i}_overlay{suffix}" for i in range(2, len(used) + 3)]
    name = next(c for c in candidates if c not in used)
    used.add(name)
    return name

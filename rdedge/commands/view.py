"""``rdedge view``: a live line view in the browser (streams with overlays, counters, threshold, uploads)."""

from __future__ import annotations

import argparse

from ..arguments import add_backend_argument, add_model_argument

NAME = "view"
HELP = ("Serve a live page for the line: the sources' annotated frames, score and verdict, counters, the last "
        "rejects, the threshold settable from the page, and an upload box (pip install rdedge[view]).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser, ".onnx (or .xml, .engine)")
    add_backend_argument(parser)
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="camera index, video file, RTSP/HTTP URL or GStreamer pipeline (several: batched)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default: 127.0.0.1, this machine only). 0.0.0.0 opens the page to "
                             "the network: anyone who reaches it can change the line's threshold (no login)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: %(default)s)")
    parser.add_argument("--loop", action="store_true", help="start again when every source has ended (video files)")
    parser.add_argument("--threshold", type=float, default=None, help="start with this image threshold")
    parser.add_argument("--display-fps", type=display_fps_argument, default=None, metavar="FPS",
                        help="frames drawn and sent to the page per second per source (default: 10). Every frame "
                             "is still scored and counted; lower it to save bandwidth to a remote page (on 2 cores "
                             "with the browser beside inference, 5 instead of 10 did not raise the inference rate: "
                             "benchmarks/results/view.md)")


def display_fps_argument(text: str) -> float:
    """``--display-fps``: a frame rate above zero (:func:`sdk.view.check_display_fps`)."""
    from sdk.view import check_display_fps

    try:
        return check_display_fps(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from sdk.backends import resolve_model
    from sdk.detector import Detector
    from sdk.view import DISPLAY_FPS, LineView, serve

    detector = Detector(resolve_model(args.model), backend=args.backend, threshold=args.threshold)
    sources = [int(s) if s.isdigit() else s for s in args.sources]
    view = LineView(detector, sources, loop=args.loop, display_fps=args.display_fps or DISPLAY_FPS)
    where = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}/"
    print(f"live view of {len(sources)} source(s) at {where} (Ctrl-C stops)")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"  warning: bound to {args.host}: anyone who can reach this port can change the threshold")
    serve(view, args.host, args.port)
    return 0

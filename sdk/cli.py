"""The ``rdedge`` command: train, export, evaluate, predict, bench and demo.

Sub-commands that need PyTorch (train, export, bench, demo) import it only when run, so ``rdedge evaluate`` and
``rdedge predict`` work with the runtime-only install.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import RdedgeError

ONNX_NAME = "model.onnx"


def resolve_model(path: str) -> Path:
    """A model file, or a run folder → its ``model.onnx``."""
    p = Path(path)
    if p.is_dir():
        candidate = p / ONNX_NAME
        if not candidate.is_file():
            raise RdedgeError(f"{p} has no {ONNX_NAME}; run `rdedge export {p}` first")
        return candidate
    if not p.exists():
        raise RdedgeError(f"model not found: {p}")
    return p


# ------------------------------------------------------------------------------------------------- train


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True,
                        help="dataset: an MVTec-layout folder, or elpv:mono / elpv:poly (pip install elpv-dataset)")
    parser.add_argument("--category", default=None, help="MVTec category when --data is the root of several")
    parser.add_argument("--method", default="rd4ad", help="training method: rd4ad (default), rdpp, drd or reason")
    parser.add_argument("--backbone", default="efficientnet_lite0",
                        help="teacher: efficientnet_lite0 (default), resnet18 or wide_resnet50_2")
    parser.add_argument("--weights", default=None,
                        help="local ImageNet weights file for a ResNet teacher (default: the torch hub cache)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs, fixed (default: 30)")
    parser.add_argument("--image-size", type=int, default=256, help="model input side, multiple of 32 (default: 256)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per step (default: 16)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: the method's, 0.005)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--validation-fraction", type=float, default=0.1,
                        help="share of good training images held out to calibrate the threshold (default: 0.1)")
    parser.add_argument("--sigmas", type=float, default=3.0,
                        help="threshold = validation mean + SIGMAS x std of good-image scores (default: 3)")
    parser.add_argument("--max-train-images", type=int, default=None, help="train on at most N images (quick runs)")
    parser.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE",
                        help="method option, repeatable: drd refinement=false; reason suppression_target=teacher")
    parser.add_argument("--out", required=True, help="run folder to write checkpoint.pt into")


def parse_options(items: Sequence[str]) -> dict[str, object]:
    """``["a=1", "b=true", "c=x"]`` → ``{"a": 1, "b": True, "c": "x"}``."""
    options: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RdedgeError(f"method option {item!r} is not KEY=VALUE")
        value: object = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(raw)
                    break
                except ValueError:
                    pass
        options[key] = value
    return options


def cmd_train(args: argparse.Namespace) -> int:
    from train.trainer import TrainConfig, train

    config = TrainConfig(
        data=args.data, out=args.out, category=args.category, method=args.method, backbone=args.backbone,
        weights=args.weights, epochs=args.epochs, image_size=args.image_size, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, validation_fraction=args.validation_fraction, sigmas=args.sigmas,
        max_train_images=args.max_train_images, method_options=parse_options(args.method_option),
    )
    path = train(config, progress=not args.quiet)
    print(f"checkpoint written to {path}")
    return 0


# ------------------------------------------------------------------------------------------------ export


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder (or checkpoint file) from `rdedge train`")
    parser.add_argument("--out", default=None,
                        help="ONNX file to write (default: RUN_DIR/model.onnx, or model_<precision>.onnx)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32",
                        help="fp32 (default); fp16 network with FP32 pre/post-processing; int8 Q/DQ (symmetric, "
                             "one graph for TensorRT and ONNX Runtime)")
    parser.add_argument("--calib-images", type=int, default=256,
                        help="int8: good training images to calibrate on (default: 256, or all when fewer)")
    parser.add_argument("--calib-method", choices=["percentile", "entropy", "minmax"], default="percentile",
                        help="int8: activation range calibration (default: percentile)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset, at least 17 (default: 18)")
    parser.add_argument("--check-images", type=int, default=8,
                        help="real images for the ONNX Runtime vs PyTorch self-check (default: 8)")
    parser.add_argument("--no-refinement", action="store_true",
                        help="DRD ablation: export without the detection refinement (threshold re-calibrated on "
                             "the run's held-out good images)")


def cmd_export(args: argparse.Namespace) -> int:
    from export.onnx import export_onnx

    overrides = {"refinement": False} if args.no_refinement else None
    report = export_onnx(args.run, args.out, opset=args.opset, check_images=args.check_images,
                         graph_overrides=overrides, precision=args.precision, calib_images=args.calib_images,
                         calib_method=args.calib_method, progress=not args.quiet)
    checks = report.checks
    print(f"exported {report.path}")
    print(f"  self-check on {checks['n_images']} real images (tolerance {checks['tolerance']:g}):")
    for key, value in checks.items():
        if key.startswith("onnxruntime"):
            print(f"    fp32 {key}: max relative error {value:.2e}")
    reduced = checks.get("reduced_precision")
    if reduced:
        print(f"    {reduced['precision']} vs fp32: map correlation {reduced['map_correlation_vs_fp32']:.5f}, "
              f"max map error {reduced['map_max_error_vs_fp32_range']:.2%} of the map range, "
              f"max score error {reduced['score_max_relative_error_vs_fp32']:.2%}")
    qdq = checks.get("qdq")
    if qdq:
        print(f"    int8: {qdq['quantize_linear']} QuantizeLinear / {qdq['dequantize_linear']} DequantizeLinear, "
              f"{qdq['nonzero_zero_points']} non-zero zero points; calibrated on {checks['calibration_images']} good "
              f"training images ({checks['calibration_method']})")
    return 0


# ---------------------------------------------------------------------------------------------- evaluate


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="exported .onnx file, or a run folder holding model.onnx")
    parser.add_argument("--data", default=None, help="dataset spec (default: the one the model was trained on)")
    parser.add_argument("--category", default=None, help="MVTec category (default: the training one)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per inference call (default: 8)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="raw-score threshold for F1 (default: calibrated)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--as-written", action="store_true",
                        help="ONNX only: run the graph exactly as written, with onnxruntime's graph optimisations "
                             "off (Q/DQ computed in float, not by fused integer kernels; no CPU INT8 rewrite): the "
                             "reference semantics of an INT8 graph, slower")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .datasets import load_dataset
    from .detector import Detector
    from .evaluate import evaluate_detector

    model = resolve_model(args.model)
    if args.as_written and model.suffix.lower() != ".onnx":
        raise RdedgeError(f"--as-written applies to .onnx graphs, not {model}")
    options = {"optimize": False} if args.as_written else {}
    detector = Detector(model, threshold=args.threshold, **options)
    training = detector.metadata.training
    data = args.data or training.get("data")
    if not data:
        raise RdedgeError("the model does not record its training data: pass --data")
    category = args.category if args.data else (args.category or training.get("category"))
    dataset = load_dataset(data, category)
    if not dataset.test:
        raise RdedgeError(f"{data} has no test images")
    report = evaluate_detector(detector, dataset.test, batch_size=args.batch_size, progress=not args.quiet)
    report = {"dataset": dataset.name, "model": str(detector.backend.path), **report}
    if args.json:
        print(json.dumps(report))
    else:
        for key in ("dataset", "model", "n_images", "n_anomalous", "image_auroc", "pixel_auroc", "aupro", "f1",
                    "threshold", "seconds"):
            value = report[key]
            print(f"{key:>12}: {value:.4f}" if isinstance(value, float) else f"{key:>12}: {value}")
    return 0


# ----------------------------------------------------------------------------------------------- predict


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="exported .onnx (or .engine) file, or a run folder holding model.onnx")
    parser.add_argument(
        "inputs", nargs="+",
        help="image files, folders of images, video files, stream URLs (rtsp://, http://, ...), camera indices "
             "(0, 1, ...) or GStreamer pipelines (quoted, containing '!')",
    )
    parser.add_argument("--out", default=None,
                        help="folder for annotated output: <name>_overlay.png per image, <name>_overlay.mp4 per "
                             "video or stream; none when omitted")
    parser.add_argument("--log", default=None,
                        help="result log: .csv or .jsonl (appended and flushed per result) or .json (written at "
                             "the end)")
    parser.add_argument("--threshold", type=float, default=None, help="raw-score threshold (default: calibrated)")
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
    from .stream import VIDEO_SUFFIXES, is_live

    return is_live(item) or Path(item).suffix.lower() in VIDEO_SUFFIXES


def cmd_predict(args: argparse.Namespace) -> int:
    from .detector import Detector
    from .records import ResultLog

    detector = Detector(resolve_model(args.model), threshold=args.threshold)
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
        from .image import IMAGE_SUFFIXES

        print(f"no images found (suffixes: {', '.join(IMAGE_SUFFIXES)})", file=sys.stderr)
        return 1
    return 1 if failures else 0


def print_result(name: str, result) -> None:
    verdict = "ANOMALY" if result.is_anomaly else "OK"
    print(f"{name}\t{result.score:.5f}\t{result.normalized_score:.3f}\t{verdict}", flush=True)


def predict_images(detector, item: str, out_dir: Path | None, used_names: set[str], log) -> tuple[int, int]:
    """Score an image file or a folder of images; returns (images found, failures)."""
    import time

    import cv2

    from .fileio import atomic_path
    from .image import list_images, read_image
    from .records import result_record
    from .visualize import overlay

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

    from .records import AnnotatedVideoWriter
    from .stream import describe, is_live

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


# ------------------------------------------------------------------------------------------- build-engine


def add_build_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="rdedge ONNX (model.onnx, model_fp16.onnx or model_int8.onnx)")
    parser.add_argument("--out", default=None, help="engine file (default: <model>_<precision>.engine beside it)")
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"], default=None,
                        help="engine precision (default: the ONNX's; TensorRT 11 requires them equal)")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="largest batch of the profile (default: 8); with --dla the engine's fixed batch "
                             "(default: 1; smaller batches are padded)")
    parser.add_argument("--opt-batch", type=int, default=1, help="batch the profile is tuned for (default: 1)")
    parser.add_argument("--workspace", type=float, default=2.0, help="builder workspace in GB (default: 2)")
    parser.add_argument("--dla", type=int, default=None, metavar="CORE",
                        help="Jetson AGX/NX Orin: build for this DLA core (fp16/int8, static batch), with GPU "
                             "fallback")
    parser.add_argument("--cache-dir", default=None,
                        help="timing-cache folder (default: $RDEDGE_CACHE_DIR or ~/.cache/rdedge)")


def cmd_build_engine(args: argparse.Namespace) -> int:
    from export.tensorrt import build_engine

    path = build_engine(args.model, args.out, precision=args.precision, max_batch=args.max_batch,
                        opt_batch=args.opt_batch, workspace_gb=args.workspace, dla_core=args.dla,
                        cache_dir=args.cache_dir)
    print(f"engine written to {path}")
    return 0


# ------------------------------------------------------------------------------------------- bench, demo


def cmd_bench(args: argparse.Namespace) -> int:
    from benchmarks.latency import main

    return main(args)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="elpv:mono", help="dataset spec (default: elpv:mono)")
    parser.add_argument("--category", default=None, help="MVTec category, for an MVTec --data")
    parser.add_argument("--backbone", default="efficientnet_lite0", help="teacher (default: efficientnet_lite0)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default: 30)")
    parser.add_argument("--image-size", type=int, default=256, help="model input side (default: 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--out", default="runs/demo", help="run folder (default: runs/demo)")


def cmd_demo(args: argparse.Namespace) -> int:
    from benchmarks.demo import run_demo

    return run_demo(args)


# -------------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rdedge",
        description="Reverse-distillation anomaly detection: train on good images, export one ONNX graph, detect.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, add_arguments, handler) -> None:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.set_defaults(handler=handler)

    from benchmarks.latency import add_arguments as add_bench_arguments

    add("train", "Train a model on good images and calibrate its threshold.", add_train_arguments, cmd_train)
    add("export", "Export a trained run to one self-checked ONNX detector graph.", add_export_arguments, cmd_export)
    add("evaluate", "Image/pixel AUROC, AUPRO and F1 of an exported model on a test set.", add_evaluate_arguments,
        cmd_evaluate)
    add("build-engine", "Build a TensorRT engine from an rdedge ONNX, on the machine that will run it.",
        add_build_engine_arguments, cmd_build_engine)
    add("predict", "Score images, folders, videos, cameras or streams; optionally write overlays, videos and a log.",
        add_predict_arguments, cmd_predict)
    add("bench", "Latency/throughput of the ONNX model vs PyTorch+SciPy (the papers' way).", add_bench_arguments,
        cmd_bench)
    add("demo", "Train, export, evaluate and benchmark on the embedded default (ELPV mono cells).",
        add_demo_arguments, cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rdedge`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (RdedgeError, ValueError, FileNotFoundError) as exc:
        print(f"rdedge {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

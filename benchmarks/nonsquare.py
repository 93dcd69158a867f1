"""Square vs non-square input on long strips: write ``benchmarks/results/nonsquare.md``.

KolektorSDD's commutator strips are 256 px wide and ~645 px tall. A square 256 input squashes them 2.5x along their
length (and their thin cracks with them); ``--image-size 640x256`` (height x width) keeps their aspect. For each size
this trains the same recipe (RD4AD, EfficientNet-Lite0, fixed epochs, seed), exports FP32 and INT8, evaluates both
through ``sdk.Detector`` on the test set (image AUROC, pixel AUROC, AUPRO, F1 at the calibrated threshold), times
ONNX Runtime at batch 1, and runs ``Detector.stream`` on a video of the test strips (scores against single calls).
Nothing is chosen on test images: fixed epochs, thresholds from held-out good training images.

Run: ``python -m benchmarks.nonsquare`` (see ``--help``; ``RDEDGE_INDUSTRIAL_ROOT`` locates the industrial sets).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import time
from pathlib import Path
from typing import Any

from sdk.contract import ImageSize

from .latency import RESULTS_DIR, collect_rows
from .methods import evaluate_model, onnx_latency_ms

STREAM_SIZE = ImageSize(640, 256)
"""Frame size of the test video (MJPG wants even sides; the strips are ~645 tall)."""


def industrial_root() -> str:
    """``RDEDGE_INDUSTRIAL_ROOT``, or ``../shared/data/industrial`` beside the repository."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "industrial"
    return os.environ.get("RDEDGE_INDUSTRIAL_ROOT", str(default))


def stream_check(model: Path, spec: str, category: str, folder: Path) -> dict[str, Any]:
    """Stream a video of the test strips through the detector; compare with single calls on the decoded frames."""
    import cv2

    from sdk import Detector
    from sdk.datasets import load_dataset
    from sdk.image import resize_image

    from .soak import write_video

    frames = [resize_image(s.load_image(), STREAM_SIZE) for s in load_dataset(spec, category).test]
    frames = [f if f.ndim == 3 else cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) for f in frames]
    video = write_video(frames, folder / "test_strips.avi", len(frames), fps=25.0)
    detector = Detector(model)
    started = time.perf_counter()
    with detector.stream(video, overlay=True) as stream:
        results = list(stream)
    seconds = time.perf_counter() - started
    capture = cv2.VideoCapture(str(video))
    decoded = [capture.read()[1] for _ in range(len(results))]
    capture.release()
    single = detector.predict_many(decoded, batch_size=8)
    differences = [abs(r.score - s.score) / max(abs(s.score), 1e-12) for r, s in zip(results, single, strict=True)]
    return {"frames": len(results), "fps": len(results) / seconds, "max_rel_diff": max(differences),
            "overlay_shape": list(results[0].overlay.shape)}


def run_one(size: ImageSize, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train one size, export FP32 and INT8, evaluate both, time and stream the FP32 model."""
    from export.onnx import ExportCheckError, export_onnx
    from train.checkpoint import load_checkpoint
    from train.trainer import TrainConfig, train

    spec, category = args.data, args.category
    run_dir = Path(args.runs) / f"{category}-{size}"
    config = TrainConfig(data=spec, category=category, out=str(run_dir), method=args.method, backbone=args.backbone,
                         epochs=args.epochs, image_size=size, batch_size=args.batch_size, seed=args.seed)
    if not (args.reuse and (run_dir / "checkpoint.pt").exists()):
        train(config, progress=not args.quiet)
    metadata, _ = load_checkpoint(run_dir)
    rows = []
    for precision in ("fp32", "int8"):
        started = time.perf_counter()
        try:
            report = export_onnx(run_dir, precision=precision, calib_method=args.calib_method,
                                 progress=not args.quiet)
        except ExportCheckError as exc:  # the export refuses a graph that departs from FP32: say so, go on
            rows.append({"size": str(size), "precision": precision, "refused": str(exc),
                         "train_minutes": metadata.training["train_seconds"] / 60.0,
                         "export_seconds": time.perf_counter() - started})
            continue
        export_seconds = time.perf_counter() - started
        metrics = evaluate_model(report.path, spec, category)
        row = {
            "size": str(size), "precision": precision,
            **{k: metrics[k] for k in ("image_auroc", "pixel_auroc", "aupro", "f1", "n_images", "n_anomalous")},
            "train_minutes": metadata.training["train_seconds"] / 60.0,
            "export_seconds": export_seconds,
            "onnx_ms_batch1": onnx_latency_ms(report.path),
            "fp32_layers": report.checks.get("int8_fp32_layers", {}).get("n_fp32"),
        }
        if precision == "fp32":
            row["stream"] = stream_check(report.path, spec, category, run_dir)
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    lines = [
        f"# Square vs non-square input: {args.category}",
        "",
        f"{datetime.date.today().isoformat()}; {args.method} / {args.backbone}, {args.epochs} epochs, batch "
        f"{args.batch_size}, seed {args.seed}; {os.cpu_count()} CPU cores ({platform.machine()}), no GPU. Sizes are "
        "height x width. Metrics from the exported ONNX through `sdk.Detector` on the whole test set; thresholds "
        "(F1) from held-out good training images; nothing chosen on test images. Latency: ONNX Runtime, batch 1, "
        "median of 30 calls.",
        "",
        f"Reproduce: `python -m benchmarks.nonsquare --epochs {args.epochs} --sizes "
        f"{' '.join(args.sizes)}`.",
        "",
        "| size | precision | image AUROC | pixel AUROC | AUPRO | F1 | train min | export s | ONNX ms (b1) | "
        "INT8 layers kept FP32 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "refused" in r:
            lines.append(f"| {r['size']} | {r['precision']} | export refused: {r['refused'].split(':')[0]} | | | | "
                         f"{r['train_minutes']:.1f} | {r['export_seconds']:.0f} | | |")
            continue
        lines.append(
            f"| {r['size']} | {r['precision']} | {f(r['image_auroc'])} | {f(r['pixel_auroc'])} | {f(r['aupro'])} | "
            f"{f(r['f1'])} | {r['train_minutes']:.1f} | {r['export_seconds']:.0f} | {r['onnx_ms_batch1']:.2f} | "
            f"{'' if r.get('fp32_layers') is None else r['fp32_layers']} |"
        )
    streamed = [r for r in rows if "stream" in r]
    if streamed:
        lines += ["", "`Detector.stream` on an MJPG video of the test strips (frames 640x256, FP32 model, overlays "
                      "on): scores against `predict_many` on the same decoded frames.", "",
                  "| size | frames | frames/s | max relative score difference | overlay shape |",
                  "|---|---:|---:|---:|---|"]
        for r in streamed:
            s = r["stream"]
            lines.append(f"| {r['size']} | {s['frames']} | {s['fps']:.1f} | {s['max_rel_diff']:.1e} | "
                         f"{'x'.join(map(str, s['overlay_shape']))} |")
    lines += ["", "INT8: where the all-INT8 network loses accuracy on held-out good images with synthetic defects, the "
                  "export keeps its most sensitive layers in FP32 (`export.int8_layers`); the last column counts them. "
                  "A mixed graph converts at every INT8/FP32 boundary: on this CPU it can be slower than FP32 (ONNX ms "
                  "column)."]
    lines += [""] + [f"- {r['size']} {r['precision']}: {r['refused']}" for r in rows if "refused" in r]
    n = next((r for r in rows if "n_images" in r), None)
    if n is not None:
        lines += ["", f"Test set: {n['n_images']} images, {n['n_anomalous']} defective.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=industrial_root(), help="dataset root (default: $RDEDGE_INDUSTRIAL_ROOT)")
    parser.add_argument("--category", default="kolektorsdd", help="category (default: kolektorsdd)")
    parser.add_argument("--sizes", nargs="+", default=["256", "640x256"],
                        help="image sizes, a side or HEIGHTxWIDTH (default: 256 640x256)")
    parser.add_argument("--method", default="rd4ad", help="method (default: rd4ad)")
    parser.add_argument("--backbone", default="efficientnet_lite0", help="teacher (default: efficientnet_lite0)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs (default: 30)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size (default: 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    parser.add_argument("--calib-method", default="percentile", choices=("percentile", "minmax", "entropy"),
                        help="INT8 activation calibration (default: percentile, the export's default)")
    parser.add_argument("--runs", default="runs/nonsquare", help="folder for the runs (default: runs/nonsquare)")
    parser.add_argument("--reuse", action="store_true", help="reuse existing checkpoints instead of retraining")
    parser.add_argument("--out", default=str(RESULTS_DIR / "nonsquare.md"), help="markdown output")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    sizes = [ImageSize.parse(s).check_trainable() for s in args.sizes]
    collect_rows([functools.partial(run_one, size, args) for size in sizes], functools.partial(markdown, args=args),
                 args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""FP32 vs FP16 vs INT8 graphs of one run, in ONNX Runtime on this CPU: accuracy and latency side by side.

Exports the three precisions of a trained run, evaluates each with ``sdk.Detector`` on the run's test set (image
AUROC, pixel AUROC, AUPRO) and times each at batch 1 and 8 (median of timed calls after warm-up, same thread count),
then writes ``benchmarks/results/precision.md`` with the differences and speed-ups relative to FP32.

onnxruntime runs all three with its default graph optimisations, as ``sdk.Detector`` opens them: the INT8 graph
(the same file TensorRT builds) is rewritten exactly for onnxruntime's integer kernels (``sdk.backends.cpu_int8``),
and its non-quantized remainder is FP32; the FP16 graph runs FP16 kernels where onnxruntime has them. CPU latency
says nothing about TensorRT latency (see ``benchmarks/gpu_check.py``).

Run: ``python -m benchmarks.precision RUN_DIR``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from sdk.fileio import write_text_atomic

from .latency import RESULTS_DIR, summarize, time_calls


def run(run_dir: str, *, calib_images: int, iterations: int, threads: int) -> dict[str, Any]:
    from export.onnx import export_onnx
    from sdk import Detector
    from sdk.contract import PRECISION_NAMES
    from sdk.datasets import load_model_dataset, reference_images
    from sdk.evaluate import evaluate_detector

    rows: dict[str, Any] = {}
    for name in PRECISION_NAMES:
        report = export_onnx(run_dir, precision=name, calib_images=calib_images)
        detector = Detector(report.path, intra_op_threads=threads)
        dataset = load_model_dataset(detector.metadata, model_path=report.path)
        metrics = evaluate_detector(detector, dataset.test, progress=False)
        images = reference_images(detector.metadata, 8, model_path=report.path)
        while len(images) < 8:
            images = np.concatenate([images, images])
        latency = {}
        for bs in (1, 8):
            batch = list(images[:bs])
            latency[bs] = summarize(time_calls(lambda batch=batch, det=detector: det.predict_batch(batch, rgb=True), 5,
                                               iterations), bs)
        rows[name] = {
            **{k: metrics[k] for k in ("image_auroc", "pixel_auroc", "aupro", "f1", "n_images")},
            "latency": latency,
            "checks": report.checks.get("reduced_precision"),
            "dataset": dataset.name,
            "path": str(report.path),
        }
        print(json.dumps({name: {k: v for k, v in rows[name].items() if k != "checks"}}), flush=True)
    return rows


def markdown(rows: dict[str, Any], args: argparse.Namespace) -> str:
    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    def d(v: float | None, ref: float | None) -> str:
        return "" if v is None or ref is None else f" ({v - ref:+.4f})"

    fp32 = rows["fp32"]
    lines = [
        f"# Precisions in ONNX Runtime on the CPU ({fp32['dataset']})",
        "",
        f"{datetime.date.today().isoformat()}; {os.cpu_count()} CPU cores ({platform.machine()}), {args.threads} "
        f"threads, no GPU; `python -m benchmarks.precision {args.run}`. INT8 calibrated on {args.calib_images} (or "
        "all) good training images. Accuracy from `sdk.Detector` on each exported graph; latency median of "
        f"{args.iterations} calls after 5 warm-up calls; differences and speed-ups relative to FP32. `int8` is "
        "the one INT8 graph (symmetric, zero points 0: the file TensorRT builds), run as `sdk.Detector` runs it on a "
        "CPU (exact rewrite for onnxruntime's integer kernels).",
        "",
        "| precision | image AUROC | pixel AUROC | AUPRO | ms batch 1 | speed-up b1 | ms batch 8 | speed-up b8 |"
        " map corr. vs FP32 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for precision, r in rows.items():
        b1, b8 = r["latency"][1]["median_ms"], r["latency"][8]["median_ms"]
        corr = r["checks"]["map_correlation_vs_fp32"] if r["checks"] else 1.0
        lines.append(
            f"| {precision} | {f(r['image_auroc'])}{d(r['image_auroc'], fp32['image_auroc'])} | "
            f"{f(r['pixel_auroc'])}{d(r['pixel_auroc'], fp32['pixel_auroc'])} | "
            f"{f(r['aupro'])}{d(r['aupro'], fp32['aupro'])} | {b1:.2f} | "
            f"{fp32['latency'][1]['median_ms'] / b1:.2f}x | {b8:.2f} | {fp32['latency'][8]['median_ms'] / b8:.2f}x | "
            f"{corr:.5f} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder with checkpoint.pt")
    parser.add_argument("--calib-images", type=int, default=256, help="INT8 calibration images (default: 256)")
    parser.add_argument("--iterations", type=int, default=50, help="timed calls per configuration (default: 50)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="onnxruntime threads")
    parser.add_argument("--out", default=str(RESULTS_DIR / "precision.md"), help="markdown output")
    args = parser.parse_args(argv)
    rows = run(args.run, calib_images=args.calib_images, iterations=args.iterations, threads=args.threads)
    text = markdown(rows, args)
    write_text_atomic(Path(args.out), text)
    print(text + f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The main job on the embedded default: train → export → evaluate → benchmark, then print a short table.

Default data: the ELPV mono-crystalline solar cells (``pip install elpv-dataset``), EfficientNet-Lite0 teacher,
RD4AD, 256 px, on the CPU. The table is also written to ``benchmarks/results/demo.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sdk.fileio import write_text_atomic

from .latency import RESULTS_DIR, markdown_table, run_benchmark


def run_demo(args: argparse.Namespace) -> int:
    """Run every stage of the product once and print what each produced."""
    from export.onnx import export_onnx
    from sdk import Detector
    from sdk.datasets import load_dataset
    from sdk.evaluate import evaluate_detector
    from train.config import DEFAULT_EPOCHS, TrainConfig
    from train.trainer import train

    epochs = args.epochs or DEFAULT_EPOCHS
    progress = not getattr(args, "quiet", False)
    timings = {}
    started = time.perf_counter()
    print(f"[1/4] train rd4ad / {args.backbone} on {args.data}, {epochs} epochs, {args.image_size} px")
    config = TrainConfig(data=args.data, out=args.out, category=args.category, backbone=args.backbone,
                         epochs=epochs, image_size=args.image_size, seed=args.seed)
    train(config, progress=progress)
    timings["train"] = time.perf_counter() - started

    t = time.perf_counter()
    print("[2/4] export to ONNX (with the ONNX Runtime vs PyTorch self-check)")
    report = export_onnx(args.out, progress=progress)
    timings["export"] = time.perf_counter() - t

    t = time.perf_counter()
    print("[3/4] evaluate the exported model with sdk.Detector")
    detector = Detector(report.path)
    dataset = load_dataset(args.data, args.category, validation_fraction=config.validation_fraction, seed=args.seed)
    metrics = evaluate_detector(detector, dataset.test, progress=progress)
    timings["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    print("[4/4] benchmark ONNX Runtime vs PyTorch+SciPy (the papers' way)")
    bench = run_benchmark(args.out)
    timings["bench"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - started

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    md = report.metadata
    lines = [
        f"# rdedge demo: rd4ad / {args.backbone} on {dataset.name}",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| training images / validation / test | {md.training['n_train']} / {md.training['n_validation']} / "
        f"{metrics['n_images']} ({metrics['n_anomalous']} anomalous) |",
        f"| epochs, seconds per epoch | {epochs}, {md.training['seconds_per_epoch']:.1f} |",
        f"| image AUROC | {fmt(metrics['image_auroc'])} |",
        f"| pixel AUROC | {fmt(metrics['pixel_auroc'])} |",
        f"| AUPRO (FPR ≤ 0.3) | {fmt(metrics['aupro'])} |",
        f"| F1 at calibrated threshold | {fmt(metrics['f1'])} |",
        f"| ONNX vs PyTorch max rel. error (map, score) | {report.checks['onnxruntime_vs_torch_map']:.1e}, "
        f"{report.checks['onnxruntime_vs_torch_score']:.1e} |",
        f"| stage seconds (train, export, evaluate, bench, total) | "
        f"{', '.join(f'{timings[k]:.0f}' for k in ('train', 'export', 'evaluate', 'bench', 'total'))} |",
        "",
        markdown_table(bench).replace("# Latency", "## Latency"),
    ]
    text = "\n".join(lines)
    out = Path(RESULTS_DIR) / "demo.md"
    write_text_atomic(out, text)
    print()
    print(text)
    print(f"written to {out}; model at {report.path}")
    return 0

"""Compare the four methods on equal terms and write ``benchmarks/results/methods.md``.

Every method is trained with the same teacher (EfficientNet-Lite0), image size, epochs, batch size and seed, on MVTec
bottle and on ELPV mono cells; exported to ONNX; evaluated with ``sdk.Detector`` (metrics from the exported graph's
outputs); and timed in ONNX Runtime at batch 1. DRD is also exported with its detection refinement switched off
(threshold re-calibrated on the same held-out good images), for the ablation. No test image is used to choose
anything: fixed epochs, threshold from held-out good training images.

Run: ``python -m benchmarks.methods`` (see ``--help``; ``RDEDGE_MVTEC_ROOT`` locates MVTec AD).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
from pathlib import Path
from typing import Any

from sdk.contract import MODEL_FILE

from .latency import RESULTS_DIR, collect_rows, summarize, time_calls

METHODS = ("rd4ad", "rdpp", "drd", "reason")


def default_datasets() -> list[tuple[str, str | None]]:
    """(spec, category) pairs: MVTec bottle (from ``RDEDGE_MVTEC_ROOT``) and ELPV mono."""
    root = os.environ.get("RDEDGE_MVTEC_ROOT", str(Path(__file__).resolve().parents[1].parent / "shared/data/mvtec"))
    return [(root, "bottle"), ("elpv:mono", None)]


def onnx_latency_ms(model: Path, iterations: int = 30) -> float:
    """Median ONNX Runtime latency at batch 1 through ``Detector.predict_batch`` (pre-resized real-size input)."""
    import numpy as np

    from sdk import Detector

    detector = Detector(model)
    image = np.full((*detector.image_size, 3), 128, dtype=np.uint8)
    return summarize(time_calls(lambda: detector.predict_batch([image], rgb=True), 5, iterations), 1)["median_ms"]


def evaluate_model(model: Path, spec: str, category: str | None) -> dict[str, Any]:
    from sdk import Detector
    from sdk.datasets import load_dataset
    from sdk.evaluate import evaluate_detector

    return evaluate_detector(Detector(model), load_dataset(spec, category).test, progress=False)


def run_one(spec: str, category: str | None, method: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train, export, evaluate and time one method on one dataset (plus DRD without refinement)."""
    from export.onnx import export_onnx
    from train.checkpoint import load_checkpoint
    from train.trainer import TrainConfig, train

    dataset_name = category or spec
    run_dir = Path(args.runs) / dataset_name.replace(":", "-") / method
    config = TrainConfig(data=spec, category=category, out=str(run_dir), method=method, backbone=args.backbone,
                         epochs=args.epochs, image_size=args.image_size, batch_size=args.batch_size, seed=args.seed)
    if not (args.reuse and (run_dir / "checkpoint.pt").exists()):
        train(config, progress=not args.quiet)
    metadata, _ = load_checkpoint(run_dir)
    variants = [(method, None)]
    if method == "drd":
        variants.append(("drd (refinement off)", {"refinement": False}))
    rows = []
    for label, overrides in variants:
        path = run_dir / (MODEL_FILE if overrides is None else "model_no_refinement.onnx")
        report = export_onnx(run_dir, path, graph_overrides=overrides)
        metrics = evaluate_model(path, spec, category)
        rows.append({
            "dataset": dataset_name, "method": label, **{k: metrics[k] for k in
                                                          ("image_auroc", "pixel_auroc", "aupro", "f1", "n_images")},
            "seconds_per_epoch": metadata.training["seconds_per_epoch"],
            "train_minutes": metadata.training["train_seconds"] / 60.0,
            "onnx_ms_batch1": onnx_latency_ms(path),
            "parity_map": report.checks["onnxruntime_vs_torch_map"],
        })
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    lines = [
        "# Methods compared on equal terms",
        "",
        f"{datetime.date.today().isoformat()}; teacher {args.backbone}, {args.image_size} px, {args.epochs} epochs, "
        f"batch {args.batch_size}, seed {args.seed}; {os.cpu_count()} CPU cores ({platform.machine()}), no GPU. "
        "Metrics from the exported ONNX through `sdk.Detector`; threshold (for F1) from held-out good training "
        "images; no selection on the test set. Latency: ONNX Runtime, batch 1, median of 30 calls.",
        "",
        f"Reproduce: `python -m benchmarks.methods --epochs {args.epochs}`.",
        "",
        "| dataset | method | image AUROC | pixel AUROC | AUPRO | F1 | s / epoch | train min | ONNX ms (b1) |"
        " ONNX vs PyTorch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['method']} | {f(r['image_auroc'])} | {f(r['pixel_auroc'])} | {f(r['aupro'])} | "
            f"{f(r['f1'])} | {r['seconds_per_epoch']:.1f} | {r['train_minutes']:.1f} | {r['onnx_ms_batch1']:.2f} | "
            f"{r['parity_map']:.1e} |"
        )
    lines += ["", "ELPV has image-level labels only: pixel AUROC and AUPRO are n/a.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help="methods (default: all four)")
    parser.add_argument("--datasets", nargs="+", default=None,
                        help="dataset specs; MVTec folders as ROOT/CATEGORY (default: bottle and elpv:mono)")
    parser.add_argument("--backbone", default="efficientnet_lite0", help="teacher (default: efficientnet_lite0)")
    parser.add_argument("--epochs", type=int, default=30, help="epochs for every method (default: 30)")
    parser.add_argument("--image-size", default="256", help="model input: a side or HEIGHTxWIDTH (default: 256)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size (default: 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    parser.add_argument("--runs", default="runs/methods", help="folder for the runs (default: runs/methods)")
    parser.add_argument("--reuse", action="store_true", help="reuse existing checkpoints instead of retraining")
    parser.add_argument("--out", default=str(RESULTS_DIR / "methods.md"), help="markdown output")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    datasets = default_datasets() if args.datasets is None else [
        (str(Path(d).parent), Path(d).name) if not d.startswith("elpv:") else (d, None) for d in args.datasets
    ]
    jobs = [functools.partial(run_one, spec, category, method, args) for spec, category in datasets
            for method in args.methods]
    collect_rows(jobs, functools.partial(markdown, args=args), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

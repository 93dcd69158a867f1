"""``rdedge evaluate``: image/pixel AUROC, AUPRO and F1 of an exported model, from its own outputs."""

from __future__ import annotations

import argparse
import json

from sdk.errors import RdedgeError

from ..arguments import add_backend_argument, add_model_argument, add_test_folder_arguments, test_folders

NAME = "evaluate"
HELP = "Image/pixel AUROC, AUPRO and F1 of an exported model on a test set."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_argument(parser, ".onnx (or .xml, .engine)")
    add_backend_argument(parser)
    parser.add_argument("--data", default=None,
                        help="dataset spec (default: the model's training data: a packaged spec such as elpv:mono, "
                             "or the folder recorded in its run folder's train_log.json)")
    parser.add_argument("--category", default=None, help="MVTec category (default: the training one)")
    add_test_folder_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=8, help="images per inference call (default: 8)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="image threshold (raw score) for F1 (default: calibrated)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--report", default=None, metavar="DIR",
                        help="also write an HTML report to DIR (index.html, self-contained, plus the figures as PNG): "
                             "ROC/PRO curves, score histograms with the threshold, per-defect table, confusion "
                             "counts, worst cases, model card (pip install rdedge[report])")
    parser.add_argument("--as-written", action="store_true",
                        help="ONNX only: run the graph exactly as written, with onnxruntime's graph optimisations "
                             "off (Q/DQ computed in float, not by fused integer kernels; no CPU INT8 rewrite): the "
                             "reference semantics of an INT8 graph, slower")


def run(args: argparse.Namespace) -> int:
    from sdk.backends import resolve_model
    from sdk.datasets import load_model_dataset
    from sdk.detector import Detector
    from sdk.evaluate import evaluate_detector

    model = resolve_model(args.model)
    if args.as_written and (model.suffix.lower() != ".onnx" or args.backend not in (None, "onnxruntime")):
        raise RdedgeError(f"--as-written applies to .onnx graphs in onnxruntime, not {model} ({args.backend})")
    options = {"optimize": False} if args.as_written else {}
    detector = Detector(model, backend=args.backend, threshold=args.threshold, **options)
    dataset = load_model_dataset(detector.metadata, data=args.data, category=args.category, model_path=model,
                                 **test_folders(args))
    if not dataset.test:
        raise RdedgeError(f"{dataset.spec} has no test images")
    if args.report:
        from sdk.report import write_report

        page, report = write_report(detector, dataset.test, args.report, dataset_name=dataset.name,
                                    batch_size=args.batch_size, progress=not args.quiet)
    else:
        page, report = None, evaluate_detector(detector, dataset.test, batch_size=args.batch_size,
                                               progress=not args.quiet)
    report = {"dataset": dataset.name, "model": str(detector.backend.path), **report}
    if page is not None:
        report["report"] = str(page)
    if args.json:
        print(json.dumps(report))
    else:
        for key in ("dataset", "model", "n_images", "n_anomalous", "image_auroc", "pixel_auroc", "aupro", "f1",
                    "threshold", "seconds", *(["report"] if page is not None else [])):
            value = report[key]
            print(f"{key:>12}: {value:.4f}" if isinstance(value, float) else f"{key:>12}: {value}")
    return 0

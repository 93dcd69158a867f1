"""First-GPU-host check: build the FP32, FP16 and INT8 engines, compare each with ONNX Runtime through Polygraphy on
real images, time them host-to-host at batch 1 and 8, and write ``benchmarks/results/gpu_check-<gpu>.md``.

Run on the target machine (discrete GPU or Jetson), inside an environment with TensorRT, pycuda and polygraphy::

    python -m benchmarks.gpu_check RUN_DIR [--dla 0]

Protocol: for each precision, ``rdedge export --precision P`` (skipped when the file exists), ``rdedge
build-engine``, then Polygraphy's ``Comparator`` runs the ONNX as written in ONNX Runtime (CPU, graph optimisations
off: Q/DQ computed in float, the reference semantics) and the engine's plan in TensorRT on the same real validation
images and reports per-output errors against a per-precision tolerance; the engine and the ONNX (as ``sdk.Detector``
runs it on the CPU) are both evaluated on the run's test set (image and pixel AUROC: the "same numbers on every
runtime" check); latency is ``Detector.predict_batch`` on the engine (page-locked copy in, ``execute_async_v3``,
copy out, synchronise), 20 warm-up then 200 timed calls, median and p99.

**This script has never run in this repository's CI (no GPU there).** Its numbers are the first real evidence of
TensorRT behaviour; until they exist, nothing about TensorRT numerics or latency is claimed.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

import numpy as np

from sdk.fileio import write_text_atomic

from .latency import RESULTS_DIR, summarize, time_calls

TOLERANCES = {"fp32": (1e-2, 1e-3), "fp16": (2e-2, 2e-3), "int8": (1e-1, 1e-2)}
"""Polygraphy's elementwise (rtol, atol) per precision: TF32 convolutions in FP32 engines, FP16 rounding, and INT8
kernels that round differently from the float Q/DQ reference."""


def as_written_session(onnx_path: Path) -> Any:
    """The ONNX in ONNX Runtime on the CPU with graph optimisations off: Q/DQ computed in float, as written."""
    from sdk.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(onnx_path, optimize=False).session


def compare_runners(reference: Any, candidate: Any, images: np.ndarray, precision: str) -> dict[str, Any]:
    """Polygraphy's Comparator on one feed per real image: pass/fail at the precision's tolerance, and the largest
    error of each output relative to the reference's largest magnitude.

    Args:
        reference: Polygraphy runner of the reference (the ONNX as written, in ONNX Runtime).
        candidate: Polygraphy runner under test (the engine, in TensorRT).
        images: Real images, ``(N, H, W, 3)`` uint8 RGB at the model's size.
        precision: Picks the tolerance from :data:`TOLERANCES`.
    """
    from polygraphy.comparator import Comparator

    try:
        from polygraphy.comparator import SimpleCompareFunc
    except ImportError:  # Polygraphy before 0.50
        from polygraphy.comparator import CompareFunc

        SimpleCompareFunc = CompareFunc.simple
    feeds = [{"image": images[i : i + 1]} for i in range(len(images))]
    results = Comparator.run([reference, candidate], data_loader=feeds)
    rtol, atol = TOLERANCES[precision]
    accuracy = Comparator.compare_accuracy(results, compare_func=SimpleCompareFunc(rtol=rtol, atol=atol))
    errors: dict[str, float] = {}
    reference_outputs, candidate_outputs = results[0][1], results[1][1]
    for name in ("anomaly_map", "score"):
        diffs = [np.abs(a[name] - b[name]).max() / max(np.abs(a[name]).max(), 1e-6)
                 for a, b in zip(reference_outputs, candidate_outputs, strict=True)]
        errors[f"{name}_max_error_vs_onnx_max"] = float(max(diffs))
    return {"polygraphy_passed": bool(accuracy), **errors}


def compare_with_polygraphy(onnx_path: Path, engine_path: Path, images: np.ndarray, precision: str,
                            ) -> dict[str, Any]:
    """The ONNX as written in ONNX Runtime vs the engine's plan in TensorRT (see :func:`compare_runners`)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    from sdk.backends.engine_file import read_engine_header

    _, _, offset = read_engine_header(engine_path)
    plan = engine_path.read_bytes()[offset:]
    return compare_runners(OnnxrtRunner(as_written_session(onnx_path)), TrtRunner(EngineFromBytes(plan)), images,
                           precision)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder with checkpoint.pt")
    parser.add_argument("--dla", type=int, default=None,
                        help="Jetson: build the fp16 and int8 engines for this DLA core (static batch 1)")
    parser.add_argument("--iterations", type=int, default=200, help="timed calls per configuration (default: 200)")
    args = parser.parse_args(argv)

    from benchmarks.training import markdown_rows, run_batch, training_rows
    from export.onnx import default_output, export_onnx
    from export.tensorrt import build_engine, cuda_device_info
    from sdk import Detector
    from sdk.contract import PRECISION_NAMES
    from sdk.datasets import load_model_dataset, reference_images
    from sdk.evaluate import evaluate_detector
    from train.checkpoint import resolve_checkpoint

    checkpoint = resolve_checkpoint(args.run)
    gpu_name, capability = cuda_device_info()
    rows = []
    for precision in PRECISION_NAMES:
        onnx_path = default_output(checkpoint, precision)
        if not onnx_path.exists():
            export_onnx(checkpoint, onnx_path, precision=precision)
        dla_core = None if precision == "fp32" else args.dla  # DLA runs FP16/INT8 only
        # DLA engines have a static batch: 1, so that Polygraphy's one-image feeds fit and batch 8 runs as 8 calls
        engine = build_engine(onnx_path, precision=precision, max_batch=8 if dla_core is None else 1,
                              dla_core=dla_core)
        detector = Detector(engine)
        images = reference_images(detector.metadata, 8, model_path=onnx_path)
        comparison = compare_with_polygraphy(onnx_path, engine, images, precision)
        test = load_model_dataset(detector.metadata, model_path=onnx_path).test
        for runtime, det in (("engine", detector), ("onnxruntime", Detector(onnx_path))):
            metrics = evaluate_detector(det, test, progress=False)
            comparison.update({f"{runtime}_{k}": metrics[k] for k in ("image_auroc", "pixel_auroc")})
        latency = {}
        for bs in (1, 8):
            batch = list(np.resize(images, (bs, *images.shape[1:])))
            latency[bs] = summarize(
                time_calls(lambda batch=batch, det=detector: det.predict_batch(batch, rgb=True), 20,
                           args.iterations), bs)
        rows.append({"precision": precision, "engine": str(engine), **comparison, "latency": latency})
        print(json.dumps(rows[-1]), flush=True)

    lines = [
        f"# GPU check: {gpu_name} (compute capability {capability})",
        "",
        f"{datetime.date.today().isoformat()}; `python -m benchmarks.gpu_check {args.run}`; host-to-host latency "
        f"(copy in, infer, copy out), 20 warm-up + {args.iterations} timed calls.",
        "",
        "| precision | Polygraphy vs ONNX Runtime (rtol, atol) | map max err / max | score max err / max | "
        "image AUROC engine / ORT | pixel AUROC engine / ORT | b1 median ms | b1 p99 ms | b8 median ms | "
        "b8 images/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        b1, b8 = r["latency"][1], r["latency"][8]
        lines.append(
            f"| {r['precision']} | {'passed' if r['polygraphy_passed'] else 'FAILED'} "
            f"{TOLERANCES[r['precision']]} | "
            f"{r['anomaly_map_max_error_vs_onnx_max']:.2e} | {r['score_max_error_vs_onnx_max']:.2e} | "
            f"{r['engine_image_auroc']:.4f} / {r['onnxruntime_image_auroc']:.4f} | "
            f"{r['engine_pixel_auroc']:.4f} / {r['onnxruntime_pixel_auroc']:.4f} | "
            f"{b1['median_ms']:.3f} | {b1['p99_ms']:.3f} | {b8['median_ms']:.3f} | {b8['images_per_s']:.0f} |"
        )
    images, backbone = run_batch(args.run, 16)  # training throughput, the step rdedge train runs (unrun so far)
    lines += ["", f"Training: images/s of each method's training step ({backbone}, 16 good training images per "
              "step, 2 warm-up + 5 timed steps), CPU vs CUDA, AMP off and auto.", "",
              *markdown_rows(training_rows(images, backbone, cuda=True))]
    out = RESULTS_DIR / f"gpu_check-{gpu_name.replace(' ', '_')}.md"
    write_text_atomic(out, "\n".join(lines) + "\n")
    print("\n".join(lines) + f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How fast can INT8 get in ONNX Runtime on this CPU? The TensorRT Q/DQ layout against layouts tuned for the CPU.

The default INT8 graph (``rdedge export --precision int8``) is laid out for TensorRT: Q/DQ only on the inputs of
``Conv``/``ConvTranspose``, symmetric INT8 with zero points 0. onnxruntime's CPU kernels want something else: a
quantized output after every convolution (so ``DQ -> Conv -> Q`` fuses into ``QLinearConv``) and, on x86, unsigned
activations (its ``QDQS8ToU8Transformer`` converts a signed ``Q -> DQ`` pair only when the ``Q`` has a single
consumer). This script quantizes one FP32 graph four ways with the same calibration images and times each against
the FP32 graph in the same run, so the ratio says how much of the INT8 target the CPU can give at all:

* ``tensorrt layout``: the default export (``export.precision.int8_quantization_options``).
* ``all-ops s8``: also ``Clip``/``Relu``/``Add``/``Concat`` and every output quantized, symmetric INT8, one Q/DQ
  pair per tensor (still TensorRT-compatible).
* ``all-ops s8 as u8``: the same graph with each activation pair rewritten exactly to UINT8 with zero point 128
  (identical values; what onnxruntime would do itself if it could). Not a deliverable: TensorRT has no UINT8 Q/DQ.
* ``cpu layout (all-ops u8 asymmetric)``: onnxruntime's own preferred CPU layout (asymmetric UINT8 activations,
  ``Relu``/``Clip`` folded into the quantization range): ``rdedge export --precision int8 --int8-layout cpu``.
  TensorRT rejects non-zero zero points, so this one is for CPUs only.

Run: ``python -m benchmarks.int8_cpu runs/bottle/model.onnx`` (an FP32 graph written by ``rdedge export``).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sdk.fileio import write_text_atomic

from .latency import RESULTS_DIR, summarize, time_calls


def variant_options(fp32_model: Path, method: str) -> dict[str, dict[str, Any]]:
    """``quantize_static`` arguments of each variant (the s8-as-u8 one is a rewrite of ``all-ops s8``)."""
    from export.precision import CPU_QUANTIZED_OP_TYPES, int8_quantization_options

    shipped = int8_quantization_options(fp32_model, method)
    all_s8 = copy.deepcopy(shipped)
    all_s8["op_types_to_quantize"] = list(CPU_QUANTIZED_OP_TYPES)
    all_s8["extra_options"].update(OpTypesToExcludeOutputQuantization=[], DedicatedQDQPair=False)
    return {"tensorrt layout": shipped, "all-ops s8": all_s8,
            "cpu layout (all-ops u8 asymmetric)": int8_quantization_options(fp32_model, method, layout="cpu")}


def signed_pairs_as_unsigned(model: onnx.ModelProto) -> int:
    """Rewrite every activation ``QuantizeLinear -> DequantizeLinear`` pair from INT8 (zero point 0) to UINT8
    (zero point 128) in place: the dequantized values are identical. Weights (constant inputs) stay INT8.

    Returns:
        The number of Q and DQ nodes rewritten.
    """
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    added: dict[str, onnx.TensorProto] = {}
    rewritten = 0
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        source = node.input[0]
        if node.op_type == "DequantizeLinear":
            quantize = producers.get(source)
            if quantize is None or quantize.op_type != "QuantizeLinear":
                continue
            source = quantize.input[0]
        if source in initializers:
            continue
        zero_point = initializers[node.input[2]]
        values = numpy_helper.to_array(zero_point)
        if zero_point.data_type != TensorProto.INT8 or np.any(values != 0):
            continue
        name = f"{node.input[2]}_as_u8"
        added.setdefault(name, numpy_helper.from_array(np.full(values.shape, 128, np.uint8), name))
        node.input[2] = name
        rewritten += 1
    graph.initializer.extend(added.values())
    return rewritten


def run(fp32_path: str, *, calib_images: int, method: str, iterations: int, threads: int,
        accuracy: bool) -> dict[str, Any]:
    from export.precision import quantize_int8
    from sdk import Detector
    from sdk.datasets import load_model_dataset, load_prepared, reference_images
    from sdk.evaluate import evaluate_detector

    fp32 = Path(fp32_path)
    reference = Detector(fp32, intra_op_threads=threads)
    dataset = load_model_dataset(reference.metadata)
    calibration = load_prepared(dataset.train[:calib_images], reference.metadata.image_size, desc="calibration")
    image = list(reference_images(reference.metadata, 1))
    fp32_model = onnx.load(str(fp32))
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": fp32}
        for name, options in variant_options(fp32, method).items():
            paths[name] = Path(tmp) / f"{len(paths)}.onnx"
            quantize_int8(fp32, paths[name], calibration, options=options)
            model = onnx.load(str(paths[name]))
            del model.metadata_props[:]
            model.metadata_props.extend(fp32_model.metadata_props)  # the SDK's metadata, for Detector
            if name == "all-ops s8":
                onnx.save(model, paths[name])
                model = copy.deepcopy(model)
                rewritten = signed_pairs_as_unsigned(model)
                print(f"all-ops s8 as u8: {rewritten} Q/DQ nodes rewritten", flush=True)
                name = "all-ops s8 as u8"
                paths[name] = Path(tmp) / f"{len(paths)}.onnx"
            onnx.save(model, paths[name])
        order = ["fp32", "tensorrt layout", "all-ops s8", "all-ops s8 as u8", "cpu layout (all-ops u8 asymmetric)"]
        for name in order:
            detector = Detector(paths[name], intra_op_threads=threads)
            times = time_calls(lambda d=detector: d.predict_batch(image, rgb=True), 10, iterations)
            row: dict[str, Any] = {"latency": summarize(times, 1)}
            if accuracy:
                metrics = evaluate_detector(detector, dataset.test, progress=False)
                row.update({k: metrics[k] for k in ("image_auroc", "pixel_auroc")})
            rows[name] = row
            print(name, row, flush=True)
    return {"rows": rows, "dataset": dataset.name}


def markdown(report: dict[str, Any], args: argparse.Namespace) -> str:
    rows = report["rows"]
    base = rows["fp32"]["latency"]["median_ms"]
    trt = {"fp32": "yes", "tensorrt layout": "yes", "all-ops s8": "yes", "all-ops s8 as u8": "no (UINT8 Q/DQ)",
           "cpu layout (all-ops u8 asymmetric)": "no (zero points != 0)"}
    lines = [
        f"# INT8 in ONNX Runtime on this CPU: the TensorRT layout against CPU-tuned layouts ({report['dataset']})",
        "",
        f"{datetime.date.today().isoformat()}; {os.cpu_count()} CPU cores ({platform.machine()}), {args.threads} "
        "threads; `python -m benchmarks.int8_cpu "
        f"{args.model}`; {args.calib_images} calibration images ({args.method}); median of {args.iterations} "
        "calls at batch 1 through `sdk.Detector` after 10 warm-up calls, all in one process.",
        "",
        "| graph | TensorRT-compatible | image AUROC | pixel AUROC | ms batch 1 | speed-up vs FP32 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        ms = row["latency"]["median_ms"]
        acc = [f"{row[k]:.4f}" if k in row else "n/a" for k in ("image_auroc", "pixel_auroc")]
        lines.append(f"| {name} | {trt[name]} | {acc[0]} | {acc[1]} | {ms:.2f} | {base / ms:.2f}x |")
    lines += [
        "",
        "The anomaly-map head (cosine, upsampling, 33-tap blur, max) and the input normalisation stay FP32 in every "
        "variant, so they bound the speed-up from above whatever the network's precision.",
        "",
        "Why: on x86, onnxruntime runs a convolution in INT8 only when its output is quantized too and its "
        "activations are unsigned (U8S8 kernels; a signed Q/DQ pair is converted to unsigned only when its `Q` has "
        "a single consumer). The TensorRT-compatible layouts (symmetric INT8, zero points 0) cannot give it both.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="FP32 ONNX graph written by rdedge export")
    parser.add_argument("--calib-images", type=int, default=64, help="calibration images (default: 64)")
    parser.add_argument("--method", default="percentile", choices=("percentile", "entropy", "minmax"),
                        help="calibration method (default: percentile)")
    parser.add_argument("--iterations", type=int, default=50, help="timed calls per graph (default: 50)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="onnxruntime threads")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the AUROC evaluation of each graph")
    parser.add_argument("--out", default=str(RESULTS_DIR / "int8_cpu.md"), help="markdown output")
    args = parser.parse_args(argv)
    report = run(args.model, calib_images=args.calib_images, method=args.method, iterations=args.iterations,
                 threads=args.threads, accuracy=not args.no_accuracy)
    text = markdown(report, args)
    write_text_atomic(Path(args.out), text)
    print(text + f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

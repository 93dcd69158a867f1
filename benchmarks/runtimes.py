"""The same exported graphs in each CPU runtime: ONNX Runtime and OpenVINO, FP32 and INT8, batch 1 and 8.

Every row runs a file ``rdedge export`` wrote, through ``sdk.Detector``, on real test images resized to the model
size beforehand (the host resize is the same for every row), in interleaved rounds in one process (each round times
every row once), so that machine noise falls on all rows alike. Beside the times: how far each row's scores are from
ONNX Runtime FP32 on the same images (OpenVINO computes in FP32 unless ``bf16`` is asked for; the ``bf16`` row shows
what its automatic choice on AMX/AVX512-BF16 CPUs would cost in agreement).

Run: ``python -m benchmarks.runtimes RUN`` (a run folder with ``model.onnx``; ``model_int8.onnx`` is exported when
missing) → ``benchmarks/results/runtimes.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from sdk.fileio import write_text_atomic

from .latency import RESULTS_DIR, summarize, time_calls

ROWS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "onnxruntime fp32": ("fp32", "onnxruntime", {}),
    "openvino fp32": ("fp32", "openvino", {}),
    "openvino fp32 graph, bf16 compute": ("fp32", "openvino", {"inference_precision": "bf16"}),
    "onnxruntime int8": ("int8", "onnxruntime", {}),
    "openvino int8": ("int8", "openvino", {}),
}
"""Row name → (graph precision, backend, backend options)."""
REFERENCE = "onnxruntime fp32"


def real_images(run: Path, n: int) -> np.ndarray:
    """``n`` test images of the run's data set (good and defective), RGB, resized to the model size beforehand so
    that the rows compare runtimes, not the host resize they all share."""
    from sdk.datasets import load_model_dataset, load_prepared
    from sdk.detector import Detector

    metadata = Detector(run / "model.onnx").metadata
    dataset = load_model_dataset(metadata, model_path=run / "model.onnx")
    samples = dataset.test[:: max(1, len(dataset.test) // n)][:n]
    return load_prepared(samples, metadata.image_size, progress=False)


def int8_graph(run: Path, calib_images: int) -> Path:
    """The run's INT8 graph, exported (calibrated on its good training images) when missing."""
    path = run / "model_int8.onnx"
    if not path.exists():
        from export.onnx import export_onnx

        path = export_onnx(run, precision="int8", calib_images=calib_images).path
    return path


def measure(run: Path, *, threads: int, iterations: int, rounds: int, calib_images: int,
            batch_sizes: tuple[int, ...] = (1, 8)) -> list[dict[str, Any]]:
    """Time every row at every batch size; scores compared with :data:`REFERENCE`."""
    from sdk.detector import Detector

    files = {"fp32": run / "model.onnx", "int8": int8_graph(run, calib_images)}
    images = real_images(run, max(batch_sizes))
    detectors = {}
    for name, (precision, backend, options) in ROWS.items():
        threading = {"intra_op_threads": threads} if backend == "onnxruntime" else {"threads": threads}
        detectors[name] = Detector(files[precision], backend=backend, **threading, **options)
    reference = np.array([r.score for r in detectors[REFERENCE].predict_batch(images, rgb=True)])
    times: dict[tuple[str, int], list[np.ndarray]] = {(n, b): [] for n in ROWS for b in batch_sizes}
    for _ in range(rounds):
        for batch in batch_sizes:
            for name, detector in detectors.items():
                chunk = images[:batch]
                times[name, batch].append(time_calls(lambda d=detector, c=chunk: d.predict_batch(c, rgb=True), 2,
                                                     max(1, iterations // rounds)))
    rows = []
    for name, detector in detectors.items():
        scores = np.array([r.score for r in detector.predict_batch(images, rgb=True)])
        deviation = float(np.max(np.abs(scores - reference) / np.abs(reference)))
        for batch in batch_sizes:
            stats = summarize(np.concatenate(times[name, batch]), batch)
            rows.append({"row": name, "batch": batch, **stats, "max_score_deviation": deviation,
                         "file": detector.backend.path.name})
    for row in rows:
        base = next(r for r in rows if r["row"] == REFERENCE and r["batch"] == row["batch"])
        row["speedup"] = base["median_ms"] / row["median_ms"]
    return rows


def int8_note(path: Path) -> list[str]:
    """What the INT8 file holds: its Q/DQ counts and the layers its export kept FP32 (``int8_fp32_layers``)."""
    from sdk.detector import Detector

    checks = Detector(path).metadata.checks
    fallback, qdq = checks.get("int8_fp32_layers"), checks.get("qdq")
    if not fallback or not qdq:
        return []
    counts = f"{qdq['quantize_linear']} QuantizeLinear / {qdq['dequantize_linear']} DequantizeLinear"
    fp32 = path.with_name("model.onnx")
    size = f"{path.stat().st_size / 1e6:.1f} MB"
    if fp32.exists():
        size += f" (FP32: {fp32.stat().st_size / 1e6:.1f} MB)"
    n_fp32 = fallback.get("n_fp32", fallback.get("n_nodes"))  # n_nodes: files of the earlier depth fallback
    line = f"`{path.name}`: {size}, {counts}; {n_fp32} network layers kept in FP32"
    if "n_int8" in fallback:
        line += f", {fallback['n_int8']} in INT8 (per-layer sensitivity, gated on held-out good images)."
    else:
        line += " (an earlier export's depth fallback)."
    if n_fp32 and n_fp32 > fallback.get("n_int8", 0):
        line += " Where that is most of the network, the INT8 rows time an FP32 graph."
    return ["", line]


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    import onnxruntime
    import openvino

    lines = [
        "# The same graphs in each CPU runtime: ONNX Runtime and OpenVINO, FP32 and INT8",
        "",
        f"{datetime.date.today().isoformat()}; {os.cpu_count()} CPU cores ({platform.machine()}), {args.threads} "
        f"threads; onnxruntime {onnxruntime.__version__}, OpenVINO {openvino.__version__.split('-')[0]}; "
        f"`python -m benchmarks.runtimes {args.run}`; through `sdk.Detector` on real test images already at the "
        "model size, "
        f"{args.rounds} interleaved rounds, {args.iterations} timed calls per row and batch size in all, one process.",
        "",
        "| runtime, graph | batch | median ms | p90 ms | images/s | speed-up vs onnxruntime fp32 | "
        "max score deviation vs onnxruntime fp32 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["batch"], list(ROWS).index(r["row"]))):
        lines.append(f"| {r['row']} | {r['batch']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | "
                     f"{r['images_per_s']:.1f} | {r['speedup']:.2f}x | {r['max_score_deviation']:.1e} |")
    lines += int8_note(Path(args.run) / "model_int8.onnx")
    lines += ["", "Deviation: the largest relative difference of an image score from onnxruntime FP32's on the timed "
              "real images (INT8: quantization, the same in both runtimes' files; bf16: OpenVINO's automatic "
              "choice on AMX/AVX512-BF16 CPUs, off in rdedge unless asked for).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run folder holding model.onnx (model_int8.onnx is exported when missing)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads per runtime "
                        "(default: the machine's cores)")
    parser.add_argument("--iterations", type=int, default=100, help="timed calls per row and batch size")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: 5)")
    parser.add_argument("--calib-images", type=int, default=256, help="INT8 calibration images when exporting")
    parser.add_argument("--out", default=str(RESULTS_DIR / "runtimes.md"), help="markdown output")
    args = parser.parse_args(argv)
    rows = measure(Path(args.run), threads=args.threads, iterations=args.iterations, rounds=args.rounds,
                   calib_images=args.calib_images)
    text = markdown(rows, args)
    write_text_atomic(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

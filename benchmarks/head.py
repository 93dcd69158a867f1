"""The anomaly-map head's smoothing on this CPU: upsampling, fusion and Gaussian blur as constant matrix products
(what ``rdedge export`` writes) against the same computation as separate operators (the head before: Resize per
scale, Add, a padding Gather and two 33-tap single-channel convolutions).

Both graphs are traced from one checkpoint (only the head's ``smooth`` differs), carry the run's metadata, and run
through the SDK's own backends (ONNX Runtime, and OpenVINO with FP32 compute where installed) on real test images:
interleaved rounds in one process, batch 1 and 8, the backend's ``infer`` alone (no host resize). The page also gives
how far the two graphs' maps and scores are apart (float32 rounding: the functions are equal) and, from ONNX
Runtime's profiler, the head's share of node time in each.

Run: ``python -m benchmarks.head runs/accuracy/bottle/rd4ad`` → ``benchmarks/results/head.md``.
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

from sdk.fileio import write_text_atomic

from .latency import RESULTS_DIR, processor_name
from .ort_tuning import add_timing_options, interleaved_stats, profile, timing_images

MATRIX = "matrix products (now)"
STEP_BY_STEP = "Resize + Gather + 33-tap convolutions (before)"


def step_by_step_head_class() -> type:
    """The head with its smoothing computed operator by operator, as rdedge exported it before the matrix form."""
    from train.components.anomaly_map import AnomalyMapHead

    class StepByStepHead(AnomalyMapHead):
        def smooth(self, distances: list[Any]) -> Any:
            return self.blur(self.fuse([self.upsample(d) for d in distances]))

    return StepByStepHead


def export_variants(run: Path, folder: Path) -> dict[str, Path]:
    """Trace the run's graph twice, once per smoothing, into ``folder``; returns variant name → ``.onnx`` path."""
    import onnx

    from export.onnx import set_metadata, to_onnx_model
    from train.checkpoint import build_graph_from_checkpoint

    graph, metadata = build_graph_from_checkpoint(run)
    graph.eval()
    paths = {}
    for name, stem, head_class in ((MATRIX, "matrix", None), (STEP_BY_STEP, "step_by_step", step_by_step_head_class())):
        variant = copy.deepcopy(graph)
        if head_class is not None:  # the same head object and buffers, with the step-by-step smooth()
            variant.head.__class__ = head_class
        model = to_onnx_model(variant, metadata.image_size)
        set_metadata(model, metadata)
        paths[name] = folder / f"{stem}.onnx"
        onnx.save(model, str(paths[name]))
    return paths


def open_backends(paths: dict[str, Path]) -> dict[tuple[str, str], Any]:
    """(variant, backend name) → an open SDK backend: ONNX Runtime always, OpenVINO (FP32 compute) if installed."""
    from sdk.backends.onnxruntime import OnnxRuntimeBackend
    from sdk.errors import ModelLoadError

    backends: dict[tuple[str, str], Any] = {}
    for name, path in paths.items():
        backends[name, "onnxruntime"] = OnnxRuntimeBackend(path)
        try:
            from sdk.backends.openvino import OpenVinoBackend

            backends[name, "openvino"] = OpenVinoBackend(path)
        except ModelLoadError as exc:  # openvino is an optional extra: the page then has no OpenVINO rows
            print(f"OpenVINO rows left out: {exc}")
    return backends


def agreement(backends: dict[tuple[str, str], Any], images: np.ndarray) -> dict[str, float]:
    """Largest map difference (relative to the largest map value) and score difference (relative) between the two
    variants on ONNX Runtime."""
    (maps_now, scores_now), (maps_before, scores_before) = (backends[name, "onnxruntime"].infer(images)
                                                            for name in (MATRIX, STEP_BY_STEP))
    return {"map": float(np.abs(maps_now - maps_before).max() / np.abs(maps_before).max()),
            "score": float(np.max(np.abs(scores_now - scores_before) / np.abs(scores_before)))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder written by rdedge train (holding checkpoint.pt)")
    add_timing_options(parser, str(RESULTS_DIR / "head.md"))
    args = parser.parse_args(argv)
    run = Path(args.run)
    if not (run / "checkpoint.pt").is_file():
        parser.error(f"{run} holds no checkpoint.pt: pass a folder written by rdedge train")
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_variants(run, Path(tmp))
        backends = open_backends(paths)
        metadata = backends[MATRIX, "onnxruntime"].metadata  # the run's, as export_variants wrote it
        images = timing_images(metadata, run / "checkpoint.pt")
        found = interleaved_stats({key: lambda batch, b=backend: lambda: b.infer(batch)
                                   for key, backend in backends.items()}, images, args.rounds, args.iterations)
        agree = agreement(backends, np.ascontiguousarray(images))
        profiles = {name: profile(path, np.ascontiguousarray(images[:1]), 30) for name, path in paths.items()}
        for backend in backends.values():
            backend.close()
    stats = {(name, backend_name, batch_size): v for ((name, backend_name), batch_size), v in found.items()}
    lines = [
        "# The anomaly-map head's smoothing: matrix products against separate operators",
        "",
        f"{datetime.date.today().isoformat()}; {os.cpu_count()} CPU cores ({platform.machine()}, "
        f"{processor_name()}); `python -m benchmarks.head {args.run}` ({metadata.method}/"
        f"{metadata.backbone}, {metadata.image_size}, FP32); both graphs traced from the same checkpoint; the SDK "
        f"backend's `infer` alone (no host resize), real test images, {args.rounds} interleaved rounds in one process; "
        "OpenVINO with FP32 compute (the SDK's default).",
        "",
        "| backend | batch | before: median ms | now: median ms | before: p90 ms | now: p90 ms | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for backend_name in sorted({k[1] for k in stats}):
        for batch_size in (1, 8):
            before, now = stats[STEP_BY_STEP, backend_name, batch_size], stats[MATRIX, backend_name, batch_size]
            lines.append(f"| {backend_name} | {batch_size} | {before['median_ms']:.2f} | {now['median_ms']:.2f} | "
                         f"{before['p90_ms']:.2f} | {now['p90_ms']:.2f} | "
                         f"{before['median_ms'] / now['median_ms']:.2f}x |")
    lines += ["", f"Maps of the two graphs differ by at most {agree['map']:.1e} of the largest map value, scores by "
              f"{agree['score']:.1e} (relative), on {len(images)} test images (ONNX Runtime): float32 rounding.", "",
              "ONNX Runtime's profiler, batch 1, 1 thread:", "",
              "| head | node ms per call | head share | head operators (ms per call) |", "|---|---:|---:|---|"]
    for name in (STEP_BY_STEP, MATRIX):
        found = profiles[name]
        ops = ", ".join(f"{op} {ms:.3f}" for op, ms in found["head_ops_ms"].items() if ms >= 0.01)
        lines.append(f"| {name} | {found['node_ms_per_call']:.2f} | {found['scopes'].get('head', 0.0):.1%} | {ops} |")
    text = "\n".join(lines) + "\n"
    write_text_atomic(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

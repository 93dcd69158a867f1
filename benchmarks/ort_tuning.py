"""ONNX Runtime settings on this CPU, and where the graph's time goes: what each session option gives on an
exported rdedge graph, and a per-node profile split into pre-processing, network and anomaly-map head.

Variants (each a fresh ``InferenceSession`` on the same file, timed in interleaved rounds on real images):

* ``sdk default``: what ``sdk.Detector`` opens (all graph optimisations, onnxruntime's thread choice);
* threads: ``intra_op_num_threads`` 1 and the machine's cores; ``inter_op`` left at 1 (the graph is one chain);
* graph optimisation level: ``basic`` and ``extended`` against ``all``;
* memory: the CPU arena and memory-pattern planning off;
* I/O binding: ``run_with_iobinding`` with the output buffers bound once, for repeated calls of one shape.

The profile (onnxruntime's own, ``enable_profiling``) sums node times by scope: ``normalize/*`` (input
normalisation), ``head/*`` (cosine maps, upsampling, blur, score) and the network, and the head by operator type.

Run: ``python -m benchmarks.ort_tuning runs/accuracy/bottle/rd4ad/model.onnx`` → ``benchmarks/results/ort_tuning.md``.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from sdk.contract import INPUT_NAME, OUTPUT_MAP, OUTPUT_SCORE
from sdk.fileio import write_text_atomic

from .latency import RESULTS_DIR, summarize, time_calls


def variants(cores: int) -> dict[str, dict[str, Any]]:
    """Variant name → session settings (``level``, ``threads``, ``arena``, ``pattern``, ``iobinding``)."""
    base = {"level": "all", "threads": 0, "arena": True, "pattern": True, "iobinding": False}
    return {
        "sdk default": base,
        "1 thread": {**base, "threads": 1},
        f"{cores} threads": {**base, "threads": cores},
        "optimisation basic": {**base, "level": "basic"},
        "optimisation extended": {**base, "level": "extended"},
        "CPU arena off": {**base, "arena": False},
        "memory pattern off": {**base, "pattern": False},
        "I/O binding (outputs bound once)": {**base, "iobinding": True},
    }


def open_session(path: Path, settings: dict[str, Any], profile_dir: str | None = None) -> Any:
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[settings["level"]]
    options.intra_op_num_threads = settings["threads"]
    options.enable_cpu_mem_arena = settings["arena"]
    options.enable_mem_pattern = settings["pattern"]
    if profile_dir:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(profile_dir) / "ort")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def caller(session: Any, settings: dict[str, Any], batch: np.ndarray) -> Any:
    """A no-argument call of one inference with the variant's I/O."""
    if not settings["iobinding"]:
        return lambda: session.run([OUTPUT_MAP, OUTPUT_SCORE], {INPUT_NAME: batch})
    import onnxruntime as ort

    binding = session.io_binding()
    binding.bind_cpu_input(INPUT_NAME, batch)
    height, width = batch.shape[1:3]
    maps = ort.OrtValue.ortvalue_from_numpy(np.empty((len(batch), height, width), np.float32))
    scores = ort.OrtValue.ortvalue_from_numpy(np.empty((len(batch),), np.float32))
    binding.bind_ortvalue_output(OUTPUT_MAP, maps)
    binding.bind_ortvalue_output(OUTPUT_SCORE, scores)
    return lambda: session.run_with_iobinding(binding)


def profile(path: Path, batch: np.ndarray, calls: int) -> dict[str, Any]:
    """Node time by scope and head operator, from onnxruntime's profiler (default settings)."""
    with tempfile.TemporaryDirectory() as tmp:
        session = open_session(path, {**variants(1)["sdk default"], "threads": 1}, tmp)
        for _ in range(calls):
            session.run(None, {INPUT_NAME: batch})
        events = json.loads(Path(session.end_profiling()).read_text())
    scopes: collections.Counter[str] = collections.Counter()
    head_ops: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        name = event["name"][: -len("_kernel_time")]
        scope = "head" if name.startswith("head/") else "normalize" if name.startswith("normalize/") else "network"
        scopes[scope] += event["dur"]
        if scope == "head":
            head_ops[event["args"].get("op_name", "?")] += event["dur"]
    total = sum(scopes.values())
    return {"scopes": {k: v / total for k, v in scopes.most_common()},
            "head_ops_ms": {k: v / 1000.0 / calls for k, v in head_ops.most_common()},
            "node_ms_per_call": total / 1000.0 / calls}


def add_timing_options(parser: argparse.ArgumentParser, out: str) -> None:
    """``--iterations``, ``--rounds`` and ``--out`` of the interleaved-rounds benchmarks (this one and
    ``benchmarks.head``)."""
    parser.add_argument("--iterations", type=int, default=100, help="timed calls per row and batch size")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default: 5)")
    parser.add_argument("--out", default=out, help="markdown output")


def timing_images(metadata: Any, model_path: Path, count: int = 8) -> np.ndarray:
    """``count`` test images of the model's own dataset, evenly spaced (good and defective), at its input size."""
    from sdk.datasets import load_model_dataset, load_prepared

    dataset = load_model_dataset(metadata, model_path=model_path)
    return load_prepared(dataset.test[:: max(1, len(dataset.test) // count)][:count], metadata.image_size,
                         progress=False)


def interleaved_stats(callers: dict[Any, Callable[[np.ndarray], Callable[[], Any]]], images: np.ndarray,
                      rounds: int, iterations: int, batch_sizes: tuple[int, ...] = (1, 8)) -> dict[tuple[Any, int],
                                                                                                 dict[str, float]]:
    """Time every row in interleaved rounds (each round times every row once per batch size).

    Args:
        callers: Row key → a function that takes a batch and returns a no-argument call of one inference on it.
        images: (N, H, W, 3) uint8 images; a batch is the first ``batch_size`` of them.
        rounds: Interleaved rounds.
        iterations: Timed calls per row and batch size, over all rounds.

    Returns:
        ``{(key, batch_size): summarize(...)}``.
    """
    times: dict[tuple[Any, int], list[np.ndarray]] = collections.defaultdict(list)
    for _ in range(rounds):
        for batch_size in batch_sizes:
            batch = np.ascontiguousarray(images[:batch_size])
            for key, make_call in callers.items():
                times[key, batch_size].append(time_calls(make_call(batch), 2, max(1, iterations // rounds)))
    return {k: summarize(np.concatenate(v), k[1]) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    from sdk.detector import Detector

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="an FP32 .onnx written by rdedge export")
    add_timing_options(parser, str(RESULTS_DIR / "ort_tuning.md"))
    args = parser.parse_args(argv)
    path = Path(args.model)
    metadata = Detector(path).metadata
    images = timing_images(metadata, path)
    cores = os.cpu_count() or 1
    sessions = {name: (open_session(path, s), s) for name, s in variants(cores).items()}
    stats = interleaved_stats({name: lambda batch, sess=session, st=settings: caller(sess, st, batch)
                               for name, (session, settings) in sessions.items()}, images, args.rounds, args.iterations)
    found = profile(path, np.ascontiguousarray(images[:1]), 30)
    lines = [
        "# ONNX Runtime settings on this CPU, and where the graph's time goes",
        "",
        f"{datetime.date.today().isoformat()}; {cores} CPU cores ({platform.machine()}); `python -m "
        f"benchmarks.ort_tuning {args.model}` ({metadata.method}/{metadata.backbone}, {metadata.image_size}, "
        f"{metadata.precision}); session.run alone (no host resize), real test images, {args.rounds} interleaved "
        "rounds in one process.",
        "",
        "| variant | median ms b1 | p90 ms b1 | vs default b1 | median ms b8 | vs default b8 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in sessions:
        b1, b8 = stats[name, 1], stats[name, 8]
        d1, d8 = stats["sdk default", 1], stats["sdk default", 8]
        lines.append(f"| {name} | {b1['median_ms']:.2f} | {b1['p90_ms']:.2f} | {d1['median_ms'] / b1['median_ms']:.2f}x"
                     f" | {b8['median_ms']:.2f} | {d8['median_ms'] / b8['median_ms']:.2f}x |")
    per_call = found["node_ms_per_call"]
    lines += ["", f"Profile at batch 1 (onnxruntime's profiler, default settings, 1 thread; {per_call:.2f} ms of "
              "node time per call):", "", "| scope | share of node time |", "|---|---:|"]
    lines += [f"| {k} | {v:.1%} |" for k, v in found["scopes"].items()]
    lines += ["", "| head operator | ms per call |", "|---|---:|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in found["head_ops_ms"].items()]
    text = "\n".join(lines) + "\n"
    write_text_atomic(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

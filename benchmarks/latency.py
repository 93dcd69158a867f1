"""Latency and throughput: the exported ONNX detector vs the papers' way of running the same weights.

Two runners score the same real, pre-resized uint8 images with the same weights and the same thread count:

* ``onnxruntime``: ``sdk.Detector.predict_batch`` on the exported graph (pre-processing, network, map, blur and score
  all in one ONNX Runtime call);
* ``pytorch+scipy`` (the papers' code path): PyTorch eager on float input normalised on the host, per-scale
  ``F.cosine_similarity`` and ``F.interpolate``, the fused map copied to NumPy, ``scipy.ndimage.gaussian_filter``
  (σ = 4) per image and the max on the host.

Each configuration (runner × batch size) is warmed up, then timed per call with ``time.perf_counter``: median, p90,
p99 in milliseconds per batch, and images per second over the timed calls. The table goes to
``benchmarks/results/`` (markdown); ``--json`` prints one JSON object.

Run: ``python -m benchmarks.latency RUN_DIR`` (or ``rdedge bench RUN_DIR``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sdk.fileio import write_text_atomic

RESULTS_DIR = Path("benchmarks") / "results"


def processor_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` knows: timings of one table
    compare only within one processor."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_calls(fn: Callable[[], Any], warmup: int, iterations: int) -> np.ndarray:
    """Call ``fn`` ``warmup`` times untimed, then ``iterations`` times timed; returns milliseconds per call."""
    for _ in range(warmup):
        fn()
    times = np.empty(iterations)
    for i in range(iterations):
        start = time.perf_counter()
        fn()
        times[i] = (time.perf_counter() - start) * 1000.0
    return times


def summarize(times_ms: np.ndarray, batch_size: int) -> dict[str, float]:
    """Median, p90, p99 (ms per batch) and throughput (images/s)."""
    return {
        "median_ms": float(np.median(times_ms)),
        "p90_ms": float(np.percentile(times_ms, 90)),
        "p99_ms": float(np.percentile(times_ms, 99)),
        "images_per_s": float(batch_size * len(times_ms) / (times_ms.sum() / 1000.0)),
    }


class PapersStyleRunner:
    """PyTorch eager + host-side post-processing (SciPy smoothing), as the official RD-family test scripts score."""

    def __init__(self, checkpoint: Path) -> None:
        from train.checkpoint import build_graph_from_checkpoint

        self.graph, self.metadata = build_graph_from_checkpoint(checkpoint)
        self.mean = np.asarray(self.metadata.input_mean, dtype=np.float32)
        self.std = np.asarray(self.metadata.input_std, dtype=np.float32)

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from export.reference import papers_postprocess

        x = (images.astype(np.float32) / 255.0 - self.mean) / self.std
        head = self.graph.head
        with torch.no_grad():
            teacher, student = self.graph.net(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
        return papers_postprocess(teacher, student, head.image_size, combine=head.combine,
                                  refinement=head.refinement, dtype=torch.float32)


def collect_rows(jobs: Iterable[Callable[[], list[dict[str, Any]]]],
                 render: Callable[[list[dict[str, Any]]], str], out: str | os.PathLike[str], *,
                 store: str | os.PathLike[str] | None = None, key: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Run benchmark jobs (each returns table rows) in turn, printing each row as JSON and rewriting the markdown
    table ``out`` after each job, so that partial results survive an interruption; then print the table.

    Args:
        jobs: Callables returning rows.
        render: Rows → markdown.
        out: Markdown file.
        store: A JSON file of the table's rows. When given, the table is the stored rows with each new row
            replacing the stored one of the same ``key`` (appended otherwise), and the store is rewritten with the
            table after each job: a run of one set or one ablation adds to the table instead of replacing it. The
            store is read again after each job (a job takes up to an hour), so rows written meanwhile are kept.
        key: The fields that name a row in ``store``.

    Returns:
        The table's rows (the new ones, merged into the stored ones when ``store`` is given).
    """
    def stored() -> list[dict[str, Any]]:  # read again after each job: keeps what changed the store meanwhile
        return json.loads(Path(store).read_text()) if store and Path(store).exists() else []

    rows = stored()
    started = time.perf_counter()
    for job in jobs:
        new = job()
        if store:
            rows = stored()
        for row in new:
            print(json.dumps(row), flush=True)
            rows = merge_row(rows, row, key) if store else [*rows, row]
        if store:
            write_text_atomic(store, json.dumps(rows, indent=1) + "\n")
        write_text_atomic(out, render(rows))
    print(render(rows))
    print(f"written to {out} in {(time.perf_counter() - started) / 60:.1f} min")
    return rows


def merge_row(rows: list[dict[str, Any]], row: dict[str, Any], key: Sequence[str]) -> list[dict[str, Any]]:
    """``rows`` with ``row`` in place of the one with the same ``key`` fields, or appended."""
    name = tuple(row.get(k) for k in key)
    for i, old in enumerate(rows):
        if tuple(old.get(k) for k in key) == name:
            return [*rows[:i], row, *rows[i + 1:]]
    return [*rows, row]


def run_benchmark(
    run: str | os.PathLike[str],
    *,
    batch_sizes: Sequence[int] = (1, 8),
    warmup: int = 5,
    iterations: int = 30,
    threads: int | None = None,
    include_peer: bool = True,
) -> dict[str, Any]:
    """Measure every runner at every batch size on the run's real validation images.

    Args:
        run: Run folder holding ``model.onnx`` (and ``checkpoint.pt`` for the peer), or an ``.onnx`` file (its
            folder's ``checkpoint.pt`` is then the peer's).
        batch_sizes: Batch sizes to time.
        warmup: Untimed calls before timing.
        iterations: Timed calls per configuration.
        threads: Threads for both runtimes (default: all cores).
        include_peer: Also time the papers'-style PyTorch runner (needs torch).

    Returns:
        One JSON-ready dict: ``configurations`` (name → median_ms, p90_ms, p99_ms, images_per_s, runtime,
        batch_size), ``speedup`` (papers' median / ONNX median per batch size), ``model`` and ``machine``.
    """
    from sdk import Detector
    from sdk.backends import resolve_model
    from sdk.datasets import reference_images

    threads = threads or os.cpu_count() or 1
    onnx_path = resolve_model(str(run))
    detector = Detector(onnx_path, intra_op_threads=threads)
    images = reference_images(detector.metadata, max(batch_sizes), model_path=onnx_path)
    while len(images) < max(batch_sizes):  # tiny validation sets: repeat real images
        images = np.concatenate([images, images])
    runners: dict[str, Callable[[np.ndarray], Any]] = {
        "onnxruntime": lambda batch: detector.predict_batch(list(batch), rgb=True)
    }
    if include_peer:
        import torch

        from train.checkpoint import resolve_checkpoint

        torch.set_num_threads(threads)
        runners["pytorch+scipy"] = PapersStyleRunner(resolve_checkpoint(onnx_path.parent))
    configurations: dict[str, dict[str, Any]] = {}
    for name, runner in runners.items():
        for bs in batch_sizes:
            batch = np.ascontiguousarray(images[:bs])
            times = time_calls(lambda runner=runner, batch=batch: runner(batch), warmup, iterations)
            configurations[f"{name}/batch{bs}"] = {"runtime": name, "batch_size": bs, **summarize(times, bs)}
    speedup = {}
    if include_peer:
        for bs in batch_sizes:
            peer = configurations[f"pytorch+scipy/batch{bs}"]["median_ms"]
            speedup[f"batch{bs}"] = peer / configurations[f"onnxruntime/batch{bs}"]["median_ms"]
    m = detector.metadata
    return {
        "configurations": configurations,
        "speedup": speedup,
        "model": {"method": m.method, "backbone": m.backbone, "image_size": str(m.image_size),
                  "dataset": m.training.get("dataset"), "path": str(onnx_path)},
        "machine": {"cpu_count": os.cpu_count(), "threads": threads, "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine()},
        "protocol": {"warmup": warmup, "iterations": iterations, "input": "real pre-resized uint8 images"},
        "date": datetime.date.today().isoformat(),
    }


def markdown_table(report: dict[str, Any]) -> str:
    """Render a benchmark report as a markdown table with the speed-up column."""
    m = report["model"]
    lines = [
        f"# Latency: {m['method']} / {m['backbone']} / {m['image_size']} px ({m['dataset']})",
        "",
        f"{report['date']}, {report['machine']['cpu_count']} CPU cores ({report['machine']['processor']}), "
        f"{report['machine']['threads']} threads, {report['protocol']['warmup']} warm-up + "
        f"{report['protocol']['iterations']} timed calls per row, {report['protocol']['input']}.",
        "",
        "| runtime | batch | median ms | p90 ms | p99 ms | images/s | ONNX Runtime speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in report["configurations"].values():
        ratio = report["speedup"].get(f"batch{c['batch_size']}") if c["runtime"] == "onnxruntime" else None
        lines.append(
            f"| {c['runtime']} | {c['batch_size']} | {c['median_ms']:.2f} | {c['p90_ms']:.2f} | {c['p99_ms']:.2f} | "
            f"{c['images_per_s']:.1f} | {f'{ratio:.2f}x' if ratio else ''} |"
        )
    lines += ["", "Speed-up = median of pytorch+scipy (the papers' way) / median of onnxruntime, same batch size.", ""]
    return "\n".join(lines)


def default_results_path(report: dict[str, Any]) -> Path:
    """``benchmarks/results/latency-<method>-<backbone>-<dataset>.md``."""
    m = report["model"]
    dataset = str(m["dataset"]).replace(":", "-").replace("/", "-")
    return RESULTS_DIR / f"latency-{m['method']}-{m['backbone']}-{dataset}.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``rdedge bench`` / ``python -m benchmarks.latency``."""
    parser.add_argument("model", help="run folder (checkpoint.pt + model.onnx) or an .onnx file beside its checkpoint")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per configuration (default: 5)")
    parser.add_argument("--iterations", type=int, default=30, help="timed calls per configuration (default: 30)")
    parser.add_argument("--threads", type=int, default=None, help="threads for both runtimes (default: all cores)")
    parser.add_argument("--no-peer", action="store_true", help="skip the PyTorch+SciPy comparison (no torch)")
    parser.add_argument("--out", default=None, help="markdown file (default: benchmarks/results/latency-....md)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def main(args: argparse.Namespace) -> int:
    """Run the benchmark, write the markdown table, print the table or JSON."""
    report = run_benchmark(
        args.model, batch_sizes=args.batch_sizes, warmup=args.warmup, iterations=args.iterations,
        threads=args.threads, include_peer=not args.no_peer,
    )
    table = markdown_table(report)
    out = Path(args.out) if args.out else default_results_path(report)
    write_text_atomic(out, table)
    report["results_file"] = str(out)
    print(json.dumps(report, indent=None) if args.json else table + f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))

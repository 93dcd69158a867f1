"""``rdedge bench``: latency and throughput of the ONNX model vs PyTorch+SciPy (:mod:`benchmarks.latency`)."""

from __future__ import annotations

import argparse

NAME = "bench"
HELP = "Latency/throughput of the ONNX model vs PyTorch+SciPy (the papers' way)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from benchmarks.latency import add_arguments as add_latency_arguments

    add_latency_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from benchmarks.latency import main

    return main(args)

"""``rdedge build-engine``: a TensorRT engine from an rdedge ONNX, on the machine that will run it."""

from __future__ import annotations

import argparse

from ..arguments import add_precision_argument

NAME = "build-engine"
HELP = "Build a TensorRT engine from an rdedge ONNX, on the machine that will run it."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="rdedge ONNX (model.onnx, model_fp16.onnx or model_int8.onnx)")
    parser.add_argument("--out", default=None,
                        help="engine file (default: beside the ONNX, named with its precision once: "
                             "model_fp16.onnx → model_fp16.engine, model.onnx → model_fp32.engine)")
    add_precision_argument(parser, default=None,
                           help_text="engine precision (default: the ONNX's; TensorRT 11 requires them equal, no "
                                     "engine is wider than its ONNX)")
    parser.add_argument("--max-batch", type=int, default=None,
                        help="largest batch of the profile (default: 8); with --dla the engine's fixed batch "
                             "(default: 1; smaller batches are padded)")
    parser.add_argument("--opt-batch", type=int, default=1, help="batch the profile is tuned for (default: 1)")
    parser.add_argument("--workspace", type=float, default=2.0, help="builder workspace in GB (default: 2)")
    parser.add_argument("--dla", type=int, default=None, metavar="CORE",
                        help="Jetson AGX/NX Orin: build for this DLA core (fp16/int8, static batch), with GPU "
                             "fallback")
    parser.add_argument("--cache-dir", default=None,
                        help="timing-cache folder (default: $RDEDGE_CACHE_DIR or ~/.cache/rdedge)")


def run(args: argparse.Namespace) -> int:
    from export.tensorrt import build_engine

    path = build_engine(args.model, args.out, precision=args.precision, max_batch=args.max_batch,
                        opt_batch=args.opt_batch, workspace_gb=args.workspace, dla_core=args.dla,
                        cache_dir=args.cache_dir)
    print(f"engine written to {path}")
    return 0

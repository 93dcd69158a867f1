"""``rdedge export-triton``: a Triton Inference Server model repository from an rdedge ONNX graph."""

from __future__ import annotations

import argparse

NAME = "export-triton"
HELP = ("Write a Triton Inference Server model repository (config.pbtxt, CPU and TensorRT configs, the ONNX and an "
        "optional engine) for an rdedge ONNX graph; clients then use Detector('grpc://HOST:8001/NAME').")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from export.triton import DEFAULT_MAX_BATCH, DEFAULT_QUEUE_DELAY_US

    parser.add_argument("model", help="rdedge ONNX (model.onnx, model_fp16.onnx or model_int8.onnx), or a run folder "
                                      "holding model.onnx")
    parser.add_argument("--out", required=True, help="model repository folder (created; other models in it are "
                                                     "left alone)")
    parser.add_argument("--name", default=None, help="model name in the repository (default: rdedge_<method>)")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                        help="max_batch_size of the configs (default: %(default)s)")
    parser.add_argument("--queue-delay-us", type=int, default=DEFAULT_QUEUE_DELAY_US,
                        help="dynamic batcher's max queue delay in microseconds (default: %(default)s)")
    parser.add_argument("--engine", default=None, help="an rdedge .engine built from this model (rdedge "
                        "build-engine): adds model.plan and configs/tensorrt.pbtxt; its batch range must cover "
                        "1..--max-batch")
    parser.add_argument("--tensorrt-accelerator", action="store_true",
                        help="the default GPU config runs onnxruntime with its TensorRT accelerator in FP16")


def run(args: argparse.Namespace) -> int:
    from export.triton import write_model_repository
    from sdk.backends import resolve_model

    folder = write_model_repository(resolve_model(args.model), args.out, name=args.name, max_batch=args.max_batch,
                                    engine=args.engine, queue_delay_us=args.queue_delay_us,
                                    tensorrt_accelerator=args.tensorrt_accelerator)
    configs = ", ".join(p.stem for p in sorted((folder / "configs").glob("*.pbtxt")))
    print(f"Triton model written to {folder} (config.pbtxt: onnxruntime on the GPU; configs/: {configs})")
    print(f"  serve: tritonserver --model-repository {folder.parent} [--model-config-name cpu]")
    print(f"  use:   Detector('grpc://HOST:8001/{folder.name}')")
    return 0

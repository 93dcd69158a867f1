"""``rdedge export-openvino``: an OpenVINO IR (``.xml`` + ``.bin``) from an rdedge ONNX graph."""

from __future__ import annotations

import argparse

NAME = "export-openvino"
HELP = "Write an OpenVINO IR (.xml + .bin) of an rdedge ONNX graph, metadata included (pip install rdedge[openvino])."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="rdedge ONNX (model.onnx, model_fp16.onnx or model_int8.onnx), or a run folder "
                                      "holding model.onnx")
    parser.add_argument("--out", default=None, help="IR .xml to write (default: beside the ONNX, same name)")


def run(args: argparse.Namespace) -> int:
    from export.openvino import write_ir
    from sdk.backends import resolve_model

    path = write_ir(resolve_model(args.model), args.out)
    print(f"OpenVINO IR written to {path} (+ {path.with_suffix('.bin').name})")
    return 0

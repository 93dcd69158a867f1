"""FP16 and INT8 exports: where the precisions land, accuracy vs FP32 on real images, and what TensorRT's own ONNX
parser and builder (TensorRT-RTX, on the CPU: a parse/build check, not TensorRT numerics) and Polygraphy's lint say.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from export.onnx import export_onnx
from sdk import Detector


@pytest.fixture(scope="session")
def precision_models(tiny_run) -> dict[str, Path]:
    run, report = tiny_run
    return {
        "fp32": report.path,
        "fp16": export_onnx(run, precision="fp16", check_images=4).path,
        "int8": export_onnx(run, precision="int8", check_images=4, calib_images=13).path,  # not a multiple of 8
        "int8_cpu": export_onnx(run, precision="int8", int8_layout="cpu", check_images=4, calib_images=13).path,
    }


def require_tool(available: bool, what: str) -> None:
    """Skip without an optional verification tool, but never under CI, which installs it."""
    if not available:
        if os.environ.get("CI"):
            pytest.fail(f"{what} must be installed in CI (pip install -e .[dev])", pytrace=False)
        pytest.skip(f"{what} not installed")


def test_fp16_graph_keeps_io_and_post_processing_fp32(precision_models):
    model = onnx.load(precision_models["fp16"])
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert {o.type.tensor_type.elem_type for o in model.graph.output} == {onnx.TensorProto.FLOAT}
    dtypes = {i.name: i.data_type for i in model.graph.initializer}
    assert sum(t == onnx.TensorProto.FLOAT16 for t in dtypes.values()) > 50  # the network's weights
    head_inputs = {i for n in model.graph.node if n.name.startswith("head/") for i in n.input}
    head_initializers = [dtypes[i] for i in head_inputs if i in dtypes]
    assert head_initializers and all(t != onnx.TensorProto.FLOAT16 for t in head_initializers)
    assert any(n.op_type == "Cast" and n.name.startswith("head/") for n in model.graph.node)
    meta = Detector(precision_models["fp16"]).metadata
    assert meta.precision == "fp16" and meta.checks["reduced_precision"]["map_correlation_vs_fp32"] >= 0.999


def test_int8_qdq_is_symmetric_per_channel_and_spares_the_post_processing(precision_models):
    model = onnx.load(precision_models["int8"])
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert dq
    for node in [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]:
        if len(node.input) > 2 and node.input[2] in inits:
            assert not inits[node.input[2]].any(), "zero points must be 0"
    # weights: initializer → QuantizeLinear → DequantizeLinear, with one scale per channel
    weight_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits]
    assert weight_q and all(inits[n.input[1]].ndim == 1 and inits[n.input[1]].size > 1 for n in weight_q)
    activation_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert activation_q and all(inits[n.input[1]].ndim == 0 for n in activation_q)  # per-tensor activations
    assert not any(a.dtype == np.int32 for a in inits.values()), "biases must not be quantized"
    for node in model.graph.node:
        for name in node.input:
            if name in producers and producers[name].op_type == "DequantizeLinear":
                assert node.op_type in ("Conv", "ConvTranspose", "Add"), node.name
                assert not node.name.startswith(("head/", "normalize/")), node.name
    meta = Detector(precision_models["int8"]).metadata
    assert meta.precision == "int8" and meta.checks["calibration_images"] == 13
    assert meta.checks["reduced_precision"]["map_correlation_vs_fp32"] >= 0.95


def test_reduced_precisions_score_real_images_like_fp32(precision_models, bottle_images):
    images = list(bottle_images.values())
    reference = [r.score for r in Detector(precision_models["fp32"]).predict_batch(images)]
    for precision, tolerance in (("fp16", 0.01), ("int8", 0.05), ("int8_cpu", 0.05)):
        scores = [r.score for r in Detector(precision_models[precision]).predict_batch(images)]
        np.testing.assert_allclose(scores, reference, rtol=tolerance)


def test_unknown_precision_is_refused(tiny_run):
    with pytest.raises(ValueError, match="precision"):
        export_onnx(tiny_run[0], precision="int4")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_onnx_parser_and_builder_accept_the_graph(precision_models, precision, verification_log):
    """TensorRT-RTX runs TensorRT's ONNX parser and builder on the CPU; its engines are not TensorRT engines."""
    require_tool(importlib.util.find_spec("tensorrt_rtx") is not None, "tensorrt-rtx-cu13")
    script = f"""
import tensorrt_rtx as trt
logger = trt.Logger(trt.Logger.ERROR)
builder = trt.Builder(logger)
network = builder.create_network(0)
parser = trt.OnnxParser(network, logger)
if not parser.parse_from_file({str(precision_models[precision])!r}):
    raise SystemExit("parse failed: " + "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
config = builder.create_builder_config()
profile = builder.create_optimization_profile()
profile.set_shape("image", (1, 128, 128, 3), (1, 128, 128, 3), (8, 128, 128, 3))
config.add_optimization_profile(profile)
plan = builder.build_serialized_network(network, config)
if plan is None:
    raise SystemExit("build failed")
print("TensorRT-RTX", trt.__version__, "parsed and built {precision}:", plan.nbytes, "bytes")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    verification_log(result.stdout.strip())  # printed in the CI log's "verification" section


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_polygraphy_lint_passes(precision_models, precision):
    polygraphy = shutil.which("polygraphy")
    require_tool(polygraphy is not None, "polygraphy")
    result = subprocess.run([polygraphy, "check", "lint", str(precision_models[precision])], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_int8_cpu_benchmark_rewrites_signed_pairs_to_unsigned_without_changing_values(tiny_onnx, tmp_path):
    """benchmarks.int8_cpu: the all-ops layout quantizes real images; its UINT8 rewrite dequantizes identically."""
    import onnxruntime as ort

    from benchmarks.int8_cpu import signed_pairs_as_unsigned, variant_options
    from export.precision import quantize_int8
    from sdk.datasets import load_model_dataset, load_prepared

    metadata = Detector(tiny_onnx).metadata
    images = load_prepared(load_model_dataset(metadata).train[:4], metadata.image_size, progress=False)
    signed = tmp_path / "s8.onnx"
    quantize_int8(tiny_onnx, signed, images, options=variant_options(tiny_onnx, "minmax")["all-ops s8"])
    model = onnx.load(str(signed))
    assert {n.op_type for n in model.graph.node if any(i.endswith("DequantizeLinear_Output") for i in n.input)} >= {
        "Relu", "Add"}  # not only convolution inputs
    rewritten = signed_pairs_as_unsigned(model)
    assert rewritten > 0
    inits = {i.name: i for i in model.graph.initializer}
    weight_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits]
    assert weight_q and all(inits[n.input[2]].data_type == onnx.TensorProto.INT8 for n in weight_q)
    unsigned = tmp_path / "u8.onnx"
    onnx.save(model, unsigned)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the graphs as written
    outputs = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]).run(None, {"image": images})
               for p in (signed, unsigned)]
    for a, b in zip(*outputs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_int8_cpu_layout_quantizes_every_op_with_unsigned_activations(precision_models):
    path = precision_models["int8_cpu"]
    assert path.name == "model_int8_cpu.onnx" and precision_models["int8"].name == "model_int8.onnx"
    model = onnx.load(path)
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    q_nodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    activation_q = [n for n in q_nodes if n.input[0] not in inits]
    weight_q = [n for n in q_nodes if n.input[0] in inits]
    assert activation_q and all(inits[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in activation_q)
    assert weight_q and all(inits[n.input[2]].data_type == onnx.TensorProto.INT8 for n in weight_q)
    consumers = {n.op_type for n in model.graph.node
                 if any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input)}
    assert consumers >= {"Conv", "ConvTranspose", "Add", "Concat"}
    relus = [sum(n.op_type == "Relu" for n in onnx.load(p).graph.node) for p in (precision_models["fp32"], path)]
    assert relus[0] > 0 and relus[1] == 0  # folded into the unsigned quantization range
    quantized_outputs = {producers[n.input[0]].op_type for n in activation_q if n.input[0] in producers}
    assert "Conv" in quantized_outputs  # conv outputs quantized: onnxruntime fuses DQ -> Conv -> Q
    for node in model.graph.node:
        if node.name.startswith(("head/", "normalize/")):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)
    meta = Detector(path).metadata
    assert meta.precision == "int8" and meta.graph_options["int8_layout"] == "cpu"
    assert Detector(precision_models["int8"]).metadata.graph_options["int8_layout"] == "tensorrt"
    assert meta.checks["reduced_precision"]["map_correlation_vs_fp32"] >= 0.95

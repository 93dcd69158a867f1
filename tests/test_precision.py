"""FP16 and INT8 exports: where the precisions land, accuracy vs FP32 on real images, and what TensorRT's own ONNX
parser and builder (TensorRT-RTX, on the CPU: a parse/build check, not TensorRT numerics) and Polygraphy's lint say.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from export.onnx import ExportCheckError, export_onnx
from sdk import Detector
from tests.conftest import require_tool
from tests.int8_checks import ort_session, rewrite_exactly


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
    # weights: INT8 initializer → DequantizeLinear, one scale per channel, within TensorRT's [-127, 127]; no FP32
    # weight behind a Q/DQ pair
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weight_dq and all(inits[n.input[0]].dtype == np.int8 and inits[n.input[1]].ndim == 1
                             and inits[n.input[1]].size > 1 for n in weight_dq)
    assert all(np.abs(inits[n.input[0]].astype(int)).max() <= 127 for n in weight_dq)
    assert not [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in inits]
    network_convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")
                     and not n.name.startswith(("head/", "normalize/"))]
    kept_fp32 = set(Detector(precision_models["int8"]).metadata.checks["int8_fp32_layers"]["fp32_layers"])
    float_weights = [n.name for n in network_convs if n.input[1] in inits and n.name not in kept_fp32]
    assert not float_weights, f"quantized convolutions with float weights: {float_weights[:3]}"
    fp32_bytes = Path(precision_models["fp32"]).stat().st_size
    assert Path(precision_models["int8"]).stat().st_size < 0.4 * fp32_bytes
    activation_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert activation_q and all(inits[n.input[1]].ndim == 0 for n in activation_q)  # per-tensor activations
    assert not any(a.dtype == np.int32 for a in inits.values()), "biases must not be quantized"
    readers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    dequantized_readers = set()
    for node in model.graph.node:
        for name in node.input:
            if name in producers and producers[name].op_type == "DequantizeLinear":
                dequantized_readers.add(node.op_type)
                assert not node.name.startswith(("head/", "normalize/")), node.name
                if node.op_type in ("Relu", "Clip"):  # only where the pair is shared: quantized after activations
                    assert readers[name] > 1, node.name
    assert dequantized_readers >= {"Conv", "ConvTranspose", "Add"}  # residual additions run in INT8 too
    assert dequantized_readers <= {"Conv", "ConvTranspose", "Add", "Concat", "Relu", "Clip"}
    assert sum(n.op_type in ("Relu", "Clip") and readers.get(n.output[0]) == 1
               and producers.get(n.input[0]) is not None and producers[n.input[0]].op_type in ("Conv", "Add")
               for n in model.graph.node) > 5  # Conv -> Relu -> Q: TensorRT's fused pattern
    used = {i for n in model.graph.node for i in n.input}
    assert all(i.name in used for i in model.graph.initializer), "no scales left behind by dropped pairs"
    meta = Detector(precision_models["int8"]).metadata
    assert meta.precision == "int8" and meta.checks["calibration_images"] == 13
    stages = meta.checks["export_seconds"]  # where an export's time goes, stage by stage
    assert {"trace to ONNX", "int8: calibrate and quantize", "int8: gate and per-layer sensitivity",
            "calibrate thresholds (held-out good)"} <= set(stages) and all(v > 0 for v in stages.values())
    layers = meta.checks["int8_fp32_layers"]  # what the gate on held-out good images with synthetic defects decided
    assert layers["gate"]["passed"] and layers["n_int8"] > 30 and layers["n_fp32"] == len(layers["fp32_layers"])
    assert layers["gate"]["image_auroc"] >= layers["gate"]["image_auroc_fp32"] - layers["gate"]["max_auroc_drop"]
    assert layers["gates"] == {"onnxruntime": layers["gate"]}  # the fixture gates in ONNX Runtime only
    assert meta.checks["reduced_precision"]["map_correlation_vs_fp32"] > 0.5  # reported, and sane


def test_the_int8_gate_runs_a_graph_in_openvino_exactly_as_the_detector_does(precision_models, bottle_images):
    """The gate's OpenVINO runner (export.int8_layers.run_on_openvino) and Detector(backend="openvino") compute the
    same maps and scores from the written INT8 file: what the export gated is what the line runs."""
    from export.int8_layers import run_on_openvino
    from sdk.image import prepare_image

    path = precision_models["int8"]
    with Detector(path, backend="openvino") as detector:
        results = detector.predict_batch(list(bottle_images.values()))
        size = detector.image_size
    images = np.stack([prepare_image(image, size) for image in bottle_images.values()])
    gated = run_on_openvino(onnx.load(path), images)
    np.testing.assert_array_equal(gated.scores, [r.score for r in results])
    np.testing.assert_array_equal(gated.maps, np.stack([r.anomaly_map for r in results]))


def test_reduced_precisions_score_real_images_like_fp32(precision_models, bottle_images):
    images = list(bottle_images.values())
    reference = [r.score for r in Detector(precision_models["fp32"]).predict_batch(images)]
    for precision, tolerance in (("fp16", 0.01), ("int8", 0.05)):
        scores = [r.score for r in Detector(precision_models[precision]).predict_batch(images)]
        np.testing.assert_allclose(scores, reference, rtol=tolerance)


def test_unknown_precision_is_refused(tiny_run):
    with pytest.raises(ValueError, match="precision"):
        export_onnx(tiny_run[0], precision="int4")


def run_with_tensorrt_rtx(script: str) -> dict:
    """Run ``script`` (which prints one JSON line last) in a fresh interpreter with TensorRT-RTX importable.

    A subprocess keeps TensorRT-RTX's CUDA probing (it finds no GPU and logs errors) out of the test process.
    """
    require_tool(importlib.util.find_spec("tensorrt_rtx") is not None, "tensorrt-rtx-cu13")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_engine_parses_and_builds_with_tensorrt_rtx(precision_models, precision, tmp_path,
                                                          verification_log):
    """``rdedge build-engine``'s own TensorRT calls, run by TensorRT-RTX's ONNX parser and builder on the CPU.

    TensorRT-RTX builds by TensorRT 11's rules (strongly typed). Its engines are not TensorRT engines and its timing
    cache calls are no-ops: this proves the API calls, the profile, the header and the atomic writes, not numerics.
    """
    default_name = precision == "int8"  # the default engine name says the precision once: model_int8.engine
    out = tmp_path / f"m_{precision}.engine"
    if default_name:
        out = precision_models[precision].with_name("model_int8.engine")
    cache = tmp_path / "cache"
    report = run_with_tensorrt_rtx(f"""
import json, tensorrt_rtx
from export.tensorrt import build_engine
from sdk.backends.engine_file import read_engine_header
for attempt in range(2):  # the second build reads the timing cache and replaces the engine atomically
    path = build_engine({str(precision_models[precision])!r}, {None if default_name else str(out)!r}, max_batch=8,
                        cache_dir={str(cache)!r}, tensorrt=tensorrt_rtx,
                        gpu=("none (TensorRT-RTX CPU build check)", "0.0"))
meta, info, offset = read_engine_header(path)
print(json.dumps({{"path": str(path), "precision": meta.precision, "batches": [info.min_batch, info.opt_batch,
                  info.max_batch], "typed": info.strongly_typed, "version": info.tensorrt_version,
                  "builder": info.builder["builder"], "cleared": info.builder["cleared_flags"],
                  "plan_bytes": path.stat().st_size - offset}}))
""")
    assert report["path"] == str(out) and report["precision"] == precision and report["cleared"] == ["TF32"]
    assert report["batches"] == [1, 1, 8] and report["typed"] and report["builder"] == "tensorrt_rtx"
    assert report["plan_bytes"] > 100_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"] + ([] if default_name else [out.name])  # no
    # temporary files left
    assert sorted(p.name for p in out.parent.iterdir() if p.suffix == ".engine") == [out.name]
    if default_name:
        out.unlink()
    assert [p.name for p in cache.iterdir()] == [f"trt-{report['version']}-sm00.timing"]
    verification_log(f"TensorRT-RTX {report['version']} parsed and built {precision} through "
                     f"export.tensorrt.build_engine: {report['plan_bytes']} bytes")


@pytest.mark.parametrize("weights", ["int8", "fp16"])
def test_tensorrt_rtx_parses_and_builds_layers_kept_fp32_with_smaller_weights(quantized, precision_models, weights,
                                                                              tmp_path):
    """Layers kept FP32 with INT8 weights behind their DequantizeLinear, or FP16 weights cast to FP32 (what the export
    writes for its FP32 layers when the gate passes that too), through ``build_engine``'s strongly typed path on
    TensorRT-RTX. A parse/build check of the graph form, not of TensorRT's numerics. Edited from the graph with every
    layer INT8, so that both kinds of convolution are there to keep whatever the export's gate chose."""
    from export.int8_layers import keep_fp32, quantized_layers, weight_only_layers
    from export.onnx import set_metadata
    from sdk.detector import Detector

    fp32, int8, _ = quantized
    ops = {n.name: n.op_type for n in int8.graph.node}
    layers = quantized_layers(int8)
    chosen = [n for n in layers if ops[n] == "Conv"][::7] + [n for n in layers if ops[n] == "ConvTranspose"][::2]
    edited = keep_fp32(int8, fp32, chosen, weights=weights)
    assert {ops[n] for n in chosen} == {"Conv", "ConvTranspose"} and not set(chosen) & set(quantized_layers(edited))
    assert (set(chosen) <= set(weight_only_layers(edited))) == (weights == "int8")
    set_metadata(edited, Detector(precision_models["int8"]).metadata)  # what the export writes with an INT8 graph
    path = tmp_path / "model_int8.onnx"
    onnx.save(edited, path)
    report = run_with_tensorrt_rtx(f"""
import json, tensorrt_rtx
from export.tensorrt import build_engine
from sdk.backends.engine_file import read_engine_header
path = build_engine({str(path)!r}, None, max_batch=2, tensorrt=tensorrt_rtx,
                    gpu=("none (TensorRT-RTX CPU build check)", "0.0"))
meta, info, offset = read_engine_header(path)
print(json.dumps({{"precision": meta.precision, "typed": info.strongly_typed,
                  "plan_bytes": path.stat().st_size - offset}}))
""")
    assert report["precision"] == "int8" and report["typed"] and report["plan_bytes"] > 100_000


def test_fp32_pinning_finds_the_parsed_post_processing_and_spares_shape_arithmetic(precision_models):
    """TensorRT 10.x's flags path pins layers by the ONNX scope names, as TensorRT's ONNX parser names them."""
    report = run_with_tensorrt_rtx(f"""
import json, tensorrt_rtx as trt
from export.tensorrt import layers_to_pin_fp32
from sdk.contract import FP32_SCOPE_PREFIXES
logger = trt.Logger(trt.Logger.ERROR)
network = trt.Builder(logger).create_network(0)
assert trt.OnnxParser(network, logger).parse_from_file({str(precision_models["fp32"])!r})
layers = [network.get_layer(i) for i in range(network.num_layers)]
print(json.dumps({{
    "scoped": {{l.name: [str(l.type), [str(l.get_output_type(k)) for k in range(l.num_outputs)]]
               for l in layers if l.name.startswith(FP32_SCOPE_PREFIXES)}},
    "pinned": [l.name for l in layers_to_pin_fp32(trt, network)],
    "layers": len(layers)}}))
""")
    scoped, pinned = report["scoped"], set(report["pinned"])
    integer = {name for name, (_, types) in scoped.items() if any("INT" in t for t in types)}
    assert {name for name in scoped if name.startswith("normalize/")} <= pinned
    assert {kind for name, (kind, _) in scoped.items() if name in pinned} >= {
        "LayerType.REDUCE", "LayerType.MATRIX_MULTIPLY", "LayerType.ELEMENTWISE", "LayerType.CAST"}
    assert integer and not integer & pinned  # the head's INT64 shape arithmetic (flatten, TopK's k) keeps its type
    assert pinned == set(scoped) - integer
    assert len(pinned) < report["layers"] / 2  # the network itself stays free to run in FP16/INT8


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_polygraphy_lint_passes(precision_models, precision):
    polygraphy = shutil.which("polygraphy")
    require_tool(polygraphy is not None, "polygraphy")
    result = subprocess.run([polygraphy, "check", "lint", str(precision_models[precision])], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_cpu_int8_rewrite_is_exact_on_real_images_and_lets_onnxruntime_use_integer_kernels(precision_models,
                                                                                           tmp_path):
    from sdk.datasets import load_model_dataset, load_prepared

    path = precision_models["int8"]
    metadata = Detector(path).metadata
    dataset = load_model_dataset(metadata, model_path=path)
    images = load_prepared(dataset.test[:3] + dataset.test[-3:], metadata.image_size, progress=False)
    model, rewrite = rewrite_exactly(path, images)  # the graphs as written compute the same values
    assert rewrite.activations_folded > 5 and rewrite.pairs_unsigned > 5
    fused = {}
    for name, graph in (("exported", str(path)), ("rewritten", model.SerializeToString())):
        ort_session(graph, optimize=True, saved=tmp_path / f"{name}.onnx")
        fused[name] = sum(n.op_type == "QLinearConv" for n in onnx.load(str(tmp_path / f"{name}.onnx")).graph.node)
    exported_model = onnx.load(str(path))
    producers = {o: n for n in exported_model.graph.node for o in n.output}
    readers: dict[str, list] = {}
    for n in exported_model.graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)

    def quantized_after(tensor: str) -> bool:  # read by a Q, directly or through the activation after it
        return any(r.op_type == "QuantizeLinear" or (r.op_type in ("Relu", "Clip") and quantized_after(r.output[0]))
                   for r in readers.get(tensor, []))

    # convolutions with INT8 input and output (the export keeps its most sensitive layers FP32 on either side)
    quantized_convs = sum(n.op_type == "Conv" and producers.get(n.input[0]) is not None
                          and producers[n.input[0]].op_type == "DequantizeLinear" and quantized_after(n.output[0])
                          for n in exported_model.graph.node)
    assert fused["rewritten"] >= 0.9 * quantized_convs > fused["exported"], (fused, quantized_convs)


def test_detector_rewrites_int8_for_the_cpu_only_in_memory(precision_models, bottle_images):
    import hashlib

    path = precision_models["int8"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    fast, as_exported = Detector(path), Detector(path, int8_cpu_kernels=False)
    assert fast.backend.cpu_int8_rewrite.changed and as_exported.backend.cpu_int8_rewrite is None
    assert Detector(precision_models["fp32"]).backend.cpu_int8_rewrite is None
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # TensorRT reads the file as exported
    images = list(bottle_images.values())
    np.testing.assert_allclose([r.score for r in fast.predict_batch(images)],
                               [r.score for r in as_exported.predict_batch(images)], rtol=0.02)


def test_evaluate_as_written_runs_the_int8_graph_without_onnxruntime_fusions(precision_models, bottle_images,
                                                                           tmp_path, capsys):
    import json

    from rdedge.main import main

    written = Detector(precision_models["int8"], optimize=False)
    assert written.backend.cpu_int8_rewrite is None
    images = list(bottle_images.values())
    np.testing.assert_allclose([r.score for r in written.predict_batch(images)],
                               [r.score for r in Detector(precision_models["int8"]).predict_batch(images)], rtol=0.05)
    assert main(["evaluate", str(precision_models["int8"]), "--json", "--quiet", "--as-written"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_images"] > 0 and 0.0 <= report["image_auroc"] <= 1.0
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not read")
    assert main(["evaluate", str(engine), "--as-written"]) == 2
    assert "--as-written applies to .onnx graphs" in capsys.readouterr().err


def test_export_int8_command_reports_the_quantization_and_silences_the_quantizer(tiny_run, tmp_path, capsys):
    import logging

    from rdedge.main import main

    handlers = list(logging.getLogger().handlers)
    out = tmp_path / "int8.onnx"
    assert main(["export", str(tiny_run[0]), "--precision", "int8", "--calib-images", "4", "--check-images", "2",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr()
    assert out.is_file() and f"exported {out}" in printed.out
    assert "0 non-zero zero points; calibrated on 4 good training images (percentile)" in printed.out
    for noise in ("Collecting tensor data", "pre-processing", "histogram"):
        assert noise not in printed.out + printed.err
    assert logging.getLogger().handlers == handlers  # the quantizer's warnings configured no root handler


def _qdq(name: str, scale: float, zero_point: int = 0, dtype=np.int8) -> list:
    from onnx import helper

    return [numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"),
            numpy_helper.from_array(np.array(zero_point, dtype), f"{name}_zp")], [
        helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_zp"], [f"{name}_q"]),
        helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_zp"], [f"{name}_dq"])]


def test_cpu_int8_rewrite_folds_only_exact_activation_patterns():
    """Synthetic graph: Clip(0, 6) clamped below 127 steps, Relu saturating at 127, and three patterns to leave."""
    from onnx import TensorProto, helper

    from sdk.backends.cpu_int8 import rewrite_for_cpu_int8_kernels

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype(np.float32), f"w{k}") for k in range(4)]
    inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
              (("zero", 0.0), ("six", 6.0), ("minus_one", -1.0))]
    nodes = []

    def quantized(name, scale):
        tensors, qdq = _qdq(name, scale)
        inits.extend(tensors)
        nodes.extend(qdq)
        return f"{name}_dq"

    def conv(x, k, out):
        nodes.append(helper.make_node("Conv", [x, f"w{k}"], [out], pads=[1, 1, 1, 1]))
        return out

    x = quantized("x", 0.05)
    nodes.append(helper.make_node("Clip", [conv(x, 0, "c0"), "zero", "six"], ["a0"]))  # folded, q_hi = 60
    a0 = quantized("a0", 0.1)
    nodes.append(helper.make_node("Relu", [conv(a0, 1, "c1")], ["a1"]))  # folded, saturates at 127
    a1 = quantized("a1", 0.02)
    nodes.append(helper.make_node("Relu", [conv(a1, 2, "c2")], ["a2"]))  # also read in float: left alone
    nodes.append(helper.make_node("Add", ["a2", "a2"], ["float_tap"]))
    a2 = quantized("a2", 0.05)
    nodes.append(helper.make_node("Clip", [conv(a2, 3, "c3"), "minus_one", "six"], ["a3"]))  # not a ReLU
    quantized("a3", 0.05)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 8, 8])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 4, 8, 8])
                               for n in ("a3_dq", "float_tap")],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    rewrite = rewrite_for_cpu_int8_kernels(rewritten)
    assert (rewrite.activations_folded, rewrite.pairs_unsigned) == (2, 3)  # x, a2 and a3 pairs made unsigned
    onnx.checker.check_model(rewritten)
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("Relu") == 1 and ops.count("Clip") == 3  # a2's Relu and a3's Clip stay; two uint8 clamps
    bounds = sorted(int(numpy_helper.to_array(i)) for i in rewritten.graph.initializer if "u8_" in i.name)
    assert bounds == [128, 128 + 60, 255]
    inputs = {"x": rng.normal(scale=4.0, size=(2, 4, 8, 8)).astype(np.float32)}
    expected = ort_session(model.SerializeToString(), optimize=False).run(None, inputs)
    got = ort_session(rewritten.SerializeToString(), optimize=False).run(None, inputs)
    for a, b in zip(expected, got, strict=True):
        np.testing.assert_array_equal(a, b)
    assert (expected[0] > 0).any() and (expected[0] < 0).any()


def test_asymmetric_int8_graphs_are_refused_by_the_engine_builder(precision_models, tiny_onnx, tmp_path):
    from benchmarks.int8_cpu import onnxruntime_cpu_recipe
    from export.precision import quantize_int8
    from export.tensorrt import EngineBuildError, count_nonzero_zero_points, plan_build
    from sdk.datasets import load_model_dataset, load_prepared

    assert count_nonzero_zero_points(precision_models["int8"]) == 0
    metadata = Detector(tiny_onnx).metadata
    train_samples = load_model_dataset(metadata, model_path=tiny_onnx).train[:4]
    images = load_prepared(train_samples, metadata.image_size, progress=False)
    peer = tmp_path / "u8.onnx"
    quantize_int8(tiny_onnx, peer, images, options=onnxruntime_cpu_recipe(tiny_onnx, "minmax"))
    nonzero = count_nonzero_zero_points(peer)
    assert nonzero > 0
    with pytest.raises(EngineBuildError, match="non-zero zero points"):
        plan_build("10.3.0", "int8", "int8", nonzero_zero_points=nonzero)


def test_gpu_check_comparison_harness_on_onnx_runtime(precision_models, tiny_run, tmp_path):
    """The GPU check's Polygraphy comparison, run here with ONNX Runtime's optimised graph standing in for the
    engine (the TensorRT runner is the only part that needs a GPU): the harness reads Polygraphy's results right,
    passes a runtime that rounds differently within the precision's tolerance, and fails one that computes another
    graph."""
    import onnxruntime as ort
    from polygraphy.backend.onnxrt import OnnxrtRunner

    from benchmarks.gpu_check import TOLERANCES, as_written_session, compare_runners
    from sdk.datasets import reference_images

    images = reference_images(Detector(precision_models["fp32"]).metadata, 4, model_path=precision_models["fp32"])
    reports = {}
    for precision in ("fp32", "int8"):
        optimised = ort.InferenceSession(str(precision_models[precision]), providers=["CPUExecutionProvider"])
        reports[precision] = compare_runners(OnnxrtRunner(as_written_session(precision_models[precision])),
                                             OnnxrtRunner(optimised), images, precision)
        assert reports[precision]["polygraphy_passed"], reports
        assert 0 <= reports[precision]["anomaly_map_max_error_vs_onnx_max"] < TOLERANCES[precision][0]
    assert reports["int8"]["anomaly_map_max_error_vs_onnx_max"] > reports["fp32"]["anomaly_map_max_error_vs_onnx_max"]
    other = export_onnx(tiny_run[0], tmp_path / "coarse.onnx", check_images=2, graph_overrides={"map_strides": [16]})
    wrong = compare_runners(OnnxrtRunner(as_written_session(precision_models["fp32"])),
                            OnnxrtRunner(as_written_session(other.path)), images, "fp32")
    assert not wrong["polygraphy_passed"], wrong  # another graph (a coarser map) fails


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_each_precision_is_calibrated_on_its_own_outputs(precision_models, bottle_subset, precision):
    """Defect: FP16 and INT8 exports kept the FP32 run's threshold. Each graph's thresholds now come from its own
    outputs, run by the Detector, on the run's held-out good images (never test images)."""
    from sdk.datasets import load_dataset, load_prepared
    from sdk.metadata import ScoreCalibration

    fp32 = Detector(precision_models["fp32"]).metadata.calibration
    detector = Detector(precision_models[precision])
    calibration = detector.metadata.calibration
    assert calibration.source.startswith(f"{precision} ONNX graph") and calibration.n_images == fp32.n_images
    validation = load_dataset(str(bottle_subset), seed=0).validation
    results = detector.predict_batch(list(load_prepared(validation, detector.image_size, progress=False)), rgb=True)
    again = ScoreCalibration.from_scores([r.score for r in results], calibration.sigmas,
                                         map_maxima=[r.anomaly_map.max() for r in results])
    assert again.threshold == pytest.approx(calibration.threshold, rel=1e-6)
    assert again.pixel_threshold == pytest.approx(calibration.pixel_threshold, rel=1e-6)
    assert calibration.threshold != fp32.threshold


def test_calibration_reader_reads_every_image_once_in_passes():
    from export.precision import _ImageReader

    images = np.arange(13, dtype=np.uint8).reshape(13, 1, 1, 1)
    reader = _ImageReader(images, pass_size=4)
    assert len(reader) == 16  # rounded up to whole passes, as onnxruntime's strided loop wants
    seen = []
    for start in range(0, len(reader), reader.pass_size):  # what onnxruntime's CalibStridedMinMax loop does
        reader.set_range(start_index=start, end_index=start + reader.pass_size)
        while (item := reader.get_next()) is not None:
            assert item["image"].shape == (1, 1, 1, 1)
            seen.append(int(item["image"][0, 0, 0, 0]))
    assert seen == list(range(13))


def test_large_calibration_sets_are_calibrated_in_passes_with_the_same_scales(tiny_run, bottle_subset, tmp_path,
                                                                              monkeypatch):
    """A 640x256 model's calibration exhausted 24 GiB in one pass; passes bound the memory. Forced to 4-image passes
    over 13 real images, the INT8 graph's activation scales stay those of one pass (histograms merged)."""
    import export.precision as precision
    from sdk.datasets import load_dataset, load_prepared

    images = load_prepared(load_dataset(str(bottle_subset)).train[:13], 128, progress=False)
    fp32 = tiny_run[1].path
    precision.quantize_int8(fp32, tmp_path / "one.onnx", images)
    monkeypatch.setattr(precision, "CALIBRATION_PIXELS_PER_PASS", 4 * 128 * 128)
    assert precision.calibration_pass_size(13, 128, 128) == 4
    precision.quantize_int8(fp32, tmp_path / "passes.onnx", images)

    def activation_scales(path):
        model = onnx.load(path)
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
                if n.op_type == "QuantizeLinear" and n.input[0] not in inits}

    one, passes = activation_scales(tmp_path / "one.onnx"), activation_scales(tmp_path / "passes.onnx")
    assert one.keys() == passes.keys() and len(one) > 20
    ratios = np.array([passes[k] / one[k] for k in one])
    assert np.median(np.abs(ratios - 1)) < 0.005 and np.all(np.abs(ratios - 1) < 0.05), ratios  # measured: 0, 5e-4


def test_int8_export_is_refused_when_no_split_passes_the_gate(tiny_run, tmp_path, monkeypatch):
    """The real export with a gate no INT8 graph can meet (score rank correlation ≥ 1.5): refused with every split
    it tried named, and nothing written. (The search itself: test_int8_layers.)"""
    import functools

    import export.int8_layers as int8_layers

    strict = functools.partial(int8_layers.choose_fp32_layers, min_score_rank_correlation=1.5)
    monkeypatch.setattr(int8_layers, "choose_fp32_layers", strict)
    out = tmp_path / "refused_int8.onnx"
    with pytest.raises(ExportCheckError, match=r"whatever layers stay FP32 \(0 layers FP32: .*; 1 "):
        export_onnx(tiny_run[0], out, precision="int8", check_images=4, calib_images=8)
    assert not out.exists()


def test_int8_max_noise_tightens_the_gate_on_the_good_scores(tiny_run, tmp_path):
    """`--int8-max-noise`: a bound below the noise the default export measured keeps more layers FP32, and the
    written file's gate records the bound and meets it (nothing else of the gate changes)."""
    from rdedge.main import main
    from sdk import Detector

    default, tight = tmp_path / "default_int8.onnx", tmp_path / "tight_int8.onnx"
    export_onnx(tiny_run[0], default, precision="int8", check_images=2, calib_images=8)
    chosen = Detector(default).metadata.checks["int8_fp32_layers"]
    bound = round(chosen["gate"]["good_score_noise"] / 2, 4)
    assert chosen["gate"]["max_good_score_noise"] == 0.2 and bound > 0
    assert main(["export", str(tiny_run[0]), "--precision", "int8", "--calib-images", "8", "--check-images", "2",
                 "--int8-max-noise", str(bound), "--out", str(tight), "--quiet"]) == 0
    tighter = Detector(tight).metadata.checks["int8_fp32_layers"]
    assert tighter["gate"]["max_good_score_noise"] == bound
    assert tighter["gate"]["passed"] and tighter["gate"]["good_score_noise"] <= bound
    assert tighter["n_fp32"] > chosen["n_fp32"]
    with pytest.raises(ValueError, match="positive number of robust spreads"):
        export_onnx(tiny_run[0], tmp_path / "never.onnx", precision="int8", int8_max_noise=0.0)

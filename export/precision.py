"""Reduced-precision variants of the exported detector graph: FP16 and INT8 (explicit Q/DQ).

* **fp16**: the PyTorch network (teacher, projection, bottleneck, decoder) is converted to half precision and
  exported; input normalisation and the anomaly-map head stay FP32 (the head casts features up before the cosine
  distance), so inputs and outputs are unchanged. This is the graph TensorRT 11's strongly typed builder needs for
  FP16, and what TensorRT 10 builds as is.
* **int8**: onnxruntime's ``quantize_static`` in QDQ format on the FP32 graph, calibrated on good *training*
  images (never validation or test images): symmetric per-channel INT8 weights, symmetric per-tensor INT8
  activations (zero points 0, as TensorRT requires), biases left in float (TensorRT's parser rejects INT32 bias
  Q/DQ), and only the network's ``Conv``/``ConvTranspose`` quantized: every ``normalize/*`` and ``head/*`` node
  (cosine, resize, the blur's convolutions, max) is excluded by name and stays FP32. ConvTranspose weights are
  quantized per channel on axis 0: TensorRT has been reported not to support per-output-channel (axis 1)
  deconvolution scales — unverified here without a GPU.
* **int8, ``cpu`` layout** (opt-in, ``--int8-layout cpu``; not for TensorRT): the layout onnxruntime's x86 CPU
  kernels need to run INT8 at all: ``Clip``/``Relu``/``Add``/``Concat`` quantized too, every output quantized (so
  ``DQ -> Conv -> Q`` fuses into ``QLinearConv``), and asymmetric UINT8 activations (``Relu``/``Clip`` fold into the
  quantization range). Weights stay symmetric per-channel INT8 and the pre/post-processing stays FP32, reading the
  FP32 features, not their quantized round trip (:func:`feed_scopes_unquantized`). TensorRT
  rejects non-zero zero points, so ``rdedge build-engine`` refuses this graph. ``benchmarks/results/int8_cpu.md``
  measures why the TensorRT layout cannot be fast in onnxruntime on x86.

The non-quantized remainder of the INT8 graph is FP32, so onnxruntime's default graph optimisations (which fuse
Q/DQ pairs into integer kernels) are correct on it; the FP16-remainder variant that onnxruntime mis-optimises is
not produced.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sdk.metadata import INPUT_NAME

PRECISIONS = ("fp32", "fp16", "int8")
INT8_LAYOUTS = ("tensorrt", "cpu")
QUANTIZED_OP_TYPES = ["Conv", "ConvTranspose"]
CPU_QUANTIZED_OP_TYPES = ["Conv", "ConvTranspose", "Clip", "Relu", "Add", "Concat"]
FP32_SCOPES = ("normalize/", "head/")
"""Node-name prefixes of the pre- and post-processing (see ``export.onnx.label_scopes``), never quantized."""


class _ImageReader:
    """onnxruntime calibration data reader over prepared uint8 images.

    One image per step: onnxruntime's histogram collectors (percentile, entropy) stack the per-step activations
    and fail on a last batch of another size.
    """

    def __init__(self, images: np.ndarray, batch_size: int = 1) -> None:
        self._batches: Iterator[np.ndarray] = (
            images[i : i + batch_size] for i in range(0, len(images), batch_size)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:  # pragma: no cover - part of the reader protocol, unused by quantize_static
        raise NotImplementedError


def int8_quantization_options(fp32_model: Path, method: str = "percentile", layout: str = "tensorrt",
                              ) -> dict[str, Any]:
    """Keyword arguments of onnxruntime's ``quantize_static`` for an INT8 layout (see the module text).

    Args:
        fp32_model: The FP32 detector graph (its ``normalize/*`` and ``head/*`` nodes are excluded by name).
        method: Calibration method: ``percentile`` (99.999th percentile of |activation|, onnxruntime's default
            percentile), ``entropy`` or ``minmax``.
        layout: ``tensorrt`` (default) or ``cpu``.

    Returns:
        Everything but the model paths and the calibration reader; ``benchmarks.int8_cpu`` varies these.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    if layout not in INT8_LAYOUTS:
        raise ValueError(f"int8 layout must be one of {INT8_LAYOUTS}, got {layout!r}")

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    # The head's Gaussian blur is a Conv too: exclude the pre/post-processing nodes by name, not only by type.
    excluded = [n.name for n in onnx.load(str(fp32_model)).graph.node if n.name.startswith(FP32_SCOPES)]
    tensorrt = layout == "tensorrt"
    op_types = QUANTIZED_OP_TYPES if tensorrt else CPU_QUANTIZED_OP_TYPES
    return {
        "quant_format": QuantFormat.QDQ,
        "activation_type": QuantType.QInt8 if tensorrt else QuantType.QUInt8,
        "weight_type": QuantType.QInt8,
        "per_channel": True,
        "op_types_to_quantize": list(op_types),
        "nodes_to_exclude": excluded,
        "calibrate_method": methods[method],
        "extra_options": {
            "ActivationSymmetric": tensorrt,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "AddQDQPairToWeight": True,
            "DedicatedQDQPair": tensorrt,
            # TensorRT: inputs of the weighted ops only; cpu: every output too, so DQ -> Conv -> Q fuses.
            "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OP_TYPES) if tensorrt else [],
            "QDQOpTypePerChannelSupportToAxis": {"ConvTranspose": 0},
        },
    }


def quantize_int8(
    fp32_model: Path,
    out: Path,
    calibration_images: np.ndarray,
    method: str = "percentile",
    options: dict[str, Any] | None = None,
    layout: str = "tensorrt",
) -> None:
    """Write an INT8 Q/DQ model calibrated on ``calibration_images`` ((N, S, S, 3) uint8 good training images).

    Args:
        fp32_model: The FP32 detector graph.
        out: Destination (written directly; the caller handles atomicity).
        calibration_images: Prepared good training images.
        method: Calibration method: ``percentile``, ``entropy`` or ``minmax``.
        options: ``quantize_static`` arguments; default ``int8_quantization_options(fp32_model, method, layout)``.
        layout: ``tensorrt`` or ``cpu`` (see the module text).
    """
    from onnxruntime.quantization import quantize_static

    if options is None:
        options = int8_quantization_options(fp32_model, method, layout)
    quantize_static(str(fp32_model), str(out), _ImageReader(calibration_images), **options)
    model = onnx.load(str(out))
    if feed_scopes_unquantized(model, FP32_SCOPES):
        onnx.save(model, str(out))


def feed_scopes_unquantized(model: onnx.ModelProto, scopes: tuple[str, ...]) -> int:
    """Make the nodes of ``scopes`` read FP32 tensors, not their quantize-dequantize round trip, in place.

    When a quantized operator's output is quantized (the ``cpu`` layout quantizes every output), the features the
    anomaly-map head compares reach it as ``DQ(Q(x))``. This rewires those head inputs to ``x`` itself and drops Q/DQ
    nodes left without consumers, so the post-processing sees the same FP32 values in every layout.

    Returns:
        The number of inputs rewired.
    """
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    rewired = 0
    for node in graph.node:
        if not node.name.startswith(scopes):
            continue
        for k, name in enumerate(node.input):
            dq = producers.get(name)
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in initializers:
                node.input[k] = q.input[0]
                rewired += 1
    while True:  # remove Q/DQ nodes whose outputs nobody reads any more
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            return rewired
        for n in dead:
            graph.node.remove(n)


def qdq_summary(model: onnx.ModelProto) -> dict[str, object]:
    """Where Q/DQ landed and how: counts, which op types consume dequantized tensors, zero points, bias dtypes."""
    from onnx import numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, int] = {}
    zero_points_nonzero = 0
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = initializers.get(node.input[2])
            if zp is not None and np.any(numpy_helper.to_array(zp) != 0):
                zero_points_nonzero += 1
        for name in node.input:
            producer = producers.get(name)
            if producer is not None and producer.op_type == "DequantizeLinear":
                consumers[node.op_type] = consumers.get(node.op_type, 0) + 1
    ops = [n.op_type for n in model.graph.node]
    return {
        "quantize_linear": ops.count("QuantizeLinear"),
        "dequantize_linear": ops.count("DequantizeLinear"),
        "dequantized_consumers": consumers,
        "nonzero_zero_points": zero_points_nonzero,
    }

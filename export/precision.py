"""Reduced-precision variants of the exported detector graph: FP16 and INT8 (explicit Q/DQ).

* **fp16**: the PyTorch network (teacher, projection, bottleneck, decoder) is converted to half precision and
  exported; input normalisation and the anomaly-map head stay FP32 (the head casts features up before the cosine
  distance), so inputs and outputs are unchanged. This is the graph TensorRT 11's strongly typed builder needs for
  FP16, and what TensorRT 10 builds as is.
* **int8**: onnxruntime's ``quantize_static`` in QDQ format on the FP32 graph, calibrated on good *training*
  images (never validation or test images), then two small graph passes. One graph for TensorRT and for
  onnxruntime on CPUs:

  - symmetric per-channel INT8 weights, stored as INT8 initializers each read by a ``DequantizeLinear`` (TensorRT's
    "pre-quantized weights" form; the file is about a quarter of the FP32 one, not FP32 weights behind a Q/DQ
    pair); symmetric per-tensor INT8 activations, zero points 0 (as TensorRT requires); biases left in float
    (TensorRT's parser rejects INT32 bias Q/DQ);
  - the network's ``Conv``/``ConvTranspose``/``Relu``/``Clip``/``Add``/``Concat`` quantized, outputs included
    (one Q/DQ pair per tensor), so residual additions and concatenations run in INT8 too;
  - no Q/DQ between an operator and the ``Relu``/``Clip`` after it (:func:`quantize_after_activations`):
    ``Conv -> Relu -> Q -> DQ``, the pattern TensorRT fuses into one INT8 convolution, quantized once;
  - every ``normalize/*`` and ``head/*`` node (cosine, resize, the blur's convolutions, max) excluded by name; it
    reads the FP32 features, not their quantize-dequantize round trip (:func:`feed_scopes_unquantized`);
  - ConvTranspose weights quantized per channel on axis 0: TensorRT has been reported not to support
    per-output-channel (axis 1) deconvolution scales — unverified here without a GPU.

  Which layers stay FP32 is decided after this one calibration, on accuracy (:mod:`export.int8_layers`).

  onnxruntime's x86 kernels need unsigned activations and a ``Q`` right after each convolution; the SDK's
  onnxruntime backend rewrites the graph exactly, in memory, when it opens it on a CPU
  (:mod:`sdk.backends.cpu_int8`), and the file stays what TensorRT reads. ``benchmarks/results/int8_cpu.md``
  measures it.

The non-quantized remainder of the INT8 graph is FP32, so onnxruntime's default graph optimisations (which fuse
Q/DQ pairs into integer kernels) are correct on it; the FP16-remainder variant that onnxruntime mis-optimises is
not produced.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sdk.backends.cpu_int8 import ACTIVATIONS, remove_unused_initializers
from sdk.contract import FP32_SCOPE_PREFIXES, INPUT_NAME

QUANTIZED_OP_TYPES = ["Conv", "ConvTranspose", "Relu", "Clip", "Add", "Concat"]


CALIBRATION_PIXELS_PER_PASS = 32 * 256 * 256
"""Calibration pixels whose activations onnxruntime's histogram calibrators hold in memory at once: 32 images at
256x256 (a few GiB). onnxruntime keeps every calibration image's activations until it builds the histograms: one
pass over 250 images at 640x256 was killed at 24 GiB, and 102 of them peaked at 20 GiB. Larger sets are
calibrated in passes whose histograms onnxruntime merges (its ``CalibStridedMinMax`` option: one ``collect_data``
per pass, any calibration method); the scales stay within 5e-4 of one pass (``tests/test_precision.py``)."""


def calibration_pass_size(n_images: int, height: int, width: int) -> int:
    """Images per calibration pass: all of them where they fit :data:`CALIBRATION_PIXELS_PER_PASS`."""
    return max(1, min(n_images, CALIBRATION_PIXELS_PER_PASS // (height * width)))


class _ImageReader:
    """onnxruntime calibration data reader over prepared uint8 images, in passes of ``pass_size`` images.

    One image per step: onnxruntime's histogram collectors (percentile, entropy) stack the per-step activations
    and fail on a last batch of another size. onnxruntime runs one pass per ``set_range`` over ``range(0, len,
    pass_size)`` and wants ``len`` divisible by the pass size: ``len`` is rounded up to whole passes and the last
    pass is shorter, so every image is read exactly once.
    """

    def __init__(self, images: np.ndarray, pass_size: int | None = None) -> None:
        self.images = images
        self.pass_size = pass_size or len(images)
        self.set_range(0, len(images))

    def __len__(self) -> int:
        return -(-len(self.images) // self.pass_size) * self.pass_size

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, min(end_index, len(self.images))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        self._next += 1
        return {INPUT_NAME: self.images[self._next - 1 : self._next]}

    def rewind(self) -> None:  # pragma: no cover - part of the reader protocol, unused by quantize_static
        raise NotImplementedError


def int8_quantization_options(fp32_model: Path, method: str = "percentile") -> dict[str, Any]:
    """Keyword arguments of onnxruntime's ``quantize_static`` for rdedge's INT8 layout (see the module text).

    Args:
        fp32_model: The FP32 detector graph (its ``normalize/*`` and ``head/*`` nodes are excluded by name).
        method: Calibration method: ``percentile`` (99.999th percentile of |activation|, onnxruntime's default
            percentile), ``entropy`` or ``minmax``.

    Returns:
        Everything but the model paths and the calibration reader; ``benchmarks.int8_cpu`` varies these.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"calibration method must be one of {sorted(methods)}, got {method!r}")
    # The head's Gaussian blur is a Conv too: exclude the pre/post-processing nodes by name, not only by type.
    excluded = [n.name for n in onnx.load(str(fp32_model)).graph.node if n.name.startswith(FP32_SCOPE_PREFIXES)]
    return {
        "quant_format": QuantFormat.QDQ,
        "activation_type": QuantType.QInt8,
        "weight_type": QuantType.QInt8,
        "per_channel": True,
        "op_types_to_quantize": list(QUANTIZED_OP_TYPES),
        "nodes_to_exclude": excluded,
        "calibrate_method": methods[method],
        "extra_options": {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "AddQDQPairToWeight": False,  # INT8 weights in the file (a quarter of FP32's size), each behind a DQ
            "DedicatedQDQPair": False,
            "OpTypesToExcludeOutputQuantization": [],
            "QDQOpTypePerChannelSupportToAxis": {"ConvTranspose": 0},
        },
    }


def quantize_int8(
    fp32_model: Path,
    out: Path,
    calibration_images: np.ndarray,
    method: str = "percentile",
    options: dict[str, Any] | None = None,
) -> None:
    """Write an INT8 Q/DQ model calibrated on ``calibration_images`` ((N, H, W, 3) uint8 good training images),
    in passes bounded by :data:`CALIBRATION_PIXELS_PER_PASS`.

    Args:
        fp32_model: The FP32 detector graph.
        out: Destination (written directly; the caller handles atomicity).
        calibration_images: Prepared good training images.
        method: Calibration method: ``percentile``, ``entropy`` or ``minmax``.
        options: ``quantize_static`` arguments; default ``int8_quantization_options(fp32_model, method)``.
    """
    from onnxruntime.quantization import quantize_static

    if options is None:
        options = int8_quantization_options(fp32_model, method)
    pass_size = calibration_pass_size(*calibration_images.shape[:3])
    if pass_size < len(calibration_images):
        options = {**options, "extra_options": {**options["extra_options"], "CalibStridedMinMax": pass_size}}
    with quantizer_silenced():
        quantize_static(str(fp32_model), str(out), _ImageReader(calibration_images, pass_size), **options)
    model = onnx.load(str(out))
    feed_scopes_unquantized(model, FP32_SCOPE_PREFIXES)
    quantize_after_activations(model)
    remove_unused_initializers(model)
    onnx.save(model, str(out))


@contextlib.contextmanager
def quantizer_silenced() -> Iterator[None]:
    """Silence onnxruntime's quantizer: its calibration prints and its advice to run ``quant_pre_process`` first.

    rdedge does not pre-process on purpose: that pass fuses and renames nodes, including the pre/post-processing
    ones this module excludes by name. The quantizer warns through the root logger, which configures a stderr
    handler as a side effect when there is none; a temporary null handler prevents that.
    """
    root = logging.getLogger()
    placeholder = logging.NullHandler() if not root.handlers else None
    if placeholder is not None:
        root.addHandler(placeholder)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)
        if placeholder is not None:
            root.removeHandler(placeholder)


def quantize_after_activations(model: onnx.ModelProto) -> int:
    """Drop the Q/DQ pair between an operator and the ``Relu``/``Clip`` that follows it, in place.

    onnxruntime's quantizer, with symmetric activations, quantizes both the input and the output of an activation
    (``Conv -> Q -> DQ -> Relu -> Q -> DQ``): two roundings, the first of which the activation partly discards.
    TensorRT's placement guidance is ``Conv -> Relu -> Q -> DQ`` (it fuses the activation into the convolution and
    quantizes once), and the SDK's CPU rewrite folds exactly that ``Relu -> Q`` into a clamp of the quantized
    value. Only pairs read by the activation alone are dropped.

    Returns:
        The number of activations whose input pair was dropped.
    """
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    outputs = {o.name for o in graph.output}
    dropped = 0
    for node in [n for n in graph.node if n.op_type in ACTIVATIONS]:
        dq = producers.get(node.input[0])
        q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        if readers[dq.output[0]] != 1 or readers[q.output[0]] != 1 or {dq.output[0], q.output[0]} & outputs:
            continue
        node.input[0] = q.input[0]
        graph.node.remove(dq)
        graph.node.remove(q)
        dropped += 1
    return dropped


def feed_scopes_unquantized(model: onnx.ModelProto, scopes: tuple[str, ...]) -> int:
    """Make the nodes of ``scopes`` read FP32 tensors, not their quantize-dequantize round trip, in place.

    When a quantized operator's output is quantized (rdedge's INT8 layout quantizes outputs too), the features the
    anomaly-map head compares reach it as ``DQ(Q(x))``. This rewires those head inputs to ``x`` itself and drops Q/DQ
    nodes left without consumers, so the post-processing reads the network's FP32 outputs, never a quantized copy.

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
    remove_dead_qdq(graph)
    return rewired


def remove_dead_qdq(graph: onnx.GraphProto) -> int:
    """Remove Q/DQ nodes whose outputs nobody reads (repeatedly: a Q whose only DQ went), in place.

    Returns:
        The number of nodes removed.
    """
    removed = 0
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            return removed
        for n in dead:
            graph.node.remove(n)
        removed += len(dead)


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

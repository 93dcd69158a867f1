"""An exact rewrite of rdedge's INT8 graph that lets onnxruntime's CPU integer kernels run it.

The INT8 graph ``rdedge export --precision int8`` writes is laid out for TensorRT: symmetric INT8 activations with
zero points 0, and no Q/DQ between an operator and the ``Relu``/``Clip`` after it (``Conv -> Relu -> Q -> DQ``,
which TensorRT fuses into one INT8 convolution). onnxruntime's x86 CPU kernels want two other things before they
replace ``DQ -> Conv -> Q`` by ``QLinearConv``: the convolution's output must go straight into a ``Q``, and the
activations must be unsigned (its own ``QDQS8ToU8Transformer`` converts a signed pair only in some cases). Run as
exported, the graph is slower in onnxruntime than FP32 (``benchmarks/results/int8_cpu.md``).

:func:`rewrite_for_cpu_int8_kernels` rewrites the graph, in memory, into one onnxruntime fuses, **with identical
values** (the tests compare both graphs with onnxruntime's optimisations off: they agree bit for bit):

1. ``X -> Relu/Clip(0, hi) -> Q(int8, s, 0)`` becomes ``X -> Q(uint8, s, 128) -> Clip(uint8, 128, 128 + q_hi)``
   with ``q_hi = min(127, round_half_even(hi / s))``. Rounding is monotonic, so clamping the rounded value equals
   rounding the clamped one; the ``+ 128`` is undone by the dequantization's zero point.
2. Every other activation pair ``Q(int8, s, 0) -> DQ`` becomes ``Q(uint8, s, 128) -> DQ(uint8, s, 128)``.

Weights (constant inputs) stay INT8. Nothing else changes; the file on disk is never modified, and TensorRT reads
the file as exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

ACTIVATIONS = ("Relu", "Clip")
"""Activations the INT8 layout puts before its Q (``export.precision``) and this rewrite folds into a clamp."""
UINT8_OFFSET = 128


@dataclass(frozen=True)
class CpuInt8Rewrite:
    """What :func:`rewrite_for_cpu_int8_kernels` changed.

    Attributes:
        activations_folded: ``Relu``/``Clip`` nodes moved after their quantization, as a ``uint8`` clamp.
        pairs_unsigned: Other activation Q/DQ groups rewritten from INT8 to UINT8 with zero point 128.
    """

    activations_folded: int
    pairs_unsigned: int

    @property
    def changed(self) -> bool:
        return bool(self.activations_folded or self.pairs_unsigned)


class _Graph:
    """Producer, consumer and initializer lookups of an ONNX graph, rebuilt on demand."""

    def __init__(self, model: onnx.ModelProto) -> None:
        from onnx import numpy_helper

        self.graph = model.graph
        self.initializers = {i.name: i for i in self.graph.initializer}
        self.outputs = {o.name for o in self.graph.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self._to_array = numpy_helper.to_array
        self._from_array = numpy_helper.from_array
        self._added: dict[str, onnx.TensorProto] = {}

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer input, or None when the input is computed (or absent)."""
        tensor = self.initializers.get(name) if name else None
        return None if tensor is None else self._to_array(tensor)

    def symmetric_int8_scale(self, q: onnx.NodeProto) -> float | None:
        """The per-tensor scale of an activation ``QuantizeLinear`` to INT8 with zero point 0, else None."""
        if q.input[0] in self.initializers or not self.int8_zero(q):
            return None
        scale = self.constant(q.input[1])
        return None if scale is None or scale.size != 1 else float(scale.reshape(()))

    def int8_zero(self, node: onnx.NodeProto) -> bool:
        """Whether a Q or DQ node's zero point is an INT8 initializer of zeros."""
        from onnx import TensorProto

        zero_point = self.initializers.get(node.input[2]) if len(node.input) > 2 else None
        return (zero_point is not None and zero_point.data_type == TensorProto.INT8
                and not np.any(self._to_array(zero_point)))

    def dequantizers(self, q: onnx.NodeProto) -> list[onnx.NodeProto] | None:
        """The consumers of ``q``'s output when all are DequantizeLinear with INT8 zero points 0, else None."""
        consumers = self.consumers.get(q.output[0], [])
        if q.output[0] in self.outputs or not consumers:
            return None
        if any(c.op_type != "DequantizeLinear" or not self.int8_zero(c) for c in consumers):
            return None
        return consumers

    def uint8(self, value: int) -> str:
        """Name of a scalar ``uint8`` initializer holding ``value`` (added once)."""
        name = f"rdedge_cpu_int8_u8_{value}"
        if name not in self._added and name not in self.initializers:
            self._added[name] = self._from_array(np.array(value, np.uint8), name)
        return name

    def commit(self) -> None:
        """Add the initializers :meth:`uint8` created to the graph."""
        self.graph.initializer.extend(self._added.values())
        self._added.clear()


def rewrite_for_cpu_int8_kernels(model: onnx.ModelProto) -> CpuInt8Rewrite:
    """Rewrite ``model`` in place so onnxruntime's CPU integer kernels run it (see the module text).

    Args:
        model: An INT8 Q/DQ ONNX graph; graphs without symmetric INT8 activations are left as they are.

    Returns:
        The number of activations folded and of Q/DQ groups made unsigned.
    """
    graph = _Graph(model)
    folded = sum(_fold_activation(graph, node) for node in list(graph.graph.node) if node.op_type in ACTIVATIONS)
    graph.commit()
    graph = _Graph(model)  # the folding rewired consumers
    unsigned = sum(_make_unsigned(graph, node) for node in graph.graph.node if node.op_type == "QuantizeLinear")
    graph.commit()
    remove_unused_initializers(model)  # the INT8 zero points replaced by UINT8 ones (onnxruntime warns of each)
    return CpuInt8Rewrite(folded, unsigned)


def remove_unused_initializers(model: onnx.ModelProto) -> int:
    """Remove initializers no node reads any more (scales and zero points of dropped Q/DQ pairs), in place."""
    graph = model.graph
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    unused = [i for i in graph.initializer if i.name not in used]
    for initializer in unused:
        graph.initializer.remove(initializer)
    return len(unused)


def _fold_activation(graph: _Graph, act: onnx.NodeProto) -> bool:
    """``X -> act -> Q(int8)`` → ``X -> Q(uint8) -> Clip(uint8)`` when exact; False when the pattern differs."""
    from onnx import helper

    consumers = graph.consumers.get(act.output[0], [])
    if act.output[0] in graph.outputs or len(consumers) != 1 or consumers[0].op_type != "QuantizeLinear":
        return False
    q = consumers[0]
    scale = graph.symmetric_int8_scale(q)
    dequantizers = graph.dequantizers(q)
    if scale is None or dequantizers is None:
        return False
    high = np.inf
    if act.op_type == "Clip":
        bounds = [graph.constant(act.input[k]) if len(act.input) > k and act.input[k] else None for k in (1, 2)]
        if len(act.input) < 2 or not act.input[1] or bounds[0] is None or float(bounds[0]) != 0.0:
            return False  # only Clip(0, hi) is a ReLU; a computed or other lower bound is left alone
        if len(act.input) > 2 and act.input[2]:
            if bounds[1] is None:
                return False
            high = float(bounds[1])
    q_high = 127 if not np.isfinite(high) else int(min(127, np.round(np.float32(high) / np.float32(scale))))
    if q_high < 0:
        return False
    quantized = q.output[0]
    clamped = f"{quantized}_rdedge_relu_u8"
    for dq in dequantizers:
        dq.input[0] = clamped
        dq.input[2] = graph.uint8(UINT8_OFFSET)
    q.input[0] = act.input[0]
    q.input[2] = graph.uint8(UINT8_OFFSET)
    clamp = helper.make_node("Clip", [quantized, graph.uint8(UINT8_OFFSET), graph.uint8(UINT8_OFFSET + q_high)],
                             [clamped], name=f"{act.name or quantized}_rdedge_relu_u8")
    nodes = graph.graph.node
    position = list(nodes).index(q)
    nodes.insert(position + 1, clamp)
    nodes.remove(act)
    return True


def _make_unsigned(graph: _Graph, q: onnx.NodeProto) -> bool:
    """``Q(int8, s, 0) -> DQ…`` → ``Q(uint8, s, 128) -> DQ(uint8, s, 128)…``; False when not such a group."""
    dequantizers = graph.dequantizers(q)
    if graph.symmetric_int8_scale(q) is None or dequantizers is None:
        return False
    offset = graph.uint8(UINT8_OFFSET)
    q.input[2] = offset
    for dq in dequantizers:
        dq.input[2] = offset
    return True

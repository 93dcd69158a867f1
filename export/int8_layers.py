"""Which layers of the network run in INT8: a per-layer sensitivity sweep and an accuracy gate, calibrated once.

The anomaly map is ``1 − cos`` between the teacher's and the student's features, two nearly equal tensors, so
rounding errors on either side become large *relative* errors of the map. Whether they matter is a question of
ranking, not of equality: the map may move on good images (where it is small and INT8 noise dominates) while the
parts are ranked exactly as before. rdedge therefore decides on accuracy, on data the model never trained on and no
test image:

1. **Calibrate once.** :func:`export.precision.quantize_int8` quantizes the whole network on good training images.
   Keeping a layer in FP32 afterwards is a graph edit of that file (:func:`keep_fp32`): the layer reads its inputs
   before their quantize/dequantize pair and its FP32 weights; every other scale stays as calibrated.
2. **Gate** (:func:`gate`) on the *selection set* (:class:`train.selection.SelectionSet`: held-out good images and
   copies of them with synthetic defects, with masks): the INT8 graph passes when its image AUROC and its pixel
   AUROC on that set are each within :data:`MAX_AUROC_DROP` of the FP32 graph's, either way (a rise as large says
   the map changed as much, and it need not carry over to real defects), its scores keep the FP32 ranking of the
   parts (Spearman ≥ :data:`MIN_SCORE_RANK_CORRELATION`), and the good images' scores move by at most
   :data:`MAX_GOOD_SCORE_NOISE` of their own robust spread (:func:`good_score_noise`). The last criterion is the
   one that still acts when synthetic defects are far easier than real ones (the AUROCs saturate at 1.0): a real
   defect that scores just above the good parts is lost to noise on that scale.
3. **Sensitivity sweep** (only when the all-INT8 graph fails): each quantized layer alone in INT8, every other one
   FP32, on a subset of the selection set; its sensitivity is the relative error of the scores and maps it causes
   (:func:`output_error`).
4. **Fewest FP32 layers that pass**: the most sensitive first, their number doubled, then bisected, so a
   100-layer network needs about a dozen gate runs.
5. **Their weights in FP16 if that holds too**: where their FP32 weights are at least a tenth of the file
   (:data:`MIN_WEIGHT_SHARE`), the chosen split is gated again with its FP32 layers reading FP16 weights (each
   cast to FP32: half their bytes in the file); written if it passes, else their FP32 weights. The
   split is the same either way; only the file shrinks. Not INT8 weights (weight-only INT8, which
   :func:`keep_fp32` can write): the sensitive layers are as sensitive to their weights' rounding as to their
   activations' (see :data:`SMALLER_WEIGHTS`).

The gate runs every candidate in each CPU runtime the file will meet (:func:`gate_runtimes`: ONNX Runtime, and
OpenVINO where it is installed), exactly as ``sdk.Detector`` runs it there (ONNX Runtime with its INT8 CPU
rewrite; OpenVINO with its own integer kernels, float operations pinned to f32), against the FP32 graph in ONNX
Runtime; a split passes only when it passes in every one. The runtimes do not round alike: KolektorSDD RD++'s
split chosen in ONNX Runtime alone moved OpenVINO's good scores by 0.27 robust spreads (ONNX Runtime: 0.195) and
lost 0.006 test pixel AUROC there. The sensitivity sweep ranks layers in ONNX Runtime only. On TensorRT the FP32
layers of the strongly typed INT8 file build in FP32, the quantized ones in INT8.
"""

from __future__ import annotations

import copy
import importlib.util
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import onnx

from sdk.backends.cpu_int8 import remove_unused_initializers, rewrite_for_cpu_int8_kernels
from sdk.contract import INPUT_NAME, OUTPUT_MAP, OUTPUT_SCORE
from sdk.metadata import mad_scale
from train.selection import SelectionSet

from .precision import remove_dead_qdq

MAX_AUROC_DROP = 0.005
"""Largest accepted change (either way) of the selection set's image or pixel AUROC, INT8 against FP32."""
MIN_SCORE_RANK_CORRELATION = 0.95
"""Smallest accepted Spearman correlation between the INT8 and FP32 image scores of the selection set."""
MAX_GOOD_SCORE_NOISE = 0.2
"""Largest accepted :func:`good_score_noise`. Fixed a priori from the 0.005 AUROC target, not fitted to any set: if
good and defective scores spread alike (standard deviation σ) and INT8 adds independent noise of standard deviation
rσ to every score, AUROC falls from Φ(z) to Φ(z / √(1 + r²)) for a separation z; the fall is largest near z = 1
and is about 0.121 r² there, so r ≤ 0.2 keeps it under 0.005 for every defect class, however subtle."""
SWEEP_GOOD_IMAGES = 8
"""Good images (with their 16 defective copies) each layer of the sweep is measured on."""


@dataclass(frozen=True)
class Outputs:
    """Maps (N, H, W) and scores (N,) of one graph on a selection set."""

    maps: np.ndarray
    scores: np.ndarray


def run_on_cpu(model: onnx.ModelProto, images: np.ndarray, batch_size: int = 16, owned: bool = False) -> Outputs:
    """Run a graph in ONNX Runtime as ``sdk.Detector`` does on a CPU (an INT8 graph rewritten for its integer
    kernels, :mod:`sdk.backends.cpu_int8`); ``model`` is left unchanged unless ``owned`` (a throw-away copy, such
    as :func:`keep_fp32` returns: rewritten in place instead of copied again)."""
    import onnxruntime as ort

    if not owned:
        model = copy.deepcopy(model)
    rewrite_for_cpu_int8_kernels(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    maps, scores = [], []
    for start in range(0, len(images), batch_size):
        m, s = session.run([OUTPUT_MAP, OUTPUT_SCORE], {INPUT_NAME: images[start : start + batch_size]})
        maps.append(m)
        scores.append(s)
    return Outputs(np.concatenate(maps), np.concatenate(scores))


def run_on_openvino(model: onnx.ModelProto, images: np.ndarray, batch_size: int = 16, owned: bool = False) -> Outputs:
    """Run a graph in OpenVINO on the CPU as ``sdk.Detector(..., backend="openvino")`` runs it (the Q/DQ graph as
    written, OpenVINO's own integer kernels, :func:`sdk.backends.openvino.compile_properties`); ``owned`` is
    accepted for the signature :func:`run_on_cpu` has (OpenVINO reads a serialized copy)."""
    from sdk.backends.openvino import compile_properties, import_openvino

    core = import_openvino().Core()
    compiled = core.compile_model(core.read_model(model.SerializeToString()), "CPU", compile_properties(core, "CPU"))
    request, outputs = compiled.create_infer_request(), (compiled.output(OUTPUT_MAP), compiled.output(OUTPUT_SCORE))
    maps, scores = [], []
    for start in range(0, len(images), batch_size):
        results = request.infer({INPUT_NAME: images[start : start + batch_size]})
        maps.append(np.array(results[outputs[0]]))
        scores.append(np.array(results[outputs[1]]))
    return Outputs(np.concatenate(maps), np.concatenate(scores))


RUNNERS: dict[str, Callable[..., Outputs]] = {"onnxruntime": run_on_cpu, "openvino": run_on_openvino}
"""CPU runtimes the gate can run a graph in, by ``sdk.Detector`` backend name."""


def gate_runtimes() -> list[str]:
    """The CPU runtimes an INT8 export is gated in: ONNX Runtime, and OpenVINO where it is installed (the same file
    runs in both)."""
    return ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") is not None else [])


def _dequantized_inputs(model: onnx.ModelProto) -> list[tuple[str, set[str], set[str]]]:
    """``(name, dequantized activations, dequantized weights)`` read by each node that is not a Q/DQ, in graph
    order."""
    initializers = {i.name for i in model.graph.initializer}
    dequantized = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    found = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        read = [name for name in node.input if name in dequantized]
        found.append((node.name, {n for n in read if dequantized[n] not in initializers},
                      {n for n in read if dequantized[n] in initializers}))
    return found


def quantized_layers(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that read a dequantized activation, in graph order: the layers INT8 computes, and the
    units :func:`keep_fp32` can take out of it. (In the fully quantized graph every layer with an INT8 weight also
    reads an INT8 activation.)"""
    return [name for name, activations, _ in _dequantized_inputs(model) if activations]


def weight_only_layers(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that compute in FP32 from FP32 activations but read INT8 weights (``keep_fp32(...,
    weights="int8")``), in graph order."""
    return [name for name, activations, weights in _dequantized_inputs(model) if weights and not activations]


WEIGHT_FORMATS = ("int8", "fp16", "fp32")
"""How :func:`keep_fp32` can store the weights of the layers it takes out of INT8, smallest file first."""
SMALLER_WEIGHTS = ("fp16",)
"""What :func:`choose_fp32_layers` tries for the FP32 layers' weights before FP32, in order. Not INT8: in a trial
export (2026-12-01) that tried INT8 weights first, the chosen split's layers reading INT8 weights moved the good
scores by 0.31 robust spreads on ELPV DRD and 0.36 on KolektorSDD DRD (FP32 weights: 0.03 and 0.16), and both
failed the gate; an attempt costs a gate run in every runtime."""
MIN_WEIGHT_SHARE = 0.1
"""Smaller weights are tried only when the FP32 layers' FP32 weights make at least this share of the file: every
rounding adds noise, and one that saves a few kilobytes is not worth any (tire RD++ keeps its stem convolutions
FP32: 4.6 KB of a 4.1 MB file)."""


def keep_fp32(int8: onnx.ModelProto, fp32: onnx.ModelProto, names: Collection[str],
              weights: str = "fp32") -> onnx.ModelProto:
    """A copy of an INT8 graph with the named layers computed in FP32.

    Each named layer reads its activations before their quantize/dequantize pair; Q/DQ nodes and INT8 weights
    nobody reads any more are removed. The scales of the layers still quantized are unchanged. Its weights:

    * ``fp32``: the FP32 graph's own tensors (the INT8 graph was quantized from it: same node names, same input
      order);
    * ``fp16``: those tensors stored as FP16, each read through a ``Cast`` to FP32 (half their size in the file;
      the layer computes in FP32 with weights rounded to FP16, a relative error of at most 2⁻¹¹ for weights of
      normal FP16 magnitude; one beyond FP16's range would become inf, and the gate would fail that graph). A
      weight shared by several layers, or already cast by an earlier call, is cast once;
    * ``int8``: the INT8 weights they already read through their ``DequantizeLinear`` (weight-only INT8: a quarter
      of their FP32 size; rounded per channel to 1/127 of the largest weight).

    Args:
        int8: The quantized graph (from :func:`export.precision.quantize_int8`).
        fp32: The FP32 graph it was quantized from.
        names: Layers to compute in FP32 (names from :func:`quantized_layers`).
        weights: One of :data:`WEIGHT_FORMATS` (see above).

    Raises:
        KeyError: A named layer is not in the FP32 graph.
        ValueError: Unknown ``weights``.
    """
    from onnx import helper, numpy_helper

    if weights not in WEIGHT_FORMATS:
        raise ValueError(f"weights must be one of {WEIGHT_FORMATS}, got {weights!r}")
    model = copy.deepcopy(int8)
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    initializers = {i.name for i in graph.initializer}
    fp32_nodes = {n.name: n for n in fp32.graph.node}
    fp32_initializers = {i.name: i for i in fp32.graph.initializer}
    casts: dict[str, onnx.NodeProto] = {}
    wanted = set(names)
    for node in graph.node:
        if node.name not in wanted:
            continue
        for k, name in enumerate(node.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            if dq.input[0] in initializers:  # an INT8 weight
                if weights == "int8":
                    continue
                original = fp32_nodes[node.name].input[k]
                if weights == "fp16":
                    cast_output = f"{original}_fp16_as_fp32"
                    if cast_output in producers:  # cast by an earlier keep_fp32 of this graph
                        node.input[k] = cast_output
                        continue
                    if original not in casts:
                        half = numpy_helper.to_array(fp32_initializers[original]).astype(np.float16)
                        graph.initializer.append(numpy_helper.from_array(half, f"{original}_fp16"))
                        casts[original] = helper.make_node("Cast", [f"{original}_fp16"], [cast_output],
                                                           name=f"{original}_fp16_cast", to=onnx.TensorProto.FLOAT)
                    node.input[k] = casts[original].output[0]
                    continue
                if original not in initializers:
                    graph.initializer.append(fp32_initializers[original])
                    initializers.add(original)
                node.input[k] = original
            else:
                q = producers.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    node.input[k] = q.input[0]
    for cast in reversed(casts.values()):  # read only initializers: first in graph order
        graph.node.insert(0, cast)
    remove_dead_qdq(graph)
    remove_unused_initializers(model)
    return model


def fp32_weight_share(model: onnx.ModelProto, layers: Collection[str]) -> float:
    """The share of the serialized graph's bytes that the named layers' FP32 weight initializers take."""
    wanted = set(layers)
    read = {name for node in model.graph.node if node.name in wanted for name in node.input}
    weights = sum(len(i.SerializeToString()) for i in model.graph.initializer
                  if i.name in read and i.data_type == onnx.TensorProto.FLOAT and len(i.dims) > 1)
    return weights / len(model.SerializeToString())


def output_error(outputs: Outputs, reference: Outputs) -> float:
    """Relative error of a graph's scores and maps against the FP32 graph's: the RMS difference of each over the
    spread of the reference (its standard deviation), summed."""

    def relative(actual: np.ndarray, expected: np.ndarray) -> float:
        spread = float(np.std(expected))
        return float(np.sqrt(np.mean((actual - expected) ** 2)) / spread) if spread > 0 else 0.0

    return relative(outputs.scores, reference.scores) + relative(outputs.maps, reference.maps)


def robust_spread(values: np.ndarray) -> float:
    """1.4826 · median absolute deviation: the standard deviation of normal data, unmoved by a few odd values (the
    scale of the threshold rule, :data:`sdk.metadata.MEDIAN_MAD`); the standard deviation where the MAD is 0."""
    values = np.asarray(values, dtype=np.float64)
    scale = mad_scale(values.tolist())
    return scale if scale > 0 else float(np.std(values))


def good_score_noise(outputs: Outputs, reference: Outputs, labels: np.ndarray) -> float:
    """How much a graph moves the good images' scores, in units of their spread: the standard deviation of the
    change of each good image's score (a shift common to all of them changes no ranking) over the *robust* spread
    (:func:`robust_spread`) of the FP32 good scores (0.0 when there is no spread to compare with, i.e. fewer than
    two good images).

    The spread is robust because a few odd good images (a KolektorSDD strip scored like a defect) inflate the
    standard deviation many times over while the threshold, median + 3 robust spreads, sits among the typical good
    parts: INT8 noise measured against that inflated scale looked small (0.11) on a model whose INT8 graph lost
    0.021 test AUROC; against the robust spread it is 0.94. The change keeps its plain standard deviation, so a few
    good images that INT8 moves far still count."""
    good = np.asarray(labels) == 0
    spread = robust_spread(reference.scores[good]) if good.sum() > 1 else 0.0
    if spread == 0.0:
        return 0.0
    return float(np.std(outputs.scores[good] - reference.scores[good]) / spread)


@dataclass(frozen=True)
class GateResult:
    """The accuracy gate of one INT8 graph against the FP32 graph on the selection set.

    Attributes:
        image_auroc: INT8 image AUROC (good against synthetic defects).
        image_auroc_fp32: FP32 image AUROC.
        pixel_auroc: INT8 pixel AUROC over the synthetic defects' masks.
        pixel_auroc_fp32: FP32 pixel AUROC.
        score_rank_correlation: Spearman correlation of the INT8 and FP32 image scores.
        output_error: :func:`output_error` against FP32.
        map_correlation: Pearson correlation of the maps (reported; not part of the gate).
        good_score_noise: :func:`good_score_noise` against FP32.
        max_auroc_drop: The gate's largest accepted AUROC drop.
        min_score_rank_correlation: The gate's smallest accepted score rank correlation.
        max_good_score_noise: The gate's largest accepted good-score noise.
    """

    image_auroc: float
    image_auroc_fp32: float
    pixel_auroc: float
    pixel_auroc_fp32: float
    score_rank_correlation: float
    output_error: float
    map_correlation: float
    good_score_noise: float
    max_auroc_drop: float = MAX_AUROC_DROP
    min_score_rank_correlation: float = MIN_SCORE_RANK_CORRELATION
    max_good_score_noise: float = MAX_GOOD_SCORE_NOISE

    @property
    def passed(self) -> bool:
        # Two-sided: the gate asks whether INT8 behaves like FP32. A proxy AUROC that rises as much as it may fall
        # says the map changed that much, and a change on synthetic defects does not carry over to real ones.
        return (abs(self.image_auroc - self.image_auroc_fp32) <= self.max_auroc_drop
                and abs(self.pixel_auroc - self.pixel_auroc_fp32) <= self.max_auroc_drop
                and self.score_rank_correlation >= self.min_score_rank_correlation
                and self.good_score_noise <= self.max_good_score_noise)

    def as_record(self) -> dict[str, Any]:
        """Every field and ``passed``, JSON-ready (a model's ``checks`` and the benchmark rows keep this)."""
        return {**asdict(self), "passed": self.passed}

    def summary(self) -> str:
        return (f"image AUROC {self.image_auroc:.4f} (FP32 {self.image_auroc_fp32:.4f}), pixel AUROC "
                f"{self.pixel_auroc:.4f} (FP32 {self.pixel_auroc_fp32:.4f}), score rank correlation "
                f"{self.score_rank_correlation:.3f}, good-score noise {self.good_score_noise:.3f}")


GATE_PIXELS_PER_IMAGE = 128 * 128
"""Pixels per map the gate's pixel AUROC reads: maps (blurred with σ = 4 px) and masks are subsampled with one
stride to about this many, so a gate run at 640x256 does not spend its time sorting millions of pixels."""


def selection_aurocs(outputs: Outputs, selection: SelectionSet) -> tuple[float, float]:
    """(image AUROC, pixel AUROC) of one graph's outputs on the selection set (pixels subsampled, see
    :data:`GATE_PIXELS_PER_IMAGE`)."""
    from sdk.metrics import image_auroc, pixel_auroc

    height, width = outputs.maps.shape[1:]
    stride = max(1, round(math.sqrt(height * width / GATE_PIXELS_PER_IMAGE)))
    pixel = pixel_auroc(selection.masks[:, ::stride, ::stride], outputs.maps[:, ::stride, ::stride])
    return float(image_auroc(selection.labels, outputs.scores)), float(pixel)


def gate(outputs: Outputs, reference: Outputs, selection: SelectionSet, max_auroc_drop: float = MAX_AUROC_DROP,
         min_score_rank_correlation: float = MIN_SCORE_RANK_CORRELATION,
         reference_aurocs: tuple[float, float] | None = None,
         max_good_score_noise: float = MAX_GOOD_SCORE_NOISE) -> GateResult:
    """Compare a graph's outputs on the selection set with the FP32 graph's (see :class:`GateResult`);
    ``reference_aurocs`` saves recomputing the FP32 graph's (:func:`selection_aurocs`)."""
    from scipy.stats import spearmanr

    image, pixel = selection_aurocs(outputs, selection)
    image_ref, pixel_ref = reference_aurocs or selection_aurocs(reference, selection)
    rank = spearmanr(outputs.scores, reference.scores).statistic
    correlation = np.corrcoef(outputs.maps.ravel(), reference.maps.ravel())[0, 1]
    return GateResult(image, image_ref, pixel, pixel_ref, float(np.nan_to_num(rank)),
                      output_error(outputs, reference), float(np.nan_to_num(correlation)),
                      good_score_noise(outputs, reference, selection.labels), max_auroc_drop,
                      min_score_rank_correlation, max_good_score_noise)


@dataclass
class LayerChoice:
    """What :func:`choose_fp32_layers` decided, and why.

    Attributes:
        fp32_layers: Layers kept in FP32, most sensitive first.
        n_quantized: Layers left in INT8.
        gates: ``{runtime: gate}`` of the written graph in every runtime it was gated in (each passed).
        weights: How the FP32 layers' weights are stored (:data:`WEIGHT_FORMATS`, see :func:`keep_fp32`): the
            smallest with which the same split passed the gate too.
        sensitivity: ``{layer: output error with that layer alone in INT8}``, most sensitive first (empty when
            the all-INT8 graph passed and no sweep ran).
        tried: ``[{"n_fp32": k, "passed": ..., "image_auroc": ..., ...}]`` for every gate run, in order: the first
            runtime's measures, ``passed`` over every runtime, each runtime's in ``gates``, and ``weights``.
    """

    fp32_layers: list[str]
    n_quantized: int
    gates: dict[str, GateResult]
    weights: str = "fp32"
    sensitivity: dict[str, float] = field(default_factory=dict)
    tried: list[dict[str, Any]] = field(default_factory=list)

    @property
    def gate(self) -> GateResult:
        """The written graph's gate in the first runtime (ONNX Runtime, the sweep's)."""
        return next(iter(self.gates.values()))

    def as_checks(self) -> dict[str, Any]:
        """A JSON-ready record for the model's metadata (``gate``: the first runtime's, as before OpenVINO was
        gated; ``gates``: every runtime's)."""
        gates = {runtime: result.as_record() for runtime, result in self.gates.items()}
        return {"n_fp32": len(self.fp32_layers), "n_int8": self.n_quantized, "fp32_layers": self.fp32_layers,
                "fp32_layer_weights": self.weights,
                "gate": next(iter(gates.values())), "gates": gates,
                "sensitivity": {k: round(v, 5) for k, v in self.sensitivity.items()}, "tried": self.tried}


class NoPassingLayerChoice(RuntimeError):
    """No INT8/FP32 split passed the gate (only with every layer FP32 would it, which is not INT8)."""

    def __init__(self, tried: list[dict[str, Any]]) -> None:
        self.tried = tried
        super().__init__("; ".join(f"{t['n_fp32']} layers FP32: {t['summary']}" for t in tried))


def sweep_sensitivity(int8: onnx.ModelProto, fp32: onnx.ModelProto, layers: Sequence[str], images: np.ndarray,
                      reference: Outputs, tick: Callable[[], None] = lambda: None) -> dict[str, float]:
    """The output error each layer causes alone in INT8 (every other layer FP32), most sensitive first."""
    sensitivity = {}
    for layer in layers:
        alone = keep_fp32(int8, fp32, [other for other in layers if other != layer])
        sensitivity[layer] = output_error(run_on_cpu(alone, images, owned=True), reference)
        tick()
    return dict(sorted(sensitivity.items(), key=lambda item: -item[1]))


def choose_fp32_layers(int8: onnx.ModelProto, fp32: onnx.ModelProto, selection: SelectionSet,
                       progress: bool = False, max_auroc_drop: float = MAX_AUROC_DROP,
                       min_score_rank_correlation: float = MIN_SCORE_RANK_CORRELATION,
                       max_good_score_noise: float = MAX_GOOD_SCORE_NOISE,
                       runtimes: Sequence[str] | None = None, smaller_weights: Sequence[str] = SMALLER_WEIGHTS,
                       min_weight_share: float = MIN_WEIGHT_SHARE,
                       ) -> tuple[onnx.ModelProto, LayerChoice]:
    """The INT8 graph with the fewest layers in FP32 that passes the gate in every runtime (see the module text).

    Args:
        int8: The fully quantized graph.
        fp32: The FP32 graph it was quantized from.
        selection: Held-out good images with synthetic defects.
        progress: Show a progress bar over the sweep.
        max_auroc_drop: See :class:`GateResult`.
        min_score_rank_correlation: See :class:`GateResult`.
        max_good_score_noise: See :class:`GateResult`.
        runtimes: Names of :data:`RUNNERS` to gate in (default: :func:`gate_runtimes`); the sweep ranks layers in
            ONNX Runtime.
        smaller_weights: Weight formats (:data:`WEIGHT_FORMATS`) the chosen split's FP32 layers try, in order,
            before their FP32 weights.
        min_weight_share: Try them only when the FP32 layers' weights are at least this share of the file's bytes.

    Returns:
        ``(graph, choice)``.

    Raises:
        NoPassingLayerChoice: Nothing passes with at least one layer still in INT8.
    """
    from tqdm.auto import tqdm

    unknown = [w for w in smaller_weights if w not in WEIGHT_FORMATS[:-1]]
    if unknown:  # before the sweep, which takes minutes
        raise ValueError(f"smaller_weights must be among {WEIGHT_FORMATS[:-1]}, got {unknown}")
    runtimes = list(runtimes or gate_runtimes())
    layers = quantized_layers(int8)
    reference = run_on_cpu(fp32, selection.images)
    reference_aurocs = selection_aurocs(reference, selection)
    tried: list[dict[str, Any]] = []
    graphs: dict[tuple[int, str], tuple[onnx.ModelProto, dict[str, GateResult]]] = {}

    def measures(result: GateResult) -> dict[str, Any]:
        return {"passed": result.passed, "image_auroc": round(result.image_auroc, 5),
                "pixel_auroc": round(result.pixel_auroc, 5),
                "score_rank_correlation": round(result.score_rank_correlation, 5),
                "good_score_noise": round(result.good_score_noise, 5)}

    def attempt(ranked: list[str], k: int, weights: str = "fp32") -> bool:
        graph = keep_fp32(int8, fp32, ranked[:k], weights) if k else int8
        results = {runtime: gate(RUNNERS[runtime](graph, selection.images), reference, selection, max_auroc_drop,
                                 min_score_rank_correlation, reference_aurocs, max_good_score_noise)
                   for runtime in runtimes}
        graphs[k, weights] = (graph, results)
        passed = all(result.passed for result in results.values())
        tried.append({"n_fp32": k, "weights": weights, **measures(results[runtimes[0]]), "passed": passed,
                      "gates": {runtime: measures(result) for runtime, result in results.items()},
                      "summary": "; ".join(f"{runtime}: {result.summary()}" for runtime, result in results.items())})
        return passed

    if attempt(layers, 0):
        return int8, LayerChoice([], len(layers), graphs[0, "fp32"][1], tried=tried)

    sweep = selection.subset(SWEEP_GOOD_IMAGES)
    sweep_reference = run_on_cpu(fp32, sweep.images)
    with tqdm(total=len(layers), desc="int8: per-layer sensitivity", unit="layer", disable=not progress,
              leave=False) as bar:
        sensitivity = sweep_sensitivity(int8, fp32, layers, sweep.images, sweep_reference, bar.update)
    ranked = list(sensitivity)

    failing, passing, k = 0, 0, 1  # doubling, then bisection between the last failing and the first passing count
    while not passing:
        if k >= len(ranked):  # every layer FP32 is not an INT8 graph
            raise NoPassingLayerChoice(tried)
        if attempt(ranked, k):
            passing = k
        else:
            failing, k = k, k + 1 if k == len(ranked) - 1 else min(2 * k, len(ranked) - 1)
    while passing - failing > 1:
        middle = (failing + passing) // 2
        if attempt(ranked, middle):
            passing = middle
        else:
            failing = middle
    # the same split with its FP32 layers' weights smaller, where they weigh enough and that passes too
    worth_it = fp32_weight_share(graphs[passing, "fp32"][0], ranked[:passing]) >= min_weight_share
    weights = next((w for w in smaller_weights if worth_it and attempt(ranked, passing, w)), "fp32")
    graph, results = graphs[passing, weights]
    return graph, LayerChoice(ranked[:passing], len(layers) - passing, results, weights, sensitivity, tried)


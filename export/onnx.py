"""Export a trained run to ONE ONNX graph that *is* the detector, and check it before it is written.

The graph takes ``image`` (N, H, W, 3) uint8 RGB with a dynamic batch N and returns ``anomaly_map`` (N, H, W) and
``score`` (N,) float32. Normalisation, teacher, bottleneck, decoder, the per-scale cosine distance (FP32), bilinear
upsampling, the fusion, the separable 33-tap Gaussian and the max are all inside. The SDK's metadata travels in the
model's ``metadata_props`` (key ``rdedge``).

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export based). The legacy TorchScript exporter is deprecated and
produced Shape/If/Pad sub-graphs around the "same" paddings; the dynamo path folds padding and batch norm into the
convolutions and yields a static graph apart from the batch axis.

Before the file is written the export checks itself on real images (the run's held-out validation images):

* ONNX Runtime vs PyTorch, elementwise relative error ≤ ``tolerance`` on the map and the score;
* ONNX Runtime vs the papers' host-side post-processing (``scipy.ndimage.gaussian_filter(σ=4)``, DRD's refinement
  in NumPy; :mod:`export.reference`) applied in float64 to the PyTorch model's features.

A failed check raises :class:`ExportCheckError` and leaves any existing file untouched.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from export.precision import qdq_summary, quantize_int8
from export.reference import papers_postprocess
from sdk.backends.onnxruntime import OnnxRuntimeBackend
from sdk.contract import (
    FP32_SCOPES,
    INPUT_NAME,
    METADATA_KEY,
    OUTPUT_MAP,
    OUTPUT_SCORE,
    ImageSize,
    check_precision,
)
from sdk.datasets import load_model_dataset, load_prepared, reference_images
from sdk.errors import RdedgeError
from sdk.fileio import atomic_path
from sdk.metadata import ModelMetadata, ScoreCalibration
from train.checkpoint import build_graph_from_checkpoint, resolve_checkpoint
from train.graph import DetectorGraph

DEFAULT_OPSET = 18
DEFAULT_TOLERANCE = 1e-4


class ExportCheckError(RdedgeError, RuntimeError):
    """The exported graph does not reproduce the PyTorch model (or SciPy's smoothing) within tolerance.

    Attributes:
        correlation: For a reduced-precision graph, its map correlation with FP32 (None otherwise).
    """

    correlation: float | None = None


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and measured.

    Attributes:
        path: The ONNX file.
        metadata: Metadata written into it.
        checks: Self-check figures (max relative errors, image count).
    """

    path: Path
    metadata: ModelMetadata
    checks: dict[str, Any]


def max_relative_error(actual: np.ndarray, expected: np.ndarray, floor: float = 1e-6) -> float:
    """max |actual − expected| / max(|expected|, floor), elementwise."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    return float(np.max(np.abs(a - e) / np.maximum(np.abs(e), floor)))


def to_onnx_model(graph: DetectorGraph, image_size: ImageSize, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Trace the detector graph to an ONNX model with a dynamic batch axis and a fixed height x width (no metadata
    yet)."""
    example = torch.zeros(2, *image_size, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():  # the exporter narrates to stdout
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_MAP, OUTPUT_SCORE],
            dynamic_shapes=({0: batch},),
            external_data=False,
        )
    model = program.model_proto
    label_scopes(model)
    return model


def label_scopes(model: onnx.ModelProto) -> None:
    """Prefix the pre/post-processing node names with their module scope (:data:`sdk.contract.FP32_SCOPES`:
    TensorRT layer names then show which layers are pinned to FP32); drop exporter stack traces (they hold absolute
    source paths of the exporting machine)."""
    import ast

    for node in model.graph.node:
        scopes: list[str] = []
        for prop in list(node.metadata_props):
            if prop.key == "pkg.torch.onnx.stack_trace":
                node.metadata_props.remove(prop)
            elif prop.key == "pkg.torch.onnx.name_scopes":
                try:
                    scopes = list(ast.literal_eval(prop.value))
                except (ValueError, SyntaxError):
                    scopes = []
        if len(scopes) > 1 and scopes[1] in FP32_SCOPES and not node.name.startswith(f"{scopes[1]}/"):
            node.name = f"{scopes[1]}/{node.name}"


def run_graph(model_path: Path, images: np.ndarray, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(maps, scores) of a written graph on prepared images, run by the SDK's own ONNX Runtime backend (the INT8
    CPU rewrite included), exactly as ``Detector`` runs it."""
    backend = OnnxRuntimeBackend(model_path)
    try:
        outputs = [backend.infer(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    finally:
        backend.close()
    return np.concatenate([m for m, _ in outputs]), np.concatenate([s for _, s in outputs])


def calibrate_graph(model_path: Path, validation_images: np.ndarray, sigmas: float,
                    precision: str) -> ScoreCalibration:
    """Image and pixel thresholds of a written graph, from its own outputs on held-out good images."""
    maps, scores = run_graph(model_path, validation_images)
    return ScoreCalibration.from_scores(
        scores, sigmas=sigmas, map_maxima=maps.max(axis=(1, 2)),
        source=f"{precision} ONNX graph in ONNX Runtime, {len(scores)} held-out good images",
    )


def check_against_torch(
    model_path: Path, graph: DetectorGraph, images: np.ndarray, tolerance: float = DEFAULT_TOLERANCE
) -> dict[str, Any]:
    """Compare ONNX Runtime with PyTorch, and with the papers' host-side post-processing, on real images.

    The second comparison (``..._vs_reference``) runs the papers' post-processing (SciPy Gaussian, DRD refinement in
    NumPy; :mod:`export.reference`) in float64 on the PyTorch model's features.

    Raises:
        ExportCheckError: Any error above ``tolerance``.
    """
    ort_maps, ort_scores = run_graph(model_path, images)
    with torch.no_grad():
        x = torch.from_numpy(images)
        torch_maps, torch_scores = graph(x)
        teacher, student = graph.net(graph.normalize(x))
    head = graph.head
    ref_maps, ref_scores = papers_postprocess(
        teacher, student, head.image_size, combine=head.combine, refinement=head.refinement,
        image_score=head.image_score, top_fraction=head.top_fraction, map_strides=head.map_strides,
        sigma=head.sigma, feature_pool=head.feature_pool,
    )
    checks = {
        "n_images": len(images),
        "tolerance": tolerance,
        "onnxruntime_vs_torch_map": max_relative_error(ort_maps, torch_maps.numpy()),
        "onnxruntime_vs_torch_score": max_relative_error(ort_scores, torch_scores.numpy()),
        "onnxruntime_vs_reference_map": max_relative_error(ort_maps, ref_maps),
        "onnxruntime_vs_reference_score": max_relative_error(ort_scores, ref_scores),
    }
    failed = {k: v for k, v in checks.items() if k.startswith("onnxruntime") and v > tolerance}
    if failed:
        raise ExportCheckError(f"exported graph disagrees beyond {tolerance:g}: {failed}")
    return checks


MIN_MAP_CORRELATION = {"fp16": 0.999}
"""Smallest accepted Pearson correlation between a FP16 graph's maps and the FP32 model's, on the check images
(good validation images): a gate that catches broken conversions. INT8 has none: on good images most of the map is
small normal-region values where INT8 noise dominates the correlation (0.33 on a bottle model whose AUROC INT8
kept), so INT8 is gated on accuracy instead (:mod:`export.int8_layers`); its correlation is still reported."""


def check_reduced_precision(
    model_path: Path, graph: DetectorGraph, images: np.ndarray, precision: str
) -> dict[str, Any]:
    """Compare a FP16/INT8 graph in ONNX Runtime with the FP32 PyTorch model on real images.

    Reports the map correlation, the largest map error relative to the map's range and the largest score error
    relative to the score; fails on non-finite outputs or a map correlation below :data:`MIN_MAP_CORRELATION`.
    """
    maps, scores = run_graph(model_path, images)
    with torch.no_grad():
        ref_maps, ref_scores = (t.numpy() for t in graph(torch.from_numpy(images)))
    if not (np.isfinite(maps).all() and np.isfinite(scores).all()):
        raise ExportCheckError(f"the {precision} graph produces NaN or infinity on real images")
    checks = {
        "n_images": len(images),
        "precision": precision,
        "map_correlation_vs_fp32": float(np.corrcoef(maps.ravel(), ref_maps.ravel())[0, 1]),
        "map_max_error_vs_fp32_range": float(np.abs(maps - ref_maps).max() / np.ptp(ref_maps)),
        "score_max_relative_error_vs_fp32": max_relative_error(scores, ref_scores),
        "min_map_correlation": MIN_MAP_CORRELATION.get(precision),
    }
    if checks["map_correlation_vs_fp32"] < MIN_MAP_CORRELATION.get(precision, -1.0):
        error = ExportCheckError(f"{precision} graph departs from FP32: {checks}")
        error.correlation = checks["map_correlation_vs_fp32"]
        raise error
    return checks


class StageTimer:
    """Wall seconds per named stage of an export (``with timer("stage"): ...``), recorded in the metadata's
    ``checks["export_seconds"]`` so that a slow export says where its time went."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 3)


def quantize_selected(fp32_model: Path, folder: Path, calibration: np.ndarray, calib_method: str,
                      selection_images: np.ndarray, metadata: ModelMetadata, seed: int,
                      timer: StageTimer | None = None, progress: bool = False,
                      max_good_score_noise: float | None = None) -> tuple[Path, dict[str, Any]]:
    """Calibrate and quantize the network once, then keep in FP32 the fewest layers that pass the accuracy gate
    (:mod:`export.int8_layers`: a per-layer sensitivity sweep, gated on held-out good images with synthetic
    defects; never test images). ``max_good_score_noise`` tightens or loosens the gate's bound on the good scores'
    noise (:data:`export.int8_layers.MAX_GOOD_SCORE_NOISE` when None).

    Returns:
        ``(path, choice)``: the written INT8 graph and :meth:`export.int8_layers.LayerChoice.as_checks`.

    Raises:
        ExportCheckError: No split passes with at least one layer in INT8 (every split tried is named).
    """
    from export.int8_layers import NoPassingLayerChoice, choose_fp32_layers
    from train.selection import SelectionSet

    timer = timer or StageTimer()
    path = folder / "int8.onnx"
    with timer("int8: calibrate and quantize"):
        quantize_int8(fp32_model, path, calibration, calib_method)
    with timer("int8: synthetic defects for the gate"):
        selection = SelectionSet.from_good(selection_images, seed)
    try:
        with timer("int8: gate and per-layer sensitivity"):
            bound = {} if max_good_score_noise is None else {"max_good_score_noise": max_good_score_noise}
            model, choice = choose_fp32_layers(onnx.load(path), onnx.load(fp32_model), selection, progress, **bound)
    except NoPassingLayerChoice as exc:
        raise ExportCheckError(
            f"int8 graph departs from FP32 on held-out good images with synthetic defects, whatever layers stay "
            f"FP32 ({exc}); export fp16 or fp32 instead") from exc
    save_with_metadata(model, metadata.replace(precision="int8"), path)
    return path, choice.as_checks()


def default_output(checkpoint: Path, precision: str) -> Path:
    """``RUN_DIR/model.onnx`` for FP32, ``RUN_DIR/model_<precision>.onnx`` otherwise."""
    return checkpoint.parent / check_precision(precision).onnx_file


def export_onnx(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    check_images: int = 8,
    tolerance: float = DEFAULT_TOLERANCE,
    graph_overrides: dict[str, Any] | None = None,
    precision: str = "fp32",
    calib_images: int = 256,
    calib_method: str = "percentile",
    int8_max_noise: float | None = None,
    progress: bool = False,
) -> ExportReport:
    """Export a run (folder or checkpoint) to an ONNX detector, check it, and write it atomically.

    Args:
        run: Run folder or checkpoint file.
        out: Destination; ``RUN_DIR/model.onnx`` by default.
        opset: ONNX opset (≥ 17).
        check_images: Real images used by the self-check (at least 1).
        tolerance: Largest relative error accepted by the self-check.
        precision: ``fp32``, ``fp16`` or ``int8`` (see :mod:`export.precision`). Reduced precisions are checked
            against the FP32 PyTorch model with :func:`check_reduced_precision` instead of the 1e-4 parity.
        calib_images: INT8 only: good training images used for calibration (all when fewer).
        calib_method: INT8 only: ``percentile`` (default), ``entropy`` or ``minmax``.
        int8_max_noise: INT8 only: the gate's largest accepted good-score noise, in robust spreads of the held-out
            good scores (default: :data:`export.int8_layers.MAX_GOOD_SCORE_NOISE`, 0.2). Lower keeps more layers
            FP32; worth it where production's good parts score unlike the held-out training images (README, INT8).
        graph_overrides: Graph options to change from the trained ones (e.g. ``{"refinement": False}`` for DRD's
            ablation).
        progress: Show progress while loading check images.

    Every export calibrates its image and pixel thresholds on the graph it writes, run by the SDK's backend on the
    run's held-out good validation images (never test images): a FP16 or INT8 graph, or a graph with overrides, has
    thresholds of its own. The metadata written keeps no local path (:meth:`ModelMetadata.without_local_paths`).

    Raises:
        ExportCheckError: The self-check failed; nothing is written.
    """
    if opset < 17:
        raise ValueError(f"opset must be at least 17, got {opset}")
    if check_images < 1:
        raise ValueError("check_images must be at least 1: an export is always checked on real images")
    if int8_max_noise is not None and not 0 < int8_max_noise < float("inf"):
        raise ValueError(f"int8_max_noise must be a positive number of robust spreads, got {int8_max_noise}")
    check_precision(precision)
    checkpoint = resolve_checkpoint(run)
    out_path = Path(out) if out is not None else default_output(checkpoint, precision)
    timer = StageTimer()
    with timer("load model and images"):
        graph, metadata = build_graph_from_checkpoint(checkpoint, graph_overrides)
        dataset = load_model_dataset(metadata)  # the checkpoint's local record of its data (never the exported one)
        images = reference_images(metadata, check_images, progress=progress, dataset=dataset)
        validation = load_prepared(dataset.validation, metadata.image_size, desc="calibration (held-out good)",
                                   progress=progress)
    with timer("trace to ONNX"):
        model = to_onnx_model(graph, metadata.image_size, opset)
    with tempfile.TemporaryDirectory() as tmp:
        unchecked = Path(tmp) / "fp32.onnx"
        save_with_metadata(model, metadata, unchecked)
        with timer("check against PyTorch and the reference"):
            checks = check_against_torch(unchecked, graph, images, tolerance)
        written = unchecked
        if precision == "fp16":
            with timer("convert to FP16 and check"):
                model = to_onnx_model(copy.deepcopy(graph).half_network(), metadata.image_size, opset)
                written = Path(tmp) / "fp16.onnx"
                save_with_metadata(model, metadata.replace(precision=precision), written)
                checks["reduced_precision"] = check_reduced_precision(written, graph, images, precision)
        elif precision == "int8":
            with timer("load calibration images"):
                calibration = load_prepared(dataset.train[:calib_images], metadata.image_size, desc="calibration",
                                            progress=progress)
            written, checks["int8_fp32_layers"] = quantize_selected(
                unchecked, Path(tmp), calibration, calib_method, validation, metadata,
                seed=int(metadata.training.get("seed", 0)), timer=timer,
                progress=progress, max_good_score_noise=int8_max_noise)
            with timer("int8: check against PyTorch"):
                checks["reduced_precision"] = check_reduced_precision(written, graph, images, precision)
            model = onnx.load(written)
            checks["qdq"] = qdq_summary(model)
            checks["calibration_images"] = len(calibration)
            checks["calibration_method"] = calib_method
        # Each precision's thresholds come from its own graph (run as Detector runs it) on held-out good images.
        with timer("calibrate thresholds (held-out good)"):
            score_calibration = calibrate_graph(written, validation, metadata.calibration.sigmas, precision)
    checks["export_seconds"] = timer.seconds
    metadata = metadata.replace(
        precision=precision,
        calibration=score_calibration,
        checks=checks,
        versions={**metadata.versions, "export_torch": torch.__version__, "export_onnx": onnx.__version__},
    ).without_local_paths()
    set_metadata(model, metadata)
    onnx.checker.check_model(model)
    with atomic_path(out_path) as tmp_path:
        onnx.save(model, tmp_path)
    return ExportReport(path=out_path, metadata=metadata, checks=checks)


def save_with_metadata(model: onnx.ModelProto, metadata: ModelMetadata, path: Path) -> None:
    """Write a graph with its metadata (a working copy, so the SDK's backend can open it for the checks)."""
    set_metadata(model, metadata)
    onnx.save(model, path)


def set_metadata(model: onnx.ModelProto, metadata: ModelMetadata) -> None:
    """Write (or replace) the rdedge metadata entry of an ONNX model."""
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    model.metadata_props.add(key=METADATA_KEY, value=metadata.to_json())
    model.producer_name = "rdedge"
    height, width = metadata.image_size
    model.doc_string = (
        f"rdedge {metadata.method}/{metadata.backbone} anomaly detector: {INPUT_NAME} (N,{height},{width},3) uint8 "
        f"RGB -> {OUTPUT_MAP} (N,{height},{width}) float32, {OUTPUT_SCORE} (N,) float32"
    )

"""OpenVINO backend: the same exported graph (``.onnx``, or an OpenVINO IR ``.xml`` written from it) on Intel CPUs,
iGPUs and NPUs.

OpenVINO reads the ONNX file directly (its ONNX front end), so FP32, FP16 and INT8 Q/DQ graphs run as exported:
OpenVINO's low-precision transformations turn the INT8 graph's Q/DQ pairs into integer kernels. The rdedge
metadata is the ONNX file's metadata entry, which OpenVINO keeps in the model's runtime info (``framework``
section); :func:`export.openvino.write_ir` keeps it in the IR too.

Install with ``pip install rdedge[openvino]``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import INPUT_NAME, METADATA_KEY, OUTPUT_MAP, OUTPUT_SCORE
from ..errors import DetectorClosedError, ModelLoadError
from ..metadata import ModelMetadata
from .base import Backend, check_graph_signature

METADATA_SECTIONS = (("framework", METADATA_KEY), (METADATA_KEY,))
"""Where the metadata lies in a model's runtime info: ONNX ``metadata_props`` as OpenVINO's ONNX front end reads
them (also in an IR that other tools converted from our ONNX), and the entry :func:`export.openvino.write_ir`
adds."""
IR_SUFFIX = ".xml"


def import_openvino() -> Any:
    """The ``openvino`` module, or a :class:`ModelLoadError` saying how to install it."""
    try:
        import openvino
    except ImportError as exc:
        raise ModelLoadError(
            "the OpenVINO backend needs the openvino package: `pip install rdedge[openvino]` (or `pip install "
            "openvino`), or use backend='onnxruntime'"
        ) from exc
    return openvino


def read_metadata(model: Any, path: Path) -> ModelMetadata:
    """The rdedge metadata of a model OpenVINO has read.

    Raises:
        ModelLoadError: The model carries none.
    """
    for section in METADATA_SECTIONS:
        if model.has_rt_info(list(section)):
            return ModelMetadata.from_json(model.get_rt_info(list(section)).astype(str))
    raise ModelLoadError(f"{path} has no rdedge metadata (key {METADATA_KEY!r}); export it with `rdedge export`")


def supports(core: Any, device: str, key: str) -> bool:
    """Whether an OpenVINO device takes a property (False for a device OpenVINO does not know: compiling says)."""
    try:
        return key in core.get_property(device, "SUPPORTED_PROPERTIES")
    except Exception:
        return False


def compile_properties(core: Any, device: str = "CPU", *, threads: int = 0, performance_hint: str = "LATENCY",
                       inference_precision: str = "f32", config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The properties ``compile_model`` gets for ``device`` (see :class:`OpenVinoBackend` for each argument): one
    place, so that the INT8 export's gate (:func:`export.int8_layers.run_on_openvino`) runs a graph exactly as the
    backend does."""
    properties: dict[str, Any] = {"PERFORMANCE_HINT": performance_hint}
    if supports(core, device, "INFERENCE_PRECISION_HINT"):  # NPUs compute in their own precision
        properties["INFERENCE_PRECISION_HINT"] = inference_precision
    if threads:
        properties["INFERENCE_NUM_THREADS"] = threads
    properties.update(config or {})
    return properties


class OpenVinoBackend(Backend):
    """Run an rdedge graph (``.onnx`` or OpenVINO IR ``.xml``) with OpenVINO.

    Args:
        path: The ``.onnx`` file written by ``rdedge export``, or an ``.xml`` IR written by ``rdedge export-openvino``.
        device: OpenVINO device name: ``CPU`` (default), ``GPU`` (an Intel iGPU), ``NPU``, ``AUTO``, ...; passed
            through as is.
        threads: CPU inference threads (0: OpenVINO's choice, one per physical core).
        performance_hint: OpenVINO's ``LATENCY`` (default: one image at a time, as a line camera sends them) or
            ``THROUGHPUT``.
        inference_precision: The precision OpenVINO computes the graph's float operations in: ``f32`` (default;
            the graph's own precision, as in every other backend: FP16 weights and INT8 Q/DQ run as exported) or
            ``bf16``/``f16``, which OpenVINO picks by itself on CPUs with AMX or AVX512-BF16 and which changes
            scores and maps beyond the FP32 tolerance (measure first with ``rdedge evaluate --backend openvino``).
        config: More OpenVINO properties, passed to ``compile_model`` as they are.

    Thread safety: each calling thread gets its own infer request on the one compiled model, so calls from
    several threads run concurrently and give the same results as from one.

    Raises:
        ModelLoadError: Missing or corrupt file, no rdedge metadata, inputs/outputs that are not rdedge's,
            openvino not installed, or a device OpenVINO cannot compile for.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        device: str = "CPU",
        threads: int = 0,
        performance_hint: str = "LATENCY",
        inference_precision: str = "f32",
        config: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        ov = import_openvino()
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises untyped RuntimeErrors for corrupt files
            raise ModelLoadError(f"OpenVINO cannot read {self.path}: {exc}") from exc
        self.metadata = read_metadata(model, self.path)
        shape = model.inputs[0].get_partial_shape()
        static = shape[1].is_static and shape[2].is_static
        graph_size = (shape[1].get_length(), shape[2].get_length()) if static else None
        check_graph_signature(self.path, [port.get_any_name() for port in model.inputs],
                              [port.get_any_name() for port in model.outputs], graph_size, self.metadata)
        properties = compile_properties(core, device, threads=threads, performance_hint=performance_hint,
                                        inference_precision=inference_precision, config=config)
        self.device = device
        try:
            self.compiled = core.compile_model(model, device, properties)
        except Exception as exc:
            raise ModelLoadError(f"OpenVINO cannot compile {self.path} for device {device!r}: {exc}") from exc
        self._outputs = (self.compiled.output(OUTPUT_MAP), self.compiled.output(OUTPUT_SCORE))
        self._local = threading.local()

    @property
    def name(self) -> str:
        return "openvino"

    def _request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.compiled is None:
            raise DetectorClosedError(f"{self.path} was closed: open a new Detector")
        request = self._request()
        results = request.infer({INPUT_NAME: batch})
        # The request owns its output buffers and reuses them on its next call: hand out copies.
        return np.array(results[self._outputs[0]]), np.array(results[self._outputs[1]])

    def close(self) -> None:
        self.compiled = None
        self._local = threading.local()


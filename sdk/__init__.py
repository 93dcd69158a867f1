"""rdedge SDK: run exported reverse-distillation anomaly detectors with ONNX Runtime (or TensorRT).

Needs only numpy, OpenCV and a runtime; never PyTorch, and nothing of ``train``, ``export``, ``benchmarks`` or the
``rdedge`` command (they build on it). What lives where: :mod:`sdk.detector` (``Detector``), :mod:`sdk.result`,
:mod:`sdk.contract` (tensor names, precisions, file names: the graph contract), :mod:`sdk.metadata`,
:mod:`sdk.backends` (one module per runtime, the file suffix as key), :mod:`sdk.image`, :mod:`sdk.sources`,
:mod:`sdk.reader` and :mod:`sdk.stream` (video), :mod:`sdk.capture_process`, :mod:`sdk.records`,
:mod:`sdk.visualize`, :mod:`sdk.datasets`, :mod:`sdk.metrics` and :mod:`sdk.evaluate`.

    >>> from sdk import Detector
    >>> det = Detector("model.onnx")
    >>> det("part.png").is_anomaly
"""

from .detector import Detector
from .errors import (
    DatasetError,
    DetectorClosedError,
    ImageReadError,
    InferenceError,
    InvalidInputError,
    ModelLoadError,
    RdedgeError,
    SourceError,
    SourceOpenTimeout,
)
from .metadata import ModelMetadata, ScoreCalibration
from .reader import Backoff
from .result import Result
from .sources import csi_pipeline, usb_pipeline
from .stream import Stream, StreamResult

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "DatasetError",
    "Detector",
    "DetectorClosedError",
    "ImageReadError",
    "InferenceError",
    "InvalidInputError",
    "ModelLoadError",
    "ModelMetadata",
    "RdedgeError",
    "Result",
    "ScoreCalibration",
    "SourceError",
    "SourceOpenTimeout",
    "Stream",
    "StreamResult",
    "__version__",
    "csi_pipeline",
    "usb_pipeline",
]

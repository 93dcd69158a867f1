"""rdedge SDK: run exported reverse-distillation anomaly detectors with ONNX Runtime (or TensorRT).

Needs only numpy, OpenCV and a runtime; never PyTorch.

    >>> from sdk import Detector
    >>> det = Detector("model.onnx")
    >>> det("part.png").is_anomaly
"""

from .detector import Detector, Result
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
from .stream import Backoff, Stream, StreamResult, csi_pipeline, usb_pipeline

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

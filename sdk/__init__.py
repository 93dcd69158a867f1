"""rdedge SDK: run exported reverse-distillation anomaly detectors with ONNX Runtime (or TensorRT).

Needs only numpy, OpenCV and a runtime; never PyTorch.

    >>> from sdk import Detector
    >>> det = Detector("model.onnx")
    >>> det("part.png").is_anomaly
"""

from .detector import Detector, Result
from .errors import DatasetError, ImageReadError, InvalidInputError, ModelLoadError, RdedgeError
from .metadata import ModelMetadata, ScoreCalibration

__version__ = "0.1.0"

__all__ = [
    "DatasetError",
    "Detector",
    "ImageReadError",
    "InvalidInputError",
    "ModelLoadError",
    "ModelMetadata",
    "RdedgeError",
    "Result",
    "ScoreCalibration",
    "__version__",
]

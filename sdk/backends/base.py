"""The interface every runtime backend implements."""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from ..metadata import ModelMetadata


class Backend(abc.ABC):
    """Runs one exported rdedge graph.

    A backend takes a batch of prepared images (N, H, W, 3) uint8 RGB and returns what the graph computes: the
    anomaly maps (N, H, W) float32 and the image scores (N,) float32. All pre- and post-processing lives in the
    graph, so a backend has no model-specific logic.

    Attributes:
        path: The model file.
        metadata: The metadata read from the file.
    """

    path: Path
    metadata: ModelMetadata

    @property
    def name(self) -> str:
        """Short name of the runtime, e.g. ``onnxruntime``."""
        return type(self).__name__

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the graph on a prepared batch.

        Args:
            batch: (N, H, W, 3) uint8, C-contiguous, (H, W) = ``metadata.image_size``.

        Returns:
            ``(anomaly_maps, scores)``: (N, H, W) and (N,) float32 arrays.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for runtimes with nothing to release early
        """Release the runtime's resources now (device memory, sessions). Idempotent; inference afterwards raises
        :class:`~sdk.errors.DetectorClosedError`."""

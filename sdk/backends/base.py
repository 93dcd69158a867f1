"""The interface every runtime backend implements."""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np

from ..contract import INPUT_NAME, OUTPUT_MAP, OUTPUT_SCORE
from ..errors import ModelLoadError
from ..metadata import ModelMetadata


def check_graph_signature(path: Path, inputs: list[str], outputs: list[str], graph_size: tuple[int, int] | None,
                          metadata: ModelMetadata) -> None:
    """Refuse a graph that is not rdedge's: other inputs/outputs, or an input size its metadata does not state.

    Args:
        path: The model file (for the message).
        inputs: Input names, in order.
        outputs: Output names.
        graph_size: The input's (height, width), or None when the graph leaves it dynamic.
        metadata: The metadata read from the file.

    Raises:
        ModelLoadError: Saying what differs.
    """
    if inputs != [INPUT_NAME] or set(outputs) != {OUTPUT_MAP, OUTPUT_SCORE}:
        raise ModelLoadError(
            f"{path} has inputs {inputs} and outputs {outputs}; expected [{INPUT_NAME!r}] and "
            f"{{{OUTPUT_MAP!r}, {OUTPUT_SCORE!r}}}"
        )
    if graph_size is None or tuple(graph_size) != tuple(metadata.image_size):
        taken = "x".join(map(str, graph_size)) if graph_size else "any size of"
        raise ModelLoadError(
            f"{path}: its graph takes {taken} (height x width) images but its metadata says {metadata.image_size}; "
            "the file was edited or assembled by hand: re-export it"
        )


class Backend(abc.ABC):
    """Runs one exported rdedge graph.

    A backend takes a batch of prepared images (N, H, W, 3) uint8 RGB and returns what the graph computes: the
    anomaly maps (N, H, W) float32 and the image scores (N,) float32. All pre- and post-processing lives in the
    graph, so a backend has no model-specific logic.

    Attributes:
        path: The model file (a remote backend: its address).
        metadata: The metadata read from the file.
    """

    path: Path | str
    metadata: ModelMetadata
    maps_by_default: bool = True
    """Whether a Detector asks for anomaly maps unless told otherwise (False where maps cost a transfer)."""

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

    def infer_scores(self, batch: np.ndarray) -> np.ndarray:
        """The image scores only, (N,) float32; a backend that can skip transferring the maps overrides this."""
        return self.infer(batch)[1]

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for runtimes with nothing to release early
        """Release the runtime's resources now (device memory, sessions). Idempotent; inference afterwards raises
        :class:`~sdk.errors.DetectorClosedError`."""

"""The contract between an exported rdedge graph and the runtimes that run it, defined once.

``export`` writes graphs and engines to these names; the SDK's backends read them by these names; the ``rdedge``
command offers the precisions of :data:`PRECISIONS`. Nothing here imports a runtime.

* tensor names: :data:`INPUT_NAME`, :data:`OUTPUT_MAP`, :data:`OUTPUT_SCORE`; metadata key :data:`METADATA_KEY`;
* the input size of a graph, square or not (:class:`ImageSize`);
* the precisions a graph (and an engine) can have, with their file names (:data:`PRECISIONS`);
* the scopes of the pre- and post-processing that stay FP32 at every precision (:data:`FP32_SCOPES`);
* version strings as numbers (:func:`version_tuple`), for TensorRT's version rules and engine compatibility.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

METADATA_KEY = "rdedge"
"""Key of the JSON metadata entry in an ONNX model's ``metadata_props``."""
INPUT_NAME = "image"
"""Graph input: uint8 RGB images, NHWC, shape (N, height, width, 3) with the model's :class:`ImageSize`."""
OUTPUT_MAP = "anomaly_map"
"""Graph output: float32 anomaly maps, shape (N, height, width)."""
OUTPUT_SCORE = "score"
"""Graph output: float32 image scores, shape (N,)."""

FP32_SCOPES = ("normalize", "head")
"""Top-level modules of the graph (input normalisation; anomaly map, blur and score) that are FP32 at every
precision: their ONNX nodes are named ``<scope>/<name>`` (``export.onnx.label_scopes``), never quantized, and pinned
to FP32 in weakly typed TensorRT builds."""
FP32_SCOPE_PREFIXES = tuple(f"{scope}/" for scope in FP32_SCOPES)
"""Node- and layer-name prefixes of :data:`FP32_SCOPES`."""

SIZE_MULTIPLE = 32
"""Both sides of a model input are multiples of this (the teachers downsample by 32)."""
MIN_SIDE = 64
"""The smallest side a model input may have."""
MAX_ASPECT = 4.0
"""Longest side / shortest side that :meth:`ImageSize.fit_aspect` gives (longer parts are squashed to it)."""


class ImageSize(NamedTuple):
    """The model input (and anomaly map) size, height x width in pixels; square models have equal sides.

    Written ``256`` (square) or ``256x640`` (height x width) on the command line and in tables; stored as
    ``[height, width]`` in the model metadata. Being a tuple, ``height, width = size`` unpacks it; OpenCV wants
    :attr:`cv2_size` (width, height).
    """

    height: int
    width: int

    @classmethod
    def parse(cls, value: ImageSize | int | str | tuple[int, int] | list[int]) -> ImageSize:
        """An ImageSize from ``256``, ``"256"``, ``"256x640"`` (height x width), ``(256, 640)`` or ``[256, 640]``.

        Raises:
            ValueError: Anything else, or a side that is not a positive integer.
        """
        if isinstance(value, ImageSize):
            return value
        sides: tuple[object, ...]
        if isinstance(value, bool):
            raise ValueError(f"not an image size: {value!r}")
        if isinstance(value, int):
            sides = (value, value)
        elif isinstance(value, str):
            match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", value)
            if match is None:
                raise ValueError(f"not an image size: {value!r} (give 256 for a square input or 256x640 for height x "
                                 "width)")
            sides = (int(match[1]), int(match[2] or match[1]))
        elif isinstance(value, (tuple, list)) and len(value) == 2:
            sides = tuple(value)
        else:
            raise ValueError(f"not an image size: {value!r} (an int, 'HxW' or [height, width])")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sides):
            raise ValueError(f"image size sides must be positive integers, got {value!r}")
        return cls(int(sides[0]), int(sides[1]))  # type: ignore[arg-type]

    def check_trainable(self) -> ImageSize:
        """Self, if both sides are multiples of :data:`SIZE_MULTIPLE` and at least :data:`MIN_SIDE`.

        Raises:
            ValueError: Otherwise, naming the side.
        """
        for name, side in zip(("height", "width"), self, strict=True):
            if side < MIN_SIDE or side % SIZE_MULTIPLE:
                raise ValueError(f"image {name} must be a multiple of {SIZE_MULTIPLE} and at least {MIN_SIDE}, got "
                                 f"{side} (image size {self})")
        return self

    @property
    def is_square(self) -> bool:
        """Whether height equals width."""
        return self.height == self.width

    @property
    def cv2_size(self) -> tuple[int, int]:
        """(width, height), the order of ``cv2.resize`` and ``cv2.VideoWriter``."""
        return self.width, self.height

    @classmethod
    def fit_aspect(cls, height: float, width: float, short_side: int = 256) -> ImageSize:
        """The trainable size closest to an image's aspect: the short side ``short_side``, the long side scaled by the
        aspect and rounded to a multiple of :data:`SIZE_MULTIPLE` (at most :data:`MAX_ASPECT` times the short side).

        Args:
            height: Image height (any unit: only the ratio counts).
            width: Image width.
            short_side: The model's shorter side, a multiple of :data:`SIZE_MULTIPLE`.
        """
        if height <= 0 or width <= 0:
            raise ValueError(f"image sides must be positive, got {height} x {width}")
        aspect = min(max(height, width) / min(height, width), MAX_ASPECT)
        long_side = max(short_side, SIZE_MULTIPLE * round(short_side * aspect / SIZE_MULTIPLE))
        size = cls(long_side, short_side) if height > width else cls(short_side, long_side)
        return size.check_trainable()

    def __str__(self) -> str:
        return str(self.height) if self.is_square else f"{self.height}x{self.width}"


FEATURE_STRIDES = (4, 8, 16)
"""Strides of the teacher's three feature maps, in the order the head receives them."""
MAX_TOP_COUNT = 3840
"""Most pixels ``top_mean`` may average: TensorRT's TopK layer takes k <= 3840 (its operator reference)."""
IMAGE_SCORES = ("max", "top_mean")
"""Image score functions of the head: the map's maximum, or the mean of its highest pixels."""


def check_map_strides(strides: tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """``map_strides`` as a sorted tuple of distinct feature strides.

    Raises:
        ValueError: Empty, repeated or unknown strides.
    """
    chosen = tuple(sorted(int(s) for s in strides))
    if not chosen or len(set(chosen)) != len(chosen) or not set(chosen) <= set(FEATURE_STRIDES):
        raise ValueError(f"map_strides must be distinct strides among {FEATURE_STRIDES}, got {list(strides)}")
    return chosen


def check_feature_pool(size: int) -> int:
    """``feature_pool`` (the head's neighbourhood side) as an int: odd and at least 1 (1: no pooling).

    Raises:
        ValueError: Even, below 1 or not a whole number.
    """
    if isinstance(size, bool) or int(size) != size or size < 1 or size % 2 == 0:
        raise ValueError(f"feature_pool must be an odd whole number of at least 1, got {size!r}")
    return int(size)


def top_pixel_count(image_size: ImageSize | int, top_fraction: float) -> int:
    """Pixels in the top ``top_fraction`` of a map of ``image_size`` (at least one)."""
    size = ImageSize.parse(image_size)
    return max(1, round(size.height * size.width * top_fraction))


MODEL_FILE = "model.onnx"
"""The FP32 graph's file name in a run folder (what a run folder given as a model resolves to)."""


@dataclass(frozen=True)
class Precision:
    """A numeric precision of the exported network.

    Attributes:
        name: ``fp32``, ``fp16`` or ``int8``.
        onnx_file: File name of that precision's graph in a run folder.
        summary: One line for help texts.
    """

    name: str
    onnx_file: str
    summary: str


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", MODEL_FILE, "FP32 graph"),
        Precision("fp16", "model_fp16.onnx", "FP16 network, FP32 pre/post-processing"),
        Precision("int8", "model_int8.onnx",
                  "INT8 Q/DQ network (symmetric, calibrated on good training images), FP32 pre/post-processing"),
    )
}
"""Every precision, in increasing order of reduction: feeds the command's choices, the exporter and the build plan."""
PRECISION_NAMES = tuple(PRECISIONS)


def check_precision(name: str) -> Precision:
    """The :class:`Precision` called ``name``.

    Raises:
        ValueError: An unknown name (the message lists the known ones).
    """
    try:
        return PRECISIONS[name]
    except KeyError:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_NAMES)}, got {name!r}") from None


def engine_file_name(onnx_path: str | os.PathLike[str], precision: str) -> str:
    """Default engine file name for an ONNX built at ``precision``: ``model_fp16.onnx`` → ``model_fp16.engine``,
    ``model.onnx`` built as fp16 → ``model_fp16.engine``, ``part.onnx`` → ``part_fp32.engine``.

    The precision is named once: a stem that already ends in ``_<precision>`` keeps it.
    """
    stem = Path(onnx_path).stem
    return f"{stem if stem.endswith(f'_{precision}') else f'{stem}_{precision}'}.engine"


def version_tuple(version: str, parts: int = 2) -> tuple[int, ...]:
    """The first ``parts`` numbers of a version string, missing ones as 0: ``"10.3.0.30"`` → ``(10, 3)``;
    ``version_tuple("11.4.1b2", 3)`` → ``(11, 4, 1)``.

    Raises:
        ValueError: A version that does not start with a number.
    """
    numbers = [int(m.group()) if (m := re.match(r"\d+", part)) else None for part in str(version).split(".")[:parts]]
    if not numbers or numbers[0] is None:
        raise ValueError(f"not a version number: {version!r}")
    numbers = [0 if n is None else n for n in numbers]
    return tuple(numbers + [0] * (parts - len(numbers)))

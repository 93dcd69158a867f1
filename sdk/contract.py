"""The contract between an exported rdedge graph and the runtimes that run it, defined once.

``export`` writes graphs and engines to these names; the SDK's backends read them by these names; the ``rdedge``
command offers the precisions of :data:`PRECISIONS`. Nothing here imports a runtime.

* tensor names: :data:`INPUT_NAME`, :data:`OUTPUT_MAP`, :data:`OUTPUT_SCORE`; metadata key :data:`METADATA_KEY`;
* the precisions a graph (and an engine) can have, with their file names (:data:`PRECISIONS`);
* the scopes of the pre- and post-processing that stay FP32 at every precision (:data:`FP32_SCOPES`);
* version strings as numbers (:func:`version_tuple`), for TensorRT's version rules and engine compatibility.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

METADATA_KEY = "rdedge"
"""Key of the JSON metadata entry in an ONNX model's ``metadata_props``."""
INPUT_NAME = "image"
"""Graph input: uint8 RGB images, NHWC, shape (N, size, size, 3)."""
OUTPUT_MAP = "anomaly_map"
"""Graph output: float32 anomaly maps, shape (N, size, size)."""
OUTPUT_SCORE = "score"
"""Graph output: float32 image scores, shape (N,)."""

FP32_SCOPES = ("normalize", "head")
"""Top-level modules of the graph (input normalisation; anomaly map, blur and score) that are FP32 at every
precision: their ONNX nodes are named ``<scope>/<name>`` (``export.onnx.label_scopes``), never quantized, and pinned
to FP32 in weakly typed TensorRT builds."""
FP32_SCOPE_PREFIXES = tuple(f"{scope}/" for scope in FP32_SCOPES)
"""Node- and layer-name prefixes of :data:`FP32_SCOPES`."""

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

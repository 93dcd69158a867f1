"""Arguments that several sub-commands share, defined once."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sdk.contract import IMAGE_SCORES, PRECISION_NAMES, PRECISIONS, ImageSize, check_feature_pool, check_map_strides
from sdk.errors import RdedgeError


def add_model_argument(parser: argparse.ArgumentParser, formats: str = ".onnx (or .engine)") -> None:
    """The positional ``model``: a model file or a run folder (resolved by :func:`sdk.backends.resolve_model`)."""
    parser.add_argument("model", help=f"exported {formats} file, or a run folder holding model.onnx")


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    """``--backend``: the runtime (``Detector(..., backend=...)``); default: the model file's suffix."""
    from sdk.backends import AUTO, RUNTIMES

    parser.add_argument("--backend", choices=[*RUNTIMES, AUTO], default=None,
                        help="runtime (default: by the file suffix: .onnx onnxruntime, .xml openvino, .engine "
                             "tensorrt; auto: openvino for .onnx on x86 where installed)")


def image_size_argument(text: str) -> ImageSize | str:
    """``--image-size``: ``auto`` / ``auto:N``, ``256`` or ``HEIGHTxWIDTH``, each side a multiple of 32, at least 64."""
    from train.config import auto_short_side

    try:
        if auto_short_side(text) is not None:
            return text.strip().lower()
        return ImageSize.parse(text).check_trainable()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def top_fraction_argument(text: str) -> float:
    """``--top-fraction``: a share of the map's pixels, in (0, 1]."""
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def map_strides_argument(text: str) -> tuple[int, ...]:
    """``--map-strides``: comma-separated feature strides among 4, 8, 16 (``8,16``)."""
    try:
        return check_map_strides([int(v) for v in text.split(",") if v.strip()])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def map_sigma_argument(text: str) -> float:
    """``--map-sigma``: a positive Gaussian σ in pixels."""
    value = float(text)
    if not value > 0.0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def map_pool_argument(text: str) -> int:
    """``--map-pool``: an odd neighbourhood side of at least 1."""
    try:
        return check_feature_pool(int(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"must be an odd whole number of at least 1, got {text}") from exc


def add_head_arguments(parser: argparse.ArgumentParser, image_score: str | None, top_fraction: float | None,
                       map_strides: tuple[int, ...] | None, map_sigma: float | None, map_pool: int | None) -> None:
    """``--image-score``, ``--top-fraction``, ``--map-strides``, ``--map-sigma`` and ``--map-pool``: how the graph
    makes its map and image score.

    Args:
        parser: The sub-command's parser.
        image_score: Default (None: keep what the run was trained with).
        top_fraction: Default (None: keep the run's).
        map_strides: Default (None: keep the run's).
        map_sigma: Default (None: keep the run's).
        map_pool: Default (None: keep the run's).
    """
    keep = "the run's"
    parser.add_argument("--image-score", choices=IMAGE_SCORES, default=image_score,
                        help="image score from the anomaly map: max (the papers') or top_mean (mean of the "
                             f"--top-fraction highest pixels) (default: {image_score or keep})")
    parser.add_argument("--top-fraction", type=top_fraction_argument, default=top_fraction,
                        help=f"share of the map's pixels that top_mean averages (default: {top_fraction or keep})")
    strides = ",".join(map(str, map_strides)) if map_strides else keep
    parser.add_argument("--map-strides", type=map_strides_argument, default=map_strides,
                        help="teacher feature strides whose distance maps form the anomaly map, comma-separated "
                             f"among 4,8,16 (the papers: 4,8,16) (default: {strides})")
    parser.add_argument("--map-sigma", type=map_sigma_argument, default=map_sigma,
                        help="Gaussian σ of the anomaly map's blur in input pixels (the papers: 4); 8 ranked "
                             "KolektorSDD's cracks better and cost AUPRO on compact defects "
                             f"(benchmarks/results/blur.md) (default: {map_sigma if map_sigma else keep})")
    parser.add_argument("--map-pool", type=map_pool_argument, default=map_pool,
                        help="average teacher and student features over N x N neighbourhoods (N odd) before their "
                             "cosine distance: 1 (the papers') compares single positions, 3 compares 3x3 "
                             f"neighbourhoods as PatchCore does; 3 helps thin cracks and costs compact defects, see "
                             f"benchmarks/results/pool.md (default: {map_pool if map_pool else keep})")


def add_test_folder_arguments(parser: argparse.ArgumentParser) -> None:
    """``--test-good``, ``--test-defect`` and ``--masks``: the test set of a plain-folder ``--data``."""
    parser.add_argument("--test-good", default=None,
                        help="with a plain folder as --data: folder of good test images (searched recursively)")
    parser.add_argument("--test-defect", default=None,
                        help="with a plain folder as --data: folder of defective test images (searched recursively; "
                             "a subfolder's name is the defect type)")
    parser.add_argument("--masks", default=None,
                        help="with --test-defect: folder of their masks, matched by file stem (part7.png or "
                             "part7_mask.png for part7.png)")


def test_folders(args: argparse.Namespace) -> dict[str, str | None]:
    """The ``test_good``, ``test_defect`` and ``masks`` options as keyword arguments."""
    return {"test_good": args.test_good, "test_defect": args.test_defect, "masks": args.masks}


def add_threshold_arguments(parser: argparse.ArgumentParser) -> None:
    """``--threshold`` (image verdicts) and ``--pixel-threshold`` (masks and overlays)."""
    parser.add_argument("--threshold", type=float, default=None,
                        help="image threshold on the raw score, for verdicts (default: the model's calibrated one)")
    parser.add_argument("--pixel-threshold", type=float, default=None,
                        help="pixel threshold on anomaly-map values, for masks and overlays (default: calibrated)")


def add_precision_argument(parser: argparse.ArgumentParser, *, default: str | None, help_text: str) -> None:
    """``--precision`` with the choices of :data:`sdk.contract.PRECISIONS`."""
    described = "; ".join(f"{p.name}: {p.summary}" for p in PRECISIONS.values())
    parser.add_argument("--precision", choices=PRECISION_NAMES, default=default, help=f"{help_text} ({described})")


def parse_options(items: Sequence[str]) -> dict[str, object]:
    """``["a=1", "b=true", "c=x"]`` → ``{"a": 1, "b": True, "c": "x"}`` (:func:`train.config.parse_key_values`).

    Raises:
        RdedgeError: An item that is not ``KEY=VALUE``.
    """
    from train.config import parse_key_values

    try:
        return parse_key_values(items, "method option")
    except ValueError as exc:
        raise RdedgeError(str(exc)) from exc

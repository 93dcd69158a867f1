"""Arguments that several sub-commands share, defined once."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sdk.contract import PRECISION_NAMES, PRECISIONS
from sdk.errors import RdedgeError


def add_model_argument(parser: argparse.ArgumentParser, formats: str = ".onnx (or .engine)") -> None:
    """The positional ``model``: a model file or a run folder (resolved by :func:`sdk.backends.resolve_model`)."""
    parser.add_argument("model", help=f"exported {formats} file, or a run folder holding model.onnx")


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
    """``["a=1", "b=true", "c=x"]`` → ``{"a": 1, "b": True, "c": "x"}``.

    Raises:
        RdedgeError: An item that is not ``KEY=VALUE``.
    """
    options: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise RdedgeError(f"method option {item!r} is not KEY=VALUE")
        value: object = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(raw)
                    break
                except ValueError:
                    pass
        options[key] = value
    return options

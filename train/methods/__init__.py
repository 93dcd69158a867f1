"""Registry of training methods: ``--method NAME`` → a :class:`Method`."""

from __future__ import annotations

from typing import Any

from .base import Method, MethodOptionError
from .drd import DRD
from .rd4ad import RD4AD
from .rdpp import RDPlusPlus
from .reason import REASON

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (RD4AD, RDPlusPlus, DRD, REASON)}


def get_method(name: str, **options: Any) -> Method:
    """Instantiate a method by name with its options, with a clear error listing the known ones."""
    try:
        method_class = METHODS[name]
    except KeyError:
        raise MethodOptionError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}") from None
    return method_class.create(**options)


__all__ = ["METHODS", "Method", "MethodOptionError", "get_method"]

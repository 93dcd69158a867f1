"""Registry of training methods: ``--method NAME`` → a :class:`Method`."""

from __future__ import annotations

from .base import Method
from .rd4ad import RD4AD

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (RD4AD,)}


def get_method(name: str) -> Method:
    """Instantiate a method by name, with a clear error listing the known ones."""
    try:
        return METHODS[name]()
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(METHODS))}") from None


__all__ = ["METHODS", "Method", "get_method"]

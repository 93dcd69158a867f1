"""Typed errors raised by the rdedge SDK.

Every error a user can cause (a bad image, a wrong file, a stale model) is an :class:`RdedgeError`, so line code
can catch one base class; each also derives from the matching built-in (``ValueError``, ``OSError``) so generic
handlers keep working.
"""

from __future__ import annotations


class RdedgeError(Exception):
    """Base class of every error raised on purpose by rdedge."""


class InvalidInputError(RdedgeError, ValueError):
    """An image or array that the detector cannot take (wrong dimensions, dtype, empty, ...)."""


class ImageReadError(RdedgeError, OSError):
    """A file that does not exist or cannot be decoded as an image."""


class ModelLoadError(RdedgeError):
    """A model file that is missing, corrupt, of an unknown format or lacks rdedge metadata."""


class DatasetError(RdedgeError, ValueError):
    """A dataset specification or folder that cannot be read."""


class SourceError(RdedgeError, OSError):
    """A video source (camera, file, stream, pipeline) that cannot be opened."""


class SourceOpenTimeout(SourceError, TimeoutError):
    """A video source whose opening did not finish in time (see :func:`sdk.sources.open_within`)."""


class InferenceError(RdedgeError, RuntimeError):
    """The runtime returned something unusable (non-finite scores or maps): the model or engine is broken."""


class DetectorClosedError(RdedgeError, RuntimeError):
    """The detector (or its backend) was closed and has released its runtime; open a new one."""


class ModelNotReadyError(ModelLoadError):
    """An inference server that answers but does not have the model ready (not loaded, failed to load)."""


class ServerUnavailableError(RdedgeError, ConnectionError):
    """An inference server that cannot be reached or does not answer in time; a later call tries again."""

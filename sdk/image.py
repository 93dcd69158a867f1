"""Host-side image handling: reading, checking and resizing to the model input.

This is the only pre-processing that happens outside the exported graph, and training uses the very same functions
(through ``sdk.datasets.load_prepared``), so a model sees identically prepared pixels in training and in deployment.
Inside the graph the uint8 RGB pixels are scaled and normalised.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .contract import ImageSize
from .errors import ImageReadError, InvalidInputError

SizeLike = ImageSize | int | str | tuple[int, int]
"""A model input size: an :class:`~sdk.contract.ImageSize`, a square side, ``"HxW"`` or (height, width)."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as OpenCV does: BGR (or grey, or BGRA) uint8/uint16, unchanged.

    Raises:
        ImageReadError: The file is missing, empty or cannot be decoded.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"image file not found: {p}")
    data = np.fromfile(p, dtype=np.uint8)  # works with non-ASCII paths, unlike cv2.imread
    if data.size == 0:
        raise ImageReadError(f"image file is empty: {p}")
    if is_truncated(data):
        raise ImageReadError(f"image file is truncated (its end marker is missing; copied or written half-way?): {p}")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # e.g. more pixels than OpenCV's limit (CV_IO_MAX_IMAGE_PIXELS, 2**30)
        raise ImageReadError(f"cannot decode image file {p}: {str(exc).strip().splitlines()[-1]}") from exc
    if image is None or image.size == 0:
        raise ImageReadError(f"cannot decode image file (corrupt, unsupported or too large an image): {p}")
    return image


def is_truncated(data: np.ndarray) -> bool:
    """Whether PNG or JPEG bytes lack their end marker.

    Some OpenCV builds (4.x) decode a truncated JPEG with a warning and grey-fill the missing part; scoring that
    would report a defect that is not on the part. Checking the end marker makes the error the same on every
    build and says why. PNG must end with its ``IEND`` chunk, JPEG with the ``FFD9`` marker (a little trailing
    padding is tolerated).
    """
    head, tail = data[:8].tobytes(), data[-64:].tobytes()
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return b"IEND" not in tail
    if head.startswith(b"\xff\xd8"):
        return b"\xff\xd9" not in tail
    return False


def to_rgb_uint8(image: np.ndarray, *, rgb: bool = False) -> np.ndarray:
    """Check an image array and convert it to HxWx3 uint8 RGB.

    Accepted: HxW (grey), HxWx1, HxWx3 (BGR by default, RGB with ``rgb=True``) and HxWx4 (alpha dropped), of
    dtype uint8; uint16 (scaled to 8 bits, divided by 257 and rounded); or float16/32/64 with every value in
    [0, 1] (multiplied by 255 and rounded). Non-contiguous and read-only arrays are accepted (never modified).

    Args:
        image: The array.
        rgb: Whether 3/4-channel input is RGB(A) rather than OpenCV's BGR(A).

    Raises:
        InvalidInputError: Not a numpy array, empty, wrong number of dimensions or channels, or unsupported dtype.
    """
    if not isinstance(image, np.ndarray):
        raise InvalidInputError(f"expected a numpy array or an image path, got {type(image).__name__}")
    if image.size == 0:
        raise InvalidInputError(f"image is empty (shape {image.shape})")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3):
        raise InvalidInputError(f"expected an HxW or HxWxC image, got an array of shape {image.shape}")
    if image.ndim == 3 and image.shape[2] not in (3, 4):
        raise InvalidInputError(f"expected 1, 3 or 4 channels, got {image.shape[2]} (shape {image.shape})")
    if image.dtype == np.uint16:
        image = (image.astype(np.uint32) * 255 + 32767) // 65535
        image = image.astype(np.uint8)
    elif image.dtype.kind == "f":
        image = float_to_uint8(image)
    elif image.dtype != np.uint8:
        raise InvalidInputError(f"expected a uint8, uint16 or float image in [0, 1], got dtype {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        code = cv2.COLOR_RGBA2RGB if rgb else cv2.COLOR_BGRA2RGB
        return cv2.cvtColor(np.ascontiguousarray(image), code)
    if rgb:
        return np.ascontiguousarray(image)
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2RGB)


def float_to_uint8(image: np.ndarray) -> np.ndarray:
    """Convert a float image with values in [0, 1] to uint8 (x 255, rounded).

    Raises:
        InvalidInputError: NaN or infinite values, or values outside [0, 1] (a 0-255 float image is ambiguous:
            convert it with ``image.astype(np.uint8)`` yourself).
    """
    finite = np.isfinite(image)
    if not finite.all():
        raise InvalidInputError(f"float image has {int(image.size - finite.sum())} NaN or infinite values")
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        raise InvalidInputError(f"float images must have values in [0, 1], got [{low:.4g}, {high:.4g}]")
    return np.rint(image.astype(np.float32) * 255.0).astype(np.uint8)


def resize_image(image: np.ndarray, size: SizeLike, interpolation: int | None = None) -> np.ndarray:
    """Resize to ``size`` (height x width; no padding, no crop): area averaging where both sides shrink
    (anti-aliased), bilinear otherwise."""
    height, width = ImageSize.parse(size)
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    if interpolation is None:
        interpolation = cv2.INTER_AREA if h >= height and w >= width else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def prepare_image(image: np.ndarray | str | os.PathLike[str], size: SizeLike, *, rgb: bool = False) -> np.ndarray:
    """Turn a path or an array into the model input: height x width x 3 uint8 RGB, C-contiguous.

    Args:
        image: Image array (see :func:`to_rgb_uint8`) or a path to an image file.
        size: Model input size (``Detector.image_size``).
        rgb: Whether a 3/4-channel array is RGB rather than BGR (ignored for paths: files are decoded as BGR).
    """
    if isinstance(image, (str, os.PathLike)):
        image, rgb = read_image(image), False
    return np.ascontiguousarray(resize_image(to_rgb_uint8(image, rgb=rgb), size))


def resize_mask(mask: np.ndarray, size: SizeLike) -> np.ndarray:
    """Resize a ground-truth mask to ``size`` and binarise it at half intensity (as RD4AD's evaluation)."""
    if mask.ndim == 3:
        mask = mask[:, :, 0]
    m = mask.astype(np.float32) / float(np.iinfo(mask.dtype).max if mask.dtype.kind == "u" else 1.0)
    return resize_image(m, size) > 0.5


def list_images(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """List the image files of a folder, sorted by name (``recursive``: by path below the folder)."""
    paths = Path(folder).rglob("*") if recursive else Path(folder).iterdir()
    return sorted(p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())

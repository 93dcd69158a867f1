"""Heat-map overlays of anomaly maps on the input image (OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np

from .image import to_rgb_uint8
from .result import Result


def blend_heat(base: np.ndarray, amap: np.ndarray, pixel_threshold: float, alpha: float = 0.45) -> np.ndarray:
    """``amap`` (the size of ``base``, a BGR uint8 image) as a JET heat map blended over ``base``, its colour scale
    centred on ``pixel_threshold`` (the map's minimum blue, the threshold green-yellow, as far above it red)."""
    low = min(float(amap.min()), pixel_threshold)
    high = 2.0 * pixel_threshold - low
    scaled = np.clip((amap - low) / max(high - low, 1e-12), 0.0, 1.0)
    heat = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(heat, alpha, base, 1.0 - alpha, 0.0)


def overlay(image: np.ndarray, result: Result, *, rgb: bool = False, alpha: float = 0.45) -> np.ndarray:
    """Draw the anomaly map as a JET heat map over the image, outline the mask, and write score and verdict.

    The colour scale is centred on the pixel threshold: the map's minimum is blue, the pixel threshold is
    green-yellow and anything as far above it as the minimum is below it is red. The outlined mask is the pixels
    above the pixel threshold; the verdict text follows the image threshold.

    Args:
        image: The image given to the detector (array, any size).
        result: The detector's result for it.
        rgb: Whether ``image`` is RGB (else BGR).
        alpha: Opacity of the heat map.

    Returns:
        BGR uint8 image at the input size, ready for ``cv2.imwrite``.
    """
    base = cv2.cvtColor(to_rgb_uint8(image, rgb=rgb), cv2.COLOR_RGB2BGR)
    h, w = base.shape[:2]
    out = blend_heat(base, result.anomaly_map_at_input_size(), result.pixel_threshold, alpha)
    contours, _ = cv2.findContours(result.mask_at_input_size().astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (0, 0, 255), max(1, round(min(h, w) / 200)))
    verdict = "ANOMALY" if result.is_anomaly else "OK"
    text = f"{verdict} score {result.score:.3f} ({result.normalized_score:.2f})"
    scale = max(0.4, min(h, w) / 600)
    color = (0, 0, 255) if result.is_anomaly else (0, 200, 0)
    cv2.putText(out, text, (8, int(24 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (8, int(24 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
    return out

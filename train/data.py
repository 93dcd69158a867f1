"""Training data: dataset samples prepared exactly as the SDK prepares images, held in memory as uint8."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from sdk.datasets import Sample
from sdk.image import prepare_image


def load_prepared(samples: Sequence[Sample], size: int, *, desc: str = "loading", progress: bool = True) -> np.ndarray:
    """Read and prepare images → (N, size, size, 3) uint8 RGB, with the SDK's own host-side pre-processing."""
    out = np.empty((len(samples), size, size, 3), dtype=np.uint8)
    for i, sample in enumerate(tqdm(samples, desc=desc, disable=not progress, leave=False)):
        out[i] = prepare_image(sample.load_image(), size)
    return out

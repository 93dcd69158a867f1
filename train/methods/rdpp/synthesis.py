"""RD++ pseudo-anomalies: a small box of fractal OpenSimplex noise added to the image (training only).

Per image (official ``MVTecDataset_train``): box side h, w ∈ [10, 31] px, top-left corner y0 ∈ [1, S − h),
x0 ∈ [1, S − w); ``image[box] += 0.2 · noise[:, :h, :w]`` on the [0, 1] image, no clipping. The noise is 3-D
fractal OpenSimplex noise over (channel, y, x): Σ_{o=0..5} 0.6^o · n3(c/f_o, y/f_o, x/f_o), f_o = 32 / 2^o.

As in the official code the noise field is seeded once and always evaluated from coordinate 0, so for a given box
size the pattern is the same for every image; only size and position vary. The field is therefore computed once
(31 × 31 × 3 values) and cropped. For model sizes other than 256 the box sides scale with the size.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

MIN_SIDE, MAX_SIDE = 10, 32  # at 256 px; MAX_SIDE exclusive
STRENGTH = 0.2


def fractal_simplex_field(shape: tuple[int, int, int], seed: int, octaves: int = 6, persistence: float = 0.6,
                          frequency: float = 32.0) -> np.ndarray:
    """Fractal 3-D OpenSimplex noise of ``shape`` (channels, height, width), float32."""
    from opensimplex import OpenSimplex

    generator = OpenSimplex(seed)
    c, h, w = (np.arange(n, dtype=np.float64) for n in shape)
    field = np.zeros(shape, dtype=np.float64)
    for octave in range(octaves):
        f = frequency / 2**octave
        # noise3array(x, y, z) returns an array indexed [z, y, x]
        field += persistence**octave * generator.noise3array(w / f, h / f, c / f)
    return field.astype(np.float32)


class SimplexNoiseAnomaly:
    """Adds one OpenSimplex noise box to each image of a batch.

    Args:
        image_size: The model input's shorter side (box sizes scale from the papers' 256 px).
        seed: Seed of the noise field.
        device: Where the field lives (the model's device).
    """

    def __init__(self, image_size: int, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.scale = image_size / 256.0
        self.min_side = max(2, round(MIN_SIDE * self.scale))
        self.max_side = max(self.min_side + 1, round(MAX_SIDE * self.scale))
        self.field = torch.from_numpy(fractal_simplex_field((3, self.max_side, self.max_side), seed)).to(device)

    def __call__(self, images: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """Return the noisy images and the boolean box masks.

        Args:
            images: (N, 3, H, W) float images in [0, 1].
            rng: Random draws of box sizes and positions.

        Returns:
            ``(noisy, masks)``: (N, 3, H, W) and (N, H, W) bool (True inside each image's box).
        """
        n, _, height, width = images.shape
        noisy = images.clone()
        masks = torch.zeros((n, height, width), dtype=torch.bool, device=images.device)
        for i in range(n):
            h, w = (int(v) for v in rng.integers(self.min_side, self.max_side, size=2))
            y0 = int(rng.integers(1, height - h))
            x0 = int(rng.integers(1, width - w))
            noisy[i, :, y0 : y0 + h, x0 : x0 + w] += STRENGTH * self.field[:, :h, :w]
            masks[i, y0 : y0 + h, x0 : x0 + w] = True
        return noisy, masks

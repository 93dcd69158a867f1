"""REASON's latent anomaly synthesis: a Gaussian-noise patch on the teacher's stem features (training only).

Per call (official ``inject_local_noise``): half of the batch (the first B//2 of a random permutation) gets, at one
shared location, i.i.d. N(0, 0.015²) noise on all stem channels inside a patch whose sides are drawn from
[1, max(int(side · r), 2)) with r ~ U(0.01, 0.5). The official code re-seeds a generator from a counter on every
call ("counter-seeded"), so its sequence is the same in every run; here one generator seeded from the training seed
draws everything.
"""

from __future__ import annotations

import torch
from torch import Tensor

NOISE_STD = 0.015


def inject_latent_noise(stem: Tensor, generator: torch.Generator, device_generator: torch.Generator | None = None,
                        std: float = NOISE_STD) -> tuple[Tensor, Tensor]:
    """Return stem features with a noise patch on half of the batch, and the (B,) bool mask of perturbed samples.

    Args:
        stem: (B, C, H, W) stem features.
        generator: CPU generator of the patch's size and position (host-side numbers).
        device_generator: Generator of the tensors made on ``stem``'s device (selection, noise); ``generator`` when
            None (CPU).
        std: Noise standard deviation.
    """
    device_generator = generator if device_generator is None else device_generator
    b, c, h, w = stem.shape
    selected = torch.zeros(b, dtype=torch.bool, device=stem.device)
    selected[torch.randperm(b, generator=device_generator, device=stem.device)[: b // 2]] = True
    ratio = 0.01 + 0.49 * float(torch.rand((), generator=generator))
    ph = int(torch.randint(1, max(int(h * ratio), 2), (), generator=generator))
    pw = int(torch.randint(1, max(int(w * ratio), 2), (), generator=generator))
    y0 = int(torch.randint(0, h - ph + 1, (), generator=generator))
    x0 = int(torch.randint(0, w - pw + 1, (), generator=generator))
    noise = torch.zeros_like(stem)
    noise[selected, :, y0 : y0 + ph, x0 : x0 + pw] = std * torch.randn(
        (b // 2, c, ph, pw), generator=device_generator, device=stem.device, dtype=stem.dtype
    )
    return stem + noise, selected

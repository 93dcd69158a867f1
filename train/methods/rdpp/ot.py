"""Per-pair optimal transport for RD++'s self-supervised OT term (SSOT).

The official code passes (B, C·H·W) tensors to ``geomloss.SamplesLoss``, which treats the whole batch as one point
cloud and compares it with a permutation of itself: the debiased Sinkhorn divergence of a measure with itself is
identically zero, so the term never trains anything. The paper's figure pairs each sample with a shuffled other
sample; this module implements that reading:

* for each sample b and its partner π(b), each sample's projected feature map is a cloud of points, one per spatial
  position (average-pooled to at most ``max_side`` × ``max_side`` positions to bound the cost), each point its
  channel vector scaled to unit length, with uniform weights;
* the loss is the debiased entropic Sinkhorn divergence S_ε(α, β) = OT_ε(α, β) − ½OT_ε(α, α) − ½OT_ε(β, β) with
  cost ½‖x − y‖², computed with log-domain Sinkhorn iterations, averaged over the batch.

It pulls the projected features of different normal images toward the same distribution (compactness), which is
the term's stated purpose. ε, pooling and iteration count are design choices of this re-implementation, not
values validated by the RD++ authors.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def entropic_ot(x: Tensor, y: Tensor, epsilon: float, iterations: int) -> Tensor:
    """Entropic OT cost between uniform point clouds, batched: x (B, N, D), y (B, M, D) → (B,)."""
    cost = 0.5 * torch.cdist(x, y) ** 2  # (B, N, M)
    n, m = x.shape[1], y.shape[1]
    log_a = torch.full((x.shape[0], n), -math.log(n), dtype=x.dtype, device=x.device)
    log_b = torch.full((x.shape[0], m), -math.log(m), dtype=x.dtype, device=x.device)
    f = torch.zeros_like(log_a)
    g = torch.zeros_like(log_b)

    def update(f: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
        f = -epsilon * torch.logsumexp(log_b[:, None, :] + (g[:, None, :] - cost) / epsilon, dim=2)
        g = -epsilon * torch.logsumexp(log_a[:, :, None] + (f[:, :, None] - cost) / epsilon, dim=1)
        return f, g

    # Iterate to (near) convergence without autograd, then one differentiable update: at the optimum the gradient
    # of the dual value with respect to the points only flows through the cost (envelope theorem), as in geomloss.
    with torch.no_grad():
        for _ in range(iterations - 1):
            f, g = update(f, g)
    f, g = update(f.detach(), g.detach())
    # at convergence the dual objective equals the entropic OT value
    return (log_a.exp() * f).sum(1) + (log_b.exp() * g).sum(1)


def sinkhorn_divergence(x: Tensor, y: Tensor, epsilon: float = 0.05, iterations: int = 30) -> Tensor:
    """Debiased Sinkhorn divergence between point clouds, batched → (B,); zero when x and y coincide."""
    return (
        entropic_ot(x, y, epsilon, iterations)
        - 0.5 * entropic_ot(x, x, epsilon, iterations)
        - 0.5 * entropic_ot(y, y, epsilon, iterations)
    )


def feature_cloud(features: Tensor, max_side: int = 8) -> Tensor:
    """(B, C, H, W) → (B, P, C): positions as points, pooled to at most ``max_side``², unit-length channels."""
    if features.shape[-1] > max_side or features.shape[-2] > max_side:
        features = F.adaptive_avg_pool2d(features, max_side)
    return F.normalize(features.flatten(2).transpose(1, 2), dim=2)


def pairwise_ot_loss(features: Tensor, permutation: Tensor, max_side: int = 8) -> Tensor:
    """Mean Sinkhorn divergence between each sample's feature cloud and its permuted partner's."""
    cloud = feature_cloud(features, max_side)
    return sinkhorn_divergence(cloud, cloud[permutation]).mean()

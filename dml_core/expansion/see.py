"""Spherical Embedding Expansion (SEE): synthetic points on a sphere cap around a class centre.

Le & Woo, "Spherical Embedding Expansion for Deep Metric Learning", PAKDD 2024 (reference
code: Leminhbinh0209/PAKDD24-SEE). A sample z with cosine c = z.w to its class centre w is
replaced by n + 1 points that keep c, stay on the unit sphere and sit on a regular simplex
(Max-Mahalanobis centres, Pang et al., ICML 2018) around M = c * w; row 0 of the simplex is z
itself, rows 1..n are the synthetic points. Which samples expand follows a per-epoch threshold
(`see_threshold`, `select_for_expansion`).

The paper's centre is the class proxy of a proxy-based loss (Proxy-Anchor). `class_centroids`
provides the centre for pair-based losses instead -- the normalised mean of the class's
samples in the batch. That variant is an extension of this project; neither the SEE nor the EE
paper has it.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


@lru_cache(maxsize=64)
def _mmd_centers(num_points: int, dim: int) -> tuple[tuple[float, ...], ...]:
    mu = [[0.0] * dim for _ in range(num_points)]
    mu[0][0] = 1.0
    target = -1.0 / (num_points - 1) if num_points > 1 else 0.0
    for i in range(1, num_points):
        mu[i][0] = target
        for j in range(1, i):
            dot = sum(mu[i][t] * mu[j][t] for t in range(j))
            mu[i][j] = (target - dot) / mu[j][j]
        # The simplex spans L - 1 dimensions: the last centre's own coordinate is 0 (the
        # formula would give sqrt(rounding error) ~ 1e-8 there).
        if i < min(dim, num_points - 1):
            mu[i][i] = math.sqrt(max(0.0, 1.0 - sum(v * v for v in mu[i][:i])))
    return tuple(tuple(row) for row in mu)


def mmd_centers(num_points: int, dim: int) -> Tensor:
    """Max-Mahalanobis centres: ``num_points`` unit vectors in R^dim, pairwise inner product -1/(L-1).

    Recurrence of Pang et al. (ICML 2018): mu_1 = e_1; mu_i[1] = -1/(L-1); mu_i[j] =
    (-1/(L-1) - <mu_i, mu_j>) / mu_j[j] for 2 <= j < i; mu_i[i] = sqrt(1 - ||mu_i||^2).
    The simplex spans L - 1 dimensions, so ``dim >= num_points - 1``; extra columns are zero.
    Returned in float64.
    """
    if num_points < 1:
        raise ValueError(f"mmd_centers: need at least one point, got {num_points}")
    if dim < num_points - 1:
        raise ValueError(f"mmd_centers: {num_points} simplex points need dim >= {num_points - 1}, got {dim}")
    return torch.tensor(_mmd_centers(num_points, dim), dtype=torch.float64)


def spherical_expansion(
    z: Tensor, w: Tensor, n: int, generator: Optional[torch.Generator] = None
) -> Tensor:
    """n synthetic points per row of ``z`` around its centre ``w``: shape (N, n, d).

    z, w: (N, d), unit rows (z the sample, w its class centre). With c = z.w, M = c w,
    r = z - M and u1 = r / ||r||, point k is ``p_k = M + ||r|| * sum_j W[k, j] b_j`` where W is
    the (n+1)-point simplex (`mmd_centers`) and b = (u1, g_1, ..., g_n) an orthonormal basis
    orthogonal to w: the g_j are random directions Gram-Schmidt-orthogonalised against
    {w, u1, earlier g} (by a QR factorisation). Row 0 of W reproduces z and is dropped. The simplex's last coordinate is
    zero, so g_n does not move the points; it is drawn to keep the reference's d >= n + 2.

    Invariants: ||p_k|| = 1, p_k.w = c, <p_a, p_b> = c^2 - (1 - c^2)/n, mean(z, p_1..p_n) = M.
    Gradients reach z and w through M, r and ||r||; the random directions are constants.
    """
    if z.shape != w.shape or z.dim() != 2:
        raise ValueError(f"spherical_expansion: z and w must both be (N, d), got {tuple(z.shape)} and {tuple(w.shape)}")
    num, d = z.shape
    if n == 0:
        return z.new_zeros((num, 0, d))
    if d < n + 2:
        raise ValueError(
            f"spherical_expansion: n={n} directions orthogonal to w and u1 need embedding dimension "
            f">= n + 2 = {n + 2}, got {d}"
        )
    c = (z * w).sum(-1, keepdim=True)
    centre = c * w
    r = z - centre
    r_norm = torch.linalg.vector_norm(r, dim=-1, keepdim=True)
    with torch.no_grad():
        noise = torch.randn((num, d, n), generator=generator, device=z.device, dtype=z.dtype)
        # QR = Gram-Schmidt of the columns [w, r, noise]; the signs QR picks don't matter for
        # random directions, and u1 itself is taken from r below.
        q, _ = torch.linalg.qr(torch.cat([w.detach().unsqueeze(-1), r.detach().unsqueeze(-1), noise], dim=-1))
        directions = q[..., 2:]  # (N, d, n), orthonormal, orthogonal to w and r
    simplex = mmd_centers(n + 1, n + 1)[1:].to(z)  # (n, n+1)
    # ||r|| * W[k,0] * u1 = W[k,0] * r: no division by ||r||, so z = w stays differentiable.
    along_r = simplex[:, 0].view(1, n, 1) * r.unsqueeze(1)
    across = torch.einsum("kj,ndj->nkd", simplex[:, 1:], directions) * r_norm.unsqueeze(1)
    return centre.unsqueeze(1) + along_r + across


ThresholdType = Literal[0, 1]


def see_threshold(
    epoch: int,
    total_epochs: int,
    threshold_type: ThresholdType = 1,
    threshold_max: float = 0.4,
    threshold_min: float = 0.04,
    lower_bound: float = 0.0,
) -> float:
    """The expansion threshold t at (0-based) ``epoch`` of ``total_epochs`` (cosine schedules).

    type 0 (decreasing, a cosine threshold): t = max(lower_bound, min + (max-min)(1+cos(pi e/E))/2).
    type 1 (increasing, a fraction of the batch; reference default):
    t = max - (max-min)(1+cos(pi min(e,200)/min(E,200)))/2.
    """
    e, big_e = epoch, max(total_epochs, 1)
    if threshold_type == 0:
        t = threshold_min + (threshold_max - threshold_min) * (1 + math.cos(math.pi * e / big_e)) / 2
        return max(lower_bound, t)
    if threshold_type == 1:
        phase = min(e, 200) / min(big_e, 200)
        return threshold_max - (threshold_max - threshold_min) * (1 + math.cos(math.pi * phase)) / 2
    raise ValueError(f"expansion.threshold_type: must be 0 or 1, got {threshold_type!r}")


def select_for_expansion(cosine: Tensor, threshold: float, threshold_type: ThresholdType = 1) -> Tensor:
    """Boolean mask of the samples to expand, given cos(z, w_y) per sample.

    type 0: every sample with cosine >= t; type 1: the round(t * B) samples of largest cosine.
    """
    if threshold_type == 0:
        return cosine >= threshold
    count = min(int(round(threshold * cosine.shape[0])), cosine.shape[0])
    mask = torch.zeros_like(cosine, dtype=torch.bool)
    if count > 0:
        mask[cosine.topk(count).indices] = True
    return mask


def class_centroids(z: Tensor, labels: Tensor) -> Tensor:
    """Per row, the normalised mean of the batch rows sharing its label: (B, d)."""
    _, inverse = torch.unique(labels, return_inverse=True)
    sums = z.new_zeros((int(inverse.max()) + 1, z.shape[1])).index_add(0, inverse, z)
    return F.normalize(sums, dim=-1)[inverse]


def expand_around_centers(
    z: Tensor,
    centers: Tensor,
    labels: Tensor,
    n: int,
    threshold: float,
    threshold_type: ThresholdType = 1,
    generator: Optional[torch.Generator] = None,
) -> tuple[Tensor, Tensor]:
    """Select rows by the threshold rule and expand each into n points: (N*n, d) and labels.

    z and centers are unit rows (centers[i] = the centre of row i's class). Returns empty
    tensors when nothing is selected.
    """
    with torch.no_grad():
        mask = select_for_expansion((z * centers).sum(-1), threshold, threshold_type)
    points = spherical_expansion(z[mask], centers[mask], n, generator)
    return points.reshape(-1, z.shape[1]), labels[mask].repeat_interleave(n)

"""Embedding Expansion (EE): synthetic points on positive pairs + hard negative pair mining.

Ko & Gu, "Embedding Expansion: Augmentation in Embedding Space for Deep Metric Learning",
CVPR 2020 (reference code: clovaai/embedding-expansion).

Batch layout. P classes x K instances with a class's rows contiguous and K even, so rows
(2m, 2m+1) are a positive pair and row i's partner is ``i ^ 1``.

Generation. For k = 1..n the synthetic point between e_i and its partner is

    s_i^k = (k * e_partner(i) + (n + 1 - k) * e_i) / (n + 1),  then L2-normalised if ``l2_norm``

(interpolation then projection onto the sphere, not slerp). `generate_synthetic` returns the
explicit rows [E; S^1; ...; S^n] with the labels tiled; it is the reference definition.

Mining. Every pair-based loss consumes EE through ONE step, `hard_negative_pair_mining`: it
turns the loss's own B x B matrix (distance or similarity) into an *effective* matrix whose
negative entry (i, j) is the hardest pair between the augmented sets

    A_i = {e_i, s_i^1, ..., s_i^n}   and   A_j = {e_j, s_j^1, ..., s_j^n}

(hardest = smallest distance / largest similarity), while positive entries stay the original
pairs (synthetic points are never positives). A_i is the anchor's own segment as in the
reference HPHN-triplet (``scope="anchor"``): taking the minimum over j of an other class covers
every other-class point, original or synthetic, and with n = 0 the effective matrix is exactly
the input matrix, i.e. EE with n = 0 is the plain loss. The paper phrases the set as
{x_i, x_j, s^ij_1..n}; with ``scope="anchor"`` the partner x_j enters only through entry
(partner(i), j), with ``scope="pair"`` A_i is that whole set (both endpoints and the interior
points), so entry (i, j) is the hardest pair between the two positive pairs' segments.

Cost. The synthetic points are never materialised for mining: every candidate similarity is
a bilinear form in the 2 x 2 Gram blocks of two pairs, so the search runs on the B x B Gram
matrix without autograd. Its memory grows with (n + 2)^2 B^2 / 4 numbers, which is at most
(n + 1)^2 B^2 (4.7 M floats = 19 MB at B = 128, n = 32), and it holds nothing of size d.
Only the B^2 selected values are then recomputed with autograd, so the backward pass costs
O(B^2), whatever n is. Explicit generation + a full distance matrix would instead cost
(n + 1)^2 B^2 d multiply-adds forward and again backward.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Metric = Literal["distance", "similarity"]
Scope = Literal["anchor", "pair"]

# Squared distances are clipped here before the square root, as in the reference code, so the
# gradient stays finite for coincident points.
MIN_SQUARED_DISTANCE = 1e-12


class BatchLayoutError(ValueError):
    """The batch does not consist of same-class row pairs (2m, 2m+1)."""


def check_pair_layout(labels: Tensor, who: str = "EE") -> None:
    """Raise `BatchLayoutError` unless rows (2m, 2m+1) share a label for every m."""
    n = labels.shape[0]
    if n % 2:
        raise BatchLayoutError(
            f"{who} pairs rows (2m, 2m+1) of one class, so K must be even "
            f"(data.batch.samples_per_class); got a batch of {n} rows"
        )
    bad = (labels[0::2] != labels[1::2]).nonzero()
    if bad.numel():
        m = int(bad[0, 0])
        raise BatchLayoutError(
            f"{who} pairs rows (2m, 2m+1) of one class, so K must be even "
            f"(data.batch.samples_per_class); rows {2 * m} and {2 * m + 1} have labels "
            f"{int(labels[2 * m])} and {int(labels[2 * m + 1])}"
        )


def generate_synthetic(
    embeddings: Tensor, labels: Tensor, n_inner_pts: int, l2_norm: bool = True
) -> tuple[Tensor, Tensor]:
    """Rows [E; S^1; ...; S^n] ((n+1) * B rows) and the labels tiled n + 1 times.

    ``S^k[i] = (k * e_partner(i) + (n + 1 - k) * e_i) / (n + 1)``, L2-normalised if
    ``l2_norm``. Each interior point appears twice (s_i^k = s_partner^(n+1-k)).
    """
    check_pair_layout(labels)
    n = n_inner_pts
    if n == 0:
        return embeddings, labels
    b, d = embeddings.shape
    partner = embeddings.view(b // 2, 2, d).flip(1).reshape(b, d)
    k = torch.arange(1, n + 1, device=embeddings.device, dtype=embeddings.dtype).view(n, 1, 1)
    synthetic = (k * partner + (n + 1 - k) * embeddings) / (n + 1)
    if l2_norm:
        synthetic = F.normalize(synthetic, dim=-1)
    rows = torch.cat([embeddings, synthetic.reshape(n * b, d)])
    return rows, labels.repeat(n + 1)


def _segment_coefficients(n: int, like: Tensor) -> Tensor:
    """(n + 2, 2): point k of pair m's segment is ``c[k, 0] * e_2m + c[k, 1] * e_2m+1``.

    k = 0 is e_2m, k = n + 1 is e_2m+1 and k = 1..n are the interior points s_2m^k, so row
    2m owns k in [0, n] and row 2m+1 owns k in [1, n+1].
    """
    k = torch.arange(n + 2, device=like.device, dtype=like.dtype)
    return torch.stack([(n + 1 - k) / (n + 1), k / (n + 1)], dim=-1)


def _pair_blocks(gram: Tensor) -> tuple[Tensor, Tensor]:
    """Gram blocks between pairs, (P, P, 2, 2), and each pair's own block, (P, 2, 2)."""
    p = gram.shape[0] // 2
    blocks = gram.view(p, 2, p, 2).transpose(1, 2)
    return blocks, blocks.diagonal(dim1=0, dim2=1).permute(2, 0, 1)


def _outer(x: Tensor, y: Tensor) -> Tensor:
    """Batched outer product of the last dimension: (..., a) x (..., b) -> (..., a, b)."""
    return x.unsqueeze(-1) * y.unsqueeze(-2)


def _interior(index: Tensor, n: int) -> Tensor:
    return (index > 0) & (index <= n)


def _best_in_scope(x: Tensor, n: int, scope: Scope) -> list[tuple[Tensor, Tensor]]:
    """`_best_in_own_range`, or with ``scope="pair"`` the max over the whole segment [0, n + 1]
    for both rows of a pair (the own endpoint first on ties, then the interior)."""
    if scope == "anchor":
        return _best_in_own_range(x, n)
    out = []
    for own in (0, n + 1):
        order = torch.tensor([own, *range(1, n + 1), n + 1 - own], device=x.device)
        val, arg = x.index_select(-1, order).max(dim=-1)  # first maximum: the own endpoint wins ties
        out.append((val, order[arg]))
    return out


def _best_in_own_range(x: Tensor, n: int) -> list[tuple[Tensor, Tensor]]:
    """Max and argmax of x over its last dim restricted to [0, n] and to [1, n + 1].

    Both ranges share the interior 1..n, so it is reduced once. Ties go to the endpoint (the
    original embedding), which keeps the loss's own value for original pairs.
    """
    inner_val, inner_arg = x[..., 1 : n + 1].max(dim=-1)
    out = []
    for end in (0, n + 1):
        end_val = x[..., end]
        take_end = end_val >= inner_val
        out.append((torch.where(take_end, end_val, inner_val), torch.where(take_end, end, inner_arg + 1)))
    return out


def _hardest_segment_points(gram: Tensor, n: int, l2_norm: bool, metric: Metric,
                            scope: Scope = "anchor") -> tuple[Tensor, Tensor]:
    """For every (i, j): indices (k*, l*) of the hardest pair between A_i and A_j, each (B, B).

    No autograd. Candidate scores are bilinear forms in the pairs' 2 x 2 Gram blocks, laid out
    as score[q, m, k, l] (column pair q, row pair m) and produced by one batched matmul.
    """
    p = gram.shape[0] // 2
    coef = _segment_coefficients(n, gram)
    blocks, own = _pair_blocks(gram)
    sq = torch.einsum("ka,mab,kb->mk", coef, own, coef)  # squared norms of the points, (P, n+2)
    weights = coef.expand(p, n + 2, 2)
    if l2_norm:
        scale = torch.ones_like(sq)
        scale[:, 1:-1] = sq[:, 1:-1].clamp_min(MIN_SQUARED_DISTANCE).rsqrt()
        weights, sq = weights * scale.unsqueeze(-1), sq * scale.square()
    left = torch.einsum("mka,mqab->qmkb", weights, blocks)  # (P, P, n+2, 2)
    right = weights
    if metric == "distance":  # maximise -||a - b||^2 = <(2a, -|a|^2, -1), (b, 1, |b|^2)>
        ones = torch.ones_like(sq).unsqueeze(-1)
        left = torch.cat([2 * left, -sq.unsqueeze(-1).expand(p, p, n + 2, 1), -ones.expand(p, p, n + 2, 1)], dim=-1)
        right = torch.cat([weights, ones, sq.unsqueeze(-1)], dim=-1)
    score = torch.bmm(left.reshape(p, p * (n + 2), -1), right.transpose(1, 2)).view(p, p, n + 2, n + 2)

    k_star = gram.new_empty((p, p, 2, 2), dtype=torch.long)  # [q, m, a, b]
    l_star = torch.empty_like(k_star)
    for b, (col_val, col_arg) in enumerate(_best_in_scope(score, n, scope)):  # over l: (P, P, n+2)
        for a, (_, k) in enumerate(_best_in_scope(col_val, n, scope)):  # over k: (P, P)
            k_star[..., a, b] = k
            l_star[..., a, b] = col_arg.gather(-1, k.unsqueeze(-1)).squeeze(-1)
    # Row i = 2m + a, column j = 2q + b.
    return k_star.permute(1, 2, 0, 3).reshape(2 * p, 2 * p), l_star.permute(1, 2, 0, 3).reshape(2 * p, 2 * p)


def _selected_values(
    gram: Tensor, k_star: Tensor, l_star: Tensor, n: int, l2_norm: bool, metric: Metric
) -> Tensor:
    """Distance / similarity of the selected pairs, with autograd, using only O(B^2) work.

    Pair blocks are broadcast to rows by expand + reshape rather than advanced indexing, whose
    backward (index_put with accumulation) is slow on CPU.
    """
    b = gram.shape[0]
    p = b // 2
    coef = _segment_coefficients(n, gram)
    c_row, c_col = coef[k_star], coef[l_star]  # constants, (B, B, 2)
    blocks, own = _pair_blocks(gram)
    cross = blocks[:, None, :, None].expand(p, 2, p, 2, 2, 2).reshape(b, b, 2, 2)
    own_rows = own[:, None].expand(p, 2, 2, 2).reshape(b, 2, 2)
    # Bilinear forms c^T G c written as elementwise products: einsum would turn them into
    # B^2 tiny matrix products.
    inner = (_outer(c_row, c_col) * cross).sum((-2, -1))
    sq_row = (_outer(c_row, c_row) * own_rows[:, None]).sum((-2, -1))
    sq_col = (_outer(c_col, c_col) * own_rows[None, :]).sum((-2, -1))
    if l2_norm:
        scale_row = torch.where(_interior(k_star, n), sq_row.clamp_min(MIN_SQUARED_DISTANCE).rsqrt(), 1.0)
        scale_col = torch.where(_interior(l_star, n), sq_col.clamp_min(MIN_SQUARED_DISTANCE).rsqrt(), 1.0)
        inner = inner * scale_row * scale_col
        sq_row, sq_col = sq_row * scale_row.square(), sq_col * scale_col.square()
    if metric == "similarity":
        return inner
    return (sq_row + sq_col - 2 * inner).clamp_min(MIN_SQUARED_DISTANCE).sqrt()


def hard_negative_pair_mining(
    embeddings: Tensor,
    labels: Tensor,
    matrix: Tensor,
    *,
    n_inner_pts: int,
    l2_norm: bool = True,
    metric: Metric = "distance",
    scope: Scope = "anchor",
) -> Tensor:
    """The loss's B x B ``matrix`` with every negative entry replaced by its hardest EE pair.

    Entry (i, j) of different classes becomes min D(a, b) (``metric="distance"``, Euclidean)
    or max <a, b> (``metric="similarity"``, dot product) over a in A_i, b in A_j (see the
    module docstring); all other entries are returned untouched, so the loss's positive terms
    use the original pairs. Where the hardest pair is the original (e_i, e_j) the input value
    is kept bit for bit; with ``n_inner_pts=0`` (A_i = {e_i}) the result is ``matrix`` itself.
    Gradients flow into the embeddings through the selected synthetic points.
    """
    check_pair_layout(labels)
    if metric not in ("distance", "similarity"):
        raise ValueError(f"metric must be 'distance' or 'similarity', got {metric!r}")
    if scope not in ("anchor", "pair"):
        raise ValueError(f"expansion.mining_scope: must be 'anchor' or 'pair', got {scope!r}")
    n = n_inner_pts
    if n == 0 and scope == "anchor":
        return matrix
    gram = embeddings @ embeddings.T
    with torch.no_grad():
        k_star, l_star = _hardest_segment_points(gram.detach(), n, l2_norm, metric, scope)
        own = torch.arange(embeddings.shape[0], device=labels.device) % 2 * (n + 1)  # e_i's index
        synthetic = (k_star != own[:, None]) | (l_star != own[None, :])
        replace = synthetic & (labels.unsqueeze(0) != labels.unsqueeze(1))
    if not bool(replace.any()):
        return matrix
    value = _selected_values(gram, k_star, l_star, n, l2_norm, metric)
    return torch.where(replace, value.to(matrix.dtype), matrix)

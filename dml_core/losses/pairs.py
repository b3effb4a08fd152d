"""Pairwise matrices, label masks and masked reductions shared by every loss."""
from __future__ import annotations

import torch
from torch import Tensor

# One definition of the matrix kinds and the distance clip, shared with EE's mining.
from dml_core.expansion.ee import MIN_SQUARED_DISTANCE, Metric


def pairwise_distance(x: Tensor, y: Tensor | None = None) -> Tensor:
    """Euclidean distances; squared values are clipped at 1e-12 before the square root.

    The clip keeps gradients finite for coincident points (the diagonal, duplicate samples)
    and matches the EE reference code.
    """
    y = x if y is None else y
    sq = x.square().sum(1, keepdim=True) + y.square().sum(1) - 2 * x @ y.T
    return sq.clamp_min(MIN_SQUARED_DISTANCE).sqrt()


def pairwise_matrix(embeddings: Tensor, metric: Metric) -> Tensor:
    """B x B Euclidean distance (``"distance"``) or dot-product similarity (``"similarity"``).

    The models emit L2-normalised embeddings, so the dot product is the cosine similarity.
    """
    if metric == "distance":
        return pairwise_distance(embeddings)
    return embeddings @ embeddings.T


def label_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """(positive, negative) boolean B x B masks; positives exclude the diagonal."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


def masked_logsumexp(x: Tensor, mask: Tensor, dim: int = 1, add_one: bool = False) -> Tensor:
    """log(sum over the mask of exp(x)) along ``dim``, ``log(1 + ...)`` if ``add_one``.

    Slices with an empty mask give 0 (their term is absent), with finite gradients: masked
    entries are filled with -inf only where the slice keeps at least one entry.
    """
    empty = ~mask.any(dim, keepdim=True)
    x = x.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)
    if add_one:
        x = torch.cat([x, torch.zeros_like(x.narrow(dim, 0, 1))], dim=dim)
    return torch.logsumexp(x, dim=dim).masked_fill(empty.squeeze(dim), 0.0)


def hardest_positive_negative(distance: Tensor, pos_mask: Tensor, neg_mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per anchor: largest positive distance, smallest negative distance, and whether both exist."""
    d_ap = distance.masked_fill(~pos_mask, float("-inf")).amax(1)
    d_an = distance.masked_fill(~neg_mask, float("inf")).amin(1)
    valid = pos_mask.any(1) & neg_mask.any(1)
    return d_ap, d_an, valid


def mean_of_positive(losses: Tensor) -> Tensor:
    """Mean over the entries > 0 (PML's AvgNonZeroReducer); 0 when there are none."""
    active = losses > 0
    return losses.sum() / active.sum().clamp_min(1)

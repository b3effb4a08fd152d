"""EE's reference training step (clovaai/embedding-expansion, MXNet), re-written in plain torch.

Read from the reference: runner/trainer.py (lr from the scheduler at each update, forward,
per-anchor loss vector, `loss.backward()`, `trainer.step(1)`), loss/embedding_aug.py (synthetic
points), loss/hphn_triplet.py (distances and mining), main.py (Adam with `wd`,
MultiFactorScheduler over `epoch x len(loader)` updates) and MXNet 1.x's Adam update
(coupled weight decay: g <- g + wd w; the bias correction folded into the lr; eps added to
sqrt(v)). Nothing here imports dml_core's losses, expansion or training code.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from stepcheck import Init, Trace, step_seed


def mx_l2_normalization(x: Tensor, eps: float = 1e-10) -> Tensor:
    """mx.nd.L2Normalization(mode='instance'): x / sqrt(sum x^2 + eps)."""
    return x / torch.sqrt((x * x).sum(1, keepdim=True) + eps)


def embedding_aug(emb: Tensor, labels: Tensor, n_inner_pts: int) -> tuple[Tensor, Tensor]:
    """get_embedding_aug: rows [E; S^1..S^n], S^k = L2N((k * partner + (n+1-k) * e) / (n+1))."""
    swap = [i + 1 if i % 2 == 0 else i - 1 for i in range(emb.shape[0])]
    anchor, pos = emb[swap], emb
    rows, row_labels = [emb], [labels]
    total = float(n_inner_pts + 1)
    for idx in range(n_inner_pts):
        left = float(idx + 1)
        inner = (anchor * left + pos * (total - left)) / total
        rows.append(mx_l2_normalization(inner))
        row_labels.append(labels)
    return torch.cat(rows), torch.cat(row_labels)


def euclidean_dist(x: Tensor, y: Tensor) -> Tensor:
    d = (x * x).sum(1, keepdim=True) + (y * y).sum(1, keepdim=True).T - 2 * x @ y.T
    return d.clamp(1e-12, 1e12).sqrt()


def hphn_triplet(emb: Tensor, labels: Tensor, n_inner_pts: int, margin: float) -> Tensor:
    """The reference HPHNTripletLoss: a loss per original anchor."""
    b = emb.shape[0]
    if n_inner_pts:
        emb, labels = embedding_aug(emb, labels, n_inner_pts)
    dist = euclidean_dist(emb, emb)
    n = dist.shape[0]
    is_pos = (labels.view(1, n) == labels.view(n, 1)).to(dist)
    is_neg = 1 - is_pos
    d_ap = (dist * is_pos)[:b, :b].max(1).values if n_inner_pts else (dist * is_pos).max(1).values
    dist_neg = dist * is_neg + dist.max(1, keepdim=True).values * is_pos
    d_an = dist_neg.min(1).values
    if n_inner_pts:
        d_an = d_an.view(n // b, b).min(0).values  # the anchor's own rows: e_i and its s_i^k
    return F.relu(d_ap - d_an + margin)


def multi_similarity_ee(emb: Tensor, labels: Tensor, n_inner_pts: int, scope: str, alpha: float, beta: float,
                        base: float, epsilon: float) -> Tensor:
    """MS (Wang et al. 2019, eq. 5-6 mining, eq. 9) per anchor, its negative similarities taken
    between the augmented pair sets as EE's paper states: the hardest (largest) similarity
    between A_i and A_j, A_i = {e_i, s_i^k} (scope anchor) or {e_i, e_partner, s^k} (pair),
    built explicitly and searched by brute force. An empty kept set contributes log(1) = 0."""
    b = emb.shape[0]
    rows, _ = embedding_aug(emb, labels, n_inner_pts)
    sets = rows.view(n_inner_pts + 1, b, -1).transpose(0, 1)  # (B, n+1, d): e_i, s_i^1..n
    if scope == "pair":
        partner = emb[[i + 1 if i % 2 == 0 else i - 1 for i in range(b)]]
        sets = torch.cat([sets, partner.unsqueeze(1)], 1)
    sim = emb @ emb.T
    hardest = torch.einsum("iad,jbd->ijab", sets, sets).flatten(2).max(-1).values
    same = labels.view(-1, 1) == labels.view(1, -1)
    eye = torch.eye(b, dtype=torch.bool)
    pos_mask, neg_mask = same & ~eye, ~same
    sim = torch.where(neg_mask, hardest, sim)
    losses = []
    for i in range(b):
        pos, neg = sim[i][pos_mask[i]], sim[i][neg_mask[i]]
        kept_neg = neg[neg + epsilon > pos.min()] if pos.numel() else neg[:0]
        kept_pos = pos[pos - epsilon < neg.max()] if neg.numel() else pos[:0]
        pos_term = torch.log1p(torch.exp(-alpha * (kept_pos - base)).sum()) / alpha
        neg_term = torch.log1p(torch.exp(beta * (kept_neg - base)).sum()) / beta
        losses.append(pos_term + neg_term)
    return torch.stack(losses)


def multi_factor_lr(base_lr: float, num_update: int, steps: list[int], factor: float) -> float:
    """mx.lr_scheduler.MultiFactorScheduler: x factor for every step the update count exceeds."""
    return base_lr * factor ** sum(num_update > s for s in steps)


class MXNetAdam:
    """mx.optimizer.Adam (1.x) on torch tensors: coupled weight decay, bias correction in the lr."""

    def __init__(self, params: list[Tensor], wd: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.params, self.wd, self.b1, self.b2, self.eps = params, wd, beta1, beta2, eps
        self.mean = [torch.zeros_like(p) for p in params]
        self.var = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def update(self, lr: float) -> None:
        self.t += 1
        lr_t = lr * math.sqrt(1 - self.b2 ** self.t) / (1 - self.b1 ** self.t)
        for p, m, v in zip(self.params, self.mean, self.var):
            g = p.grad + self.wd * p  # rescale_grad 1 (trainer.step(1)), then + wd * weight
            m.mul_(self.b1).add_((1 - self.b1) * g)
            v.mul_(self.b2).add_((1 - self.b2) * g * g)
            p.sub_(lr_t * m / (v.sqrt() + self.eps))


def train_reference(init: Init, batches: list[list[tuple[Tensor, Tensor]]], *, loss_vector: Callable[[Tensor, Tensor], Tensor],
                    lr: float, wd: float, decay_epochs: list[int], decay_factor: float, eps: float = 1e-8,
                    bn_train: bool = True) -> Trace:
    """Run the reference loop on the shared init and batches; record like `stepcheck.run_project`."""
    backbone = copy.deepcopy(init.backbone)
    backbone.train(bn_train)
    weight = init.head["linear.weight"].clone().requires_grad_(True)
    bias = init.head["linear.bias"].clone().requires_grad_(True)
    named: dict[str, Tensor] = {f"backbone.{n}": p for n, p in backbone.named_parameters()}
    named.update({"head.linear.weight": weight, "head.linear.bias": bias})
    opt = MXNetAdam(list(named.values()), wd=wd, eps=eps)
    iters = len(batches[0])
    steps = [e * iters for e in decay_epochs]
    trace = Trace()
    for epoch, epoch_batches in enumerate(batches):
        for i, (x, y) in enumerate(epoch_batches):
            iter_count = iters * epoch + i
            lr_now = multi_factor_lr(lr, iter_count, steps, decay_factor)
            torch.manual_seed(step_seed(epoch, i))
            for p in named.values():
                p.grad = None
            pooled = F.adaptive_avg_pool2d(backbone(x), 1).flatten(1)
            emb = mx_l2_normalization(pooled @ weight.T + bias)
            loss = loss_vector(emb, y)
            loss.backward(torch.ones_like(loss))  # MXNet: backward of a vector = of its sum
            trace.losses.append(float(loss.detach().sum()))
            trace.grads.append({n: p.grad.detach().clone() for n, p in named.items()})
            trace.lrs.append({"backbone": lr_now, "head": lr_now})
            opt.update(lr_now)
            trace.params.append({n: p.detach().clone() for n, p in named.items()})
    return trace


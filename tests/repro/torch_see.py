"""SEE's reference training step (Leminhbinh0209/PAKDD24-SEE, trainer/train.py), re-written.

Read from the reference: train_one_epoch (per iteration every group's lr = lr x lr_scale x
schedule[it], the "pretrained_params" group 0 while epoch < warmup_epochs; forward; embeddings
all-gathered over the ranks with the local slice keeping its graph; SEEProxyAnchor; zero_grad;
backward; clip_gradients_value(model, 10, [loss]); AdamW step), utils.get_params_groups (the
same weight decay on every group, proxies x 1e4), models/model.py (LayerNorm without affine,
Linear, L2), losses.py (PA as the reference writes it, with its l2_norm) and
sphericalexpansion.py (type 1 threshold, top round(t B) by cosine to the detached proxy).

Two ranks of DistributedDataParallel are emulated: each rank's loss is computed on the whole
gathered batch with the other rank's embeddings detached, the model's gradients are averaged
over the ranks (DDP), the proxies' are rank 0's own (the loss module is outside DDP).

The SEE points' random directions are the one thing taken from the project
(`dml_core.expansion.see.spherical_expansion`, under the same torch seed): a literal port of
the reference's per-sample Gram-Schmidt would draw different random numbers. Their geometry is
proven against the paper in tests/expansion/test_see.py. AdamW is written out by hand.
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dml_core.expansion.see import spherical_expansion
from stepcheck import Init, Trace, step_seed


def l2_norm(x: Tensor) -> Tensor:
    """The reference's l2_norm: x / sqrt(sum x^2 + 1e-12)."""
    return x / torch.sqrt((x * x).sum(1, keepdim=True) + 1e-12)


def proxy_anchor(x: Tensor, y: Tensor, proxies: Tensor, alpha: float = 32.0, mrg: float = 0.1) -> Tensor:
    """SEEProxyAnchor.proxy_loss."""
    cos = l2_norm(x) @ l2_norm(proxies).T
    pos_one_hot = F.one_hot(y, proxies.shape[0]).to(cos)
    pos_exp = torch.exp(-alpha * (cos - mrg))
    neg_exp = torch.exp(alpha * (cos + mrg))
    num_valid = int((pos_one_hot.sum(0) != 0).sum())
    p_sum = torch.where(pos_one_hot == 1, pos_exp, torch.zeros_like(pos_exp)).sum(0)
    n_sum = torch.where(pos_one_hot == 0, neg_exp, torch.zeros_like(neg_exp)).sum(0)
    return torch.log(1 + p_sum).sum() / num_valid + torch.log(1 + n_sum).sum() / proxies.shape[0]


def see_threshold_type1(epoch: int, max_epoch: int, max_t: float, min_t: float) -> float:
    """SphericalExpansion.update_threshold, plan 1."""
    return max_t - (max_t - min_t) * ((np.cos(np.pi * min(epoch, 200) / min(max_epoch, 200)) + 1.0) / 2.0)


def see_proxy_anchor(z: Tensor, y: Tensor, proxies: Tensor, threshold: float, n_expan: int, lam: float) -> tuple[Tensor, int]:
    """SEEProxyAnchor.forward: PA(batch) + lam PA(synthetic points, detached). Returns the loss and
    how many samples expanded."""
    x = l2_norm(z).detach()
    p = l2_norm(proxies).detach()
    scores = (x * p[y]).sum(1)
    top_k = int(np.round(scores.numel() * threshold))
    loss = proxy_anchor(z, y, proxies)
    if top_k <= 0:
        return loss, 0
    chosen = torch.zeros_like(y, dtype=torch.bool)
    chosen[torch.topk(scores, k=top_k).indices] = True
    points = spherical_expansion(x[chosen], p[y][chosen], n_expan).reshape(-1, x.shape[1])
    labels = y[chosen].repeat_interleave(n_expan)
    return loss + lam * proxy_anchor(points.detach(), labels, proxies), top_k


class AdamW:
    """torch.optim.AdamW's update written out: decoupled decay, bias-corrected moments."""

    def __init__(self, groups: list[dict], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.groups, (self.b1, self.b2), self.eps = groups, betas, eps
        self.state = {id(p): (torch.zeros_like(p), torch.zeros_like(p)) for g in groups for p in g["params"]}
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        bc1, bc2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for g in self.groups:
            for p in g["params"]:
                m, v = self.state[id(p)]
                p.mul_(1 - g["lr"] * g["weight_decay"])
                m.mul_(self.b1).add_((1 - self.b1) * p.grad)
                v.mul_(self.b2).add_((1 - self.b2) * p.grad * p.grad)
                p.sub_(g["lr"] / bc1 * m / (v.sqrt() / math.sqrt(bc2) + self.eps))


def train_reference(init: Init, batches: list[list[tuple[Tensor, Tensor]]], *, epochs: int, lr: float = 1e-5,
                    batch_size_per_gpu: int, world_size: int = 2, weight_decay: float = 1e-2, eps: float = 1e-4,
                    warmup_epochs: int = 1, clamp: Optional[float] = 10.0, proxy_lr_scale: float = 1e4,
                    n_expan: int = 8, lam: float = 0.2, max_t: float = 0.4, min_t: float = 0.0,
                    bn_train: bool = True, lastnorm: bool = True, gap_plus_gmp: bool = False) -> Trace:
    backbone = copy.deepcopy(init.backbone)
    backbone.train(bn_train)
    weight = init.head["linear.weight"].clone().requires_grad_(True)
    bias = init.head["linear.bias"].clone().requires_grad_(True)
    proxies = init.proxies.clone().requires_grad_(True)
    body = [p for p in backbone.parameters() if p.requires_grad]
    groups = [
        {"name": "pretrained_params", "params": body, "lr_scale": 1, "weight_decay": weight_decay},
        {"name": "last_layer", "params": [weight, bias], "lr_scale": 1, "weight_decay": weight_decay},
        {"name": "proxies", "params": [proxies], "lr_scale": proxy_lr_scale, "weight_decay": weight_decay},
    ]
    opt = AdamW(groups, eps=eps)
    named = {f"backbone.{n}": p for n, p in backbone.named_parameters()}
    named.update({"head.linear.weight": weight, "head.linear.bias": bias, "loss.proxies": proxies})
    base = lr * (batch_size_per_gpu * world_size) / 180.0
    schedule = np.ones(epochs * len(batches[0]))  # step_scheduler(epochs, ..., gamma=1)
    trace = Trace(extra={"clamped": 0, "expanded": 0})

    def embed(x: Tensor) -> Tensor:
        fmap = backbone(x)
        feats = F.adaptive_avg_pool2d(fmap, 1).flatten(1)
        if gap_plus_gmp:  # the reference's Resnet50: max_x + avg_x
            feats = F.adaptive_max_pool2d(fmap, 1).flatten(1) + feats
        if lastnorm:
            feats = F.layer_norm(feats, feats.shape[1:])
        return F.normalize(feats @ weight.T + bias, p=2, dim=1)

    for epoch, epoch_batches in enumerate(batches):
        threshold = see_threshold_type1(epoch, epochs, max_t, min_t)
        for i, (x, y) in enumerate(epoch_batches):
            it = len(epoch_batches) * epoch + i
            for g in groups:
                g["lr"] = base * g["lr_scale"] * schedule[it]
                if epoch < warmup_epochs and g["name"] == "pretrained_params":
                    g["lr"] = 0
            torch.manual_seed(step_seed(epoch, i))
            for p in named.values():
                p.grad = None
            # Forward once on the global batch (BN statistics of the whole batch, like the
            # project's single process); each rank's loss sees the other rank's rows detached.
            z = embed(x)
            halves = z.chunk(world_size)
            model_grads: dict[str, Tensor] = {}
            proxy_grad: Optional[Tensor] = None
            loss_value = 0.0
            for rank in range(world_size):
                gathered = torch.cat([h if r == rank else h.detach() for r, h in enumerate(halves)])
                if rank:
                    torch.manual_seed(step_seed(epoch, i))  # rank 0's draw; see the module docstring
                loss, expanded = see_proxy_anchor(gathered, y, proxies, threshold, n_expan, lam)
                grads = torch.autograd.grad(loss, [*named.values()], retain_graph=rank < world_size - 1,
                                            allow_unused=True)
                for (name, p), g in zip(named.items(), grads):
                    g = torch.zeros_like(p) if g is None else g
                    if name == "loss.proxies":
                        proxy_grad = g if rank == 0 else proxy_grad
                    else:
                        model_grads[name] = model_grads.get(name, 0) + g / world_size  # DDP's average
                if rank == 0:
                    loss_value = float(loss.detach())
                    trace.extra["expanded"] += expanded
            for name, p in named.items():
                p.grad = proxy_grad if name == "loss.proxies" else model_grads[name]
            if clamp:
                for p in named.values():
                    trace.extra["clamped"] += int((p.grad.abs() > clamp).sum())
                    p.grad.clamp_(min=-clamp, max=clamp)
            trace.losses.append(loss_value)
            trace.grads.append({n: p.grad.detach().clone() for n, p in named.items() if p.requires_grad})
            trace.lrs.append({"backbone": groups[0]["lr"], "head": groups[1]["lr"], "loss": groups[2]["lr"]})
            opt.step()
            trace.params.append({n: p.detach().clone() for n, p in named.items()})
    return trace

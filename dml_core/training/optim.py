"""Optimizer with per-part learning rates, and the learning-rate schedule.

The schedule is a pure function of the global iteration (`LRSchedule.apply`, called before
every optimizer step), as both reference trainers set it: EE's MXNet code asks its scheduler for
the lr of each update, SEE's writes `lr x schedule[it]` into every group each iteration.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn

from dml_core.config import OptimizerConfig, SchedulerConfig


def build_optimizer(cfg: OptimizerConfig, model: nn.Module, loss: nn.Module) -> torch.optim.Optimizer:
    """Three parameter groups -- backbone, head, loss (proxies) -- each with its own lr.

    Proxy losses need a far larger lr for their proxies than the network (Proxy-Anchor uses
    x100, SEE's scripts x10^4), so they never share the network's group. The loss group gets
    the weight decay only with `weight_decay_on_loss`.
    """
    groups = []
    for name, module, lr in (
        ("backbone", model.backbone, cfg.backbone_lr),
        ("head", model.head, cfg.head_lr),
        ("loss", loss, cfg.loss_lr),
    ):
        params = [p for p in module.parameters() if p.requires_grad]
        if params:
            decay = cfg.weight_decay if name != "loss" or cfg.weight_decay_on_loss else 0.0
            groups.append({"name": name, "params": params, "lr": lr or cfg.lr, "weight_decay": decay})
    if not groups:
        raise ValueError("optimizer: the model has no trainable parameters")
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, eps=cfg.eps)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, eps=cfg.eps)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


def lr_factor(cfg: SchedulerConfig, epoch: int, total_epochs: int, iteration: int = 0) -> float:
    """Multiplier of every group's base lr at `iteration` (0-based, within the 0-based `epoch`):
    linear warm-up, then decay."""
    if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
        return (epoch + 1) / (cfg.warmup_epochs + 1)
    e = epoch - cfg.warmup_epochs
    if cfg.name == "cosine":
        span = max(1, total_epochs - cfg.warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * e / span))
    if cfg.name == "step":
        return cfg.gamma ** (e // cfg.step_size)
    if cfg.name == "multistep":
        passed = sum(epoch > m or (epoch == m and iteration >= cfg.milestone_delay_iters) for m in cfg.milestones)
        return cfg.gamma ** passed
    return 1.0


class LRSchedule:
    """Sets every group's lr = base lr x `lr_factor`, and 0 for the backbone during its frozen
    epochs (`scheduler.backbone_frozen_epochs`). Stateless: the lr is a function of the
    iteration, so resuming needs only the epoch."""

    def __init__(self, cfg: SchedulerConfig, optimizer: torch.optim.Optimizer, total_epochs: int,
                 iterations_per_epoch: int, mxnet_eps: Optional[float] = None) -> None:
        self.cfg, self.optimizer = cfg, optimizer
        self.total_epochs, self.iterations = total_epochs, iterations_per_epoch
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        # optimizer.eps_mode: mxnet -- torch's eps for update t is eps / sqrt(1 - beta2^t).
        self.mxnet_eps = mxnet_eps

    def lrs(self, step: int) -> list[float]:
        """Each group's lr at global iteration `step` (0-based)."""
        epoch, iteration = divmod(step, self.iterations)
        factor = lr_factor(self.cfg, epoch, self.total_epochs, iteration)
        frozen = epoch < self.cfg.backbone_frozen_epochs
        return [0.0 if frozen and group.get("name") == "backbone" else base * factor
                for base, group in zip(self.base_lrs, self.optimizer.param_groups)]

    def apply(self, step: int) -> None:
        """Set the groups' lr (and, for `eps_mode: mxnet`, eps) for the update at global `step`."""
        for group, lr in zip(self.optimizer.param_groups, self.lrs(step)):
            group["lr"] = lr
            if self.mxnet_eps is not None:
                group["eps"] = self.mxnet_eps / math.sqrt(1 - group["betas"][1] ** (step + 1))

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Base lrs come from the config (a resumed run may change them); older checkpoints hold a
        # LambdaLR state here, which the iteration-based schedule does not need.
        del state


def build_scheduler(cfg: SchedulerConfig, optimizer: torch.optim.Optimizer, total_epochs: int,
                    iterations_per_epoch: int = 1, optimizer_cfg: Optional[OptimizerConfig] = None) -> LRSchedule:
    mxnet_eps = None
    if optimizer_cfg is not None and optimizer_cfg.eps_mode == "mxnet":
        if optimizer_cfg.name not in ("adam", "adamw"):
            raise ValueError(f"optimizer.eps_mode: mxnet applies to adam / adamw, not {optimizer_cfg.name}")
        mxnet_eps = optimizer_cfg.eps
    return LRSchedule(cfg, optimizer, total_epochs, iterations_per_epoch, mxnet_eps)

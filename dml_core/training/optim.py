"""Optimizer with per-part learning rates, and the epoch-level learning-rate schedule."""
from __future__ import annotations

import math

import torch
from torch import nn

from dml_core.config import OptimizerConfig, SchedulerConfig


def build_optimizer(cfg: OptimizerConfig, model: nn.Module, loss: nn.Module) -> torch.optim.Optimizer:
    """Three parameter groups -- backbone, head, loss (proxies) -- each with its own lr.

    Proxy losses need a far larger lr for their proxies than the network (Proxy-Anchor uses
    x100, SEE's scripts x10^4), so they never share the network's group.
    """
    groups = []
    for name, module, lr in (
        ("backbone", model.backbone, cfg.backbone_lr),
        ("head", model.head, cfg.head_lr),
        ("loss", loss, cfg.loss_lr),
    ):
        params = [p for p in module.parameters() if p.requires_grad]
        if params:
            groups.append({"name": name, "params": params, "lr": lr or cfg.lr})
    if not groups:
        raise ValueError("optimizer: the model has no trainable parameters")
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(cfg: SchedulerConfig, epoch: int, total_epochs: int) -> float:
    """Multiplier of every group's base lr during `epoch` (0-based): linear warm-up, then decay."""
    if cfg.warmup_epochs and epoch < cfg.warmup_epochs:
        return (epoch + 1) / (cfg.warmup_epochs + 1)
    e = epoch - cfg.warmup_epochs
    if cfg.name == "cosine":
        span = max(1, total_epochs - cfg.warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * e / span))
    if cfg.name == "step":
        return cfg.gamma ** (e // cfg.step_size)
    if cfg.name == "multistep":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    return 1.0


def build_scheduler(cfg: SchedulerConfig, optimizer: torch.optim.Optimizer, total_epochs: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(cfg, e, total_epochs))

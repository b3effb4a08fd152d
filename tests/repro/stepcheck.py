"""Step-equivalence harness: the project's trainer against a plain-torch re-implementation of a
reference training step, on one tiny stand-in backbone, one init and one stream of batches.

The project side is `dml_core.training.trainer.Trainer.train_epoch` itself, built from the
repro YAML (its loss, expansion, optimizer, schedule, clipping, head and epoch settings) with
only the data and the backbone swapped for a stand-in (`STAND_IN`): digits-sized random
batches fed in place of the loader, a one-block `small_conv`, float64 throughout so that
agreement to 1e-5 is far above round-off. The reference side is written in each test module
from the reference code's own order of operations (no `dml_core.training` import) and gets the
same backbone module copy, head weights, proxies and batches.

`compare` checks, per optimizer step: the loss, every gradient the optimizer sees (after
clipping / clamping), every parameter's displacement from the init, and each group's lr --
relative to the tensor's scale, 1e-5. Displacements rather than raw parameters: an lr of 1e-5
moves weights by ~1e-5 per step, so an absolute 1e-5 on the weights could not tell an eps or a
weight-decay knob apart.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch import Tensor, nn

from dml_core.config import ExperimentConfig, apply_overrides, config_from_dict, read_yaml
from dml_core.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-5

# The stand-in for the reference's data and backbone: everything else comes from the YAML.
STAND_IN: dict[str, Any] = {
    "data.name": "digits",
    "data.image_size": 8,
    "data.num_workers": 0,
    "model.backbone": "small_conv",
    "model.conv_blocks": 1,
    "model.conv_width": 8,
    "model.pretrained": False,
    "model.embedding_dim": 16,
    "train.device": "cpu",
    "train.amp": "none",
    "train.num_threads": 1,
    "train.checkpoint": False,
}
NUM_CLASSES = 5  # digits 0-4 train


def recipe_config(yaml_name: str, **overrides: Any) -> ExperimentConfig:
    """The repro YAML with the stand-in and `overrides` (dotted keys) applied."""
    raw = read_yaml(REPO / "experiments" / yaml_name)
    raw.pop("sweep", None)
    return config_from_dict(apply_overrides(raw, {**STAND_IN, **overrides}), yaml_name)


def make_batches(epochs: int, iterations: int, p: int, k: int, seed: int = 0) -> list[list[tuple[Tensor, Tensor]]]:
    """Random 8 x 8 images, P classes x K rows each (a class's rows contiguous)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        epoch = []
        for _ in range(iterations):
            classes = torch.randperm(NUM_CLASSES, generator=g)[:p]
            y = classes.repeat_interleave(k)
            x = torch.randn(p * k, 1, 8, 8, generator=g, dtype=torch.float64)
            epoch.append((x, y))
        out.append(epoch)
    return out


def step_seed(epoch: int, iteration: int) -> int:
    """The global torch seed set just before step (epoch, iteration) on both sides (SEE draws its
    random directions from it)."""
    return 1000 * epoch + iteration + 1


class SeededBatches:
    """The trainer's loader for one epoch: yields the given batches, seeding torch before each."""

    def __init__(self, epoch: int, batches: list[tuple[Tensor, Tensor]]) -> None:
        self.epoch, self.batches = epoch, batches

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for i, (x, y) in enumerate(self.batches):
            torch.manual_seed(step_seed(self.epoch, i))
            yield x, y

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class Init:
    """The starting point both sides share."""

    backbone: nn.Module
    head: dict[str, Tensor]
    proxies: Optional[Tensor]


@dataclass
class Trace:
    """Per optimizer step: loss, gradients (as stepped), parameters after the step, lrs."""

    losses: list[float] = field(default_factory=list)
    grads: list[dict[str, Tensor]] = field(default_factory=list)
    params: list[dict[str, Tensor]] = field(default_factory=list)
    lrs: list[dict[str, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _named(trainer: Trainer) -> dict[str, Tensor]:
    named = {f"backbone.{n}": p for n, p in trainer.model.backbone.named_parameters()}
    named.update({f"head.{n}": p for n, p in trainer.model.head.named_parameters()})
    named.update({f"loss.{n}": p for n, p in trainer.loss_fn.named_parameters()})
    return named


def run_project(cfg: ExperimentConfig, batches: list[list[tuple[Tensor, Tensor]]],
                head_scale: float = 1.0) -> tuple[Init, Trace, Trainer]:
    """Train the project's trainer on `batches` (one list per epoch); record every step.

    `head_scale` multiplies the initial head weight (both sides start from the result): a small
    embedding before normalisation makes large gradients, so a clamp has something to clamp."""
    trainer = Trainer(cfg)
    trainer.model.double()
    trainer.loss_fn.double()
    with torch.no_grad():
        trainer.model.head.linear.weight.mul_(head_scale)
    proxies = getattr(trainer.loss_fn, "proxies", None)
    init = Init(copy.deepcopy(trainer.model.backbone),
                {n: p.detach().clone() for n, p in trainer.model.head.named_parameters()},
                None if proxies is None else proxies.detach().clone())
    trace = Trace()
    named = _named(trainer)
    step = trainer.optimizer.step

    def recording_step(*args: Any, **kwargs: Any) -> Any:
        trace.lrs.append({g["name"]: g["lr"] for g in trainer.optimizer.param_groups})
        trace.grads.append({n: p.grad.detach().clone() for n, p in named.items() if p.grad is not None})
        out = step(*args, **kwargs)
        trace.params.append({n: p.detach().clone() for n, p in named.items()})
        return out

    trainer.optimizer.step = recording_step  # type: ignore[method-assign]
    trainer.loss_fn.register_forward_hook(lambda m, i, o: trace.losses.append(float(o.detach())))
    for epoch, epoch_batches in enumerate(batches):
        trainer.loader = SeededBatches(epoch, epoch_batches)  # type: ignore[assignment]
        trainer.train_epoch(epoch)
    return init, trace, trainer


def _close(a: Tensor, b: Tensor) -> bool:
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool((a - b).abs().max() <= TOL * max(scale, 1e-12)) if b.numel() else True


def compare(project: Trace, reference: Trace, init: dict[str, Tensor]) -> list[str]:
    """Every disagreement beyond TOL (relative to the reference tensor's scale), as messages."""
    errors: list[str] = []
    if len(project.losses) != len(reference.losses):
        return [f"{len(project.losses)} project steps vs {len(reference.losses)} reference steps"]
    for s, (lp, lr_) in enumerate(zip(project.losses, reference.losses)):
        if abs(lp - lr_) > TOL * max(abs(lr_), 1e-12):
            errors.append(f"step {s}: loss {lp!r} vs reference {lr_!r}")
        for group, value in reference.lrs[s].items():
            got = project.lrs[s].get(group)
            if got is None or abs(got - value) > TOL * max(abs(value), 1e-30):
                errors.append(f"step {s}: lr of {group} {got!r} vs reference {value!r}")
        for name, g in reference.grads[s].items():
            pg = project.grads[s].get(name)
            if pg is None or not _close(pg, g):
                err = "missing" if pg is None else f"max diff {float((pg - g).abs().max()):.3g} (scale {float(g.abs().max()):.3g})"
                errors.append(f"step {s}: gradient of {name} {err}")
        for name, p in reference.params[s].items():
            moved_ref, moved = p - init[name], project.params[s][name] - init[name]
            if not _close(moved, moved_ref):
                errors.append(f"step {s}: displacement of {name} max diff {float((moved - moved_ref).abs().max()):.3g} "
                              f"(scale {float(moved_ref.abs().max()):.3g})")
    return errors


def initial_params(init: Init, backbone_prefix: str = "backbone.") -> dict[str, Tensor]:
    out = {f"{backbone_prefix}{n}": p.detach().clone() for n, p in init.backbone.named_parameters()}
    out.update({f"head.{n}": p.clone() for n, p in init.head.items()})
    if init.proxies is not None:
        out["loss.proxies"] = init.proxies.clone()
    return out


def assert_equivalent(project: Trace, reference: Trace, init: Init) -> None:
    errors = compare(project, reference, initial_params(init))
    assert not errors, f"{len(errors)} disagreements, first: " + "; ".join(errors[:5])


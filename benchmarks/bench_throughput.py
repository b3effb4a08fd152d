"""Training-step throughput: `Trainer.train_epoch` against a plain PyTorch loop, side by side.

Both arms run the same model, loss, optimiser and batch: the trainer is built from a config
(random-init backbone, Multi-Similarity loss, with and without EE n=2), and the plain loop runs a
deep copy of its model and loss with a fresh optimiser of the same kind -- forward (bf16 autocast
on CUDA, as the trainer), loss, zero_grad, backward, step, nothing else. Data loading is left out
of both (one fixed P x K batch, on the device, fed to the trainer in place of its DataLoader):
this measures the step loop itself; `benchmarks/bench_loader.py` measures loading.

Arms alternate round by round (in a rotating order), each timed over whole rounds of `--steps`
steps ending in a device synchronisation. The table gives each arm's best round (images/s: the
least disturbed one, as machine load only ever slows a round down), the ratio of the two bests,
and the median of the per-round ratios (trainer round / the plain round next to it), which pairs
measurements taken under the same load. Target: both ratios >= 0.9 on CPU and on GPU.

    python benchmarks/bench_throughput.py             # CUDA config if a GPU is visible, else CPU
    python benchmarks/bench_throughput.py --device cpu
    python benchmarks/bench_throughput.py --smoke     # seconds: tiny CPU run (CI)

Configs: GPU: ResNet-50, 224 px, batch 128 = 64 classes x 2, bf16. CPU: ResNet-18, 64 px, batch
32 = 16 x 2, float32. Smoke: ResNet-18, 32 px, batch 8 = 4 x 2, one step per round.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the checkout

from dml_core.config import config_from_dict  # noqa: E402
from dml_core.training.optim import build_optimizer  # noqa: E402
from dml_core.training.trainer import Trainer  # noqa: E402

TARGET = 0.9


@dataclass(frozen=True)
class Setting:
    backbone: str
    image_size: int
    classes: int  # P
    per_class: int  # K
    steps: int  # per timed round
    rounds: int
    warmup: int  # untimed rounds per arm

    @property
    def batch(self) -> int:
        return self.classes * self.per_class


SETTINGS = {
    "cuda": Setting("resnet50", 224, 64, 2, steps=20, rounds=5, warmup=1),
    "cpu": Setting("resnet18", 64, 16, 2, steps=3, rounds=5, warmup=1),
    "smoke": Setting("resnet18", 32, 4, 2, steps=1, rounds=1, warmup=1),
}
EXPANSIONS = {"MS": {"name": "none"}, "MS + EE n=2": {"name": "ee", "n_inner_pts": 2}}


class FixedBatches:
    """Stands in for the trainer's DataLoader: the same (x, y) batch, `steps` times."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
        self.x, self.y, self.steps = x, y, steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return ((self.x, self.y) for _ in range(self.steps))

    def __len__(self) -> int:
        return self.steps


def make_trainer(s: Setting, device: str, expansion: dict, threads: int | None) -> Trainer:
    cfg = config_from_dict({
        "name": "bench_throughput",
        # digits only satisfy the constructor; the batches come from FixedBatches.
        "data": {"name": "digits", "image_size": s.image_size, "num_workers": 0,
                 "batch": {"classes_per_batch": 2, "samples_per_class": s.per_class}},
        "model": {"backbone": s.backbone, "pretrained": False, "embedding_dim": 512},
        "loss": {"name": "multi_similarity"},
        "expansion": expansion,
        "optimizer": {"name": "adam", "lr": 1e-5},
        "train": {"epochs": 1, "device": device, "amp": "bf16" if device == "cuda" else "none",
                  "num_threads": threads, "checkpoint": False},
        "eval": {"clustering": False},
    })
    return Trainer(cfg)


def fixed_batch(s: Setting, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(s.batch, 3, s.image_size, s.image_size, generator=g)
    y = torch.arange(s.classes).repeat_interleave(s.per_class)  # rows (2m, 2m+1) share a class: EE pairs
    return x.to(device), y.to(device)


def plain_loop(trainer: Trainer) -> Callable[[torch.Tensor, torch.Tensor, int], None]:
    """A copy of the trainer's model + loss with a fresh optimiser of the same config."""
    model = copy.deepcopy(trainer.model)
    loss_fn = copy.deepcopy(trainer.loss_fn)
    opt = build_optimizer(trainer.cfg.optimizer, model, loss_fn)
    amp = trainer.autocast
    model.train()
    loss_fn.train()

    def run(x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
        for _ in range(steps):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                emb = model(x)
            loss = loss_fn(emb.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(s: Setting, device: str, label: str, threads: int | None) -> tuple[float, float, float]:
    """(best trainer images/s, best plain images/s, median paired ratio) for one configuration."""
    trainer = make_trainer(s, device, EXPANSIONS[label], threads)
    x, y = fixed_batch(s, trainer.device)
    trainer.loader = FixedBatches(x, y, s.steps)
    plain = plain_loop(trainer)
    arms: dict[str, Callable[[], None]] = {
        "trainer": lambda: trainer.train_epoch(0),
        "plain": lambda: plain(x, y, s.steps),
    }
    for _ in range(s.warmup):  # cuDNN autotuning, allocator warm-up, lazy inits
        for arm in arms.values():
            arm()
    _sync(trainer.device)
    rates: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    for r in range(s.rounds):
        for name in names[r % 2 :] + names[: r % 2]:  # alternate who goes first
            t0 = time.perf_counter()
            arms[name]()
            _sync(trainer.device)
            rates[name].append(s.batch * s.steps / (time.perf_counter() - t0))
    paired = [t / p for t, p in zip(rates["trainer"], rates["plain"])]
    return max(rates["trainer"]), max(rates["plain"]), statistics.median(paired)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run that only proves the script works")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args(argv)
    device = "cpu" if args.smoke else args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        print("bench_throughput: --device cuda but torch sees no CUDA device")
        return 2
    s = SETTINGS["smoke" if args.smoke else device]
    s = Setting(**{**s.__dict__, **{k: v for k, v in (("rounds", args.rounds), ("steps", args.steps)) if v}})
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"bench_throughput: {s.backbone} {s.image_size}px, batch {s.batch} = {s.classes} x {s.per_class}, "
          f"{'bf16' if device == 'cuda' else 'fp32'}, {s.rounds} rounds x {s.steps} steps, on {name}")
    print(f"{'loss':<14}{'trainer img/s':>15}{'plain img/s':>13}{'ratio':>8}{'paired':>8}")
    worst = float("inf")
    for label in EXPANSIONS:
        ours, plain, paired = measure(s, device, label, args.threads)
        worst = min(worst, ours / plain, paired)
        print(f"{label:<14}{ours:>15.1f}{plain:>13.1f}{ours / plain:>8.3f}{paired:>8.3f}")
    verdict = "meets" if worst >= TARGET else "misses"
    print(f"worst ratio {worst:.3f} {verdict} the target >= {TARGET}" + (" (smoke run: not a measurement)" if args.smoke else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Quality check against an independent trainer: this project vs pytorch-metric-learning (PML).

Task: the Omniglot subset (`$DML_DATA/omniglot/images_background_small1`, 5 alphabets)
split by alphabet with `data.train_classes: 0.5` -- 70 training classes, 66 unseen test classes
of 20 drawings each. Every arm trains the same net (`small_conv`, 28 px, 128-d, L2-normalised)
for the same number of P x K batches (default 16 x 4 = 64) with Adam at the same lr, from the
same initial weights (torch seeded identically before `build_model`), and is evaluated on the
same 1,320 test images. Arms, per seed:

    PML        plain PyTorch loop: `losses.MultiSimilarityLoss` + `miners.MultiSimilarityMiner`
               (Wang et al., "Multi-Similarity Loss with General Pair Weighting", CVPR 2019),
               PML's `samplers.MPerClassSampler` and a torchvision (v1, PIL) transform pipeline
    MS         this project's trainer (`Trainer` = `fit()`), `multi_similarity`, no expansion
    MS + EE    the same with Embedding Expansion (Ko & Gu, CVPR 2020), `n_inner_pts: 2`

Why an independent data pipeline by default (``--pml-data independent``) rather than feeding
PML the project's batches: the losses already agree to float precision on identical inputs
(tests/losses/test_loss_pml_crosscheck.py), so sharing the data would re-test only the loss.
By default the PML arm shares nothing with the project but the split's file list, the model
class and `embed_dataset`; what differs is

- batches: PML's `MPerClassSampler` (numpy's global RNG) instead of `PKBatchSampler` -- the
  same P x K distribution (P distinct classes, K distinct images of each), another stream;
- augmentation code: torchvision.transforms v1 on PIL images, written here from the same
  recipe (train RandomResizedCrop(28, scale) without flips; test Resize(32) + CenterCrop(28);
  [0, 1] -> [-1, 1]) instead of the project's transforms.v2 on uint8 tensors (v1 and v2 draw
  the crop parameters identically; the resampling code differs);
- loss, miner, optimiser parameter groups and the loop itself.

A gap between PML and MS beyond seed noise would point at the project's sampler, augmentation,
optimiser set-up or loop. ``--pml-data shared`` is the control that splits that question: the
PML loop then gets the project's datasets and `PKBatchSampler`, seeded as the trainer seeds
them, so it sees the very batches and crops of the MS arm and only the loss, miner and loop
differ; the two arms then track each other run for run, up to the float-rounding drift of 400
chaotic steps. Seed noise is measured, not assumed: mean +- sample std over the seeds, and
per-seed paired differences with a 95% t-interval. With the default 3 seeds that interval
rests on a 3-point std estimate, so a borderline verdict needs more ``--seeds`` to confirm.

Each arm's test embeddings are scored twice: by `dml_core.evaluation.evaluate` (R@1, MAP@R)
and by PML's `AccuracyCalculator` (precision_at_1, mean_average_precision_at_r, k =
"max_bin_count", its default L2 faiss search; the embeddings are unit vectors, so L2 and cosine
rank alike). The largest disagreement over all runs is printed. Arms run interleaved per seed
so that drift in machine load hits all of them alike.

    .venv/bin/python benchmarks/bench_vs_pml.py [--seeds 0 1 2] [--iterations 400] [--smoke]
        [--pml-data independent|shared]

Defaults, chosen for a ~10-minute run on 2 shared cores, not tuned: 400 iterations at Adam lr
1e-3; `small_conv` 4 blocks x 32 channels (the integration test's net, ~2.5x faster than 64
channels on a loaded core); crop scale (0.5, 1) rather than the project's ImageNet-style
(0.2, 1), since a character is a few strokes and a 20 %-area crop can cut most of it away.
Every arm uses the same values, so none of them favours one arm.

Threads default to 1: on a shared 2-core machine two intra-op threads contend with the other
processes and a training step runs several times slower than with one.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from scipy import stats
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from dml_core.config import ExperimentConfig, config_from_dict
from dml_core.data import DMLDataset, PKBatchSampler, build_datasets
from dml_core.data.draws import KeyedBatches, KeyedSamples
from dml_core.data.roots import data_home
from dml_core.data.transforms import eval_resize_size
from dml_core.evaluation import embed_dataset, evaluate
from dml_core.models import build_model
from dml_core.training import Trainer
from dml_core.training.trainer import seed_everything

REPO = Path(__file__).resolve().parents[1]
OMNIGLOT = data_home() / "omniglot" / "images_background_small1"  # $DML_DATA (dml_core.data.roots)
EVAL_BATCH = 256
METRICS = ("recall_at_1", "map_at_r")
# Our metric name -> PML AccuracyCalculator's name for the same quantity.
PML_NAMES = {"recall_at_1": "precision_at_1", "map_at_r": "mean_average_precision_at_r"}
SHOWN = {"recall_at_1": "R@1", "map_at_r": "MAP@R"}


@dataclass(frozen=True)
class Arm:
    label: str
    expansion: Optional[str]  # None = the PML arm; "none" / "ee" = this project's trainer


ARMS = (Arm("PML MS + miner", None), Arm("dml_core MS", "none"), Arm("dml_core MS + EE n=2", "ee"))
PML_ARM, MS_ARM, EE_ARM = (a.label for a in ARMS)


@dataclass
class RunResult:
    arm: str
    seed: int
    ours: dict[str, float]  # dml_core.evaluation.evaluate on this run's test embeddings
    pml: dict[str, float]  # PML's AccuracyCalculator on the same embeddings, under our names
    seconds: float  # the whole arm: data, training and the final evaluation(s)
    fit_metrics: dict[str, float] = field(default_factory=dict)  # the trainer's own evaluation


# ----------------------------------------------------------------------------- configuration


def experiment_config(args: argparse.Namespace, seed: int, expansion: str) -> ExperimentConfig:
    """The one experiment every arm runs; the PML arm reads its settings from here too."""
    return config_from_dict({
        "name": f"bench-vs-pml-{expansion}-s{seed}",
        "seed": seed,
        "data": {
            "name": "omniglot", "root": str(args.root), "image_size": 28, "train_classes": 0.5,
            "crop_scale": list(args.crop_scale),
            "horizontal_flip": False,  # mirrored characters are other characters' shapes
            # In-process loading, as in the PML arm's DataLoaders: worker processes draw the
            # augmentations from other RNG streams, so the "shared" control would no longer be one.
            "num_workers": 0,
            "batch": {"classes_per_batch": args.classes_per_batch, "samples_per_class": args.samples_per_class},
        },
        "model": {"backbone": "small_conv", "conv_width": args.conv_width, "embedding_dim": 128},
        "loss": {"name": "multi_similarity"},  # alpha 2, beta 50, base 0.5, epsilon 0.1 = PML's defaults
        "expansion": {"name": expansion, **({"n_inner_pts": 2} if expansion == "ee" else {})},
        "optimizer": {"name": "adam", "lr": args.lr},
        "train": {"epochs": 1, "iterations_per_epoch": args.iterations, "num_threads": args.threads,
                  "device": "cpu", "checkpoint": False},
        "eval": {"recall_at": [1], "clustering": False},
    })


# ----------------------------------------------------------------------------- scoring


def pml_accuracy(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calc = AccuracyCalculator(include=tuple(PML_NAMES.values()), k="max_bin_count", device=torch.device("cpu"))
    scores = calc.get_accuracy(embeddings, labels)
    return {ours: float(scores[theirs]) for ours, theirs in PML_NAMES.items()}


def score(model: torch.nn.Module, test: Dataset) -> tuple[dict[str, float], dict[str, float]]:
    emb, labels = embed_dataset(model, test, EVAL_BATCH, "cpu")
    ours = evaluate(emb, labels, k=(1,), clustering=False)
    return {m: ours[m] for m in METRICS}, pml_accuracy(emb, labels)


# ----------------------------------------------------------------------------- the two trainers


def run_project(cfg: ExperimentConfig, arm: str) -> RunResult:
    # `fit()` is `Trainer(cfg).run()`; the Trainer is used directly to keep the trained model.
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    result = trainer.run()
    ours, pml = score(trainer.model, trainer.splits.test)
    seconds = time.perf_counter() - t0
    return RunResult(arm, cfg.seed, ours, pml, seconds, {m: result.metrics[m] for m in METRICS})


class PILImages(Dataset):
    """(path, label) pairs read with PIL as 1-channel images, through a torchvision v1 transform."""

    def __init__(self, source: DMLDataset, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        if source.paths is None:
            raise ValueError(f"{source.describe()}: the PML arm needs an image-file dataset")
        self.paths = list(source.paths)
        self.labels = np.asarray(source.labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[index]) as image:
            return self.transform(image.convert("L")), int(self.labels[index])


def pml_transforms(cfg: ExperimentConfig) -> tuple[transforms.Compose, transforms.Compose]:
    size, to_unit = cfg.data.image_size, [transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]
    train = transforms.Compose([transforms.RandomResizedCrop(size, scale=cfg.data.crop_scale), *to_unit])
    test = transforms.Compose([transforms.Resize(eval_resize_size(cfg.data)), transforms.CenterCrop(size), *to_unit])
    return train, test


def pml_data(cfg: ExperimentConfig, mode: str) -> tuple[DataLoader, Dataset]:
    """(train loader, test set) of the PML arm: its own pipeline, or the project's (control)."""
    from pytorch_metric_learning import samplers

    splits = build_datasets(cfg.data)
    batch, iterations = cfg.data.batch, cfg.train.iterations_per_epoch
    if mode == "shared":
        sampler = PKBatchSampler(splits.train.labels, batch.classes_per_batch, batch.samples_per_class,
                                 iterations, seed=cfg.seed)
        # Keyed as the trainer keys them: each draw's crop from (seed, epoch, position).
        return DataLoader(KeyedSamples(splits.train, cfg.seed), batch_sampler=KeyedBatches(sampler)), splits.test
    train_tf, test_tf = pml_transforms(cfg)  # only the split's file lists are reused
    train, test = PILImages(splits.train, train_tf), PILImages(splits.test, test_tf)
    sampler = samplers.MPerClassSampler(train.labels, m=batch.samples_per_class, batch_size=batch.size,
                                        length_before_new_iter=iterations * batch.size)
    return DataLoader(train, batch_size=batch.size, sampler=sampler, drop_last=True), test


def run_pml(cfg: ExperimentConfig, arm: str, data: str = "independent") -> RunResult:
    from pytorch_metric_learning import losses, miners

    t0 = time.perf_counter()
    torch.set_num_threads(cfg.train.num_threads or torch.get_num_threads())
    # The trainer's seeding and order (data, then model): the initial weights match its arms',
    # and MPerClassSampler's draws from numpy's global RNG are seeded too.
    seed_everything(cfg.seed)
    loader, test = pml_data(cfg, data)
    model = build_model(cfg.model, in_channels=1)
    iterations = cfg.train.iterations_per_epoch
    loss_fn, miner = losses.MultiSimilarityLoss(), miners.MultiSimilarityMiner()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)

    model.train()
    steps = 0
    for x, y in loader:
        embeddings = model(x)
        loss = loss_fn(embeddings, y, miner(embeddings, y))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    if steps != iterations:
        raise RuntimeError(f"PML arm ran {steps} batches, expected {iterations}")
    ours, pml = score(model, test)
    seconds = time.perf_counter() - t0
    return RunResult(arm, cfg.seed, ours, pml, seconds)


def run_benchmark(args: argparse.Namespace, log: Callable[[str], None] = print) -> list[RunResult]:
    results = []
    for seed in args.seeds:
        for arm in ARMS:
            if arm.expansion is None:
                res = run_pml(experiment_config(args, seed, "none"), arm.label, args.pml_data)
            else:
                res = run_project(experiment_config(args, seed, arm.expansion), arm.label)
            log(f"  seed {seed}  {arm.label:<22} R@1 {res.ours['recall_at_1']:.4f}  "
                f"MAP@R {res.ours['map_at_r']:.4f}  ({res.seconds:.0f} s)")
            results.append(res)
    return results


# ----------------------------------------------------------------------------- report


def mean_std(values: Sequence[float], signed: bool = False) -> str:
    """`mean ± sample std`, or the mean alone for a single value."""
    text = f"{statistics.fmean(values):{'+' if signed else ''}.4f}"
    return text + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Two-sided t-interval of the mean; (nan, nan) with fewer than two values."""
    if len(values) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    mean = statistics.fmean(values)
    return mean - half, mean + half


def paired(results: list[RunResult], arm_a: str, arm_b: str, metric: str) -> list[float]:
    by_key = {(r.arm, r.seed): r.ours[metric] for r in results}
    seeds = sorted({r.seed for r in results})
    return [by_key[arm_a, s] - by_key[arm_b, s] for s in seeds]


def format_report(results: list[RunResult]) -> str:
    seeds = sorted({r.seed for r in results})
    lines = [f"{'arm':<22} {'R@1':>17} {'MAP@R':>17} {'P@1 (PML calc)':>17} {'MAP@R (PML calc)':>17} {'s/run':>6}"]
    for arm in (a.label for a in ARMS):
        runs = [r for r in results if r.arm == arm]
        cells = [mean_std([r.ours[m] for r in runs]) for m in METRICS]
        cells += [mean_std([r.pml[m] for r in runs]) for m in METRICS]
        lines.append(f"{arm:<22} " + " ".join(f"{c:>17}" for c in cells)
                     + f" {statistics.fmean(r.seconds for r in runs):>6.0f}")

    comparisons = (("EE - no-EE", EE_ARM, MS_ARM), ("dml_core MS - PML", MS_ARM, PML_ARM))
    lines += ["", "paired differences per seed (R@1 / MAP@R):",
              f"{'seed':>6} " + " ".join(f"{name:>24}" for name, _, _ in comparisons)]
    diffs = {(name, m): paired(results, a, b, m) for name, a, b in comparisons for m in METRICS}
    for i, seed in enumerate(seeds):
        cells = [f"{diffs[name, 'recall_at_1'][i]:+.4f} / {diffs[name, 'map_at_r'][i]:+.4f}" for name, _, _ in comparisons]
        lines.append(f"{seed:>6} " + " ".join(f"{c:>24}" for c in cells))
    if len(seeds) > 1:
        lines.append("mean ± std, 95% t-interval:")
        for name, _, _ in comparisons:
            parts = []
            for m in METRICS:
                lo, hi = t_interval(diffs[name, m])
                parts.append(f"{SHOWN[m]} {mean_std(diffs[name, m], signed=True)} [{lo:+.4f}, {hi:+.4f}]")
            lines.append(f"  {name:<18} " + "   ".join(parts))

    gaps = {m: max(abs(r.ours[m] - r.pml[m]) for r in results) for m in METRICS}
    refit = {m: max((abs(r.ours[m] - r.fit_metrics[m]) for r in results if r.fit_metrics), default=0.0) for m in METRICS}
    lines += ["", "evaluator cross-check, max |dml_core evaluate - PML AccuracyCalculator| over all runs: "
              + ", ".join(f"{SHOWN[m]} {gaps[m]:.2e}" for m in METRICS),
              "trainer's own evaluation vs re-embedding the trained model:            "
              + ", ".join(f"{SHOWN[m]} {refit[m]:.2e}" for m in METRICS)]

    # "Worse beyond seed noise": the whole 95% interval of (MS - PML) lies below zero.
    worse = [SHOWN[m] for m in METRICS if t_interval(diffs["dml_core MS - PML", m])[1] < 0]
    verdict = (f"dml_core MS is worse than PML beyond seed noise on {', '.join(worse)}" if worse
               else "dml_core MS is not worse than PML beyond seed noise")
    verdict += f" (paired 95% t-interval over {len(seeds)} seeds)"
    if len(seeds) < 2:
        verdict = "one seed: no noise estimate, no verdict"
    lines.append(f"verdict: {verdict}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iterations", type=int, default=400, help="P x K batches per run")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--classes-per-batch", type=int, default=16, help="P")
    p.add_argument("--samples-per-class", type=int, default=4, help="K (even: EE pairs rows)")
    p.add_argument("--conv-width", type=int, default=32, help="small_conv channels")
    p.add_argument("--crop-scale", type=float, nargs=2, default=(0.5, 1.0), metavar=("MIN", "MAX"))
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--root", type=Path, default=OMNIGLOT, help="Omniglot alphabet tree")
    p.add_argument("--pml-data", choices=("independent", "shared"), default="independent",
                   help="PML arm's data: its own sampler + torchvision transforms, or the project's (control)")
    p.add_argument("--smoke", action="store_true", help="one seed, 3 iterations: checks the script runs")
    args = p.parse_args(argv)
    if args.smoke:
        args.seeds, args.iterations = [0], 3
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds: each seed once, got {' '.join(map(str, args.seeds))}")
    if args.iterations < 1:
        p.error(f"--iterations: must be >= 1, got {args.iterations}")
    if not args.root.is_dir():
        p.error(f"--root: Omniglot folder not found: {args.root}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = experiment_config(args, args.seeds[0], "none")
    splits = build_datasets(cfg.data)
    b = cfg.data.batch
    print(f"Omniglot {args.root.name}, alphabet-disjoint: {splits.train.num_classes} train / "
          f"{splits.test.num_classes} test classes ({len(splits.train)} / {len(splits.test)} images); "
          f"small_conv width {args.conv_width}, 28 px, 128-d; P x K = {b.classes_per_batch} x {b.samples_per_class}; "
          f"{args.iterations} iterations; Adam lr {args.lr}; crop scale {tuple(args.crop_scale)}; "
          f"seeds {' '.join(map(str, args.seeds))}; {args.threads} thread(s); PML data: {args.pml_data}", flush=True)
    results = run_benchmark(args, log=lambda line: print(line, flush=True))
    print()
    print(format_report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

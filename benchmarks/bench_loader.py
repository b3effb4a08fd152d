"""How many DataLoader workers does a trial need to keep a GPU fed?

    .venv/bin/python benchmarks/bench_loader.py [--images 300] [--repeats 3] [--target 300]

Writes ``--images`` JPEGs of CUB's typical size (500 x 375, smooth content plus grain, quality
90: ~30-60 KB each, like photographs) into a temporary folder, then measures, in this one process
with one torch thread -- i.e. what ONE loader worker does:

- ``decode``: PIL open + decode to RGB, nothing else: the model-free ceiling of a worker;
- ``train``: the project's real training path, `ImageListDataset` + `build_transforms` (decode,
  RandomResizedCrop 224 with scale (0.2, 1), horizontal flip, float conversion, ImageNet
  normalisation), item by item as a worker runs it;
- ``loader``: a real `DataLoader` over the same dataset with one worker per usable core and
  batches of 32, as the trainer builds it (aggregate images/s, so the scaling can be read off).

Then: workers = ceil(target / train images/s per worker) to feed ``--target`` images/s (an A10G
training ResNet-50 at 224 px does roughly 300 img/s with AMP), and the trial's CPUs = workers + 1
(the training loop's own core). Each measurement takes the best of ``--repeats`` passes. Runs in
well under a minute on 2 cores.

    .venv/bin/python benchmarks/bench_loader.py --step [CONFIG] [--workers N] [--threads T] [--rounds 6] [--iters 20]

measures the whole training step with real data instead: `Trainer.train_epoch` of CONFIG (default
experiments/omniglot.yaml; its images, P x K sampler, keyed per-sample augmentation, model, loss,
optimiser) against a plain loop that loads the same training images the usual torchvision way --
`torchvision.datasets.ImageFolder` restricted to the split's files, `torchvision.transforms`
(RandomResizedCrop, flip when the config flips, ToTensor, Normalize), a `DataLoader` with the
same worker count over the same P x K batches -- and steps a copy of the trainer's model and loss
with a fresh optimiser of the same config (forward, loss, zero_grad, backward, step). Arms
alternate round by round; the table gives each arm's median ms per iteration and the median of the
per-round paired ratios (project / plain), wall and CPU time: this process's and its loader
workers' (on CPU the workers end with each epoch, so their time is in RUSAGE_CHILDREN when the round
ends), with the load average before and after.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from dml_core.params.datasets import DataConfig  # noqa: E402
from dml_core.data import ImageListDataset, build_transforms  # noqa: E402
from dml_core.data.loading import loader_options, usable_cores  # noqa: E402
from dml_core.config import load_config  # noqa: E402
from dml_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from dml_core.training.optim import build_optimizer  # noqa: E402
from dml_core.training.trainer import Trainer  # noqa: E402

SIZE = (500, 375)  # CUB-200-2011's typical width x height


def write_jpegs(folder: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        # Low-frequency colour field (objects, background) + grain: compresses like a photo.
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(SIZE, Image.BICUBIC)
        grain = rng.normal(0, 12, (SIZE[1], SIZE[0], 3))
        pixels = np.clip(np.asarray(coarse, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(str(path))
    return paths


def best_rate(fn, n: int, repeats: int) -> tuple[float, float]:
    """(wall, CPU) images/s of the fastest of ``repeats`` passes of ``fn`` over ``n`` images. The
    CPU rate (images per second of this process's CPU time) is what one worker does on a core of
    its own, and barely moves when other jobs share the machine; the wall rate does."""
    wall = cpu = math.inf
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
    return n / wall, n / cpu


def cpu_seconds() -> float:
    """User + system seconds of this process and of its reaped children (the loader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def plain_torchvision_step(trainer: Trainer) -> Callable[[int], None]:
    """The usual torchvision pipeline over the trainer's training images and batches, feeding a copy
    of its model and loss with a fresh optimiser; ``run(epoch)`` is one epoch of its iterations."""
    import torchvision
    from torchvision import transforms as T

    cfg, train = trainer.cfg, trainer.splits.train
    steps = [T.RandomResizedCrop(cfg.data.image_size, scale=tuple(cfg.data.crop_scale), antialias=True)]
    if cfg.data.horizontal_flip:
        steps.append(T.RandomHorizontalFlip())
    channels = trainer.in_channels
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if cfg.model.pretrained else ((0.5,) * channels, (0.5,) * channels)
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    mode = "L" if channels == 1 else "RGB"
    folder = torchvision.datasets.ImageFolder(
        os.path.commonpath(train.paths), transform=T.Compose(steps), loader=lambda path: Image.open(path).convert(mode),
        is_valid_file=lambda path: True)
    # The split's own files and labels (ImageFolder's classes are the top folders: alphabets, not characters).
    folder.samples = folder.imgs = [(path, int(label)) for path, label in zip(train.paths, train.labels)]
    folder.targets = [int(label) for label in train.labels]
    loader = DataLoader(folder, batch_sampler=trainer.sampler, num_workers=trainer.num_workers)
    model, loss_fn = copy.deepcopy(trainer.model), copy.deepcopy(trainer.loss_fn)
    optimizer = build_optimizer(cfg.optimizer, model, loss_fn)
    model.train()
    loss_fn.train()

    def run(epoch: int) -> None:
        trainer.sampler.set_epoch(epoch)
        for x, y in loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return run


def whole_step(config: str, workers: int, rounds: int, iters: int, threads: int | None) -> int:
    """`--step`: the trainer's epoch against the plain torchvision loop (see the module doc)."""
    threads_set = [f"train.num_threads={threads}"] if threads else []
    cfg = load_config(config, [f"data.num_workers={workers}", f"train.iterations_per_epoch={iters}",
                               "train.device=cpu", "train.checkpoint=false", *threads_set])
    trainer = Trainer(cfg)
    if getattr(trainer.splits.train, "paths", None) is None:
        print(f"bench_loader --step: {config}: data.name {cfg.data.name} is in memory; pick an image dataset")
        return 2
    plain = plain_torchvision_step(trainer)
    arms: dict[str, Callable[[int], Any]] = {"project": trainer.train_epoch, "plain": plain}
    for arm in arms.values():  # allocator, lazy imports, the files into the page cache
        arm(0)
    wall: dict[str, list[float]] = {name: [] for name in arms}
    cpu: dict[str, list[float]] = {name: [] for name in arms}
    names = list(arms)
    load_before = os.getloadavg()[0]
    for r in range(rounds):
        for name in names[r % 2:] + names[:r % 2]:  # alternate who goes first
            t0, c0 = time.perf_counter(), cpu_seconds()
            arms[name](r + 1)
            wall[name].append((time.perf_counter() - t0) / iters * 1e3)
            cpu[name].append((cpu_seconds() - c0) / iters * 1e3)
    b = cfg.data.batch
    print(f"whole training step, {config}: {cfg.data.name} {cfg.data.image_size}px, batch {b.size} = "
          f"{b.classes_per_batch} x {b.samples_per_class}, {cfg.model.backbone}, {cfg.loss.name} + "
          f"{cfg.expansion.name}, {workers} loader workers, {torch.get_num_threads()} torch threads, "
          f"{rounds} rounds x {iters} iterations; load average (1 min) {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores")
    print(f"{'':<28}{'project ms/it':>14}{'plain ms/it':>13}{'paired ratio':>14}")
    for label, table in (("wall", wall), ("process CPU", cpu)):  # CPU: the workers' included
        paired = statistics.median(p / q for p, q in zip(table["project"], table["plain"]))
        print(f"{label:<28}{statistics.median(table['project']):>14.2f}{statistics.median(table['plain']):>13.2f}"
              f"{paired:>14.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--target", type=float, default=300.0, help="images/s the GPU consumes (A10G, ResNet-50: ~300)")
    p.add_argument("--step", nargs="?", const="experiments/omniglot.yaml", default=None, metavar="CONFIG",
                   help="time the whole training step with real data against a plain torchvision loop")
    p.add_argument("--workers", type=int, default=0, help="--step: DataLoader workers of both arms")
    p.add_argument("--rounds", type=int, default=6, help="--step: timed rounds per arm")
    p.add_argument("--iters", type=int, default=20, help="--step: iterations per round")
    p.add_argument("--threads", type=int, default=None, help="--step: torch threads (default: the config's train.num_threads)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # a loader worker runs with one thread
    if args.step:
        return whole_step(args.step, args.workers, args.rounds, args.iters, args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        paths = write_jpegs(Path(tmp), args.images)
        kb = sum(Path(q).stat().st_size for q in paths) / len(paths) / 1024
        cfg = DataConfig.of(name="image_folder", image_size=224, crop_scale=(0.2, 1.0), horizontal_flip=True)
        transform = build_transforms(cfg, train=True, num_channels=3, pretrained=True, out_channels=3)
        dataset = ImageListDataset(paths, [0] * len(paths), ["c"], num_channels=3, transform=transform)
        assert dataset[0][0].shape == (3, 224, 224)

        def decode() -> None:
            for q in paths:
                with Image.open(q) as image:
                    image.convert("RGB")

        def train() -> None:
            for i in range(len(dataset)):
                dataset[i]

        workers = usable_cores()
        # Persistent workers (as on CUDA) so that the passes time loading, not process start-up.
        options = {**loader_options(workers, torch.device("cpu")), "persistent_workers": True}
        loader = DataLoader(dataset, batch_size=32, **options)

        def load() -> None:
            for _ in loader:
                pass

        load()  # start the workers
        rates = {"decode": best_rate(decode, len(paths), args.repeats),
                 "train": best_rate(train, len(paths), args.repeats)}
        loader_wall = best_rate(load, len(paths), args.repeats)[0]  # its CPU time is in the workers

    need = math.ceil(args.target / rates["train"][1])
    print(f"{args.images} JPEGs {SIZE[0]}x{SIZE[1]} (~{kb:.0f} KB each), best of {args.repeats} passes, "
          f"{workers} usable cores")
    print(f"{'path':<46} {'img/s wall':>10} {'img/CPU-s':>10} {'vs decode':>10}")
    for key, label in (("decode", "decode only (one worker: the ceiling)"),
                       ("train", "decode + RRC 224 + flip + normalise (one worker)")):
        wall, cpu = rates[key]
        print(f"{label:<46} {wall:>10.1f} {cpu:>10.1f} {cpu / rates['decode'][1]:>10.2f}")
    print(f"{f'DataLoader, {workers} workers, batch 32':<46} {loader_wall:>10.1f} {'':>10} "
          f"{'':>10}  ({loader_wall / rates['train'][0]:.2f} x one worker's wall rate)")
    print(f"to feed {args.target:g} img/s (A10G, ResNet-50): {need} loader workers at "
          f"{rates['train'][1]:.0f} img/s each -> resources_per_trial.cpu >= {need + 1} (workers + the training loop)")
    return 0



if __name__ == "__main__":
    raise SystemExit(main())

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
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from dml_core.params.datasets import DataConfig  # noqa: E402
from dml_core.data import ImageListDataset, build_transforms  # noqa: E402
from dml_core.data.loading import loader_options, usable_cores  # noqa: E402

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--target", type=float, default=300.0, help="images/s the GPU consumes (A10G, ResNet-50: ~300)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # a loader worker runs with one thread

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

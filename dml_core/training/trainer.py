"""`fit()`: train and evaluate one experiment on CPU or one GPU.

The trainer knows nothing of sweeps: a sweep drives it through the `report` callback, called
after every evaluation with the metrics and the checkpoint just written.
"""
from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from dml_core.config import ExperimentConfig, dump_config
from dml_core.data import DatasetSplits, PKBatchSampler, build_datasets
from dml_core.data.draws import KeyedBatches, KeyedSamples
from dml_core.data.loading import loader_options, resolve_num_workers
from dml_core.evaluation import embed_dataset, evaluate
from dml_core.evaluation.names import direction
from dml_core.losses import build_loss
from dml_core.io import DirectoryLock, make_dir
from dml_core.models import build_model
from dml_core.training.checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    METRICS_NAME,
    checkpoint_file,
    load_checkpoint,
    restore,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_json,
)
from dml_core.training.features import cached_feature_splits
from dml_core.training.optim import build_optimizer, build_scheduler

log = logging.getLogger("dml_core.train")

ReportFn = Callable[[dict[str, float], int, Optional[Path]], None]


class NonFiniteLossError(FloatingPointError):
    """The loss or the embeddings became NaN or infinite (the model diverged); the run stops rather
    than train or evaluate on garbage, and a sweep does not retry it."""


@dataclass
class FitResult:
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    out_dir: Optional[Path] = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def select_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device: cuda requested but no CUDA device is available")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _require_finite(embeddings: np.ndarray, split: str) -> None:
    # A diverged model (weights overflowed in the last step) yields NaN embeddings with a finite
    # last loss: the same fault as a NaN loss, not an evaluation error to retry.
    bad = int((~np.isfinite(embeddings).all(axis=1)).sum())
    if bad:
        raise NonFiniteLossError(f"non-finite embeddings: {bad} of {len(embeddings)} {split} embeddings are NaN or "
                                 "infinite (the model diverged; lower optimizer.lr or set train.grad_clip)")


def epoch_iterations(cfg: ExperimentConfig, train_labels: np.ndarray) -> int:
    """Batches per epoch from `train.epoch_length`: one pass worth of images, or (EE's
    reference) every training class once with K images."""
    batch = cfg.data.batch
    if cfg.train.epoch_length == "classes":
        return max(1, len(np.unique(train_labels)) * batch.samples_per_class // batch.size)
    return max(1, len(train_labels) // batch.size)


def clamp_gradients(optimizer: torch.optim.Optimizer, value: float) -> None:
    """Clamp every gradient the optimizer steps (model and loss parameters) to [-value, value]."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                p.grad.clamp_(-value, value)


def _is_better(value: float, best: Optional[float], metric: str) -> bool:
    return best is None or (value < best if direction(metric) == "min" else value > best)


class Trainer:
    """One experiment's state: data, model, loss, optimizer, and the loop over epochs."""

    # Steps between host read-backs of the loss on CUDA (see `train_epoch`).
    LOSS_CHECK_EVERY_CUDA = 50

    def __init__(self, cfg: ExperimentConfig, out_dir: Optional[Path] = None, report: Optional[ReportFn] = None,
                 progress: bool = False) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.report = report
        self.progress = progress
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        seed_everything(cfg.seed)
        self.device = select_device(cfg.train.device)

        out_channels = 3 if cfg.model.rgb else None
        self.splits: DatasetSplits = build_datasets(cfg.data, pretrained=cfg.model.pretrained, out_channels=out_channels)
        self.in_channels = out_channels or self.splits.num_channels
        self.model = build_model(cfg.model, self.in_channels).to(self.device)
        self.recall_at = cfg.recall_at

        # Frozen backbone + cache: every trial of a sweep trains only the head on stored features.
        self.cached = cfg.data.cache_features
        if self.cached:
            if not cfg.model.freeze_backbone:
                raise ValueError("data.cache_features: needs model.freeze_backbone: true (features of a trained backbone change every step)")
            self.splits = cached_feature_splits(self.splits, self.model, cfg, self.device)

        self.autocast = self.device.type == "cuda" and cfg.train.amp == "bf16"
        # NHWC is cuDNN's fast layout for bf16 convolutions (tensor cores); elsewhere, and for
        # cached 2-D features, the default layout is kept.
        self.memory_format = torch.channels_last if self.autocast and not self.cached else torch.preserve_format
        if self.memory_format is torch.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.loss_check_every = self.LOSS_CHECK_EVERY_CUDA if self.device.type == "cuda" else 1

        num_classes = int(self.splits.train.labels.max()) + 1
        self.loss_fn = build_loss(
            cfg.loss, num_classes=num_classes, embedding_dim=cfg.model.embedding_dim, expansion=cfg.expansion,
        ).to(self.device)
        self.optimizer = build_optimizer(cfg.optimizer, self.model, self.loss_fn)

        batch = cfg.data.batch
        # data.num_workers: null = auto (dml_core.data.loading).
        self.num_workers = resolve_num_workers(cfg.data.num_workers, self.splits.train)
        self.iterations = cfg.train.iterations_per_epoch or epoch_iterations(cfg, self.splits.train.labels)
        self.scheduler = build_scheduler(cfg.scheduler, self.optimizer, cfg.train.epochs, self.iterations, cfg.optimizer)
        self.sampler = PKBatchSampler(
            self.splits.train.labels, batch.classes_per_batch, batch.samples_per_class, self.iterations, seed=cfg.seed
        )
        if self.cached:  # features taken with the test transform: no augmentation, nothing random to key
            self.loader = DataLoader(self.splits.train, batch_sampler=self.sampler, **loader_options(0, self.device))
        else:
            # Each sample's augmentation is seeded from (seed, epoch, draw), so the worker count
            # (hence core count and run mode) changes no number (dml_core.data.draws). The loader's
            # own generator keeps it off the training stream, which it would otherwise draw a worker
            # base seed from per epoch, or once with persistent workers.
            self.loader = DataLoader(KeyedSamples(self.splits.train, cfg.seed), batch_sampler=KeyedBatches(self.sampler),
                                     generator=torch.Generator().manual_seed(cfg.seed),
                                     **loader_options(self.num_workers, self.device))

        self.start_epoch = 0
        self.history: list[dict[str, float]] = []
        self.best: dict[str, float] = {}

    # ------------------------------------------------------------------ state

    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "model": self.model.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "config": self.cfg.to_dict(),
            "in_channels": self.in_channels,
            "history": self.history,
            "best": self.best,
            "rng": rng_state(),
        }

    def load_state(self, path: str | Path) -> None:
        ckpt = load_checkpoint(path, map_location=self.device)
        path = checkpoint_file(path)
        restore(path, "model", self.model.load_state_dict, ckpt["model"])
        restore(path, "loss (proxies)", self.loss_fn.load_state_dict, ckpt["loss"])
        restore(path, "optimizer state", self.optimizer.load_state_dict, ckpt["optimizer"])
        restore(path, "schedule", self.scheduler.load_state_dict, ckpt["scheduler"])
        self.history = list(ckpt.get("history", []))
        self.best = dict(ckpt.get("best", {}))
        self.start_epoch = int(ckpt["epoch"]) + 1
        set_rng_state(ckpt["rng"])

    # ------------------------------------------------------------------ loop

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cached:
            return self.model.head_forward(x)
        return self.model(x)

    def train_epoch(self, epoch: int) -> float:
        """One epoch of optimiser steps; returns the mean training loss.

        The losses are read back to the host every `loss_check_every` steps (1 on CPU, where it
        costs nothing; `LOSS_CHECK_EVERY_CUDA` on CUDA, where `loss.item()` would stall the
        queue every step) and at the end of the epoch. A non-finite loss raises
        `NonFiniteLossError` naming its exact iteration; on CUDA up to `loss_check_every - 1`
        further steps may already have run on the corrupted weights, which the raise discards.
        """
        self.model.train()
        self.loss_fn.train()
        self.loss_fn.set_epoch(epoch, self.cfg.train.epochs)
        self.sampler.set_epoch(epoch)
        total, count = 0.0, 0
        pending: list[torch.Tensor] = []  # detached losses of steps not yet read back
        for it, (x, y) in enumerate(self.loader):
            self.scheduler.apply(epoch * self.iterations + it)
            x = x.to(self.device, non_blocking=True, memory_format=self.memory_format)
            y = y.to(self.device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                emb = self._forward(x)
            # bf16 autocast output back to float32; a float32 / float64 model's is kept as is.
            loss = self.loss_fn(emb.float() if emb.dtype in (torch.float16, torch.bfloat16) else emb, y)
            pending.append(loss.detach())
            if len(pending) == self.loss_check_every:
                total += self._read_losses(pending, epoch, it + 1 - len(pending))
                pending = []
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.train.model_grad_scale != 1.0:
                for p in self.model.parameters():
                    if p.grad is not None:
                        p.grad.mul_(self.cfg.train.model_grad_scale)
            if self.cfg.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
            if self.cfg.train.grad_clamp:
                clamp_gradients(self.optimizer, self.cfg.train.grad_clamp)
            self.optimizer.step()
            count += 1
        if pending:
            total += self._read_losses(pending, epoch, count - len(pending))
        return total / max(count, 1)

    @staticmethod
    def _read_losses(losses: list[torch.Tensor], epoch: int, first_it: int) -> float:
        """Sum of the given steps' losses (one host sync); raise on the first non-finite one."""
        values = torch.stack(losses).cpu().tolist()
        for offset, value in enumerate(values):
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"non-finite loss ({value}) at epoch {epoch + 1}, iteration {first_it + offset + 1}"
                    + (f" (losses checked every {len(values)} iterations)" if len(values) > 1 else "")
                )
        return math.fsum(values)  # exact: one value sums to itself, as the per-step CPU path needs

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        bs = self.cfg.data.eval_batch_size
        fwd = self.model.head if self.cached else self.model
        kwargs = dict(k=self.recall_at, clustering=self.cfg.eval.clustering, kmeans_iters=self.cfg.eval.kmeans_iters,
                      seed=self.cfg.seed, backend=self.cfg.eval.knn_backend, device=self.device)
        if self.splits.test is not None:
            emb, labels = embed_dataset(fwd, self.splits.test, bs, self.device, self.num_workers)
            _require_finite(emb, "test")
            return evaluate(emb, labels, **kwargs)
        q, ql = embed_dataset(fwd, self.splits.query, bs, self.device, self.num_workers)
        g, gl = embed_dataset(fwd, self.splits.gallery, bs, self.device, self.num_workers)
        _require_finite(q, "query")
        _require_finite(g, "gallery")
        return evaluate(q, ql, g, gl, **kwargs)

    def _gpu_memory(self) -> dict[str, float]:
        """On CUDA, ``gpu_mem_peak_mib``: this process' peak allocated GPU memory so far (what a
        fractional-GPU trial must fit in; the CUDA context adds a few hundred MiB on top)."""
        if self.device.type != "cuda":
            return {}
        return {"gpu_mem_peak_mib": torch.cuda.max_memory_allocated(self.device) / 2**20}

    def _write_metrics(self, status: str, **extra: Any) -> None:
        if self.out_dir is None:
            return
        final = self.history[-1] if self.history else {}
        write_json(self.out_dir / METRICS_NAME, {
            "status": status, "name": self.cfg.name, "primary_metric": self.cfg.eval.primary_metric,
            "final": final, "best": self.best, "history": self.history, **extra,
        })

    def run(self) -> FitResult:
        cfg = self.cfg
        primary = cfg.eval.primary_metric
        if self.out_dir is not None:
            make_dir(self.out_dir)
            dump_config(cfg, self.out_dir / CONFIG_NAME)
            self._write_metrics("running")
        started = time.perf_counter()
        try:
            for epoch in range(self.start_epoch, cfg.train.epochs):
                t0 = time.perf_counter()
                train_loss = self.train_epoch(epoch)
                last = epoch == cfg.train.epochs - 1
                skip = (epoch + 1) % cfg.train.eval_every or epoch + 1 < cfg.train.eval_from_epoch
                if skip and not last:
                    self._progress(epoch, train_loss, None, time.perf_counter() - t0)
                    continue
                metrics = {"epoch": epoch + 1, "loss": train_loss, **self.evaluate(),
                           "time_s": time.perf_counter() - started, **self._gpu_memory()}
                self.history.append(metrics)
                if _is_better(metrics[primary], self.best.get(primary), primary):
                    self.best = dict(metrics)
                ckpt_path = None
                if self.out_dir is not None and cfg.train.checkpoint:
                    ckpt_path = self.out_dir / CHECKPOINT_NAME
                    save_checkpoint(ckpt_path, **self.state_dict(epoch))
                self._write_metrics("running")
                self._progress(epoch, train_loss, metrics, time.perf_counter() - t0)
                if self.report is not None:
                    self.report(metrics, epoch + 1, ckpt_path)
        except BaseException as e:
            self._write_metrics("failed", error=f"{type(e).__name__}: {e}")
            raise
        self._write_metrics("finished")
        return FitResult(metrics=self.history[-1] if self.history else {}, history=self.history, best=self.best,
                         out_dir=self.out_dir)

    def _progress(self, epoch: int, loss: float, metrics: Optional[dict[str, float]], seconds: float) -> None:
        if not self.progress:
            return
        line = f"epoch {epoch + 1}/{self.cfg.train.epochs}  loss {loss:.4f}"
        if metrics:
            shown = [k for k in metrics if k.startswith("recall_at_")][:2] + ["map_at_r", "nmi"]
            line += "  " + "  ".join(f"{k} {metrics[k]:.4f}" for k in shown if k in metrics)
        print(f"{line}  ({seconds:.1f}s)", flush=True)


def fit(cfg: ExperimentConfig, *, out_dir: Optional[str | Path] = None, report: Optional[ReportFn] = None,
        resume: Optional[str | Path] = None, progress: bool = False) -> FitResult:
    """Train and evaluate one experiment; `report(metrics, epoch, checkpoint)` after each eval.

    `resume` is a checkpoint file (or a run directory holding `checkpoint.pt`) to continue from:
    model, loss (proxies), optimizer, schedule, history and RNG states are restored.
    """
    if out_dir is None:
        return _fit(cfg, None, report, resume, progress)
    out_dir = Path(out_dir)
    # Owned before anything is read or written, so a second run on the same folder stops at once.
    with DirectoryLock(out_dir):
        if resume is None and (out_dir / METRICS_NAME).exists():
            raise ValueError(f"{out_dir}: already holds a run; resume it (--resume {out_dir}) or choose another "
                             "output directory")
        return _fit(cfg, out_dir, report, resume, progress)


def _fit(cfg: ExperimentConfig, out_dir: Optional[Path], report: Optional[ReportFn], resume: Optional[str | Path],
         progress: bool) -> FitResult:
    trainer = Trainer(cfg, out_dir=out_dir, report=report, progress=progress)
    if resume is not None:
        trainer.load_state(resume)
    return trainer.run()

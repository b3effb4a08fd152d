"""Train / test image transforms (torchvision.transforms.v2: PIL images and CHW tensors alike).

The standard DML recipe (e.g. Proxy Anchor, Kim et al. CVPR 2020; SEE, Le & Woo PAKDD 2024):
train = RandomResizedCrop(image_size, scale=crop_scale) + horizontal flip; test =
Resize(image_size * 256/224) + CenterCrop(image_size) -- 256 -> 224 for ImageNet backbones.
EE's reference (Ko & Gu, CVPR 2020) instead translates (`random_translation`) and tests on the
image resized to a square (`resize_square`); `data.train_transform` / `data.test_transform` pick.

The steps are torchvision.transforms.v2 objects, but `StepPipeline` runs them itself: a v2
transform's call flattens its input, re-wraps tensors as tv_tensors and looks its kernel up per
type, ~170 us of a 28 px Omniglot sample's ~450 us (`benchmarks/bench_loader.py --step` and
docs/performance.md). Each step's torchvision kernel is called with the step's own parameters,
drawing the same random numbers in the same order, so the output is the same tensor bit for bit
(tests/data/test_data_transforms.py compares it with `v2.Compose` on every recipe).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from dml_core.params.datasets import DataConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_resize_size(cfg: DataConfig) -> int:
    return cfg.resize_size if cfg.resize_size is not None else round(cfg.image_size * 256 / 224)


class RandomTranslation(torch.nn.Module):
    """EE's reference train geometry (its Random2DTranslation): with probability 1/2 resize to
    size x size; otherwise resize to round(1.125 size) square and crop size x size at a uniformly
    random offset. No scale augmentation beyond that 12.5 %."""

    def __init__(self, size: int, interpolation: InterpolationMode = InterpolationMode.BILINEAR) -> None:
        super().__init__()
        self.size, self.interpolation = size, interpolation

    def forward(self, img):  # tv_tensors.Image
        if torch.rand(()) < 0.5:  # torch's RNG, like the v2 transforms (seeded per worker)
            return v2.functional.resize(img, [self.size, self.size], self.interpolation, antialias=True)
        big = round(self.size * 1.125)
        img = v2.functional.resize(img, [big, big], self.interpolation, antialias=True)
        top, left = (int(v) for v in torch.randint(0, big - self.size + 1, (2,)))
        return v2.functional.crop(img, top, left, self.size, self.size)


def _flip(t: v2.RandomHorizontalFlip, x: torch.Tensor) -> torch.Tensor:
    # v2's _RandomApplyTransform: one torch.rand(1) per call, the flip below p.
    return x if torch.rand(1) >= t.p else F.horizontal_flip(x)


def _resized_crop(t: v2.RandomResizedCrop, x: torch.Tensor) -> torch.Tensor:
    return F.resized_crop(x, **t.make_params([x]), size=t.size, interpolation=t.interpolation, antialias=t.antialias)


# v2 step type -> its `transform` written as a direct kernel call on a plain (C, H, W) tensor.
_KERNEL_STEPS: dict[type, Callable[[Any, torch.Tensor], torch.Tensor]] = {
    v2.ToImage: lambda t, x: F.to_image(x).as_subclass(torch.Tensor),
    v2.RandomResizedCrop: _resized_crop,
    v2.RandomHorizontalFlip: _flip,
    v2.Resize: lambda t, x: F.resize(x, t.size, interpolation=t.interpolation, max_size=t.max_size, antialias=t.antialias),
    v2.CenterCrop: lambda t, x: F.center_crop(x, output_size=t.size),
    v2.ToDtype: lambda t, x: F.to_dtype(x, dtype=t.dtype, scale=t.scale),
    v2.RGB: lambda t, x: F.grayscale_to_rgb(x),
    v2.Grayscale: lambda t, x: F.rgb_to_grayscale(x, num_output_channels=t.num_output_channels),
    v2.Normalize: lambda t, x: F.normalize(x, mean=t.mean, std=t.std, inplace=t.inplace),
    v2.ToPureTensor: lambda t, x: x.as_subclass(torch.Tensor),
}


class StepPipeline(v2.Compose):
    """`v2.Compose` of single-image steps that calls each known step's kernel directly (see the
    module doc); any other step (`RandomTranslation`, a user's transform) is called as it is."""

    def forward(self, *inputs: Any) -> Any:
        if len(inputs) != 1:
            return super().forward(*inputs)
        x = inputs[0]
        for t in self.transforms:
            step = _KERNEL_STEPS.get(type(t))
            x = t(x) if step is None else step(t, x)
        return x


def build_transforms(
    cfg: DataConfig, *, train: bool, num_channels: int, pretrained: bool, out_channels: int
) -> StepPipeline:
    """PIL image or (C, H, W) tensor with ``num_channels`` -> float (out_channels, S, S) tensor.

    Grayscale data is repeated to 3 channels when the backbone wants RGB (``out_channels=3``);
    normalisation uses ImageNet statistics for pretrained backbones, else maps [0, 1] to [-1, 1].
    """
    if num_channels not in (1, 3) or out_channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got num_channels={num_channels}, out_channels={out_channels}")
    if pretrained and out_channels != 3:
        raise ValueError(f"model.pretrained: ImageNet backbones take 3 channels, got out_channels={out_channels}")
    steps: list = [v2.ToImage()]  # PIL -> uint8 tv_tensors.Image; a tensor is wrapped as is
    mode = InterpolationMode.BICUBIC if cfg.interpolation == "bicubic" else InterpolationMode.BILINEAR
    if train:
        if cfg.train_transform == "random_translation":
            steps.append(RandomTranslation(cfg.image_size, mode))
        else:
            steps.append(v2.RandomResizedCrop(cfg.image_size, scale=cfg.crop_scale, interpolation=mode, antialias=True))
        if cfg.horizontal_flip:
            steps.append(v2.RandomHorizontalFlip())
    elif cfg.test_transform == "resize_square":
        steps.append(v2.Resize([cfg.image_size, cfg.image_size], interpolation=mode, antialias=True))
    else:
        steps += [v2.Resize(eval_resize_size(cfg), interpolation=mode, antialias=True), v2.CenterCrop(cfg.image_size)]
    steps.append(v2.ToDtype(torch.float32, scale=True))  # uint8 -> [0, 1]; float input kept
    if num_channels != out_channels:
        steps.append(v2.RGB() if out_channels == 3 else v2.Grayscale(num_output_channels=1))
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if pretrained else ((0.5,) * out_channels, (0.5,) * out_channels)
    steps += [v2.Normalize(mean, std), v2.ToPureTensor()]
    return StepPipeline(steps)

"""build_transforms: shapes, channels and normalisation for PIL and tensor inputs."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from dml_core.params.datasets import DataConfig
from dml_core.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms, eval_resize_size


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("out_channels", [1, 3])
def test_grayscale_pil_and_tensor_inputs(train: bool, out_channels: int) -> None:
    t = build_transforms(DataConfig.of(image_size=20), train=train, num_channels=1, pretrained=False, out_channels=out_channels)
    for image in (Image.new("L", (105, 90), 255), torch.ones(1, 8, 8)):
        out = t(image)
        assert type(out) is torch.Tensor and out.dtype == torch.float32
        assert out.shape == (out_channels, 20, 20)
        assert torch.allclose(out, torch.ones_like(out))  # white -> (1 - 0.5) / 0.5
        if out_channels == 3:
            assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_rgb_pretrained_uses_imagenet_statistics() -> None:
    t = build_transforms(DataConfig.of(image_size=16), train=False, num_channels=3, pretrained=True, out_channels=3)
    out = t(Image.new("RGB", (40, 30), (255, 0, 255)))
    expected = [(v - m) / s for v, m, s in zip((1.0, 0.0, 1.0), IMAGENET_MEAN, IMAGENET_STD)]
    assert out.shape == (3, 16, 16)
    assert torch.allclose(out.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-5)


def test_test_transform_resizes_then_centre_crops() -> None:
    assert eval_resize_size(DataConfig.of(image_size=224)) == 256
    assert eval_resize_size(DataConfig.of(image_size=224, resize_size=240)) == 240
    # A left-black / right-white image: resize 32 -> crop 28 keeps the centre, so the crop's
    # column means step from -1 to +1 exactly in the middle.
    image = torch.zeros(1, 64, 64)
    image[..., 32:] = 1.0
    out = build_transforms(DataConfig.of(image_size=28), train=False, num_channels=1, pretrained=False, out_channels=1)(image)
    columns = out[0].mean(dim=0)
    assert torch.allclose(columns[:13], torch.full((13,), -1.0)) and torch.allclose(columns[15:], torch.ones(13))


def test_train_transform_is_random_and_flip_can_be_disabled() -> None:
    torch.manual_seed(0)
    image = torch.rand(1, 32, 32)
    t = build_transforms(DataConfig.of(image_size=16), train=True, num_channels=1, pretrained=False, out_channels=1)
    assert not torch.equal(t(image), t(image))
    # scale (1, 1) and no flip: the only randomness left is the aspect ratio of a full crop.
    fixed = DataConfig.of(image_size=16, crop_scale=(1.0, 1.0), horizontal_flip=False)
    steps = build_transforms(fixed, train=True, num_channels=1, pretrained=False, out_channels=1).transforms
    names = [type(s).__name__ for s in steps]
    assert "RandomHorizontalFlip" not in names and "RandomResizedCrop" in names


def test_rgb_to_one_channel_and_bad_combinations() -> None:
    t = build_transforms(DataConfig.of(image_size=8), train=False, num_channels=3, pretrained=False, out_channels=1)
    assert t(Image.new("RGB", (10, 10), (255, 255, 255))).shape == (1, 8, 8)
    with pytest.raises(ValueError, match="model.pretrained"):
        build_transforms(DataConfig.of(), train=False, num_channels=1, pretrained=True, out_channels=1)
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        build_transforms(DataConfig.of(), train=False, num_channels=2, pretrained=False, out_channels=3)


RECIPES = [
    dict(train=True),
    dict(train=True, horizontal_flip=False, interpolation="bicubic"),
    dict(train=True, train_transform="random_translation"),
    dict(train=False),
    dict(train=False, test_transform="resize_square", interpolation="bicubic"),
]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: "-".join(f"{k}={v}" for k, v in r.items()))
@pytest.mark.parametrize(("num_channels", "out_channels", "pretrained"), [(1, 1, False), (1, 3, True), (3, 1, False), (3, 3, True)])
def test_pipeline_equals_v2_compose_bit_for_bit(recipe: dict, num_channels: int, out_channels: int, pretrained: bool) -> None:
    """The direct kernel calls give v2.Compose's tensors exactly, drawing the same random numbers."""
    fields = {k: v for k, v in recipe.items() if k != "train"}
    t = build_transforms(DataConfig.of(image_size=24, **fields), train=recipe["train"], num_channels=num_channels,
                         pretrained=pretrained, out_channels=out_channels)
    reference = v2.Compose(t.transforms)
    generator = torch.Generator().manual_seed(1)
    mode = "L" if num_channels == 1 else "RGB"
    pixels = torch.randint(0, 256, (num_channels, 61, 47), dtype=torch.uint8, generator=generator)
    images = [Image.fromarray(pixels.permute(1, 2, 0).squeeze(-1).numpy(), mode), pixels, pixels.float() / 255]
    for image in images:
        for seed in range(8):
            torch.manual_seed(seed)
            ours, next_ours = t(image), torch.rand(1)
            torch.manual_seed(seed)
            theirs, next_theirs = reference(image), torch.rand(1)
            assert type(ours) is torch.Tensor and torch.equal(ours, theirs)
            assert torch.equal(next_ours, next_theirs)  # as many draws: the next sample's stream is unchanged

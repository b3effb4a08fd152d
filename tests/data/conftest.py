"""Writers for tiny on-disk copies of each dataset layout (real file formats, a few pixels each)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image


def _write_image(path: Path, seed: int, mode: str = "RGB", size: tuple[int, int] = (6, 5)) -> Path:
    """A small random image; the format follows the suffix (.png, .jpg, ...)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 1 if mode == "L" else 3
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path)
    return path


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _make_class_tree(root: Path, counts: dict[str, int], suffix: str = ".png", mode: str = "RGB") -> Path:
    """``root/<class>/<i><suffix>``; class names may contain '/' for nested trees."""
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            _write_image(root / name / f"{i:02d}{suffix}", seed=100 * c + i, mode=mode)
    return root


def _make_cub(root: Path, num_classes: int = 4, per_class: int = 2) -> Path:
    """``root/CUB_200_2011/`` as the official tgz extracts; returns the CUB_200_2011 folder."""
    cub = root / "CUB_200_2011"
    classes, images, labels = [], [], []
    image_id = 0
    for c in range(1, num_classes + 1):
        name = f"{c:03d}.Bird_{c}"
        classes.append(f"{c} {name}")
        for j in range(per_class):
            image_id += 1
            rel = f"{name}/Bird_{c}_{j:04d}_{image_id}.jpg"
            _write_image(cub / "images" / rel, seed=image_id)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
    _write_lines(cub / "classes.txt", classes)
    _write_lines(cub / "images.txt", images)
    _write_lines(cub / "image_class_labels.txt", labels)
    _write_lines(cub / "train_test_split.txt", [f"{i} {i % 2}" for i in range(1, image_id + 1)])
    return cub


def _make_cars(root: Path, num_classes: int = 4, per_class: int = 2) -> Path:
    """``cars_annos.mat`` (struct array like the original) and ``car_ims/%06d.jpg``."""
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    n = num_classes * per_class
    annotations = np.zeros((1, n), dtype=[(f, "O") for f in fields])
    for i in range(n):
        rel = f"car_ims/{i + 1:06d}.jpg"
        _write_image(root / rel, seed=i)
        cls = i // per_class + 1
        annotations[0, i] = (rel, 1, 1, 5, 4, cls, i % 2)
    class_names = np.empty((1, num_classes), dtype=object)
    for c in range(num_classes):
        class_names[0, c] = f"Make Model {c + 1} 2012"
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": annotations, "class_names": class_names})
    return root


def _make_sop(root: Path, train_classes: int = 3, test_classes: int = 3, per_class: int = 2) -> Path:
    """``Stanford_Online_Products/Ebay_{train,test}.txt`` + images; returns that folder."""
    sop = root / "Stanford_Online_Products"
    image_id, class_id = 0, 0
    for split, n_classes in (("train", train_classes), ("test", test_classes)):
        lines = ["image_id class_id super_class_id path"]
        for _ in range(n_classes):
            class_id += 1
            for j in range(per_class):
                image_id += 1
                rel = f"bicycle_final/{111085122870 + class_id}_{j}.JPG"
                _write_image(sop / rel, seed=image_id)
                lines.append(f"{image_id} {class_id} 1 {rel}")
        _write_lines(sop / f"Ebay_{split}.txt", lines)
    return sop


def _make_inshop(root: Path, train_items: int = 3, test_items: int = 3, gallery_only: int = 1) -> Path:
    """``list_eval_partition.txt`` + ``img/``: per test item 1 query and 2 gallery images, plus
    ``gallery_only`` items that appear in the gallery only (distractors)."""
    rows: list[str] = []

    def add(item: int, view: int, status: str) -> None:
        name = f"img/WOMEN/Dresses/id_{item:08d}/{view:02d}_1_front.jpg"
        _write_image(root / name, seed=item * 10 + view)
        rows.append(f"{name} id_{item:08d} {status}")

    item = 0
    for _ in range(train_items):
        item += 1
        add(item, 1, "train")
        add(item, 2, "train")
    for _ in range(test_items):
        item += 1
        add(item, 1, "query")
        add(item, 2, "gallery")
        add(item, 3, "gallery")
    for _ in range(gallery_only):
        item += 1
        add(item, 1, "gallery")
    _write_lines(root / "list_eval_partition.txt", [str(len(rows)), "image_name item_id evaluation_status", *rows])
    return root


# Fixtures hand out the writers so test modules need not import this conftest.
@pytest.fixture
def write_image() -> Callable[..., Path]:
    return _write_image


@pytest.fixture
def make_class_tree() -> Callable[..., Path]:
    return _make_class_tree


@pytest.fixture
def make_cub() -> Callable[..., Path]:
    return _make_cub


@pytest.fixture
def make_cars() -> Callable[..., Path]:
    return _make_cars


@pytest.fixture
def make_sop() -> Callable[..., Path]:
    return _make_sop


@pytest.fixture
def make_inshop() -> Callable[..., Path]:
    return _make_inshop

"""DMLDataset invariants: contiguous labels, class selection, transforms, decode errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dml_core.data import ArrayDataset, DatasetError, ImageListDataset


def _array_dataset(labels: list[int]) -> ArrayDataset:
    images = torch.arange(len(labels), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    return ArrayDataset(images, labels, [f"c{c}" for c in range(max(labels) + 1)])


def test_labels_are_int64_contiguous_and_items_carry_them() -> None:
    ds = _array_dataset([0, 1, 1, 2, 0])
    assert ds.labels.dtype == np.int64 and ds.labels.flags["C_CONTIGUOUS"]
    assert ds.num_channels == 1 and ds.paths is None and len(ds) == 5
    image, label = ds[3]
    assert label == 2 and isinstance(label, int)
    assert torch.equal(image, torch.full((1, 2, 2), 3.0))


def test_gap_in_labels_is_rejected() -> None:
    images = torch.zeros(3, 1, 2, 2)
    with pytest.raises(DatasetError, match="labels must cover 0..2"):
        ArrayDataset(images, [0, 2, 2], ["a", "b", "c"])


def test_select_classes_reindexes_in_given_order_and_keeps_samples() -> None:
    ds = _array_dataset([0, 1, 2, 3, 2, 1])
    sub = ds.select_classes([2, 1])
    assert sub.class_names == ["c2", "c1"]
    assert sub.labels.tolist() == [1, 0, 0, 1]  # samples 1, 2, 4, 5 in original order
    assert [float(sub[i][0][0, 0, 0]) for i in range(len(sub))] == [1.0, 2.0, 4.0, 5.0]
    assert ds.num_classes == 4 and len(ds) == 6  # the original is untouched


def test_subset_classes_keeps_first_n() -> None:
    ds = _array_dataset([3, 0, 1, 2, 0])
    sub = ds.subset_classes(2)
    assert sub.class_names == ["c0", "c1"] and sorted(sub.labels.tolist()) == [0, 0, 1]
    with pytest.raises(DatasetError, match="cannot keep 5 classes"):
        ds.subset_classes(5)


def test_rows_keep_the_label_space() -> None:
    ds = _array_dataset([0, 1, 2, 2])
    view = ds.rows([2, 3])
    assert view.labels.tolist() == [2, 2] and view.class_names == ds.class_names


def test_with_transform_is_a_shallow_copy() -> None:
    ds = _array_dataset([0, 1])
    doubled = ds.with_transform(lambda x: x * 2)
    assert torch.equal(doubled[1][0], ds[1][0] * 2)
    assert ds.transform is None and doubled.images is ds.images


def test_image_list_reads_grayscale_and_rgb(tmp_path, write_image) -> None:
    path = write_image(tmp_path / "a" / "x.png", seed=0, mode="RGB", size=(7, 4))
    gray = ImageListDataset([path], [0], ["a"], num_channels=1)
    rgb = ImageListDataset([path], [0], ["a"], num_channels=3)
    assert gray[0][0].mode == "L" and rgb[0][0].mode == "RGB" and rgb[0][0].size == (7, 4)
    assert rgb.paths == [str(path)]


def test_undecodable_image_names_the_file(tmp_path, write_image) -> None:
    bad = tmp_path / "b" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    good = write_image(tmp_path / "a" / "ok.png", seed=1)
    ds = ImageListDataset([good, bad], [0, 1], ["a", "b"])
    assert isinstance(ds[0][0], Image.Image)
    with pytest.raises(DatasetError, match=r"broken\.jpg: cannot decode image \(") as info:
        ds[1]
    assert "\n" not in str(info.value)


def test_truncated_png_is_a_decode_error(tmp_path, write_image) -> None:
    path = write_image(tmp_path / "t.png", seed=2, size=(40, 40))
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DatasetError, match="cannot decode image"):
        ImageListDataset([path], [0], ["a"])[0]

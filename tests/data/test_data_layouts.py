"""Each dataset layout, written in its real on-disk format, read through `build_datasets`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dml_core.params.datasets import DataConfig
from dml_core.data import DatasetError, DatasetSplits, build_datasets


def _build(**kwargs) -> DatasetSplits:
    return build_datasets(DataConfig.of(**kwargs))


def _assert_contiguous(ds) -> None:
    assert ds.labels.dtype == np.int64
    assert np.array_equal(np.unique(ds.labels), np.arange(ds.num_classes))


def _class_of_paths(ds) -> set[str]:
    return {Path(p).parent.name for p in ds.paths}


# ----------------------------------------------------------------------------- image_folder


def test_image_folder_nested_tree_split_by_sorted_class(tmp_path, make_class_tree) -> None:
    counts = {"birds/sparrow": 2, "birds/crow": 3, "cars/sedan": 2, "dogs": 4}
    make_class_tree(tmp_path / "root", counts, suffix=".JPG")
    splits = _build(name="image_folder", root=str(tmp_path / "root"))
    assert splits.train.class_names == ["birds/crow", "birds/sparrow"]
    assert splits.test.class_names == ["cars/sedan", "dogs"]
    assert (len(splits.train), len(splits.test)) == (5, 6)
    for ds in (splits.train, splits.test):
        _assert_contiguous(ds)
        for path, label in zip(ds.paths, ds.labels):  # the label names the image's folder
            assert Path(path).parent.as_posix().endswith(ds.class_names[label])
    assert splits.num_channels == 3 and splits.recall_at == (1, 2, 4, 8)
    image, label = splits.train[0]
    assert image.shape == (3, 28, 28) and label == 0


def test_image_folder_train_classes_count_and_separate_roots(tmp_path, make_class_tree) -> None:
    make_class_tree(tmp_path / "all", {f"k{i}": 1 for i in range(5)})
    splits = _build(name="image_folder", root=str(tmp_path / "all"), train_classes=3)
    assert splits.train.class_names == ["k0", "k1", "k2"] and splits.test.class_names == ["k3", "k4"]

    make_class_tree(tmp_path / "tr", {"a": 2, "b": 1})
    make_class_tree(tmp_path / "te", {"c": 1, "d": 1, "e": 2})
    splits = _build(name="image_folder", train_root=str(tmp_path / "tr"), test_root=str(tmp_path / "te"))
    assert (splits.train.num_classes, splits.test.num_classes) == (2, 3)


def test_image_folder_errors(tmp_path, make_class_tree, write_image) -> None:
    root = make_class_tree(tmp_path / "r", {"a": 1, "b": 1})
    (root / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"empty: empty class folder"):
        _build(name="image_folder", root=str(root))
    (root / "empty").rmdir()
    write_image(root / "stray.png", seed=0)
    with pytest.raises(DatasetError, match=r"stray\.png: image directly in data\.root"):
        _build(name="image_folder", root=str(root))
    (root / "stray.png").unlink()
    with pytest.raises(DatasetError, match=r"nope: not found \(data\.root"):
        _build(name="image_folder", root=str(tmp_path / "nope"))
    with pytest.raises(DatasetError, match=r"^data\.root: required"):
        _build(name="image_folder")
    # Caught when the config is read (ConfigError), before any folder is looked at.
    with pytest.raises(ValueError, match=r"^data\.test_root: required together with data\.train_root"):
        _build(name="image_folder", train_root=str(root))
    with pytest.raises(ValueError, match=r"^data\.root: give either"):
        _build(name="image_folder", root=str(root), train_root=str(root), test_root=str(root))
    with pytest.raises(DatasetError, match=r"^data\.train_classes: .*both need at least one"):
        _build(name="image_folder", root=str(tmp_path / "r"), train_classes=0.99)


# ----------------------------------------------------------------------------- omniglot


def test_omniglot_splits_whole_alphabets(tmp_path, make_class_tree) -> None:
    # 'Beta' < 'Beta-x' as alphabets even though 'Beta-x/' < 'Beta/' as strings.
    counts = {f"{alpha}/character{c:02d}": 2 for alpha, n in
              (("Alpha", 3), ("Beta", 2), ("Beta-x", 1), ("Gamma", 4)) for c in range(1, n + 1)}
    make_class_tree(tmp_path / "omni", counts, mode="L")
    splits = _build(name="omniglot", root=str(tmp_path / "omni"))
    # target round(0.5 * 10) = 5 classes: Alpha (3) + Beta (2) reach it exactly.
    assert {n.split("/")[0] for n in splits.train.class_names} == {"Alpha", "Beta"}
    assert {n.split("/")[0] for n in splits.test.class_names} == {"Beta-x", "Gamma"}
    assert splits.train.class_names[:2] == ["Alpha/character01", "Alpha/character02"]
    assert splits.num_channels == 1 and splits.train[0][0].shape == (1, 28, 28)
    # 0.3 -> target 3 -> Alpha alone; 0.4 -> target 4 -> Alpha + Beta (first boundary >= 4).
    assert _build(name="omniglot", root=str(tmp_path / "omni"), train_classes=0.3).train.num_classes == 3
    assert _build(name="omniglot", root=str(tmp_path / "omni"), train_classes=0.4).train.num_classes == 5


def test_omniglot_single_alphabet_falls_back_to_characters(tmp_path, make_class_tree) -> None:
    make_class_tree(tmp_path / "one", {f"Solo/character{c:02d}": 1 for c in range(1, 5)}, mode="L")
    splits = _build(name="omniglot", root=str(tmp_path / "one"))
    assert splits.train.class_names == ["Solo/character01", "Solo/character02"]
    assert splits.test.class_names == ["Solo/character03", "Solo/character04"]


def test_omniglot_official_background_evaluation_folders(tmp_path, make_class_tree) -> None:
    make_class_tree(tmp_path / "images_background", {"A/character01": 2, "B/character01": 2}, mode="L")
    make_class_tree(tmp_path / "images_evaluation", {"C/character01": 2}, mode="L")
    splits = _build(name="omniglot", root=str(tmp_path))
    assert splits.train.class_names == ["A/character01", "B/character01"]
    assert splits.test.class_names == ["C/character01"]
    with pytest.raises(DatasetError, match="data.train_classes: .*official"):
        _build(name="omniglot", root=str(tmp_path), train_classes=0.5)


def test_omniglot_rejects_wrong_depth(tmp_path, make_class_tree) -> None:
    make_class_tree(tmp_path / "flat", {"character01": 1, "character02": 1}, mode="L")
    with pytest.raises(DatasetError, match=r"expected <alphabet>/<character>/\*\.png .*'character01'"):
        _build(name="omniglot", root=str(tmp_path / "flat"))


def test_real_omniglot_subset_is_alphabet_disjoint(omniglot_root) -> None:
    splits = _build(name="omniglot", root=str(omniglot_root))
    assert splits.train.num_classes + splits.test.num_classes == 136
    train_alphabets = {n.split("/")[0] for n in splits.train.class_names}
    test_alphabets = {n.split("/")[0] for n in splits.test.class_names}
    assert train_alphabets == {"Balinese", "Early_Aramaic", "Greek"}  # 24 + 22 + 24 = 70 >= 68
    assert test_alphabets == {"Korean", "Latin"} and splits.test.num_classes == 66
    assert len(splits.train) == 70 * 20 and len(splits.test) == 66 * 20
    _assert_contiguous(splits.train)
    _assert_contiguous(splits.test)
    raw = splits.train.with_transform(None)[0][0]
    assert raw.mode == "L" and raw.size == (105, 105)


# ----------------------------------------------------------------------------- CUB-200-2011


def test_cub_standard_split_is_classes_1_to_100(tmp_path, make_cub) -> None:
    make_cub(tmp_path, num_classes=200, per_class=1)
    splits = _build(name="cub200", root=str(tmp_path))  # the folder *containing* CUB_200_2011
    assert splits.train.class_names[0] == "001.Bird_1" and splits.train.class_names[-1] == "100.Bird_100"
    assert splits.test.class_names[0] == "101.Bird_101" and splits.test.class_names[-1] == "200.Bird_200"
    assert not set(splits.train.class_names) & set(splits.test.class_names)
    assert splits.recall_at == (1, 2, 4, 8)
    for ds in (splits.train, splits.test):
        _assert_contiguous(ds)
        assert [Path(p).parent.name for p in ds.paths] == [ds.class_names[y] for y in ds.labels]


def test_cub_root_may_be_the_dataset_folder_and_num_classes(tmp_path, make_cub) -> None:
    cub = make_cub(tmp_path, num_classes=6, per_class=2)
    splits = build_datasets(DataConfig.of(name="cub200", root=str(cub), num_classes=2))
    assert splits.train.class_names == ["001.Bird_1", "002.Bird_2"] and len(splits.train) == 4
    assert splits.test.num_classes == 3  # the ablation never touches the test classes
    with pytest.raises(DatasetError, match="^data.num_classes: 4 exceeds the 3 training classes"):
        build_datasets(DataConfig.of(name="cub200", root=str(cub), num_classes=4))


def test_cub_errors_name_the_file(tmp_path, make_cub) -> None:
    with pytest.raises(DatasetError, match=r"^data\.root: required for dataset 'cub200'"):
        _build(name="cub200")
    with pytest.raises(DatasetError, match=r"missing: not found \(data\.root; expected CUB_200_2011 layout"):
        _build(name="cub200", root=str(tmp_path / "missing"))
    cub = make_cub(tmp_path, num_classes=4, per_class=2)
    (cub / "image_class_labels.txt").rename(cub / "moved.txt")
    with pytest.raises(DatasetError, match=r"image_class_labels\.txt: not found"):
        _build(name="cub200", root=str(cub))
    (cub / "moved.txt").rename(cub / "image_class_labels.txt")
    victim = next((cub / "images").rglob("*.jpg"))
    victim.unlink()
    with pytest.raises(DatasetError, match=rf"{victim.name}: not found \(listed in .*images\.txt\)"):
        _build(name="cub200", root=str(cub))


def test_cub_class_without_images_is_an_error(tmp_path, make_cub) -> None:
    cub = make_cub(tmp_path, num_classes=4, per_class=1)
    with open(cub / "classes.txt", "a") as f:
        f.write("5 005.Bird_5\n")
    with pytest.raises(DatasetError, match=r"images\.txt: 1 classes have no images \(e\.g\. '005\.Bird_5'\)"):
        _build(name="cub200", root=str(cub))


def test_undecodable_images_fail_at_build_truncated_ones_when_read(tmp_path, make_cub, write_image) -> None:
    cub = make_cub(tmp_path, num_classes=4, per_class=1)
    first = cub / "images" / (cub / "images.txt").read_text().split()[1]
    first.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match=rf"{first.name}: cannot decode image \(cannot identify"):
        _build(name="cub200", root=str(cub))
    # A valid header with its pixel data cut off passes the build-time check, fails when read.
    write_image(first, seed=0, size=(64, 64))
    data = first.read_bytes()
    first.write_bytes(data[: len(data) // 2])
    splits = _build(name="cub200", root=str(cub))
    with pytest.raises(DatasetError, match=rf"{first.name}: cannot decode image"):
        splits.train[0]


def test_image_folder_checks_images_at_build(tmp_path, make_class_tree) -> None:
    root = make_class_tree(tmp_path / "r", {"a": 2, "b": 2})
    (root / "b" / "01.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"b/01\.png: cannot decode image"):
        _build(name="image_folder", root=str(root))


# ----------------------------------------------------------------------------- Cars196


def test_cars_split_and_names_from_the_mat(tmp_path, make_cars) -> None:
    make_cars(tmp_path, num_classes=4, per_class=3)
    splits = _build(name="cars196", root=str(tmp_path))
    assert splits.train.class_names == ["001.Make Model 1 2012", "002.Make Model 2 2012"]
    assert splits.test.class_names == ["003.Make Model 3 2012", "004.Make Model 4 2012"]
    assert (len(splits.train), len(splits.test)) == (6, 6)
    # make_cars numbers images class by class: car i belongs to class i // 3 + 1.
    ids = [int(Path(p).stem) - 1 for p in splits.test.paths]
    assert [i // 3 + 1 - 3 for i in ids] == splits.test.labels.tolist()
    assert splits.train[5][0].shape == (3, 28, 28)


def test_cars_errors(tmp_path, make_cars) -> None:
    with pytest.raises(DatasetError, match=r"cars_annos\.mat: not found \(data\.root; expected Cars196 layout"):
        _build(name="cars196", root=str(tmp_path))
    (tmp_path / "cars_annos.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"cars_annos\.mat: not a Cars196 annotation file"):
        _build(name="cars196", root=str(tmp_path))
    make_cars(tmp_path, num_classes=4, per_class=1)
    with pytest.raises(ValueError, match=r"^data\.train_root: not a parameter of dataset cars196"):
        _build(name="cars196", root=str(tmp_path), train_root=str(tmp_path))


# ----------------------------------------------------------------------------- SOP


def test_sop_split_comes_from_the_list_files(tmp_path, make_sop) -> None:
    make_sop(tmp_path, train_classes=3, test_classes=4, per_class=2)
    splits = _build(name="sop", root=str(tmp_path))
    assert splits.train.class_names == ["1", "2", "3"] and splits.test.class_names == ["4", "5", "6", "7"]
    assert (len(splits.train), len(splits.test)) == (6, 8)
    assert splits.recall_at == (1, 10, 100, 1000)
    _assert_contiguous(splits.test)
    # Paths and labels stay aligned: the product id in the file name encodes the class.
    for path, label in zip(splits.test.paths, splits.test.labels):
        assert int(Path(path).stem.split("_")[0]) - 111085122870 == int(splits.test.class_names[label])
    with pytest.raises(ValueError, match=r"^data\.train_classes: not a parameter of dataset sop"):
        _build(name="sop", root=str(tmp_path), train_classes=0.5)


def test_sop_missing_list_and_empty_split(tmp_path, make_sop) -> None:
    sop = make_sop(tmp_path)
    (sop / "Ebay_test.txt").write_text("image_id class_id super_class_id path\n")
    with pytest.raises(DatasetError, match=r"Ebay_test\.txt: no entries"):
        _build(name="sop", root=str(sop))
    (sop / "Ebay_test.txt").unlink()
    with pytest.raises(DatasetError, match=r"Ebay_test\.txt: not found"):
        _build(name="sop", root=str(sop))


# ----------------------------------------------------------------------------- In-Shop


def test_inshop_query_and_gallery_share_one_label_space(tmp_path, make_inshop) -> None:
    make_inshop(tmp_path, train_items=3, test_items=3, gallery_only=1)
    splits = _build(name="inshop", root=str(tmp_path))
    assert splits.test is None and splits.recall_at == (1, 10, 20, 30, 40, 50)
    assert splits.train.num_classes == 3 and len(splits.train) == 6
    query, gallery = splits.query, splits.gallery
    assert (len(query), len(gallery)) == (3, 7)
    assert query.class_names == gallery.class_names and len(gallery.class_names) == 4
    # Each image's label names the item in its path, on both sides.
    for ds in (query, gallery):
        assert [Path(p).parent.name for p in ds.paths] == [ds.class_names[y] for y in ds.labels]
    assert set(query.labels) < set(gallery.labels)  # the distractor item is gallery-only
    assert not set(splits.train.class_names) & set(gallery.class_names)
    assert query[0][0].shape == gallery[0][0].shape == (3, 28, 28)


def test_inshop_errors(tmp_path, make_inshop) -> None:
    with pytest.raises(DatasetError, match=r"list_eval_partition\.txt: not found \(data\.root; expected In-Shop"):
        _build(name="inshop", root=str(tmp_path))
    make_inshop(tmp_path)
    partition = tmp_path / "list_eval_partition.txt"
    lines = partition.read_text().splitlines()
    partition.write_text("\n".join(["99", *lines[1:]]) + "\n")
    with pytest.raises(DatasetError, match=r"line 1 declares '99' images"):
        _build(name="inshop", root=str(tmp_path))
    rows = [row for row in lines[2:] if not row.endswith(" query")]
    partition.write_text("\n".join([str(len(rows)), lines[1], *rows]) + "\n")
    with pytest.raises(DatasetError, match=r"empty split \(no 'query' rows\)"):
        _build(name="inshop", root=str(tmp_path))

"""build_datasets on the embedded digits, the class-count ablation, and data.download."""
from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from dml_core.config import ConfigError, DataConfig
from dml_core.params import DATASET_PARAMS
from dml_core.data import DATASETS, DatasetError, PKBatchSampler, build_datasets, download


def test_digits_default_zero_shot_split() -> None:
    splits = build_datasets(DataConfig.of())
    assert splits.train.class_names == ["0", "1", "2", "3", "4"]
    assert splits.test.class_names == ["5", "6", "7", "8", "9"]
    assert (len(splits.train), len(splits.test)) == (901, 896)  # load_digits' class sizes
    assert splits.num_channels == 1 and splits.recall_at == (1, 2, 4, 8) and splits.query is None
    assert splits.train.paths is None
    image, label = splits.test[0]
    assert image.shape == (1, 28, 28) and label == 0  # first test image is a '5' -> label 0
    assert -1.0 <= image.min() < image.max() <= 1.0


def test_digits_options_channels_and_ablation() -> None:
    splits = build_datasets(DataConfig.of(image_size=16, num_classes=3), out_channels=3, pretrained=True)
    assert splits.train.class_names == ["0", "1", "2"] and splits.test.num_classes == 5
    assert splits.train[0][0].shape == (3, 16, 16)
    assert build_datasets(DataConfig.of(train_classes=0.3)).train.num_classes == 3
    with pytest.raises(DatasetError, match="^data.num_classes: 6 exceeds the 5 training classes of digits$"):
        build_datasets(DataConfig.of(num_classes=6))
    with pytest.raises(ConfigError, match="^data.root: not a parameter of dataset digits"):
        DataConfig.of(root="/somewhere")  # rejected when the config is read, before any data


def test_every_dataset_with_parameters_has_a_builder() -> None:
    assert DATASET_PARAMS.names() == DATASETS.names()


def test_digits_batches_end_to_end() -> None:
    splits = build_datasets(DataConfig.of(image_size=12))
    sampler = PKBatchSampler(splits.train.labels, classes_per_batch=4, samples_per_class=2, iterations=2, seed=0)
    x, y = next(iter(torch.utils.data.DataLoader(splits.train, batch_sampler=sampler)))
    assert x.shape == (8, 1, 12, 12) and torch.equal(y[0::2], y[1::2]) and len(set(y.tolist())) == 4


# ----------------------------------------------------------------------------- download


def test_download_refusals_are_one_line(tmp_path, monkeypatch) -> None:
    with pytest.raises(DatasetError, match=r"^data\.download: no direct download for sop; .*Stanford_Online_Products"):
        download.ensure_downloaded("sop", tmp_path)
    download.ensure_downloaded("digits", None)  # bundled: nothing to do
    with pytest.raises(DatasetError, match=r"^data\.root: required with data\.download"):
        download.ensure_downloaded("cub200", None)

    def offline(url, *args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure\nin name resolution>")

    monkeypatch.setattr(download, "download_and_extract_archive", offline)
    with pytest.raises(DatasetError) as info:
        download.ensure_downloaded("cub200", tmp_path)
    message = str(info.value)
    assert "\n" not in message and "CUB_200_2011.tgz" in message and "name resolution" in message


def test_already_extracted_archives_are_not_fetched(tmp_path, monkeypatch) -> None:
    (tmp_path / "images_background").mkdir()
    (tmp_path / "images_evaluation").mkdir()
    monkeypatch.setattr(download, "download_and_extract_archive", lambda *a, **k: pytest.fail("fetched"))
    download.ensure_downloaded("omniglot", tmp_path)


def _zip_tree(zip_path: Path, top: str, classes: list[str], write_image, scratch: Path) -> str:
    with zipfile.ZipFile(zip_path, "w") as zf:
        for i, name in enumerate(classes):
            for j in range(2):
                png = write_image(scratch / f"{i}_{j}.png", seed=10 * i + j, mode="L")
                zf.write(png, f"{top}/{name}/{j:02d}.png")
    return hashlib.md5(zip_path.read_bytes()).hexdigest()


def test_download_extracts_and_build_uses_official_split(tmp_path, monkeypatch, write_image) -> None:
    """Serve two Omniglot-shaped zips over local HTTP: download, MD5 check, extract, build."""
    served = tmp_path / "served"
    served.mkdir()
    archives = []
    for top, classes in (("images_background", ["A/character01", "B/character01"]), ("images_evaluation", ["C/character01"])):
        md5 = _zip_tree(served / f"{top}.zip", top, classes, write_image, tmp_path / "scratch")
        archives.append((top, md5))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setitem(download.ARCHIVES, "omniglot", tuple(
            download.Archive(f"{url}/{top}.zip", md5, f"{top}.zip", top) for top, md5 in archives))
        root = tmp_path / "omniglot"
        splits = build_datasets(DataConfig.of(name="omniglot", root=str(root), download=True))
        assert splits.train.class_names == ["A/character01", "B/character01"]
        assert splits.test.class_names == ["C/character01"] and len(splits.test) == 2

        bad = download.Archive(f"{url}/images_background.zip", "0" * 32, "other.zip", "other")
        monkeypatch.setitem(download.ARCHIVES, "omniglot", (bad,))
        with pytest.raises(DatasetError, match=r"^data\.download: could not fetch .*images_background\.zip"):
            download.ensure_downloaded("omniglot", root)
    finally:
        server.shutdown()
        server.server_close()

"""Downloads for the datasets with an official, checksummed archive (used when ``data.download``).

Each dataset declares its archives (`DataConfig.archives`: Omniglot's and CUB-200-2011's) or how
to get it by hand (`DataConfig.manual`: Cars196, SOP and In-Shop have no maintained direct
download), in `dml_core.params.datasets`; for the latter the error says where to get them.

Which archives: a path (``data.root``, ``train_root`` or ``test_root``) whose last folder is
what an archive extracts to gets that archive, extracted into its parent
(``.../omniglot/images_background_small1`` -> ``images_background_small1.zip`` into
``.../omniglot``); any other ``data.root`` gets the dataset's default archives extracted into it.

A download is bounded: it stops once it passes the archive's known size (else
``MAX_DOWNLOAD_BYTES``), extraction refuses archives that expand past ``MAX_EXTRACTED_BYTES`` or
``MAX_RATIO`` times their size, and an archive whose top folder is a symbolic link is refused.

A download is atomic and safe when several trials on one node start at once: under a file lock
beside the target folder, the archive is fetched into a hidden temporary folder next to the
target, its size and MD5 checked, extracted there, and the extracted folder moved into place
with one ``os.replace``. A killed download leaves only the hidden temporary folder (removed by the
next attempt), never a target folder that counts as present; a process that waited on the lock
finds the folder in place and fetches nothing.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from dml_core.data.base import DatasetError
from dml_core.params.datasets import DATASETS, Archive, DataConfig

log = logging.getLogger("dml_core.data")

TIMEOUT_S = 60.0  # per socket operation; a stalled server fails the download instead of hanging it
_CHUNK = 1 << 20
# Bounds on what a server (a hostile mirror, a wrong URL) can make this write. A download stops as
# soon as it passes the archive's known size, else this maximum (the largest archive, CUB, is
# 1.15 GB); extraction refuses an archive whose members add up to more than MAX_EXTRACTED_BYTES
# or to more than MAX_RATIO times the archive (images barely compress: a zip bomb does).
MAX_DOWNLOAD_BYTES = 4 << 30
MAX_EXTRACTED_BYTES = 16 << 30
MAX_RATIO = 20


class DownloadFailed(Exception):
    """Why one fetch failed (turned into the one-line `DatasetError` by `ensure_archive`)."""


def where_to_get(name: str) -> str:
    """How a user obtains dataset ``name``: the hint for a missing data folder."""
    params = DATASETS.get(name)
    if params.archives:
        return "set data.download: true to fetch it"
    return params.manual.format(name=name)


def planned_downloads(cfg: DataConfig) -> list[tuple[Archive, Path]]:
    """(archive, folder to extract it into) for each archive ``cfg``'s (expanded) paths call for."""
    archives = cfg.archives or ()
    by_folder = {a.extracts_to: a for a in archives}
    plan: list[tuple[Archive, Path]] = []
    for field in cfg.data_roots():  # each dataset has only the path fields its layout reads
        value = getattr(cfg, field)
        if value is None:
            continue
        path = Path(value).expanduser().absolute()
        if path.name in by_folder:
            plan.append((by_folder[path.name], path.parent))
        elif field == "root":
            plan += [(a, path) for a in archives if a.default]
    return plan


def ensure_downloaded(cfg: DataConfig) -> None:
    """Fetch and extract what ``cfg`` names unless already extracted (``cfg``'s paths expanded)."""
    if cfg.archives is None:
        raise DatasetError(f"data.download: no direct download for {cfg.name}; {where_to_get(cfg.name)}")
    if not cfg.archives:
        return
    if all(getattr(cfg, f) is None for f in cfg.data_roots()):
        raise DatasetError(f"data.root: required with data.download (the folder to download {cfg.name} into)")
    for archive, folder in planned_downloads(cfg):
        ensure_archive(archive, folder)


def ensure_archive(archive: Archive, folder: str | Path) -> Path:
    """``folder/archive.extracts_to``, downloaded and extracted first if it is not there."""
    folder = Path(folder)
    target = folder / archive.extracts_to
    if target.is_dir():  # checked before locking: a read-only data folder needs no lock file
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not folder.stat().st_mode & 0o222:  # marked read-only; root could still write into it
            raise DownloadFailed(f"{folder} is read-only")
        with FileLock(str(folder / f".{archive.extracts_to}.lock")):
            if target.is_dir():  # another process fetched it while this one waited
                return target
            for stale in folder.glob(f".{archive.extracts_to}.partial-*"):  # left by a killed download
                shutil.rmtree(stale, ignore_errors=True)
            with tempfile.TemporaryDirectory(dir=folder, prefix=f".{archive.extracts_to}.partial-") as tmp:
                file = Path(tmp) / archive.filename
                _fetch(archive, file)
                _extract(file, Path(tmp) / "x")
                extracted = Path(tmp) / "x" / archive.extracts_to
                if extracted.is_symlink():  # moved into place it would dangle, or alias another folder
                    raise DownloadFailed(f"{archive.filename}: its folder {archive.extracts_to} is a symbolic link")
                if not extracted.is_dir():
                    raise DownloadFailed(f"{archive.filename} holds no folder {archive.extracts_to}")
                os.replace(extracted, target)
    except (DownloadFailed, OSError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DatasetError(
            f"data.download: could not fetch {archive.url} into {folder} ({reason}); "
            f"download it by hand and extract it into {folder}"
        ) from None
    return target


def _fetch(archive: Archive, dest: Path) -> None:
    md5, got = hashlib.md5(), 0
    limit = archive.size if archive.size is not None else MAX_DOWNLOAD_BYTES
    try:
        with urllib.request.urlopen(archive.url, timeout=TIMEOUT_S) as response, dest.open("wb") as out:
            expected = response.headers.get("Content-Length")
            if expected is not None and expected.isdigit() and int(expected) > limit:
                raise DownloadFailed(f"the server announces {expected} bytes, more than the {limit} expected")
            # Only once the server answers: offline, the one line of the failure is all there is.
            log.warning("data.download: fetching %s (%s bytes) into %s", archive.url, expected or "?", dest.parent.parent)
            for chunk in _chunks(response):
                got += len(chunk)
                if got > limit:  # stop now: a server that keeps sending would fill the disk
                    raise DownloadFailed(f"stopped after more than the {limit} bytes expected")
                out.write(chunk)
                md5.update(chunk)
    except http.client.HTTPException as e:  # IncompleteRead etc. are not OSErrors
        raise DownloadFailed(f"{type(e).__name__}: {e}") from None
    if expected is not None and got != int(expected):
        raise DownloadFailed(f"truncated: got {got} of {expected} bytes")
    if archive.size is not None and got != archive.size:
        raise DownloadFailed(f"got {got} bytes, expected {archive.size}")
    if md5.hexdigest() != archive.md5:
        raise DownloadFailed(f"MD5 {md5.hexdigest()}, expected {archive.md5}")


def _check_expansion(file: Path, total: int) -> None:
    packed = max(file.stat().st_size, 1)
    if total > MAX_EXTRACTED_BYTES:
        raise DownloadFailed(f"{file.name} expands to {total} bytes, more than the {MAX_EXTRACTED_BYTES} allowed")
    if total > MAX_RATIO * packed:
        raise DownloadFailed(f"{file.name} expands {total // packed}-fold ({packed} -> {total} bytes), more than the "
                             f"{MAX_RATIO}-fold an image archive does")


def _chunks(response) -> Iterator[bytes]:
    while chunk := response.read(_CHUNK):
        yield chunk


def _extract(file: Path, dest: Path) -> None:
    try:
        if zipfile.is_zipfile(file):
            with zipfile.ZipFile(file) as zf:  # extractall drops absolute and '..' member paths
                # A zip member yields at most its declared size (zipfile stops there; a lie fails its CRC).
                _check_expansion(file, sum(m.file_size for m in zf.infolist()))
                zf.extractall(dest)
        else:
            with tarfile.open(file) as tf:
                _check_expansion(file, sum(m.size for m in tf.getmembers()))
                tf.extractall(dest, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError) as e:
        raise DownloadFailed(f"cannot extract {file.name}: {e}") from None

"""Reading dataset layouts from disk: roots, annotation files, class-folder trees.

Every check here fails with a one-line `DatasetError` that names the path and, where the user can
fix it in the config, the field (``data.root``) -- a wrong path should cost seconds, not a trial.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from dml_core.params.datasets import DataConfig
from dml_core.data.base import PIL_DECODE_ERRORS, DatasetError, ImageListDataset, decode_error

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def require_root(cfg: DataConfig, expected: str) -> Path:
    """``data.root`` for datasets with one root and a standard split (CUB, Cars, SOP, In-Shop)."""
    if cfg.root is None:
        raise DatasetError(f"data.root: required for dataset {cfg.name!r} ({expected})")
    return require_dir(Path(cfg.root), "data.root", expected)


def require_dir(path: Path, field: str, expected: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DatasetError(f"{path}: not found ({field}; expected {expected})")
    return path


def require_file(path: Path, expected: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path}: not found (data.root; expected {expected})")
    return path


def find_layout_root(root: Path, marker: str, subfolder: str) -> Path:
    """``root`` itself if it holds ``marker``, else ``root/subfolder`` if that does.

    Users point ``data.root`` either at the extracted dataset folder or at the folder they
    extracted the archive into; both should work.
    """
    if (root / marker).exists():
        return root
    if (root / subfolder / marker).exists():
        return root / subfolder
    return root  # let the caller's require_file name the missing file under root


def read_rows(path: Path, num_cols: int, skip: int = 0) -> list[list[str]]:
    """Whitespace-separated rows of a text annotation file, ``skip`` header lines dropped."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if line_no <= skip or not line.strip():
                continue
            cols = line.split()
            if len(cols) != num_cols:
                raise DatasetError(f"{path}: line {line_no}: expected {num_cols} columns, got {len(cols)}")
            rows.append(cols)
    if not rows:
        raise DatasetError(f"{path}: no entries")
    return rows


def check_images(paths: Sequence[str], listed_in: Path | None = None) -> None:
    """Fail at build time, not mid-epoch, on a missing or undecodable image.

    Mid-epoch, an error inside a DataLoader worker surfaces as a multi-line traceback hours into a
    run. PIL opens lazily, so this reads only each header (~40 us per file: ~5 s for SOP's 120k).
    A file whose header is fine but whose pixel data is cut off still fails later, when read.
    """
    for p in paths:
        try:
            with Image.open(p):
                pass
        except FileNotFoundError:
            where = f" (listed in {listed_in})" if listed_in is not None else ""
            raise DatasetError(f"{p}: not found{where}") from None
        except PIL_DECODE_ERRORS as e:
            raise decode_error(p, e) from None


def _tree_key(name: str) -> tuple[str, ...]:
    # Sort by path components so 'Greek/x' < 'Greek-x/y' sorts as 'Greek' < 'Greek-x',
    # keeping each top-level folder's classes contiguous and in folder order.
    return tuple(name.split("/"))


def scan_class_tree(root: Path, field: str) -> tuple[list[str], list[str]]:
    """Images under ``root`` and their class: the image's parent folder relative to ``root``.

    Nested trees are fine (``root/birds/sparrow/1.jpg`` is class ``birds/sparrow``). A leaf folder
    without images is an error (usually a failed extraction), as is an image directly in ``root``.
    Hidden files and folders are skipped, and each real folder is read once (`_class_folders`).
    Returns (paths, class names), sorted by class then file.
    """
    root = require_dir(root, field, "a folder of <class>/<image> folders")
    paths: list[str] = []
    classes: list[str] = []
    for folder in _class_folders(root) + [root]:
        entries = _entries(folder)
        dangling = next((p for p in entries if p.is_symlink() and not p.exists()), None)
        if dangling is not None:  # a moved or deleted image; skipping it would change the data silently
            raise DatasetError(f"{dangling}: a link to {os.readlink(dangling)}, which does not exist")
        images = sorted(p for p in entries if p.is_file() and is_image(p))
        if folder == root:
            if images:
                raise DatasetError(f"{images[0]}: image directly in {field} {root}; put it in a class folder")
            continue
        if not images and not any(p.is_dir() for p in entries):
            kinds = "/".join(sorted(e[1:] for e in IMAGE_EXTENSIONS))
            raise DatasetError(f"{folder}: empty class folder (no {kinds} images)")
        name = folder.relative_to(root).as_posix()
        paths += [str(p) for p in images]
        classes += [name] * len(images)
    if not paths:
        raise DatasetError(f"{root}: no images found ({field}; expected <class>/<image> folders)")
    check_images(paths)
    order = sorted(range(len(paths)), key=lambda i: (_tree_key(classes[i]), paths[i]))
    return [paths[i] for i in order], [classes[i] for i in order]


def _entries(folder: Path) -> list[Path]:
    """The non-hidden entries of ``folder``, sorted; an unreadable folder is one line naming it."""
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise DatasetError(f"{folder}: cannot read this folder ({e.strerror or e})") from None


def _class_folders(root: Path) -> list[Path]:
    """Every non-hidden folder under ``root``, each real folder once, in sorted order.

    Links to files are followed (an image may live elsewhere). A link to a folder already in the
    tree -- a loop such as ``character02/self -> ../character02``, or a second name for a class --
    would add a class of duplicated images: it is skipped with a warning naming it. A link to a
    folder outside the tree is followed. Real folders are named before links, so a class keeps its
    own folder's name whichever sorts first.
    """
    seen = {os.path.realpath(root): root}
    folders: list[Path] = []
    links: list[Path] = []

    def walk(folder: Path) -> None:
        for p in _entries(folder):
            if not p.is_dir():
                continue
            if p.is_symlink():
                links.append(p)
            else:
                visit(p)

    def visit(folder: Path) -> None:
        real = os.path.realpath(folder)
        if real in seen:
            log.warning("%s: skipped, a link to %s, whose images are already read as %s", folder, real, seen[real])
            return
        seen[real] = folder
        folders.append(folder)
        walk(folder)

    walk(root)
    while links:
        visit(links.pop(0))
    return sorted(folders)


def labelled_images(
    paths: Sequence[str],
    class_of_image: Sequence[str],
    num_channels: int,
    class_order: Sequence[str] | None = None,
    source: Path | None = None,
) -> ImageListDataset:
    """An `ImageListDataset` whose labels index ``class_order`` (default: order of first appearance).

    A class in ``class_order`` without images is an error naming ``source`` (the annotation file).
    """
    if class_order is None:
        class_order = list(dict.fromkeys(class_of_image))
    index = {name: i for i, name in enumerate(class_order)}
    unknown = next((c for c in class_of_image if c not in index), None)
    if unknown is not None:
        raise DatasetError(f"{source}: images of class {unknown!r}, which is not in the class list")
    empty = set(class_order).difference(class_of_image)
    if empty:
        raise DatasetError(f"{source}: {len(empty)} classes have no images (e.g. {min(empty)!r})")
    labels = [index[c] for c in class_of_image]
    return ImageListDataset(paths, labels, class_order, num_channels)


def separate_roots(cfg: DataConfig, expected: str) -> tuple[Path, Path] | None:
    """``(train_root, test_root)`` when the config gives them, None when ``data.root`` is to be split.

    Which combinations are valid is the parameter model's rule (`dml_core.params.datasets`,
    checked when the config is loaded); here only a missing folder is an error.
    """
    if cfg.train_root is not None:
        return (require_dir(Path(cfg.train_root), "data.train_root", expected),
                require_dir(Path(cfg.test_root), "data.test_root", expected))
    if cfg.root is None:
        raise DatasetError(
            f"data.root: required for dataset {cfg.name!r} (or data.train_root + data.test_root; expected {expected})"
        )
    return None

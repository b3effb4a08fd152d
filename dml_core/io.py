"""Files that are whole or absent, and directories with one owner at a time.

- `atomic_write_bytes/text/json`: a reader (or a process killed mid-write, or a second writer of
  the same file) sees the old file or the new one, never a mix. A unique temporary file from
  `mkstemp` in the target folder (so the rename stays on one filesystem and two writers never
  share it), flushed and fsynced, then `os.replace`. Used for checkpoints, `metrics.json`, the
  sweep plan, and the feature cache.
- `DirectoryLock`: exclusive ownership of a run or sweep directory through an OS lock
  (`flock`, via filelock) on `<dir>/.lock`. The kernel drops it when the holder exits, however it
  exits, so a killed run never leaves a lock that blocks `--resume`. The holder's pid and host are
  written into the lock file for the message a second writer gets.
"""
from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Union

from filelock import FileLock, Timeout

LOCK_NAME = ".lock"

# mkstemp creates files 0600; written files get the usual 0666 & ~umask (shared sweep folders).
_UMASK = os.umask(0)
os.umask(_UMASK)


_FOLDER_NAME = re.compile(r"[A-Za-z0-9_.\-]+")


def check_folder_name(name: str) -> str:
    """``name`` if it can name one folder inside another (a run's or sweep's): letters, digits,
    '.', '_' and '-', not ``.`` or ``..`` -- never a path that leaves its parent."""
    if not _FOLDER_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError("use only A-Z, a-z, 0-9, '.', '_' and '-', not '.' or '..' (it names a folder)")
    return name


class PathError(ValueError):
    """A file or folder the user named cannot be created, read or owned; one line naming it."""


class DirectoryInUseError(PathError):
    """Another live process holds the directory's lock."""


def make_dir(path: str | Path) -> Path:
    """`path` and its parents, or a one-line `PathError` (read-only place, a file in the way)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PathError(f"{path}: cannot create this directory ({e.strerror or type(e).__name__})") from None
    if not path.is_dir():  # mkdir(exist_ok) accepts nothing else, but a race could swap it
        raise PathError(f"{path}: not a directory")
    return path


def atomic_write_bytes(path: str | Path, data: Union[bytes, Callable[[BinaryIO], None]]) -> None:
    """Write `data` (bytes, or a function that writes into the open binary file) to `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_UMASK)
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename in (None, tmp):  # a full disk names no file: name the target
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars: keep them numbers
        return value.item()
    return str(value)  # paths, dates


def atomic_write_json(path: str | Path, data: Any, indent: int = 1) -> None:
    atomic_write_text(path, json.dumps(data, indent=indent, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    """The parsed file, or a one-line `PathError` naming it when it is damaged."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise PathError(f"{path}: damaged, not valid JSON ({e.msg} at line {e.lineno}); "
                        "restore it from a backup or start anew") from None
    except UnicodeDecodeError:
        raise PathError(f"{path}: damaged, not UTF-8 text; restore it from a backup or start anew") from None


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not every filesystem lets a directory be fsynced.
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class DirectoryLock:
    """`with DirectoryLock(run_dir):` -- this process is the directory's only writer until the end.

    Taken without waiting: a second writer fails at once with a `DirectoryInUseError` naming the
    holder, rather than interleaving its files with the first one's.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.lock_file = self.directory / LOCK_NAME
        self._lock: Optional[FileLock] = None
        self._created = False

    def acquire(self) -> "DirectoryLock":
        self._created = not self.directory.exists()
        make_dir(self.directory)
        # on_acquired writes the holder record through the locked descriptor, so it can never
        # overwrite a live holder's record; it also keeps filelock on the native flock backend.
        lock = FileLock(str(self.lock_file), timeout=0, on_acquired=_write_holder)
        try:
            lock.acquire()
        except Timeout:
            raise DirectoryInUseError(
                f"{self.directory}: in use by {self.holder()}; wait for it to end or choose another output directory"
            ) from None
        except OSError as e:
            raise PathError(f"{self.lock_file}: cannot lock ({e.strerror or type(e).__name__})") from None
        self._lock = lock
        return self

    def release(self) -> None:
        """Unlock; a directory this lock created and nothing else wrote to is removed again, so a
        run that failed before writing anything leaves no folder behind."""
        if self._lock is None:
            return
        unused = self._created and os.listdir(self.directory) == [LOCK_NAME]
        if unused:
            os.unlink(self.lock_file)  # while held: a newcomer creates a fresh lock file, not ours
        self._lock.release()
        self._lock = None
        if unused:
            with suppress(OSError):
                self.directory.rmdir()

    def holder(self) -> str:
        """'pid N on HOST (since T)' from the lock file; the holder writes it right after locking."""
        for _ in range(20):
            with suppress(OSError, ValueError, KeyError):
                info = json.loads(self.lock_file.read_text())
                return f"pid {info['pid']} on {info['host']} (since {info['since']})"
            time.sleep(0.05)
        return "another process (its pid and host are not recorded yet)"

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _write_holder(fd: int) -> None:
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                         "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, record, 0)

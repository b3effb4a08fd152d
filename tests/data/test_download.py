"""data.download against a real HTTP server on 127.0.0.1 serving zips built here: a good archive,
a wrong MD5, a truncated body, a server that is gone, several processes starting at once, and a
download killed midway. Also the DML_DATA expansion of data paths."""
from __future__ import annotations

import hashlib
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dml_core.params.datasets import DATASETS, OMNIGLOT_URL, DataConfig
from dml_core.data import DatasetError, build_datasets, download
from dml_core.data.roots import DATA_ENV, data_home, expand_data_path

REPO_ROOT = Path(__file__).resolve().parents[2]
TOP = "images_background_small9"  # an archive name no real table holds


@dataclass
class Server:
    """A loopback HTTP server for ``files``; ``gets`` counts the requests per path."""

    files: dict[str, bytes]
    truncate: bool = False  # announce the whole length, send half, close
    delay_s: float = 0.0  # spread the body over this long (lets other processes pile up)
    gets: dict[str, int] = field(default_factory=dict)
    started: threading.Event = field(default_factory=threading.Event)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def start(self) -> "Server":
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                name = self.path.lstrip("/")
                owner.gets[name] = owner.gets.get(name, 0) + 1
                body = owner.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                owner.started.set()
                sent = body[: len(body) // 2] if owner.truncate else body
                pieces = 10 if owner.delay_s else 1
                step = -(-len(sent) // pieces)
                try:
                    for i in range(0, len(sent), step):
                        self.wfile.write(sent[i:i + step])
                        self.wfile.flush()
                        time.sleep(owner.delay_s / pieces)
                except (BrokenPipeError, ConnectionResetError):  # the client was killed
                    pass
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd.socket.fileno() != -1:
            self.httpd.shutdown()
            self.httpd.server_close()


def omniglot_zip(scratch: Path, write_image, top: str = TOP) -> bytes:
    """A zip shaped like Omniglot's: <top>/<alphabet>/<character>/*.png, two alphabets."""
    path = scratch / f"{top}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i, name in enumerate(["A/character01", "A/character02", "B/character01", "B/character02"]):
            for j in range(2):
                png = write_image(scratch / "png" / f"{i}_{j}.png", seed=10 * i + j, mode="L")
                zf.write(png, f"{top}/{name}/{j:02d}.png")
    return path.read_bytes()


def archive_for(server: Server, body: bytes, top: str = TOP, md5: str | None = None) -> download.Archive:
    return download.Archive(server.url(f"{top}.zip"), md5 or hashlib.md5(body).hexdigest(), top, size=len(body),
                            default=False)


@pytest.fixture
def zip_body(tmp_path, write_image) -> bytes:
    (tmp_path / "scratch").mkdir()
    return omniglot_zip(tmp_path / "scratch", write_image)


@pytest.fixture
def serve(zip_body) -> Iterator[callable]:
    servers = []

    def start(**options) -> Server:
        servers.append(Server({f"{TOP}.zip": zip_body}, **options).start())
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def leftovers(folder: Path) -> list[str]:
    """What a failed download left in the target's folder, lock files aside."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.exists() else []


# ----------------------------------------------------------------------------- one process


def test_good_archive_is_fetched_once_and_extracted_in_place(tmp_path, serve, zip_body) -> None:
    server = serve()
    archive, folder = archive_for(server, zip_body), tmp_path / "data" / "omniglot"
    target = download.ensure_archive(archive, folder)
    assert target == folder / TOP and sorted(p.name for p in target.iterdir()) == ["A", "B"]
    assert len(list(target.glob("*/*/*.png"))) == 8
    assert leftovers(folder) == [TOP]  # no temporary folder or zip beside it
    download.ensure_archive(archive, folder)
    assert server.gets == {f"{TOP}.zip": 1}  # present: not fetched again


@pytest.mark.parametrize("fault, reason", [
    ("md5", r"MD5 [0-9a-f]{32}, expected 0{32}"),
    ("truncated", r"IncompleteRead|truncated"),
    ("size", r"announces \d+ bytes, more than the 5 expected"),  # refused before the body is read
])
def test_bad_downloads_leave_nothing_that_counts_as_present(tmp_path, serve, zip_body, fault, reason) -> None:
    server = serve(truncate=fault == "truncated")
    archive = archive_for(server, zip_body, md5="0" * 32 if fault == "md5" else None)
    if fault == "size":
        archive = download.Archive(archive.url, archive.md5, TOP, size=5, default=False)
    folder = tmp_path / "omniglot"
    with pytest.raises(DatasetError) as info:
        download.ensure_archive(archive, folder)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"data.download: could not fetch {archive.url} into {folder} (")
    assert message.endswith(f"download it by hand and extract it into {folder}")
    assert __import__("re").search(reason, message), message
    assert leftovers(folder) == []


def test_server_gone_is_one_line_naming_url_and_folder(tmp_path, serve, zip_body) -> None:
    server = serve()
    archive = archive_for(server, zip_body)
    server.stop()
    folder = tmp_path / "omniglot"
    with pytest.raises(DatasetError, match=rf"^data\.download: could not fetch {archive.url} into {folder} \(.*refused"):
        download.ensure_archive(archive, folder)
    assert leftovers(folder) == []


def test_read_only_folder_is_left_untouched(tmp_path, serve, zip_body) -> None:
    folder = tmp_path / "omniglot"
    folder.mkdir()
    folder.chmod(0o555)
    server = serve()
    try:
        with pytest.raises(DatasetError, match=rf"into {folder} \({folder} is read-only\)"):
            download.ensure_archive(archive_for(server, zip_body), folder)
        assert list(folder.iterdir()) == [] and server.gets == {}
    finally:
        folder.chmod(0o755)


def test_stale_partial_download_is_ignored_and_cleaned(tmp_path, serve, zip_body) -> None:
    folder = tmp_path / "omniglot"
    (folder / f".{TOP}.partial-dead" / "x" / TOP).mkdir(parents=True)  # a killed process's: hidden, not the target
    server = serve()
    download.ensure_archive(archive_for(server, zip_body), folder)
    assert leftovers(folder) == [TOP] and server.gets == {f"{TOP}.zip": 1}


# ----------------------------------------------------------------------------- several processes

FETCH = """
import sys
from dml_core.data import download
url, md5, size, folder = sys.argv[1:]
download.ensure_archive(download.Archive(url, md5, {top!r}, size=int(size), default=False), folder)
print("ok")
""".format(top=TOP)


def fetch_process(archive: download.Archive, folder: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-c", FETCH, archive.url, archive.md5, str(archive.size), str(folder)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_concurrent_starts_download_exactly_once(tmp_path, serve, zip_body) -> None:
    server = serve(delay_s=10.0)  # the first download is still running when the others ask
    archive, folder = archive_for(server, zip_body), tmp_path / "omniglot"
    procs = [fetch_process(archive, folder) for _ in range(3)]
    outs = [p.communicate(timeout=280) for p in procs]
    assert [p.returncode for p in procs] == [0] * 3, [err for _, err in outs]
    assert server.gets == {f"{TOP}.zip": 1}
    assert leftovers(folder) == [TOP] and len(list((folder / TOP).glob("*/*/*.png"))) == 8


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_download_leaves_no_folder_and_the_next_run_completes(tmp_path, serve, zip_body) -> None:
    server = serve(delay_s=20.0)
    archive, folder = archive_for(server, zip_body), tmp_path / "omniglot"
    proc = fetch_process(archive, folder)
    assert server.started.wait(240), proc.communicate()
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not (folder / TOP).exists()
    server.delay_s = 0.0
    download.ensure_archive(archive, folder)
    assert leftovers(folder) == [TOP] and server.gets == {f"{TOP}.zip": 2}


# ----------------------------------------------------------------------------- table and config


def test_paths_choose_the_archive_they_name(tmp_path) -> None:
    def plan(**paths) -> list[tuple[str, Path]]:
        cfg = DataConfig.of(name=paths.pop("name", "omniglot"), download=True, **paths)
        return [(a.filename, folder) for a, folder in download.planned_downloads(cfg)]

    small = tmp_path / "omniglot" / "images_background_small1"
    assert plan(root=str(small)) == [("images_background_small1.zip", tmp_path / "omniglot")]
    assert plan(root=str(tmp_path / "omniglot")) == [
        ("images_background.zip", tmp_path / "omniglot"), ("images_evaluation.zip", tmp_path / "omniglot")]
    assert plan(train_root=str(tmp_path / "images_background"), test_root=str(tmp_path / "images_evaluation")) == [
        ("images_background.zip", tmp_path), ("images_evaluation.zip", tmp_path)]
    assert plan(name="cub200", root=str(tmp_path / "CUB_200_2011")) == [("CUB_200_2011.tgz", tmp_path)]
    assert plan(name="cub200", root=str(tmp_path / "cub")) == [("CUB_200_2011.tgz", tmp_path / "cub")]


def test_official_small_subsets_are_in_the_table() -> None:
    by_name = {a.filename: a for a in DATASETS.get("omniglot").archives}
    small1 = by_name["images_background_small1.zip"]
    assert small1.url == f"{OMNIGLOT_URL}/images_background_small1.zip"
    assert (small1.size, small1.md5) == (1_319_022, "e704a628b5459e08445c13499850abc4")
    assert OMNIGLOT_URL.startswith("https://raw.githubusercontent.com/brendenlake/omniglot/")


def test_refusals_are_one_line(tmp_path) -> None:
    with pytest.raises(DatasetError, match=r"^data\.download: no direct download for sop; .*Stanford_Online_Products"):
        download.ensure_downloaded(DataConfig.of(name="sop", root=str(tmp_path)))
    download.ensure_downloaded(DataConfig.of())  # digits: bundled, nothing to do
    with pytest.raises(DatasetError, match=r"^data\.root: required with data\.download"):
        download.ensure_downloaded(DataConfig.of(name="cub200"))


def test_build_datasets_fetches_the_subset_under_dml_data(tmp_path, serve, zip_body, monkeypatch) -> None:
    server = serve()
    monkeypatch.setattr(DATASETS.get("omniglot"), "archives", (archive_for(server, zip_body),))
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "data"))
    cfg = DataConfig.of(name="omniglot", root="${DML_DATA}/omniglot/" + TOP, download=True)
    splits = build_datasets(cfg)
    assert splits.train.class_names == ["A/character01", "A/character02"]
    assert splits.test.class_names == ["B/character01", "B/character02"]
    assert (tmp_path / "data" / "omniglot" / TOP).is_dir()


def test_dml_data_expansion(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert expand_data_path("${DML_DATA}/omniglot") == f"{tmp_path}/omniglot"
    assert expand_data_path("$DML_DATA/omniglot") == f"{tmp_path}/omniglot"
    with pytest.raises(DatasetError, match=r"^data.root: \$DML_DATAX: only \$\{DML_DATA\} is expanded"):
        expand_data_path("$DML_DATAX/a")  # another variable: an error, never a literal folder
    assert expand_data_path("~/d") == str(Path.home() / "d") and expand_data_path(None) is None
    monkeypatch.delenv(DATA_ENV)
    assert data_home() == Path.home() / ".cache" / "dml-sweep" / "data"
    assert expand_data_path("${DML_DATA}/x") == str(Path.home() / ".cache" / "dml-sweep" / "data" / "x")

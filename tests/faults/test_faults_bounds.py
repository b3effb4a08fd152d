"""Issue 19, defect 8: inputs are bounded. YAML aliases cannot expand a kilobyte into millions of
values, an error line cannot grow to megabytes, a download cannot fill the disk, an archive cannot
expand without limit, and an archive's top folder cannot be a symbolic link."""
from __future__ import annotations

import hashlib
import os
import http.server
import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dml_core.config import ConfigError, load_config
from dml_core.data import DatasetError, download
from dml_core.errors import MAX_LINE
from faults_testlib import one_error_line, tiny, write_yaml

TOP = "images_background_small9"


def _alias_bomb(levels: int = 7, width: int = 10) -> str:
    """About 1 KB of nested anchors that expands to width ** levels values."""
    lines = [f"l0: &l0 [{', '.join(['1'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines)


@pytest.mark.parametrize("where", ["sweep", "sweep.grid"])
def test_yaml_aliases_expand_within_a_bound(tmp_path: Path, where: str) -> None:
    """1.1 KB in `sweep:` trained and wrote a 20 MB config.yaml; in `sweep.grid` it printed one 7.2 MB line."""
    body = _alias_bomb()
    indent = "  " if where == "sweep" else "    "
    head = "sweep:\n" if where == "sweep" else "sweep:\n  grid:\n"
    path = write_yaml(tmp_path / "b.yaml", tiny())
    path.write_text(path.read_text() + head + "\n".join(indent + line for line in body.splitlines()) + "\n")
    assert len(path.read_bytes()) < 2000
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: line ") and "aliases expand this value to more than 100000" in str(info.value)


def test_a_recursive_alias_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("data: &d [1, *d]\n")
    with pytest.raises(ConfigError, match=r": line 1: an alias refers to the value that contains it$"):
        load_config(path)


def test_an_error_line_is_bounded(tmp_path: Path, capsys) -> None:
    """A value echoed back in an error (here 40,000 repeated grid values) stays one short line."""
    from sweep.run import main

    raw = tiny()
    raw["sweep"] = {"grid": {"optimizer.lr": [0.1] * 40_000}}
    cfg = write_yaml(tmp_path / "g.yaml", raw)
    assert main([str(cfg), "--out", str(tmp_path / "s"), "--dry-run"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {cfg}: sweep.grid.optimizer.lr: repeated values [0.1, 0.1")
    assert len(line) <= len("error: ") + MAX_LINE and line.endswith(" characters)")


# ------------------------------------------------------------------ downloads


class _Server:
    """Loopback HTTP serving one body, with or without a Content-Length."""

    def __init__(self, body: bytes, length: bool = True) -> None:
        owner = self
        self.body = body

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # without Content-Length the body ends when the connection closes

            def do_GET(self) -> None:  # noqa: N802
                self.send_response(200)
                if length:
                    self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                try:
                    for i in range(0, len(owner.body), 1 << 20):
                        self.wfile.write(owner.body[i:i + (1 << 20)])
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator:
    servers = []

    def start(body: bytes, length: bool = True) -> _Server:
        servers.append(_Server(body, length))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def read_bytes(monkeypatch) -> list[int]:
    """Counts what the download reads from the server."""
    count = [0]
    real = download._chunks

    def counting(response) -> Iterator[bytes]:
        for chunk in real(response):
            count[0] += len(chunk)
            yield chunk

    monkeypatch.setattr(download, "_chunks", counting)
    return count


def _fetch(server: _Server, tmp_path: Path, body_md5: bytes, size: int | None) -> str:
    archive = download.Archive(server.url(f"{TOP}.zip"), hashlib.md5(body_md5).hexdigest(), TOP, size=size, default=False)
    with pytest.raises(DatasetError) as info:
        download.ensure_archive(archive, tmp_path / "data")
    assert not (tmp_path / "data" / TOP).exists()
    return str(info.value)


@pytest.mark.parametrize("length", [True, False], ids=["announced", "unannounced"])
def test_a_response_larger_than_the_archive_is_cut_off_while_streaming(tmp_path: Path, serve, read_bytes,
                                                                       length: bool) -> None:
    body = bytes(24 << 20)
    msg = _fetch(serve(body, length), tmp_path, b"small", size=1000)
    assert read_bytes[0] <= 1000 + download._CHUNK, "read past the expected size"
    assert "more than the 1000 " in msg


def test_an_archive_of_unknown_size_is_capped_at_the_stated_maximum(tmp_path: Path, serve, read_bytes,
                                                                     monkeypatch) -> None:
    monkeypatch.setattr(download, "MAX_DOWNLOAD_BYTES", 3 << 20)
    body = bytes(24 << 20)
    msg = _fetch(serve(body, length=False), tmp_path, body, size=None)
    assert read_bytes[0] <= (3 << 20) + download._CHUNK
    assert f"more than the {3 << 20} bytes expected" in msg


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _served_archive(serve, body: bytes, name: str = f"{TOP}.zip") -> download.Archive:
    server = serve(body)
    return download.Archive(server.url(name), hashlib.md5(body).hexdigest(), TOP, size=len(body), default=False)


def test_an_archive_that_expands_far_beyond_its_size_is_refused(tmp_path: Path, serve) -> None:
    """A 206 KB archive extracted 210 MB."""
    body = _zip({f"{TOP}/a/c1/{i}.png": bytes(4 << 20) for i in range(4)})  # 16 MB of zeros in ~16 KB
    with pytest.raises(DatasetError, match=r"-fold .* more than the 20-fold an image archive does"):
        download.ensure_archive(_served_archive(serve, body), tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == [tmp_path / "data" / f".{TOP}.lock"]


def test_an_archive_past_the_total_cap_is_refused(tmp_path: Path, serve, monkeypatch) -> None:
    import os

    monkeypatch.setattr(download, "MAX_EXTRACTED_BYTES", 1 << 20)
    body = _zip({f"{TOP}/a/c1/{i}.png": os.urandom(300_000) for i in range(4)})  # 1.2 MB, incompressible
    with pytest.raises(DatasetError, match=f"expands to 1200000 bytes, more than the {1 << 20} allowed"):
        download.ensure_archive(_served_archive(serve, body), tmp_path / "data")


def test_an_archive_whose_top_folder_is_a_link_is_refused(tmp_path: Path, serve) -> None:
    """Moved into place, the link dangled (or aliased another dataset's folder)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = b"png"
        info = tarfile.TarInfo("real/a/c1/0.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(TOP)
        link.type, link.linkname = tarfile.SYMTYPE, "real"
        tf.addfile(link)
    body = buf.getvalue()
    with pytest.raises(DatasetError, match=f"its folder {TOP} is a symbolic link"):
        download.ensure_archive(_served_archive(serve, body, f"{TOP}.tgz"), tmp_path / "data")
    assert not os.path.lexists(tmp_path / "data" / TOP)

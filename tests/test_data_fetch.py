"""Download with resume against a local HTTP server on 127.0.0.1 (never the real URL), member check, manifest."""
import contextlib
import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest

from benchmarks_it_maps.data import conventions as cv
from benchmarks_it_maps.data import assemblies as data
from benchmarks_it_maps.data import fetch
from benchmarks_it_maps.cli import main


class ArchiveServer:
    """Serves ``payload`` at /Arcaro2020.zip with HTTP Range support; can cut a response after ``cut`` bytes or
    ignore Range. Records the Range header of every request."""

    def __init__(self, payload: bytes):
        self.payload, self.cut, self.honour_range, self.ranges = payload, None, True, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/Arcaro2020.zip":
                    self.send_error(404)
                    return
                header = self.headers.get("Range")
                server.ranges.append(header)
                start = int(header.split("=")[1].split("-")[0]) if header and server.honour_range else 0
                body = server.payload[start:]
                if start >= len(server.payload) and header:
                    self.send_response(416)  # as real servers do: the full size in Content-Range
                    self.send_header("Content-Range", f"bytes */{len(server.payload)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(server.payload) - 1}/{len(server.payload)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut is not None:
                    self.wfile.write(body[: server.cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/Arcaro2020.zip"

    @contextlib.contextmanager
    def running(self):
        thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture
def payload(sim_small) -> bytes:
    return sim_small["archive"].read_bytes()


@pytest.fixture
def tiny_zip(tmp_path):
    """Another valid archive in the released layout (hand-made, real data family), larger than the twin (3 MB)."""
    from test_data_import import write_tiny
    folder = write_tiny(tmp_path / "tiny" / "Arcaro2020")
    zipped = tmp_path / "tiny.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for file in sorted(folder.rglob("*")):
            z.write(file, Path("Arcaro2020") / file.relative_to(folder))
        z.writestr("Arcaro2020/notes.bin", bytes(range(256)) * 12_000)  # larger than the twin
    return zipped


def test_interrupted_download_resumes_and_imports(payload, tmp_path):
    server = ArchiveServer(payload)
    home = tmp_path / "home"
    with server.running():
        server.cut = len(payload) // 3
        with pytest.raises(fetch.FetchError, match="run the command again to resume"):
            fetch.fetch_arcaro2020(server.url, home=home)
        partial = home / "downloads" / "Arcaro2020.zip.partial"
        assert partial.stat().st_size == len(payload) // 3
        assert not (home / "downloads" / "Arcaro2020.zip").exists()
        server.cut = None
        result = fetch.fetch_arcaro2020(server.url, home=home)
    assert server.ranges == [None, f"bytes={len(payload) // 3}-"]
    archive = home / "downloads" / "Arcaro2020.zip"
    assert archive.read_bytes() == payload and not partial.exists()
    sha = hashlib.sha256(payload).hexdigest()
    assert result["sha256"] == sha and result["family"] == "Arcaro2020sim" and result["status"] == "imported"
    manifest = json.loads((home / "downloads" / "manifest.json").read_text())
    assert manifest["Arcaro2020.zip"]["sha256"] == sha and manifest["Arcaro2020.zip"]["url"] == server.url
    assert data.load_assembly("Arcaro2020sim.M2ML", home=home).sizes["neuroid"] == 32


def test_resume_from_partial_file_and_server_without_range(payload, tmp_path):
    home = tmp_path / "home"
    partial = home / "downloads" / "Arcaro2020.zip.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(payload[:1000])
    server = ArchiveServer(payload)
    with server.running():
        fetch.download(server.url, home / "downloads" / "Arcaro2020.zip", progress=False)
        assert server.ranges == ["bytes=1000-"]
        assert (home / "downloads" / "Arcaro2020.zip").read_bytes() == payload
        # a server that ignores Range sends everything again: the partial file is restarted, not appended to
        server.honour_range = False
        out_partial = tmp_path / "again.zip.partial"
        out_partial.write_bytes(b"garbage")
        out = fetch.download(server.url, tmp_path / "again.zip", progress=False)
        assert server.ranges[-1] == "bytes=7-"
    assert out.read_bytes() == payload and not out_partial.exists()


def test_file_url_and_reuse(payload, tmp_path, sim_small):
    home = tmp_path / "home"
    first = fetch.fetch_arcaro2020(sim_small["archive"].as_uri(), home=home)
    assert first["status"] == "imported"
    second = fetch.fetch_arcaro2020("http://127.0.0.1:9/never-contacted.zip", home=home)  # archive already there
    assert second["status"] == "unchanged" and second["sha256"] == first["sha256"]
    # --force downloads and imports again; a forced download that fails keeps the archive already there
    with pytest.raises(fetch.FetchError, match="brainscore data import arcaro2020"):
        fetch.fetch_arcaro2020("http://127.0.0.1:9/unreachable.zip", home=home, force=True)
    assert (home / "downloads" / "Arcaro2020.zip").read_bytes() == sim_small["archive"].read_bytes()
    forced = fetch.fetch_arcaro2020(sim_small["archive"].as_uri(), home=home, force=True)
    assert forced["status"] == "imported" and forced["sha256"] == first["sha256"]
    with pytest.raises(fetch.FetchError, match="differs from the expected"):
        fetch.fetch_arcaro2020(sim_small["archive"].as_uri(), home=home, expected_sha256="0" * 64)
    assert not (home / "downloads" / "Arcaro2020.zip").exists()


def test_wrong_archive_is_rejected(tmp_path):
    bad = tmp_path / "served.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("Arcaro2020/George/george_060118_data.mat", b"x")
        z.writestr("Arcaro2020/George/natural_test/a.png", b"x")
    server = ArchiveServer(bad.read_bytes())
    home = tmp_path / "home"
    with server.running(), pytest.raises(fetch.FetchError) as info:
        fetch.fetch_arcaro2020(server.url, home=home)
    message = str(info.value)
    assert "Red/red_062419_data.mat" in message and "Red/red_naturalface/ (images)" in message
    assert "George/george" not in message.split("missing:")[1].split("(expected")[0]
    assert not (home / "downloads" / "Arcaro2020.zip").exists()
    assert not (home / cv.IDENTIFIER).exists()


def test_offline_fetch_prints_one_line_on_importing_a_local_copy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(tmp_path / "home"))
    code = main(["data", "fetch", "arcaro2020", "--url", "http://127.0.0.1:9/Arcaro2020.zip"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1
    assert "brainscore data import arcaro2020 PATH/TO/Arcaro2020.zip" in err[0]
    assert list((tmp_path / "home").iterdir()) == []


def test_foreign_partial_download_is_never_imported(payload, tmp_path, tiny_zip, capsys, monkeypatch):
    """HTTP 416 on a leftover .partial that is another valid archive (larger, or of the same size with another
    end): it is discarded and the server's archive is downloaded and imported; trust on first use is said."""
    server = ArchiveServer(payload)
    home = tmp_path / "home"
    partial = home / "downloads" / "Arcaro2020.zip.partial"
    partial.parent.mkdir(parents=True)
    foreign = tiny_zip.read_bytes()
    assert len(foreign) > len(payload)
    same_size = payload[:-200] + bytes(200)
    with server.running():
        for leftover in (foreign, same_size):
            partial.write_bytes(leftover)
            (home / "downloads" / "Arcaro2020.zip").unlink(missing_ok=True)
            out = fetch.download(server.url, home / "downloads" / "Arcaro2020.zip", progress=False)
            assert out.read_bytes() == payload and not partial.exists()
        assert server.ranges[:3] == [f"bytes={len(foreign)}-", None, f"bytes={len(payload)}-"]
        # the server's own complete file (a download killed just before its rename) is accepted as it is
        (home / "downloads" / "Arcaro2020.zip").rename(partial)
        monkeypatch.setenv("BRAINSCORE_ITMAPS_HOME", str(home))
        capsys.readouterr()
        assert main(["data", "fetch", "arcaro2020", "--url", server.url]) == 0
    captured = capsys.readouterr()
    assert "(trusted on first use)" in captured.out and "note: this hash was not verified" in captured.out
    assert (home / "downloads" / "Arcaro2020.zip").read_bytes() == payload
    assert data.load_assembly("Arcaro2020sim.M2ML", home=home).sizes["neuroid"] == 32
    # a later archive with another hash than the one trusted at first use is refused unless --force
    (home / "downloads" / "Arcaro2020.zip").write_bytes(foreign)
    with pytest.raises(fetch.FetchError, match="trust on first use"):
        fetch.fetch_arcaro2020(server.url, home=home)

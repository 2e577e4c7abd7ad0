"""`scenemtl data download`: resumable HTTP download, checksum verification, extraction, clear offline errors."""

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scenemtl.cli import main
from scenemtl.data.base import DATASETS, DatasetInfo, DenseDataset
from scenemtl.data.download import Archive, download
from scenemtl.errors import DataError


def tarball() -> bytes:
    """A small .tar.gz holding Release/gt_sets/train.txt and a 200 kB file."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in (("Release/gt_sets/train.txt", b"a\nb\n"), ("Release/blob.bin", bytes(range(256)) * 800)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Server:
    """Serves one file with Range support; ``cut_after`` bytes into the first full request it drops the connection."""

    def __init__(self, payload: bytes, cut_after: int | None = None, ranges: bool = True) -> None:
        self.payload, self.cut_after, self.ranges = payload, cut_after, ranges
        self.requests: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                header = self.headers.get("Range")
                server.requests.append(header)
                start = int(header.split("=")[1].rstrip("-")) if header and server.ranges else 0
                body = server.payload[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    body, server.cut_after = body[: server.cut_after], None
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/Release.tar.gz"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_dataset(monkeypatch):
    """Register a dataset whose archive the test server provides; ``set(url, sha256)`` points it there."""

    class Fake(DenseDataset):
        info = DatasetInfo(name="download_fixture", tasks=("semseg",), class_names={"semseg": ["a", "b"]})

    def configure(url: str | None, sha256: str | None = None, manual: str | None = None):
        Fake.archives = (Archive("Release.tar.gz", url=url, sha256=sha256, manual=manual),)

    monkeypatch.setitem(DATASETS._items, "download_fixture", Fake)
    return configure


def test_interrupted_download_resumes_with_a_range_request_verifies_and_extracts(tmp_path, fake_dataset):
    payload = tarball()
    server = Server(payload, cut_after=len(payload) // 3)
    try:
        fake_dataset(server.url, hashlib.sha256(payload).hexdigest())
        with pytest.raises(DataError, match=r"cannot download Release.tar.gz .*Release.tar.gz.part is kept and resumed"):
            download("download_fixture", tmp_path, report=lambda _: None)
        part = tmp_path / "Release.tar.gz.part"
        assert part.stat().st_size == len(payload) // 3
        download("download_fixture", tmp_path, report=lambda _: None)
    finally:
        server.close()
    assert server.requests == [None, f"bytes={len(payload) // 3}-"]
    assert (tmp_path / "Release.tar.gz").read_bytes() == payload and not part.exists()
    assert (tmp_path / "Release" / "gt_sets" / "train.txt").read_text() == "a\nb\n"
    assert (tmp_path / "Release" / "blob.bin").stat().st_size == 256 * 800


def test_a_server_without_ranges_restarts_and_a_checksum_mismatch_keeps_the_file_aside(tmp_path, fake_dataset):
    payload = tarball()
    server = Server(payload, cut_after=1000, ranges=False)
    try:
        fake_dataset(server.url, "0" * 64)
        with pytest.raises(DataError):
            download("download_fixture", tmp_path, report=lambda _: None)
        messages: list[str] = []
        with pytest.raises(DataError, match=r"failed verification .*moved to .*Release.tar.gz.corrupt"):
            download("download_fixture", tmp_path, report=messages.append)
    finally:
        server.close()
    assert any("does not resume" in m for m in messages)
    assert (tmp_path / "Release.tar.gz.corrupt").read_bytes() == payload  # nothing is lost
    assert not (tmp_path / "Release").exists()


def test_without_a_published_checksum_the_first_download_is_recorded_and_kept_to(tmp_path, fake_dataset):
    payload = tarball()
    server = Server(payload)
    try:
        fake_dataset(server.url)
        download("download_fixture", tmp_path, report=lambda _: None)
    finally:
        server.close()
    record = tmp_path / "Release.tar.gz.sha256"
    assert record.read_text().split()[0] == hashlib.sha256(payload).hexdigest()
    archive = tmp_path / "Release.tar.gz"
    archive.write_bytes(payload[:-10] + b"0123456789")  # a changed copy fails against the record
    with pytest.raises(DataError, match="failed verification"):
        download("download_fixture", tmp_path, report=lambda _: None)


def test_offline_and_login_only_archives_say_what_to_fetch_and_where(tmp_path, fake_dataset, capsys):
    fake_dataset("http://127.0.0.1:9/Release.tar.gz")  # nothing listens on the discard port
    assert main(["data", "download", "download_fixture", "--root", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "Fetch it from http://127.0.0.1:9/Release.tar.gz" in error and str(tmp_path / "Release.tar.gz") in error
    fake_dataset(None, manual="register at example.org and download Release.tar.gz")
    with pytest.raises(DataError, match=r"cannot be downloaded automatically: register at example.org"):
        download("download_fixture", tmp_path, report=lambda _: None)
    # put there by hand, it is verified (recorded) and extracted
    (tmp_path / "Release.tar.gz").write_bytes(tarball())
    download("download_fixture", tmp_path, report=lambda _: None)
    assert (tmp_path / "Release" / "gt_sets" / "train.txt").is_file()


def test_every_registered_release_names_its_archives():
    for name in DATASETS.names():
        cls = DATASETS.get(name)
        for archive in cls.archives:
            assert archive.url or archive.manual, (name, archive)
            assert Path(archive.filename).name == archive.filename


def test_an_archive_of_archives_unpacks_into_its_folder_as_the_decathlons_data(tmp_path, monkeypatch):
    """``into`` and ``inner``: the outer .tar.gz goes to root/into, and the per-domain .tar files it holds are unpacked and removed."""

    def tar(members: dict[str, bytes], mode: str) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode=mode) as archive:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    inner = {f"{d}.tar": tar({f"{d}/train/0001/000001.jpg": b"jpeg"}, "w") for d in ("dtd", "svhn")}
    server = Server(tar(inner, "w:gz"))

    class Fake(DenseDataset):
        info = DatasetInfo(name="nested_fixture", tasks=("semseg",), class_names={"semseg": ["a", "b"]})
        archives = (Archive("outer.tar.gz", url=server.url, into="release/data", inner=True),)

    monkeypatch.setitem(DATASETS._items, "nested_fixture", Fake)
    try:
        download("nested_fixture", tmp_path, report=lambda _: None)
    finally:
        server.close()
    data = tmp_path / "release" / "data"
    assert (data / "dtd" / "train" / "0001" / "000001.jpg").read_bytes() == b"jpeg" and (data / "svhn" / "train").is_dir()
    assert not list(data.glob("*.tar")) and (data / "outer.tar.gz").is_file()

"""``scenemtl data download``: fetch a dataset's public archives, resumably, verify and extract them.

Each dataset class lists its archives (``DenseDataset.archives``). A download goes to
``<root>/<file>.part`` and continues from its size with an HTTP Range request after an
interruption; the finished file is checked against the published checksum where one is known
(where none is, its SHA-256 is recorded next to it, so a later re-extraction verifies against
the first download), then extracted into ``root``. Archives that need a login or a form
(Cityscapes, Synthia) are not fetched: the message says where to get them and where to put them.
"""

from __future__ import annotations

import hashlib
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scenemtl.errors import DataError


@dataclass(frozen=True)
class Archive:
    """One file of a dataset release.

    ``url`` None means there is no direct public link; ``manual`` then says how to get the file.
    ``sha256``/``md5`` are the published checksums where the seeds or the hosts publish them.
    ``extract`` False keeps the file as downloaded (e.g. a single ``.mat`` file).
    """

    filename: str
    url: str | None = None
    mirrors: tuple[str, ...] = ()
    sha256: str | None = None
    md5: str | None = None
    extract: bool = True
    manual: str | None = None
    #: the sub-folder of ``root`` the file goes to and is extracted in ("": ``root`` itself)
    into: str = ""
    #: after extracting, extract every ``.tar`` file the archive put at the top of that folder, and delete it
    #: (the Visual Decathlon's data archive holds one tar per domain)
    inner: bool = False


CHUNK = 1 << 20


def _digest(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            hasher.update(block)
    return hasher.hexdigest()


def _fetch(url: str, part: Path, timeout: float, report: Callable[[str], None]) -> None:
    """Download ``url`` into ``part``, continuing from its current size when the server allows it."""
    done = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "scenemtl", **({"Range": f"bytes={done}-"} if done else {})})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and done:  # the part is already whole
            return
        raise
    with response:
        resumed = done and response.status == 206
        if done and not resumed:
            report(f"{url}: the server does not resume downloads; starting {part.name} again")
            done = 0
        total = response.headers.get("Content-Length")
        total = int(total) + done if total is not None else None
        with open(part, "ab" if resumed else "wb") as handle:
            last = time.monotonic()
            while block := response.read(CHUNK):
                handle.write(block)
                done += len(block)
                if time.monotonic() - last > 5:
                    last = time.monotonic()
                    report(f"{part.name}: {done / 2**20:.0f} MiB" + (f" of {total / 2**20:.0f} MiB" if total else ""))
    if total is not None and done < total:
        raise urllib.error.URLError(f"the connection closed after {done} of {total} bytes")


def _verify(path: Path, archive: Archive, report: Callable[[str], None]) -> None:
    """Published checksums must match; without one, the first download's SHA-256 is recorded and kept to."""
    record = path.with_name(path.name + ".sha256")
    sha256 = _digest(path, "sha256")
    expected = archive.sha256 or (record.read_text().split()[0] if record.is_file() else None)
    problems = []
    if expected and sha256 != expected.lower():
        problems.append(f"SHA-256 {sha256}, expected {expected}")
    if archive.md5 and _digest(path, "md5") != archive.md5.lower():
        problems.append(f"MD5 differs from the published {archive.md5}")
    if problems:
        bad = path.with_name(path.name + ".corrupt")
        path.replace(bad)
        raise DataError(
            f"{path.name} failed verification ({'; '.join(problems)}); it was moved to {bad}. Delete it "
            "and run the command again to download the file anew."
        )
    if archive.sha256 is None and not record.is_file():
        record.write_text(f"{sha256}  {path.name}\n")
        report(f"{path.name}: no published checksum; recorded its SHA-256 in {record.name}")


def _extract(path: Path, root: Path, report: Callable[[str], None]) -> None:
    marker = root / f".{path.name}.extracted"
    if marker.is_file():
        return
    report(f"extracting {path.name} into {root}")
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                archive.extractall(root)
        else:
            with tarfile.open(path) as archive:
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python ≥ 3.10.12 / 3.11.4
                archive.extractall(root, **safe)
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as error:
        raise DataError(f"cannot extract {path}: {error}. Delete the file and run the command again.") from None
    marker.write_text("extracted\n")


def download(name: str, root: str | Path, report: Callable[[str], None] = print, timeout: float = 30.0) -> list[Path]:
    """Fetch, verify and extract every archive of dataset ``name`` into ``root``; returns the archive paths.

    A finished archive already in ``root`` (downloaded by hand) is verified and extracted without
    a download, so the archives that need a login are handled by putting them there first.
    """
    from scenemtl.data.base import DATASETS

    cls = DATASETS.get(name)
    if not cls.archives:
        raise DataError(
            f"dataset '{name}' has no download: it is generated or must be assembled by hand (see its "
            "documentation in `scenemtl list datasets`)"
        )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for archive in cls.archives:
        folder = root / archive.into
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / archive.filename
        if not path.is_file():
            urls = [u for u in (archive.url, *archive.mirrors) if u]
            if not urls:
                raise DataError(
                    f"{archive.filename} cannot be downloaded automatically: {archive.manual}. Put it at "
                    f"{path} and run `scenemtl data download {name} --root {root}` again to verify and "
                    "extract it."
                )
            part = path.with_name(path.name + ".part")
            errors = []
            for url in urls:
                try:
                    report(f"downloading {url}" + (f" (resuming at {part.stat().st_size} bytes)" if part.exists() else ""))
                    _fetch(url, part, timeout, report)
                    break
                except (urllib.error.URLError, OSError, TimeoutError) as error:
                    errors.append(f"{url}: {getattr(error, 'reason', error)}")
            else:
                hint = f" ({archive.manual})" if archive.manual else ""
                raise DataError(
                    f"cannot download {archive.filename} ({'; '.join(errors)}). Fetch it from {urls[0]}"
                    f"{hint}, put it at {path} and run `scenemtl data download {name} --root {root}` "
                    "again" + (f"; the partial download {part.name} is kept and resumed." if part.exists() else ".")
                )
            part.replace(path)
        _verify(path, archive, report)
        if archive.extract:
            _extract(path, folder, report)
            if archive.inner:
                for inner in sorted(folder.glob("*.tar")):
                    _extract(inner, folder, report)
                    inner.unlink()
        paths.append(path)
    return paths

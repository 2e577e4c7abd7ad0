"""Run folders on disk: one owner at a time, writability checked up front, OS errors as sentences.

* ``RunLock``: an advisory ``flock`` on ``<run>/.lock`` holding the owner's host, pid, start time
  and command. The kernel drops the lock when its process dies, so a lock file left by a killed
  run is stale by construction and taken over (its previous owner is named in a note); a live
  owner makes a second ``train``/``--resume``/``search`` fail at once, naming it. (``flock`` is
  advisory and local: on a network file system two machines may not see each other's locks.)
* ``check_writable``: creates the folder and a probe file in it before any work starts.
* ``StorageError``: an operating-system failure (disk full, permission, read-only file system,
  missing folder) in one line that names the path and what to do; the CLI exits 1 on it.
* ``file_mode``: the mode new files get under the process umask (0644 by default), which files
  written by libraries that create them owner-only (safetensors: 0600) are given afterwards.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

from scenemtl.errors import ScenemtlError

LOCK_FILE = ".lock"

_CAUSES = {
    errno.ENOSPC: ("the disk is full", "free space there or set out_dir to another disk"),
    errno.EDQUOT: ("the disk quota is exhausted", "free space there or set out_dir to another disk"),
    errno.EROFS: ("the file system is read-only", "set out_dir (or --out) to a writable folder"),
    errno.EACCES: ("permission denied", "fix the folder's permissions or set out_dir (or --out) to a writable folder"),
    errno.EPERM: ("operation not permitted", "fix the folder's permissions or set out_dir (or --out) elsewhere"),
    errno.ENOENT: ("a folder on the way does not exist", "check the path"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "check the path"),
    errno.EFBIG: (
        "the file is too large for this file system or for the process's file-size limit",
        "raise the limit (ulimit -f) or write to another file system",
    ),
    errno.EIO: ("an input/output error (a failing disk or a lost network mount)", "check the disk or mount"),
}


class StorageError(ScenemtlError):
    """The operating system refused a write or read; the CLI prints it in one line and exits 1."""

    exit_code = 1


def error_number(error: BaseException, folder: Path | None = None) -> int | None:
    """The errno behind ``error``: an OSError's own, the ``os error N`` / ``code: N`` that safetensors and
    torch put in their messages, or ENOSPC when the message says nothing but ``folder``'s disk is full."""
    if isinstance(error, OSError) and error.errno is not None:
        return error.errno
    match = re.search(r"(?:os error|code:?)\s*(\d+)", str(error))
    if match:
        return int(match.group(1))
    if folder is not None:
        try:
            if shutil.disk_usage(folder).free < 1 << 20:  # torch's zip writer reports a full disk as "unexpected pos"
                return errno.ENOSPC
        except OSError:
            pass
    return None


def storage_error(error: BaseException, path: Path | str, action: str, note: str = "") -> StorageError:
    """A StorageError saying ``cannot <action> <path>: <cause>; <fix>`` (and ``note``)."""
    path = Path(path)
    number = error_number(error, path if path.is_dir() else path.parent)
    cause, fix = _CAUSES.get(number, (None, None)) if number is not None else (None, None)
    if cause is None:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        cause, fix = (os.strerror(number) if number else detail), "check the disk and the path"
    return StorageError(f"cannot {action} {path}: {cause}; {fix}{note}")


def check_writable(folder: Path | str, what: str) -> Path:
    """Check that files can be written in ``folder`` without creating it: a probe file is written and removed in
    ``folder``, or, when it does not exist yet, in its nearest existing parent; a StorageError if that fails."""
    folder = Path(folder)
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
        probe = existing / f".write-test-{os.getpid()}"
        with open(probe, "wb") as handle:
            handle.write(b"\0")
        probe.unlink()
    except OSError as error:
        raise storage_error(error, folder, f"write the {what} in") from None
    return folder


def file_mode() -> int:
    """The permissions a new file gets under the current umask (``0o666 & ~umask``)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


class RunLock:
    """Exclusive ownership of a run folder by one process (group) while it trains."""

    def __init__(self, folder: Path | str, command: str | None = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.command = command if command is not None else " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
        self._handle = None
        self._created: list[Path] = []
        self.previous: dict | None = None  # the owner a stale lock file named

    @staticmethod
    def owner(path: Path) -> dict:
        try:
            return json.loads(path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return {}

    def acquire(self) -> "RunLock":
        check_writable(self.folder, "run folder")
        missing = self.folder.absolute()
        self._created = []  # folders this lock made, removed again by ``release(discard=True)``
        while not missing.exists():
            self._created.append(missing)
            missing = missing.parent
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")
        except OSError as error:
            raise storage_error(error, self.folder, "write the run folder in") from None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise storage_error(error, self.path, "lock the run folder with") from None
            owner = self.owner(self.path)
            who = (
                (
                    f"process {owner.get('pid', '?')} on {owner.get('host', '?')} since {owner.get('started', '?')}"
                    f" ({owner.get('command', '?')})"
                )
                if owner
                else "another process"
            )
            raise ScenemtlError(
                f"run folder {self.folder} is in use by {who}; wait for it to finish or stop it, or give this run another name / out_dir"
            ) from None
        handle.seek(0)
        previous = handle.read().strip()
        if previous:
            try:
                self.previous = json.loads(previous)
            except json.JSONDecodeError:
                self.previous = {}
        handle.seek(0)
        handle.truncate()
        json.dump(
            {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": self.command},
            handle,
        )
        handle.flush()
        self._handle = handle
        return self

    def release(self, discard: bool = False) -> None:
        """Empty the lock file and drop the lock. The file stays: removing it would let two later runs lock two
        different files; a killed owner leaves its line in it, which the next owner reports as stale.

        ``discard``: the run never started (a user error): the lock file and the folders the lock created go
        again when nothing else was written in them.
        """
        if self._handle is None:
            return
        if discard and self._created:
            self._handle.close()
            self._handle = None
            self.path.unlink(missing_ok=True)
            for folder in self._created:  # innermost first
                try:
                    folder.rmdir()
                except OSError:
                    break
            return
        try:
            self._handle.seek(0)
            self._handle.truncate()
            self._handle.flush()
        except OSError:
            pass
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

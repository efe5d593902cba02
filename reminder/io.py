"""Atomic file writes: a temporary file in the same folder, fsync, then rename.

A reader never sees a half-written file, and an interrupted write leaves the previous
version in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Callable

from reminder.errors import ReminderError, write_failure


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then move the finished file onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        tmp_path.chmod(0o644)  # mkstemp makes 0600; these files are meant to be shared
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException as error:
        tmp_path.unlink(missing_ok=True)
        failure = write_failure(error, path) if isinstance(error, Exception) else None
        if failure is not None:
            raise failure from None
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | os.PathLike, *, kind: type = dict):
    """The JSON in ``path``, which must be a ``kind``; a missing, unreadable or malformed
    file is one error line that names it."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReminderError(f"{path} is missing") from None
    except (OSError, ValueError, RecursionError) as error:
        raise ReminderError(f"{path} is not valid JSON ({str(error)[:120] or type(error).__name__}); it was "
                            f"damaged: restore it, or delete the folder it describes and run again") from None
    if not isinstance(value, kind):
        raise ReminderError(f"{path} must hold a JSON {kind.__name__}, not {type(value).__name__}")
    return value


_held = threading.local()


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, what: str = "folder", log: Callable[[str], None] | None = None):
    """Hold ``FOLDER/.lock`` (an flock) for the block: one process at a time trains,
    increments or exports a run. A second one waits, saying so through ``log``. The lock is
    re-entrant within a thread (an export inside a training step), and the kernel drops it
    when the process dies, so a killed run never leaves it held."""
    import fcntl

    folder = Path(folder)
    key = str(folder.resolve())
    held = getattr(_held, "paths", None)
    if held is None:
        held = _held.paths = {}
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log is not None:
                log(f"another reminder process is working on {what} {folder}; waiting for it to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        held[key] = 1
        try:
            yield
        finally:
            held.pop(key, None)
            fcntl.flock(handle, fcntl.LOCK_UN)

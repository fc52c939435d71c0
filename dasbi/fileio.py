"""Atomic file and folder replacement: outputs are either complete or absent."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_dir", "atomic_path", "fsync_path", "recover"]


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file (or a folder entry) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def recover(path: str | os.PathLike) -> None:
    """Clean up after a process that was killed while replacing ``path``.

    Temporary files and folders of dead processes (``.<name>.tmp-<pid>``) are removed, and
    so are those of a write nested inside one (``..<name>.tmp-<pid>.tmp-<pid>``: an atomic
    write into the temporary file, killed before either rename). A
    folder that was moved aside (``.<name>.old-<pid>``) just before the kill is put back if
    ``path`` is missing, so the previous complete version is never lost; otherwise it is
    removed. Entries of processes that are still running are left alone.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        return
    for kind in ("old", "tmp"):
        prefix = f".{path.name}.{kind}-"
        for entry in folder.iterdir():
            name = entry.name
            if kind == "tmp":
                while name.startswith("." + prefix):  # nested temporaries
                    name = name[1:]
            if not name.startswith(prefix):
                continue
            pid = name[len(prefix) :].split(".")[0].split("-")[0]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            if kind == "old" and not path.exists():
                os.replace(entry, path)
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
        with contextlib.suppress(OSError):
            fsync_path(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces the folder ``path``.

    The old folder (if any) is moved aside first and removed after the swap, so a crash
    leaves either the old or the new folder in place, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        for child in tmp.iterdir():
            fsync_path(child)
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)

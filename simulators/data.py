"""Locating real data files (model grids, catalogues), and fetching them from their sources.

The search order is: an explicit path, the ``DASBI_DATA`` environment variable, then
``../shared/data`` relative to the current folder and to this package's repository, then
the download cache (``DASBI_CACHE``, or the platform's user cache folder, through
platformdirs). Data folders act as a pre-filled cache: nothing is downloaded for a file
that one of them holds.

Every known file is in a registry (``data_registry.json``, written by
``scripts/make_data_registry.py``): its original public source, its SHA-256 and, where the
exact file has a public download, its URL. ``dasbi data fetch NAME`` downloads through
pooch and checks the hash; a file without a URL (derived tables, journal pages that need a
browser) gets a message naming its source and where to put it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "DataFile",
    "MissingDataError",
    "cache_dir",
    "data_root",
    "data_roots",
    "describe",
    "fetch",
    "find_data",
    "locate",
    "matching",
    "registry",
    "sha256",
]


class MissingDataError(FileNotFoundError):
    """A data file is in none of the data folders (the message says how to get it)."""


def cache_dir() -> Path:
    """Where ``dasbi data fetch`` puts downloads: ``DASBI_CACHE`` or the user cache."""
    env = os.environ.get("DASBI_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("dasbi")) / "data"


def _candidates() -> list[Path]:
    out = []
    env = os.environ.get("DASBI_DATA")
    if env:
        out.append(Path(env))
    here = Path(__file__).resolve().parents[1]
    out += [
        Path.cwd().parent / "shared" / "data",
        here.parent / "shared" / "data",
        Path.cwd() / "shared" / "data",
    ]
    return out


def data_roots() -> list[Path]:
    """Every folder searched for data files, in order (existing or not): the data folders,
    then the download cache."""
    return [*_candidates(), cache_dir()]


def data_root() -> Path | None:
    """The first existing data folder (not the download cache), or None."""
    for path in _candidates():
        if path.is_dir():
            return path
    return None


@dataclass(frozen=True)
class DataFile:
    """One registered file: its path inside the data folder, hash, size, URL and source."""

    name: str
    sha256: str
    size: int
    url: str | None
    source: str
    collection: str


@lru_cache(maxsize=1)
def registry() -> dict[str, DataFile]:
    """Every registered file by name (its path inside the data folder)."""
    text = (Path(__file__).parent / "data_registry.json").read_text()
    out: dict[str, DataFile] = {}
    for c in json.loads(text)["collections"]:
        for rel, f in c["files"].items():
            name = f"{c['name']}/{rel}" if rel else c["name"]
            url = f.get("url") or (c["url"] + rel if c.get("url") and rel else c.get("url"))
            out[name] = DataFile(name, f["sha256"], int(f["size"]), url, c["source"], c["name"])
    return out


def matching(name: str) -> list[DataFile]:
    """The registered files named ``name`` or inside the folder ``name``."""
    reg = registry()
    if name in reg:
        return [reg[name]]
    prefix = name.rstrip("/") + "/"
    return [f for k, f in reg.items() if k.startswith(prefix)]


def _fetch_hint(relpath: str) -> str:
    files = matching(relpath)
    if not files:
        return ""
    if all(f.url for f in files):
        return f"; download it with `dasbi data fetch {relpath}`"
    src = files[0].source
    return (
        f"; it has no public download of this exact file (source: {src}): put it at "
        f"{cache_dir() / relpath}"
    )


def find_data(relpath: str, explicit: str | os.PathLike | None = None) -> Path:
    """Path of ``relpath`` inside a data folder or the download cache (or ``explicit``).

    Raises:
        MissingDataError: With the places searched and how to obtain the file.
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        return path
    tried = []
    for root in data_roots():
        path = root / relpath
        tried.append(str(path))
        if path.exists():
            return path
    raise MissingDataError(
        f"{relpath} not found (looked in {', '.join(tried)}); set DASBI_DATA to the folder "
        f"that holds it, or pass its path explicitly{_fetch_hint(relpath)}"
    )


def sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def locate(f: DataFile) -> tuple[Path | None, str]:
    """Where a registered file is, and its state: ``ok``, ``hash mismatch`` or ``missing``
    (the first copy found is checked)."""
    for root in data_roots():
        path = root / f.name
        if path.is_file():
            return path, ("ok" if sha256(path) == f.sha256 else "hash mismatch")
    return None, "missing"


def fetch(
    name: str,
    *,
    mirror: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Make every registered file named ``name`` (or inside the folder ``name``) available.

    A file already in a data folder or the cache with the registered hash is used as it is
    (unless ``force``); others are downloaded into :func:`cache_dir` with pooch, which checks
    the SHA-256.

    Args:
        name: A registered file or folder (``dasbi data list``).
        mirror: Base URL of a copy of the data folder's layout (``<mirror>/<name>``), used
            instead of the registered URLs (an institute's mirror, a local server).
        force: Download even where a good copy exists.

    Raises:
        KeyError: ``name`` is not registered.
        MissingDataError: A file has no public download and is nowhere on disk.
        ValueError: A download's hash does not match the registry.
    """
    files = matching(name)
    if not files:
        near = sorted({f.collection for f in registry().values()})
        raise KeyError(f"{name!r} is not a registered data file or folder; known: {near}")
    out = []
    todo: list[DataFile] = []
    for f in files:
        path, state = (None, "missing") if force else locate(f)
        if state == "ok" and path is not None:
            out.append(path)
        else:
            todo.append(f)
    no_url = [f for f in todo if not (mirror or f.url)]
    if no_url:
        raise MissingDataError(
            f"{len(no_url)} file(s) of {name} have no public download of the exact file "
            f"(source: {no_url[0].source}); put {no_url[0].name} and the others at "
            f"{cache_dir()}/<name>, or set DASBI_DATA to a folder that holds them"
        )
    if todo:
        import pooch

        for f in todo:
            url = f"{mirror.rstrip('/')}/{f.name}" if mirror else f.url
            dest = cache_dir() / f.name
            if force and dest.exists():
                dest.unlink()
            try:
                got = pooch.retrieve(
                    url,
                    known_hash=f"sha256:{f.sha256}",
                    fname=dest.name,
                    path=dest.parent,
                    progressbar=progress and len(todo) < 5,
                )
            except ValueError as err:
                raise ValueError(
                    f"{f.name}: the download from {url} does not have the registered "
                    f"SHA-256 ({err}); the source may have changed: report it, or use "
                    "--mirror with a good copy"
                ) from None
            out.append(Path(got))
    return out


def describe(f: DataFile) -> dict[str, Any]:
    """A registry entry with its state on this machine, for ``dasbi data list``."""
    path, state = locate(f)
    return {
        "name": f.name,
        "size": f.size,
        "state": state,
        "path": None if path is None else str(path),
        "download": bool(f.url),
        "source": f.source,
    }

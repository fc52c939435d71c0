"""Locating real data files (model grids, catalogues) without downloading anything.

The search order is: an explicit path, the ``DASBI_DATA`` environment variable, then
``../shared/data`` relative to the current folder and to this package's repository.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_root", "find_data"]


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


def data_root() -> Path | None:
    """The first existing data folder, or None."""
    for path in _candidates():
        if path.is_dir():
            return path
    return None


def find_data(relpath: str, explicit: str | os.PathLike | None = None) -> Path:
    """Path of ``relpath`` inside the data folder (or ``explicit`` if given).

    Raises:
        FileNotFoundError: With the places searched and how to point dasbi at the data.
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
        return path
    tried = []
    for root in _candidates():
        path = root / relpath
        tried.append(str(path))
        if path.exists():
            return path
    raise FileNotFoundError(
        f"{relpath} not found (looked in {', '.join(tried)}); set DASBI_DATA to the folder "
        "that holds it, or pass its path explicitly"
    )

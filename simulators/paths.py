"""File names built from data: they must stay inside the folder they are written to.

A filter, band or model-set name read from a config, a grid or a catalogue becomes part of
a file name in a few places (``convolved/<filter>.fits``). :func:`safe_name` accepts only
plain names, so such a name can never point outside its folder (``../x``, ``/etc/x``) or
hide a file (``.x``).
"""

from __future__ import annotations

import re

__all__ = ["safe_name"]

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]{0,199}")


def safe_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a plain file-name component, else raise ``ValueError``.

    Allowed: letters, digits, ``_ . + -``, starting with a letter or digit, at most 200
    characters, and no ``..``.
    """
    if not isinstance(name, str) or not _SAFE.fullmatch(name) or ".." in name:
        raise ValueError(
            f"{what} {name!r} cannot be used in a file name: use letters, digits and "
            "'_.+-' only (no path separators, no leading dot, no '..')"
        )
    return name

"""Progress bars (tqdm) on stderr; ``DASBI_PROGRESS=0`` turns them off everywhere."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(*, disable: bool = False, **kwargs: Any) -> tqdm:
    """A tqdm bar with an ETA, written to stderr."""
    if os.environ.get("DASBI_PROGRESS", "1") in ("0", "false", "no"):
        disable = True
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("mininterval", 0.5)
    return tqdm(disable=disable, **kwargs)

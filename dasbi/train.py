"""`dasbi train`: not implemented yet in this version (see the issue tracker)."""

from __future__ import annotations

import argparse

from .errors import NotAvailableError

__all__ = ["run_train_cli"]


def run_train_cli(args: argparse.Namespace) -> int:
    raise NotAvailableError("`dasbi train` is not implemented in this version of dasbi yet")

"""`dasbi evaluate`: not implemented yet in this version (see the issue tracker)."""

from __future__ import annotations

import argparse

from .errors import NotAvailableError

__all__ = ["run_evaluate_cli"]


def run_evaluate_cli(args: argparse.Namespace) -> int:
    raise NotAvailableError("`dasbi evaluate` is not implemented in this version of dasbi yet")

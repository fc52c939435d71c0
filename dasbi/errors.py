"""Exceptions that dasbi raises for user-facing problems.

Every class here derives from :class:`DasbiError`. The CLI catches that base class and prints
the message on one line without a traceback, so messages must say what was wrong and how to
fix it. Classes that describe bad input also derive from :class:`ValueError`, so library code
that expects ``ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DasbiError",
    "DataError",
    "NotAvailableError",
    "ResumeError",
    "SchemaError",
]


class DasbiError(Exception):
    """Base class of the errors dasbi reports to users (no traceback in the CLI)."""


class ConfigError(DasbiError, ValueError):
    """A configuration key, type or value is invalid."""


class DataError(DasbiError, ValueError):
    """A dataset, catalogue or array holds invalid values or cannot be read."""


class SchemaError(DataError):
    """A file was written with an incompatible schema version or is not a dasbi file."""


class CheckpointError(DasbiError, ValueError):
    """A checkpoint folder is missing, corrupt or incompatible."""


class ResumeError(DasbiError):
    """Partial output exists from a run with different arguments."""


class NotAvailableError(DasbiError):
    """A feature needs an optional component (package, data file) that is absent."""

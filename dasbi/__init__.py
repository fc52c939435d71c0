"""dasbi: domain-adaptive simulation-based inference for astronomy.

One Simformer-style score model over the joint (θ, x) gives any conditional: posteriors,
likelihoods and posteriors given any subset of observations.
"""

from ._version import __version__
from .dataset import Block, Dataset, DatasetWriter
from .errors import (
    CheckpointError,
    ConfigError,
    DasbiError,
    DataError,
    NotAvailableError,
    ResumeError,
    SchemaError,
)
from .nodes import Node, NodeSet

__all__ = [
    "Block",
    "Posterior",
    "CheckpointError",
    "ConfigError",
    "DasbiError",
    "DataError",
    "Dataset",
    "DatasetWriter",
    "Node",
    "NodeSet",
    "NotAvailableError",
    "ResumeError",
    "SchemaError",
    "__version__",
]


def __getattr__(name: str) -> object:
    # torch-heavy objects load on first use, so `dasbi --help` stays fast
    if name == "Posterior":
        from .posterior import Posterior

        return Posterior
    raise AttributeError(f"module 'dasbi' has no attribute {name!r}")

"""Checkpoint folders: weights, config, standardisation, node metadata and provenance.

Layout (schema version 1)::

    model/
      meta.json             format, schema_version, dasbi_version, nodes, edges,
                            standardisation statistics, sha256 of every file, extras
      config.yaml           the fully resolved training config
      <name>.safetensors    one file per tensor collection ("weights", "ema", …)
      train_state.pt        optional optimiser/scheduler/RNG state for resuming,
                            read with ``torch.load(weights_only=True)``

Loading never unpickles arbitrary objects: tensors come from safetensors, and the optional
training state is loaded with ``weights_only=True``. Each file's SHA-256 is checked, so a
truncated or edited checkpoint gets a clear :class:`~dasbi.errors.CheckpointError`.
Saving is atomic: a new folder replaces the old one only when it is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ._version import __version__
from .errors import CheckpointError
from .fileio import atomic_dir

__all__ = ["CHECKPOINT_SCHEMA_VERSION", "Checkpoint", "load_checkpoint", "save_checkpoint"]

FORMAT = "dasbi-checkpoint"
CHECKPOINT_SCHEMA_VERSION = 1


@dataclass
class Checkpoint:
    """The contents of a checkpoint folder."""

    path: Path
    tensors: dict[str, dict[str, torch.Tensor]]
    config: str
    meta: dict[str, Any]
    train_state: dict[str, Any] | None = field(default=None)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    path: str | os.PathLike,
    *,
    tensors: Mapping[str, Mapping[str, torch.Tensor]],
    config: str,
    meta: Mapping[str, Any],
    train_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder atomically.

    Args:
        path: Destination folder (replaced if it exists).
        tensors: Collections of named tensors, e.g. ``{"weights": sd, "ema": ema_sd}``.
            The tensors are copied, so later training does not change what was saved.
        config: Resolved config as YAML text.
        meta: JSON-serialisable metadata (nodes, standardisation, …).
        train_state: Optional state for resuming (tensors, numbers, lists, dicts only).
    """
    path = Path(path)
    with atomic_dir(path) as tmp:
        files = {}
        for name, sd in tensors.items():
            fname = f"{name}.safetensors"
            save_file(
                {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()},
                tmp / fname,
            )
            files[fname] = _sha256(tmp / fname)
        (tmp / "config.yaml").write_text(config)
        files["config.yaml"] = _sha256(tmp / "config.yaml")
        if train_state is not None:
            torch.save(dict(train_state), tmp / "train_state.pt")
            files["train_state.pt"] = _sha256(tmp / "train_state.pt")
        full = {
            "format": FORMAT,
            "schema_version": CHECKPOINT_SCHEMA_VERSION,
            "dasbi_version": __version__,
            "torch_version": torch.__version__,
            **dict(meta),
            "files": files,
        }
        (tmp / "meta.json").write_text(json.dumps(full, indent=1, sort_keys=True))
    return path


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``meta.json`` of a checkpoint folder."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist; train one with `dasbi train --out DIR`"
        )
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a folder; pass the folder "
            "written by `dasbi train --out`"
        )
    meta_file = path / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{str(path)!r} is not a dasbi checkpoint: meta.json is missing"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{str(meta_file)!r} is corrupt ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a dasbi checkpoint (format field)")
    version = meta.get("schema_version")
    if version != CHECKPOINT_SCHEMA_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint schema version {version}; this dasbi "
            f"({__version__}) reads version {CHECKPOINT_SCHEMA_VERSION}. Retrain, or install "
            f"the dasbi version that wrote it ({meta.get('dasbi_version')})"
        )
    return meta


def load_checkpoint(path: str | os.PathLike, *, train_state: bool = False) -> Checkpoint:
    """Load a checkpoint folder, verifying every file's checksum.

    Args:
        path: The folder.
        train_state: Also load ``train_state.pt`` (for resuming training).
    """
    path = Path(path)
    meta = read_meta(path)
    files = meta.get("files", {})
    for fname, digest in files.items():
        fpath = path / fname
        if not fpath.is_file():
            raise CheckpointError(f"checkpoint {str(path)!r} is incomplete: {fname} is missing")
        if _sha256(fpath) != digest:
            raise CheckpointError(
                f"checkpoint file {str(fpath)!r} is corrupt (checksum mismatch); "
                "retrain or restore it from a backup"
            )
    tensors = {}
    for fname in files:
        if fname.endswith(".safetensors"):
            try:
                tensors[fname.removesuffix(".safetensors")] = load_file(path / fname)
            except (SafetensorError, OSError) as err:
                raise CheckpointError(f"cannot read {str(path / fname)!r}: {err}") from None
    state = None
    if train_state and "train_state.pt" in files:
        try:
            state = torch.load(path / "train_state.pt", weights_only=True, map_location="cpu")
        except Exception as err:  # noqa: BLE001 - any unpickling failure is a corrupt file
            raise CheckpointError(f"cannot read training state in {str(path)!r}: {err}") from None
    return Checkpoint(
        path=path,
        tensors=tensors,
        config=(path / "config.yaml").read_text(),
        meta=meta,
        train_state=state,
    )

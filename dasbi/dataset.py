"""The dasbi HDF5 dataset: θ and x per modality, with masks, uncertainties and limits.

Layout (schema version 1)::

    /                       attrs: format="dasbi-dataset", schema_version, num_rows,
                                   nodes (JSON), edges (JSON), config (YAML), seed,
                                   versions (JSON), fingerprint, dasbi_version
    /theta/values           (N, P) float32
    /theta/errors           (N, P) float32   1σ uncertainty, 0 = exact
    /theta/observed         (N, P) bool
    /theta/upper_limit      (N, P) bool
    /x/<modality>/...       the same four arrays, (N, D_m); group attrs may hold extras
                            such as a spectrum's wavelength grid

All arrays are chunked along rows and gzip-compressed (with the shuffle filter).

Writing is chunked, atomic and resumable (:class:`DatasetWriter`): each chunk of rows goes
to its own small file in ``<out>.parts/`` (written to a temporary name, then renamed), and
the final file is assembled from the parts into a temporary file that replaces ``<out>``.
Because every chunk is generated from its own seed ``(seed, chunk_index)``, a run that was
killed and restarted with the same arguments produces a byte-identical file.

Reading streams (:meth:`Dataset.iter_batches`), so a file larger than memory can train.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ._version import __version__
from .errors import DataError, ResumeError, SchemaError
from .fileio import atomic_path, fsync_path
from .nodes import THETA, NodeSet

__all__ = [
    "FIELDS",
    "SCHEMA_VERSION",
    "Block",
    "Dataset",
    "DatasetWriter",
    "validate_block",
]

FORMAT = "dasbi-dataset"
SCHEMA_VERSION = 1
FIELDS = ("values", "errors", "observed", "upper_limit")
_DTYPES = {"values": np.float32, "errors": np.float32, "observed": bool, "upper_limit": bool}
_STORAGE_CHUNK_VALUES = 1 << 16


@dataclass
class Block:
    """Values of one group for a range of rows (see :mod:`simulators.base` for conventions).

    Attributes:
        values: (N, D) float32, NaN where unobserved.
        errors: (N, D) float32 1σ uncertainties.
        observed: (N, D) bool.
        upper_limit: (N, D) bool.
    """

    values: np.ndarray
    errors: np.ndarray
    observed: np.ndarray
    upper_limit: np.ndarray

    def __post_init__(self) -> None:
        for name in FIELDS:
            setattr(self, name, np.asarray(getattr(self, name), _DTYPES[name]))

    @classmethod
    def coerce(cls, obj: Any) -> Block:
        """Build from any object with the four attributes (e.g. ``simulators.ObsBlock``)."""
        if isinstance(obj, Block):
            return obj
        if isinstance(obj, Mapping):
            missing = [f for f in FIELDS if f not in obj]
            if missing:
                raise DataError(f"block is missing the arrays {missing}; expected {FIELDS}")
            return cls(**{f: np.asarray(obj[f], _DTYPES[f]) for f in FIELDS})
        try:
            return cls(**{f: np.asarray(getattr(obj, f), _DTYPES[f]) for f in FIELDS})
        except AttributeError as err:
            raise DataError(f"cannot read a data block from {type(obj).__name__}: {err}") from None

    @classmethod
    def exact(cls, values: np.ndarray) -> Block:
        values = np.asarray(values, np.float32)
        return cls(
            values,
            np.zeros_like(values),
            np.ones(values.shape, bool),
            np.zeros(values.shape, bool),
        )

    def __len__(self) -> int:
        return self.values.shape[0]

    def take(self, index: np.ndarray | slice) -> Block:
        return Block(*(getattr(self, f)[index] for f in FIELDS))

    @staticmethod
    def concat(blocks: Sequence[Block]) -> Block:
        return Block(*(np.concatenate([getattr(b, f) for b in blocks]) for f in FIELDS))


def validate_block(group: str, block: Block, nodes: NodeSet, row_offset: int = 0) -> None:
    """Check shapes and values of one group; raise :class:`DataError` naming node and row.

    Rules: observed values and errors are finite, errors are >= 0, limits are observed,
    and parameters (θ) of simulated data are fully observed.
    """
    width = nodes.group_width(group)
    members = nodes.group(group)
    n = len(block.values)
    for name in FIELDS:
        arr = getattr(block, name)
        if arr.shape != (n, width):
            raise DataError(f"{group}/{name}: expected shape ({n}, {width}), got {arr.shape}")

    def where(mask: np.ndarray) -> str:
        row, col = np.argwhere(mask)[0]
        node = members[0].name if members[0].role == "context" else members[col].name
        return f"node {node!r} at row {row + row_offset}"

    obs = block.observed
    bad = obs & ~np.isfinite(block.values)
    if bad.any():
        raise DataError(
            f"{group}: observed value is NaN or inf for {where(bad)} "
            f"({int(bad.sum())} entries); mark missing values as unobserved"
        )
    bad = obs & ~(np.isfinite(block.errors) & (block.errors >= 0))
    if bad.any():
        raise DataError(
            f"{group}: uncertainty must be finite and >= 0 for {where(bad)} "
            f"({int(bad.sum())} entries)"
        )
    bad = block.upper_limit & ~obs
    if bad.any():
        raise DataError(f"{group}: upper limit flagged on an unobserved entry for {where(bad)}")
    if group == THETA and not obs.all():
        raise DataError(f"theta: parameters must be fully observed in a dataset; {where(~obs)}")


def _storage_chunks(n_rows: int, width: int) -> tuple[int, int]:
    rows = max(1, min(n_rows, _STORAGE_CHUNK_VALUES // max(width, 1)))
    return rows, width


def _group_path(group: str) -> str:
    return THETA if group == THETA else f"x/{group}"


class DatasetWriter:
    """Chunked, atomic, resumable writer of a dasbi dataset.

    Args:
        path: The final ``.h5`` file.
        nodes: Node metadata (defines the groups and their widths).
        num_rows: Total number of rows.
        chunk_rows: Rows per chunk (the unit of work, of resuming and of parallelism).
        attrs: Provenance attributes stored on the root (config YAML, seed, versions, …).
        group_attrs: Extra attributes per group (e.g. ``{"xp": {"wavelength_nm": [...]}}``).
        edges: Dependency graph (parent, child) pairs.
        fingerprint: Identifies the run's arguments; a rerun resumes only if it matches.
        overwrite: Remove an existing output or partial run with another fingerprint.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        nodes: NodeSet,
        num_rows: int,
        chunk_rows: int,
        *,
        attrs: Mapping[str, Any] | None = None,
        group_attrs: Mapping[str, Mapping[str, Any]] | None = None,
        edges: Sequence[tuple[str, str]] = (),
        fingerprint: str = "",
        overwrite: bool = False,
    ) -> None:
        if num_rows < 1:
            raise DataError(f"num_rows must be >= 1, got {num_rows}")
        if chunk_rows < 1:
            raise DataError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.path = Path(path)
        self.nodes = nodes
        self.num_rows = int(num_rows)
        self.chunk_rows = int(chunk_rows)
        self.attrs = dict(attrs or {})
        self.group_attrs = {k: dict(v) for k, v in (group_attrs or {}).items()}
        self.edges = nodes.check_edges(edges)
        self.fingerprint = fingerprint
        self.parts = self.path.with_name(self.path.name + ".parts")
        self.already_complete = False
        self._prepare(overwrite)

    # -- bookkeeping -------------------------------------------------------------------
    @property
    def n_chunks(self) -> int:
        return -(-self.num_rows // self.chunk_rows)

    def chunk_range(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_rows
        return start, min(start + self.chunk_rows, self.num_rows)

    def _part(self, index: int) -> Path:
        return self.parts / f"chunk_{index:07d}.h5"

    def _manifest(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "num_rows": self.num_rows,
            "chunk_rows": self.chunk_rows,
            "nodes": json.loads(self.nodes.to_json()),
        }

    def _prepare(self, overwrite: bool) -> None:
        if self.path.exists():
            same = False
            with contextlib.suppress(Exception), h5py.File(self.path, "r") as f:
                same = f.attrs.get("fingerprint") == self.fingerprint and self.fingerprint
            if same and not overwrite:
                # a run killed between the final rename and removing its parts left them
                shutil.rmtree(self.parts, ignore_errors=True)
                self.already_complete = True
                return
            if not overwrite:
                raise ResumeError(
                    f"{self.path} already exists and was written with other arguments; "
                    "pass --overwrite to replace it or choose another --out"
                )
            self.path.unlink()
        manifest = self.parts / "manifest.json"
        if self.parts.exists():
            try:
                old = json.loads(manifest.read_text())
            except (OSError, json.JSONDecodeError):
                old = None
            if old != self._manifest():
                if not overwrite:
                    raise ResumeError(
                        f"{self.parts} holds a partial run with other arguments; rerun with the "
                        "same arguments to resume, or pass --overwrite to start again"
                    )
                shutil.rmtree(self.parts)
        if not self.parts.exists():
            self.parts.mkdir(parents=True)
            with atomic_path(manifest) as tmp:
                tmp.write_text(json.dumps(self._manifest()))

    def done(self) -> set[int]:
        """Indices of chunks whose part file is complete."""
        if self.already_complete:
            return set(range(self.n_chunks))
        out = set()
        for p in self.parts.glob("chunk_*.h5"):
            with contextlib.suppress(ValueError):
                out.add(int(p.stem.split("_")[1]))
        return {i for i in out if i < self.n_chunks}

    def pending(self) -> list[int]:
        done = self.done()
        return [i for i in range(self.n_chunks) if i not in done]

    # -- writing -----------------------------------------------------------------------
    def write_chunk(self, index: int, blocks: Mapping[str, Any]) -> None:
        """Validate and write the rows of chunk ``index`` to their part file, atomically."""
        if not 0 <= index < self.n_chunks:
            raise DataError(f"chunk index {index} out of range [0, {self.n_chunks})")
        start, stop = self.chunk_range(index)
        groups = self.nodes.groups
        unknown = sorted(set(blocks) - set(groups))
        missing = sorted(set(groups) - set(blocks))
        if unknown or missing:
            raise DataError(
                f"chunk groups do not match the nodes: missing {missing}, unknown {unknown}"
            )
        coerced = {g: Block.coerce(blocks[g]) for g in groups}
        for group, block in coerced.items():
            if len(block) != stop - start:
                raise DataError(
                    f"chunk {index}: group {group!r} has {len(block)} rows, "
                    f"expected {stop - start}"
                )
            validate_block(group, block, self.nodes, row_offset=start)
        with atomic_path(self._part(index)) as tmp, h5py.File(tmp, "w") as f:
            for group, block in coerced.items():
                g = f.create_group(_group_path(group))
                for name in FIELDS:
                    g.create_dataset(name, data=getattr(block, name).astype(_DTYPES[name]))

    def finalize(self) -> Path:
        """Assemble the parts into the final file (atomically) and remove the parts."""
        if self.already_complete:
            return self.path
        pending = self.pending()
        if pending:
            raise DataError(f"cannot finalize {self.path}: chunks {pending[:5]}… are not written")
        with atomic_path(self.path) as tmp:
            with h5py.File(tmp, "w") as f:
                self._write_attrs(f)
                dsets = {}
                for group in self.nodes.groups:
                    g = f.create_group(_group_path(group))
                    for key, value in self.group_attrs.get(group, {}).items():
                        g.attrs[key] = value
                    width = self.nodes.group_width(group)
                    for name in FIELDS:
                        dsets[group, name] = g.create_dataset(
                            name,
                            shape=(self.num_rows, width),
                            dtype=_DTYPES[name],
                            chunks=_storage_chunks(self.num_rows, width),
                            compression="gzip",
                            compression_opts=4,
                            shuffle=True,
                        )
                for index in range(self.n_chunks):
                    start, stop = self.chunk_range(index)
                    try:
                        with h5py.File(self._part(index), "r") as part:
                            for (group, name), dset in dsets.items():
                                dset[start:stop] = part[_group_path(group)][name][...]
                    except (OSError, KeyError) as err:
                        self._part(index).unlink(missing_ok=True)
                        raise DataError(
                            f"part file of chunk {index} is corrupt ({err}); it was removed, "
                            "rerun the same command to regenerate it"
                        ) from None
            fsync_path(tmp)
        shutil.rmtree(self.parts, ignore_errors=True)
        return self.path

    def _write_attrs(self, f: h5py.File) -> None:
        f.attrs["format"] = FORMAT
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["dasbi_version"] = __version__
        f.attrs["num_rows"] = self.num_rows
        f.attrs["nodes"] = self.nodes.to_json()
        f.attrs["edges"] = json.dumps(self.edges)
        f.attrs["fingerprint"] = self.fingerprint
        for key, value in self.attrs.items():
            if isinstance(value, dict | list):
                value = json.dumps(value, sort_keys=True)
            f.attrs[key] = value

    @classmethod
    def write(
        cls,
        path: str | os.PathLike,
        nodes: NodeSet,
        blocks: Mapping[str, Any],
        **kwargs: Any,
    ) -> Path:
        """Write in-memory arrays to a dataset in one call (one chunk)."""
        n = len(Block.coerce(next(iter(blocks.values()))))
        kwargs.setdefault("overwrite", True)
        writer = cls(path, nodes, n, n, **kwargs)
        writer.write_chunk(0, blocks)
        return writer.finalize()


class Dataset:
    """Read access to a dasbi HDF5 dataset, streaming in batches.

    >>> ds = Dataset("sims.h5")                     # doctest: +SKIP
    >>> for batch in ds.iter_batches(512, shuffle=True, seed=0):  # doctest: +SKIP
    ...     batch["theta"].values.shape             # (512, P)
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"dataset {str(self.path)!r} does not exist")
        if self.path.is_dir():
            raise DataError(f"dataset path {str(self.path)!r} is a folder, expected an .h5 file")
        if self.path.stat().st_size == 0:
            raise DataError(f"dataset {str(self.path)!r} is empty (0 bytes)")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            raise DataError(
                f"cannot open {str(self.path)!r} as HDF5 ({err}); the file is corrupt or "
                "truncated: regenerate it with `dasbi simulate`"
            ) from None
        attrs = self._file.attrs
        if attrs.get("format") != FORMAT:
            self._file.close()
            raise SchemaError(
                f"{str(self.path)!r} is not a dasbi dataset (attribute format="
                f"{attrs.get('format')!r}); create datasets with `dasbi simulate`"
            )
        version = int(attrs.get("schema_version", -1))
        if version != SCHEMA_VERSION:
            self._file.close()
            raise SchemaError(
                f"{str(self.path)!r} has dataset schema version {version}, this dasbi reads "
                f"version {SCHEMA_VERSION}; regenerate it or install a matching dasbi"
            )
        self.nodes = NodeSet.from_json(attrs["nodes"])
        self.num_rows = int(attrs["num_rows"])
        self.edges = [tuple(e) for e in json.loads(attrs.get("edges", "[]"))]
        for group in self.nodes.groups:
            if _group_path(group) not in self._file:
                self._file.close()
                raise DataError(f"{str(self.path)!r} lacks the group {_group_path(group)!r}")
            for name in FIELDS:
                dset = self._file[_group_path(group)].get(name)
                expected = (self.num_rows, self.nodes.group_width(group))
                if dset is None or dset.shape != expected:
                    self._file.close()
                    raise DataError(
                        f"{str(self.path)!r}: {_group_path(group)}/{name} is missing or has "
                        f"shape {None if dset is None else dset.shape}, expected {expected}"
                    )

    # -- metadata ----------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_rows

    def __enter__(self) -> Dataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def attrs(self) -> dict[str, Any]:
        out = {}
        for key, value in self._file.attrs.items():
            if isinstance(value, bytes):
                value = value.decode()
            if isinstance(value, np.generic):
                value = value.item()
            out[key] = value
        return out

    @property
    def config(self) -> str:
        return str(self.attrs.get("config", ""))

    @property
    def groups(self) -> list[str]:
        return self.nodes.groups

    def group_attrs(self, group: str) -> dict[str, Any]:
        return dict(self._file[_group_path(group)].attrs)

    # -- data --------------------------------------------------------------------------
    def read(
        self, start: int = 0, stop: int | None = None, groups: Sequence[str] | None = None
    ) -> dict[str, Block]:
        """Rows [start, stop) of the given groups (all by default)."""
        stop = self.num_rows if stop is None else min(stop, self.num_rows)
        groups = self.groups if groups is None else list(groups)
        out = {}
        for group in groups:
            if group not in self.groups:
                raise DataError(f"unknown group {group!r}; groups: {', '.join(self.groups)}")
            g = self._file[_group_path(group)]
            try:
                out[group] = Block(*(g[name][start:stop] for name in FIELDS))
            except OSError as err:
                raise DataError(
                    f"{str(self.path)!r}: reading {_group_path(group)} rows {start}:{stop} "
                    f"failed ({err}); the file is corrupt"
                ) from None
            try:
                validate_block(group, out[group], self.nodes, row_offset=start)
            except DataError as err:
                raise DataError(
                    f"{str(self.path)!r}: {err}; the file was changed after dasbi wrote it: "
                    "regenerate it, or fix those entries"
                ) from None
        return out

    def iter_batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        start: int = 0,
        stop: int | None = None,
        block_rows: int | None = None,
        drop_last: bool = False,
    ) -> Iterator[dict[str, Block]]:
        """Stream rows [start, stop) in batches.

        With ``shuffle``, blocks of ``block_rows`` contiguous rows (default 64 batches) are
        visited in random order and rows are permuted within each block: memory stays
        bounded by one block while the order is close to a full shuffle. Without, rows are
        read one batch at a time (``block_rows`` defaults to ``batch_size``).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        stop = self.num_rows if stop is None else min(stop, self.num_rows)
        block_rows = block_rows or (64 * batch_size if shuffle else batch_size)
        rng = np.random.default_rng(seed)
        starts = np.arange(start, stop, block_rows)
        if shuffle:
            rng.shuffle(starts)
        carry: dict[str, Block] | None = None
        for b0 in starts:
            block = self.read(int(b0), int(min(b0 + block_rows, stop)))
            if shuffle:
                perm = rng.permutation(len(next(iter(block.values()))))
                block = {g: v.take(perm) for g, v in block.items()}
            if carry is not None:
                block = {g: Block.concat([carry[g], block[g]]) for g in block}
                carry = None
            n = len(next(iter(block.values())))
            full = n - n % batch_size
            for i in range(0, full, batch_size):
                yield {g: v.take(slice(i, i + batch_size)) for g, v in block.items()}
            if full < n:
                carry = {g: v.take(slice(full, n)) for g, v in block.items()}
        if carry is not None and not drop_last:
            yield carry

"""Real catalogues → model inputs: column maps, unit conversion, limits, validation report.

A column map is the ``catalogue:`` section of a survey YAML file (``configs/surveys/``)::

    catalogue:
      id: source_id                 # identifier column (default: the row number)
      sentinels: [99.99, -99.99]    # values that mean "missing" in any mapped column
      columns:
        gaia_G: {value: phot_g_mean_mag, error: phot_g_mean_mag_error}
        parallax: {value: parallax, error: parallax_error, unit: mas}
        irac_1: {value: F3_6, error: e_F3_6, unit: mJy, limit: l_F3_6}
        mips_24: {value: "[24]", limit: "l_[24]", error: 0.1}
        gaia_BP: {value: bp, error: bp_err, error_floor: 0.003}

Each key is a model node. ``value`` names the column; ``error`` a column or a constant
(1σ, in the value's unit); ``limit`` a flag column whose true or non-empty entries (``<``,
``1``, ``True``) mark an upper limit (a faint limit for magnitudes); ``unit`` the value's
unit where the table does not carry one; ``zero_point`` the flux [Jy] of magnitude 0 where a
survey defines its own (e.g. IRAC's 280.9 Jy at 3.6 µm for νF_ν = const); ``error_floor`` an
uncertainty added in quadrature to every error of the column, in the node's unit (mag for
photometry), as the simulators add their survey floors. Fluxes (mJy, Jy,
erg/s/cm²/Hz, …) of photometric nodes become Vega magnitudes with the filter's zero point
(computed from the CALSPEC Vega spectrum on the filter curve,
:func:`simulators.bandpasses.vega_zero_point_jy`), flux errors become magnitude errors
(1.0857 σ_F/F); other units are converted with astropy.

Missing values are NaN, masked entries and sentinels. Every problem is reported, never
dropped silently: a bad value (non-positive flux, negative or non-finite error, a magnitude
outside [-5, 35], an error column that reads 0 — a rounded error — where the column has no
``error_floor``) is ignored and listed, and a row without a single usable value, or with a
missing or duplicate identifier, is rejected and listed (:class:`Report`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, DataError
from .fileio import atomic_path, recover

__all__ = [
    "Blocks",
    "ColumnMap",
    "FitsBlocks",
    "Hdf5Blocks",
    "ParquetBlocks",
    "MappedCatalogue",
    "Report",
    "ReportWriter",
    "TextBlocks",
    "load_column_map",
    "map_catalogue",
    "catalogue_ids",
    "catalogue_to_dataset",
    "id_problems",
    "open_catalogue",
    "read_catalogue",
    "required_columns",
]

FORMATS = {
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
    ".csv": "ascii.csv",
    ".ecsv": "ascii.ecsv",
    ".txt": "ascii.mrt",
    ".mrt": "ascii.mrt",
    ".dat": "ascii.mrt",
    ".vot": "votable",
    ".xml": "votable",
    ".votable": "votable",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".parquet": "parquet",
}
_COLUMN_KEYS = {"value", "error", "limit", "unit", "zero_point", "error_floor"}
_MAP_KEYS = {"id", "sentinels", "columns"}
MAG_RANGE = (-5.0, 35.0)


@dataclass
class ColumnSpec:
    value: str
    error: str | float | None = None
    limit: str | None = None
    unit: str | None = None
    zero_point: float | None = None  # Jy of magnitude 0 (default: from the filter and Vega)
    error_floor: float = 0.0  # added in quadrature to every error, in the node's unit


@dataclass
class ColumnMap:
    """A validated ``catalogue:`` section (see the module docstring)."""

    columns: dict[str, ColumnSpec]
    id: str | None = None
    sentinels: list[float] = field(default_factory=list)
    source: str = ""


def load_column_map(path: str | os.PathLike[str]) -> ColumnMap:
    """Read the ``catalogue:`` section of a survey YAML file (by path or survey name)."""
    import yaml

    from simulators.surveys import find_survey

    try:
        p = find_survey(path)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from None
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p} is not valid YAML: {err}") from None
    cat = raw.get("catalogue")
    if not isinstance(cat, dict):
        raise ConfigError(
            f"{p} has no 'catalogue:' section mapping model nodes to catalogue columns "
            "(see dasbi/catalogue.py or configs/surveys/rebull2015_ngc1333.yaml)"
        )
    unknown = set(cat) - _MAP_KEYS
    if unknown:
        raise ConfigError(
            f"{p}: catalogue: unknown keys {sorted(unknown)}; valid: {sorted(_MAP_KEYS)}"
        )
    cols = cat.get("columns") or {}
    if not isinstance(cols, dict) or not cols:
        raise ConfigError(f"{p}: catalogue.columns must map node names to {{value: column, ...}}")
    specs = {}
    for node, spec in cols.items():
        if isinstance(spec, str):
            spec = {"value": spec}
        if not isinstance(spec, dict) or "value" not in spec:
            raise ConfigError(f"{p}: catalogue.columns.{node} needs at least 'value: <column>'")
        bad = set(spec) - _COLUMN_KEYS
        if bad:
            raise ConfigError(
                f"{p}: catalogue.columns.{node}: unknown keys {sorted(bad)}; valid: "
                f"{sorted(_COLUMN_KEYS)}"
            )
        err = spec.get("error")
        if isinstance(err, bool) or (isinstance(err, int | float) and not err >= 0):
            raise ConfigError(f"{p}: catalogue.columns.{node}.error must be a column or >= 0")
        floor = spec.get("error_floor", 0.0)
        if isinstance(floor, bool) or not isinstance(floor, int | float) or not floor >= 0:
            raise ConfigError(
                f"{p}: catalogue.columns.{node}.error_floor must be a number >= 0 (in the "
                f"node's unit, mag for photometry), got {floor!r}"
            )
        specs[str(node)] = ColumnSpec(
            str(spec["value"]),
            err if isinstance(err, int | float) else (None if err is None else str(err)),
            None if spec.get("limit") is None else str(spec["limit"]),
            None if spec.get("unit") is None else str(spec["unit"]),
            None if spec.get("zero_point") is None else float(spec["zero_point"]),
            float(floor),
        )
    sentinels = [float(s) for s in (cat.get("sentinels") or [])]
    return ColumnMap(specs, None if cat.get("id") is None else str(cat["id"]), sentinels, str(p))


def _format(p: Path) -> str:
    suffixes = "".join(p.suffixes[-2:]).lower()
    fmt = FORMATS.get(p.suffix.lower()) or FORMATS.get(suffixes.replace(".gz", ""))
    if fmt is None:
        raise DataError(
            f"cannot tell the format of {p.name} from its extension; known: "
            f"{', '.join(sorted(FORMATS))} (or pass the astropy format)"
        )
    return fmt


_CORRUPT = "; the file is corrupt, truncated or in another format: re-export or download it again"
_ALL_COLUMNS = "dasbi_all_colnames"  # Table.meta key: the file's columns


def read_catalogue(
    path: str | os.PathLike[str], fmt: str | None = None, columns: list[str] | None = None
) -> Any:
    """Read a catalogue with astropy (format from the extension unless given).

    Args:
        path: The file.
        fmt: An astropy format name; default from the extension (:data:`FORMATS`).
        columns: Keep only these columns (those the column map needs; missing ones are
            left for :func:`map_catalogue` to report). FITS tables are memory-mapped and
            Parquet reads only these columns, so for both the rows are read from disk
            chunk by chunk when the table is sliced.
    """
    from astropy.table import Table

    p = Path(path)
    if not p.is_file():
        raise DataError(f"catalogue {p} does not exist")
    fmt = fmt or _format(p)
    kwargs: dict[str, Any] = {}
    if fmt == "fits":
        kwargs["memmap"] = True
    if fmt == "parquet" and columns is not None:
        kwargs["include_names"] = _present_columns(p, columns)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unit-parsing chatter of MRT/FITS headers
            t = Table.read(p, format=fmt, **kwargs)
    except ImportError as err:
        raise DataError(
            f"reading {p.name} ({fmt}) needs {err.name}: pip install {err.name}"
        ) from None
    except Exception as err:
        raise DataError(
            f"catalogue {p} could not be read as {fmt}: {type(err).__name__}: {err}{_CORRUPT}"
        ) from None
    if columns is not None:
        keep = [c for c in t.colnames if c in set(columns)]
        if keep and len(keep) < len(t.colnames):
            t.meta[_ALL_COLUMNS] = list(t.colnames)
            t.keep_columns(keep)  # in place: no copy of the (memory-mapped) columns
    return t


def _compact(col: Any) -> Any:
    """An ASCII unicode column as bytes (a quarter of the memory; ids are decoded per chunk
    in :func:`map_catalogue`); anything else unchanged."""
    arr = np.asarray(col)
    if arr.dtype.kind != "U":
        return col
    try:
        out = np.char.encode(arr, "ascii")
    except UnicodeEncodeError:
        return col
    mask = getattr(col, "mask", None)
    return np.ma.MaskedArray(out, mask=mask) if mask is not None and np.any(mask) else out


class Blocks:
    """A catalogue file read block by block: only the rows asked for are in memory.

    ``len()``, ``colnames``, ``blocks[a:b]`` (an astropy Table of those rows, with the
    units, masks and types that ``Table.read`` gives the whole file) and ``blocks[name]``
    (one whole column, read block by block, e.g. the ids; ASCII text comes back as bytes).
    Subclasses implement :meth:`_read` for one format; :func:`open_catalogue` picks one.
    """

    #: rows per read when a whole column is gathered
    block_rows = 1 << 16

    def __init__(self, path: Path, names: list[str], n: int, columns: list[str] | None) -> None:
        self.path = path
        self.n = int(n)
        keep = [c for c in names if columns is None or c in set(columns)]
        self.colnames = keep or list(names)
        self.all_colnames = list(names)  # for messages about missing columns

    def __len__(self) -> int:
        return self.n

    def _read(self, a: int, b: int, names: list[str]) -> Any:
        raise NotImplementedError

    def __getitem__(self, item: str | slice) -> Any:
        if isinstance(item, str):
            if item not in self.colnames:
                raise KeyError(item)
            parts = [
                _compact(self._read(a, min(a + self.block_rows, self.n), [item])[item])
                for a in range(0, self.n, self.block_rows)
            ] or [self._read(0, 0, [item])[item]]
            if any(getattr(p, "mask", None) is not None and np.any(p.mask) for p in parts):
                return np.ma.concatenate([np.ma.asarray(p) for p in parts])
            return np.concatenate([np.asarray(p) for p in parts])
        if not isinstance(item, slice):
            raise TypeError(f"rows are read by slice, not {type(item).__name__}")
        a, b, step = item.indices(self.n)
        if step != 1:
            raise ValueError("rows are read in consecutive blocks (slice step 1)")
        block = self._read(a, max(a, b), self.colnames)
        block.meta[_ALL_COLUMNS] = self.all_colnames
        return block


class FitsBlocks(Blocks):
    """A FITS binary table: each block is read from the file into memory and decoded by
    astropy as a small FITS file of those rows (no memory map, so resident memory does
    not grow with the pages of the file that have been read)."""

    def __init__(self, path: Path, columns: list[str] | None = None) -> None:
        import warnings

        from astropy.io import fits

        try:
            with (
                warnings.catch_warnings(),
                fits.open(path, memmap=False, lazy_load_hdus=True) as hdul,
            ):
                warnings.simplefilter("ignore")  # a truncated file is reported below
                hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU)), None)
                if hdu is None:
                    raise DataError(f"catalogue {path} has no binary table extension")
                self._header = hdu.header.copy()
                self._offset = int(hdu.fileinfo()["datLoc"])
        except DataError:
            raise
        except Exception as err:
            raise DataError(
                f"catalogue {path} could not be read as FITS: {err}{_CORRUPT}"
            ) from None
        h = self._header
        if int(h.get("PCOUNT", 0)):
            raise DataError(
                f"catalogue {path} has variable-length array columns (a heap); rewrite it "
                "without them (e.g. keep only the mapped columns) for dasbi infer"
            )
        self._row = int(h["NAXIS1"])
        need = self._offset + self._row * int(h["NAXIS2"])
        if not _is_gzip(path) and path.stat().st_size < need:
            raise DataError(
                f"catalogue {path} is truncated: its header promises {h['NAXIS2']} rows "
                f"({need} bytes) but the file has {path.stat().st_size} bytes"
            )
        self._primary = fits.PrimaryHDU().header.tostring().encode("ascii")
        names = [h[f"TTYPE{i}"] for i in range(1, int(h["TFIELDS"]) + 1)]
        super().__init__(path, names, int(h["NAXIS2"]), columns)

    def _read(self, a: int, b: int, names: list[str]) -> Any:
        import io
        import warnings

        from astropy.table import Table

        with _open_raw(self.path) as f:
            f.seek(self._offset + a * self._row)
            data = f.read((b - a) * self._row)
        if len(data) < (b - a) * self._row:
            raise DataError(f"catalogue {self.path} is truncated: rows {a}-{b} are incomplete")
        hdr = self._header.copy()
        hdr["NAXIS2"] = b - a
        pad = b"\0" * (-len(data) % 2880)
        blob = self._primary + hdr.tostring().encode("ascii") + data + pad
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unit-parsing chatter of FITS headers
            t = Table.read(io.BytesIO(blob), format="fits", hdu=1, character_as_bytes=True)
        t.keep_columns(names)
        return t


class Hdf5Blocks(Blocks):
    """An astropy HDF5 table (a compound dataset): h5py reads the block's rows; astropy
    decodes them with the table's serialised metadata (units, masks)."""

    def __init__(
        self, path: Path, columns: list[str] | None = None, key: str | None = None
    ) -> None:
        import h5py

        try:
            self._file = h5py.File(path, "r")
        except Exception as err:
            raise DataError(
                f"catalogue {path} could not be read as HDF5: {err}{_CORRUPT}"
            ) from None
        if key is None:
            found: list[str] = []
            self._file.visititems(
                lambda name, obj: (
                    found.append(name)
                    if isinstance(obj, h5py.Dataset) and obj.dtype.names and "__" not in name
                    else None
                )
            )
            if not found:
                raise DataError(f"catalogue {path} holds no table (compound dataset)")
            key = found[0]
        if key not in self._file:
            raise DataError(f"catalogue {path} has no table at {key!r}")
        self._ds = self._file[key]
        self._meta = self._file.get(key + ".__table_column_meta__")
        self._key = key.split("/")[-1]
        stored = list(self._ds.dtype.names or ())
        names = list(dict.fromkeys(n.split(".")[0] for n in stored))  # x.mask → x
        super().__init__(path, names, len(self._ds), columns)

    def _read(self, a: int, b: int, names: list[str]) -> Any:
        import io

        import h5py
        from astropy.table import Table

        rows = self._ds[a:b]
        with h5py.File(io.BytesIO(), "w") as mem:
            mem.create_dataset(self._key, data=rows)
            if self._meta is not None:
                mem.create_dataset(self._key + ".__table_column_meta__", data=self._meta[()])
            t = Table.read(mem, path=self._key, format="hdf5")
        t.keep_columns([c for c in names if c in t.colnames])
        return t


class ParquetBlocks(Blocks):
    """A Parquet file: the row groups that hold the block are read (mapped columns only)
    and decoded by astropy; memory is bounded by the row-group size."""

    def __init__(self, path: Path, columns: list[str] | None = None) -> None:
        try:
            import pyarrow.parquet as pq

            self._pf = pq.ParquetFile(path)
        except ImportError as err:
            raise DataError(f"reading {path.name} needs {err.name}: pip install pyarrow") from None
        except Exception as err:
            raise DataError(
                f"catalogue {path} could not be read as Parquet: {err}{_CORRUPT}"
            ) from None
        md = self._pf.metadata
        self._starts = np.cumsum(
            [0] + [md.row_group(i).num_rows for i in range(md.num_row_groups)]
        )
        meta = (self._pf.schema_arrow.metadata or {}).get(b"table_meta_yaml")
        names = list(self._pf.schema_arrow.names)
        if meta is not None:  # astropy-serialised columns: read by their table names
            names = list(dict.fromkeys(n.split(".")[0] for n in names))
        super().__init__(path, names, int(md.num_rows), columns)

    def _read(self, a: int, b: int, names: list[str]) -> Any:
        import io

        import pyarrow.parquet as pq
        from astropy.table import Table

        stored = [n for n in self._pf.schema_arrow.names if n in names or n.split(".")[0] in names]
        g0 = max(0, int(np.searchsorted(self._starts, a, side="right")) - 1)
        g1 = max(g0 + 1, int(np.searchsorted(self._starts, b, side="left")))
        groups = list(range(g0, min(g1, len(self._starts) - 1)))
        part = self._pf.read_row_groups(groups, columns=stored) if groups else None
        if part is None:
            part = self._pf.schema_arrow.empty_table().select(stored)
        part = part.slice(a - int(self._starts[g0]), b - a)
        buf = io.BytesIO()
        pq.write_table(part.replace_schema_metadata(self._pf.schema_arrow.metadata), buf)
        buf.seek(0)
        return Table.read(buf, format="parquet", include_names=names)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _open_raw(path: Path) -> Any:
    """The file's bytes, decompressed on the fly if it is gzipped (seekable either way)."""
    import gzip

    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


class TextBlocks(Blocks):
    """A CSV or ECSV file (optionally gzipped) read block by block: one pass indexes the
    byte offset of every ``block_rows``-th data line; a block is its lines parsed by astropy
    under the file's own header with astropy's fast reader. ECSV declares its types, so
    every block has the same; CSV types are guessed per block as astropy guesses them for
    the whole file (ids are compared as text, so a numeric id column is safe; ids such as
    "007" mixed with non-numeric ids are not: use ECSV or FITS for those)."""

    def __init__(self, path: Path, fmt: str, columns: list[str] | None = None) -> None:
        self.fmt = fmt
        self._stride = 4096  # rows between indexed offsets
        header: list[bytes] = []
        offsets: list[int] = []
        n = 0
        with _open_raw(path) as f:
            pos = 0
            names_line = None
            for line in f:
                if names_line is None:
                    header.append(line)
                    if not line.lstrip().startswith(b"#") and line.strip():
                        names_line = line
                elif line.strip():
                    if n % self._stride == 0:
                        offsets.append(pos)
                    n += 1
                pos += len(line)
        if names_line is None:
            raise DataError(f"catalogue {path} has no header line (column names)")
        self._header = b"".join(header).decode("utf-8", "replace")
        self._offsets = offsets
        try:
            empty = self._parse("", None)
        except Exception as err:
            raise DataError(
                f"catalogue {path} could not be read as {fmt}: {err}{_CORRUPT}"
            ) from None
        self._empty = empty
        super().__init__(path, list(empty.colnames), n, columns)

    def _parse(self, body: str, names: list[str] | None) -> Any:
        import warnings

        from astropy.table import Table

        kw: dict[str, Any] = {"format": self.fmt, "guess": False}
        if names is not None:
            kw["include_names"] = names
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Table.read(self._header + body, **kw)

    def _read(self, a: int, b: int, names: list[str]) -> Any:
        if b <= a:
            return self._empty[[c for c in names if c in self._empty.colnames]]
        lines: list[bytes] = []
        if b > a:
            k = a // self._stride
            with _open_raw(self.path) as f:
                f.seek(self._offsets[k])
                row = k * self._stride
                for line in f:
                    if not line.strip():
                        continue
                    if row >= a:
                        lines.append(line)
                    row += 1
                    if row >= b:
                        break
        body = b"".join(lines).decode("utf-8", "replace")
        try:
            t = self._parse(body, names)
        except Exception as err:
            raise DataError(
                f"catalogue {self.path}: rows {a}-{b} could not be read as {self.fmt}: {err}"
            ) from None
        if len(t) != len(lines):
            raise DataError(
                f"catalogue {self.path}: rows {a}-{b} gave {len(t)} rows from {len(lines)} "
                "lines (quoted fields spanning lines?); convert it to FITS or Parquet"
            )
        return t


def open_catalogue(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    columns: list[str] | None = None,
) -> Any:
    """Like :func:`read_catalogue`, but FITS, HDF5, Parquet, CSV and ECSV (also gzipped)
    come as :class:`Blocks`, so memory does not grow with the rows of the file.

    AAS MRT and VOTable tables are read whole with :func:`read_catalogue` (they are
    paper-sized tables; convert a large one to FITS or Parquet first).
    """
    p = Path(path)
    fmt = fmt or _format(p)
    if fmt in ("fits", "hdf5", "parquet", "ascii.csv", "ascii.ecsv"):
        if not p.is_file():
            raise DataError(f"catalogue {p} does not exist")
        if fmt == "fits":
            return FitsBlocks(p, columns)
        if fmt == "hdf5":
            return Hdf5Blocks(p, columns)
        if fmt == "parquet":
            return ParquetBlocks(p, columns)
        return TextBlocks(p, fmt, columns)
    return read_catalogue(path, fmt, columns)


def _present_columns(path: Path, columns: list[str]) -> list[str]:
    """The requested columns that a Parquet file has (the rest are reported later)."""
    try:
        import pyarrow.parquet as pq

        names = set(pq.read_schema(path).names)
    except Exception:
        return list(columns)
    keep = [c for c in columns if c in names]
    return keep or list(columns)


def required_columns(cmap: ColumnMap) -> list[str]:
    """Every catalogue column the map reads: id, values, error and limit columns."""
    cols = [cmap.id] if cmap.id else []
    for spec in cmap.columns.values():
        cols.append(spec.value)
        if isinstance(spec.error, str):
            cols.append(spec.error)
        if spec.limit:
            cols.append(spec.limit)
    return list(dict.fromkeys(cols))


def catalogue_ids(t: Any, cmap: ColumnMap) -> np.ndarray:
    """The identifier of every row as stripped strings (the row number without an id).

    Byte-string columns (FITS) stay bytes, a quarter of the memory of unicode; blocks are
    decoded in :func:`map_catalogue`.
    """
    if not cmap.id:
        return np.arange(len(t)).astype(str)
    raw = _column(t, cmap.id, "catalogue.id")
    mask = np.asarray(getattr(raw, "mask", False), bool)
    col = np.asarray(raw)
    if col.dtype.kind not in "SU":
        col = col.astype(str)
    col = np.char.strip(col)
    if mask.any():  # masked ids are missing ids
        col[np.broadcast_to(mask, col.shape)] = ""
    return col


def id_problems(ids: np.ndarray) -> np.ndarray:
    """Per row: "" for a good id, else why the row is rejected (missing or duplicate id).

    The first occurrence of a repeated id is kept; later ones are duplicates.
    """
    out = np.full(len(ids), "", dtype=object)
    out[np.isin(ids, np.array(_MISSING_IDS).astype(ids.dtype))] = "missing id"
    _, first = np.unique(ids, return_index=True)
    dup = np.ones(len(ids), bool)
    dup[first] = False
    out[dup & (out == "")] = "duplicate id"
    return out


_MISSING_IDS = ("", "--", "nan")
_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)


def _id_bytes(ids: np.ndarray) -> np.ndarray:
    """Ids as a fixed-width byte array (UTF-8)."""
    return ids if ids.dtype.kind == "S" else np.char.encode(ids.astype(str), "utf-8")


def hash_ids(ids: np.ndarray) -> np.ndarray:
    """64-bit FNV-1a of each id's UTF-8 bytes, vectorised over rows.

    Only the bytes of each string count (not the padding of the array), so an id hashes
    the same in blocks of different widths.
    """
    b = _id_bytes(ids)
    n, w = len(b), b.dtype.itemsize
    h = np.full(n, _FNV_OFFSET, np.uint64)
    if not n or not w:
        return h
    chars = b.view(np.uint8).reshape(n, w)
    length = np.char.str_len(b)
    with np.errstate(over="ignore"):
        for j in range(w):
            live = j < length
            h = np.where(live, (h ^ chars[:, j].astype(np.uint64)) * _FNV_PRIME, h)
    return h


class IdIndex:
    """The missing and duplicate ids of a whole catalogue, in memory bounded by a bucket.

    One streaming pass reads the id column block by block, hashes every id and appends
    (row, hash) to one of K bucket files by hash; each bucket (about ``bucket_rows`` rows)
    is then sorted in memory to find repeated hashes. A second pass reads the ids of those
    candidate rows only and confirms the duplicates exactly, so a hash collision never
    rejects a row. Memory is ~16 B × ``bucket_rows`` plus the duplicates, whatever the
    length of the catalogue (the in-memory :func:`id_problems` needed ~30 B per row).

    The rules are those of :func:`id_problems`: "", "--" and "nan" are missing ids, and
    the first occurrence of a repeated id is kept.
    """

    def __init__(
        self,
        table: Any,
        cmap: ColumnMap,
        *,
        block_rows: int = 1 << 16,
        bucket_rows: int = 2_000_000,
        progress: bool = False,
    ) -> None:
        import tempfile

        self.table, self.cmap, self.n = table, cmap, len(table)
        self.block_rows = block_rows
        self.width = 1
        self.duplicates = np.zeros(0, np.int64)
        if not cmap.id or not self.n:
            self.width = max(1, len(str(max(self.n - 1, 0))))
            return
        from .progress import progress_bar

        k = max(1, -(-self.n // bucket_rows))
        bar = progress_bar(
            total=self.n, desc="check ids", unit="row", disable=not progress or self.n < 10**6
        )
        with bar, tempfile.TemporaryDirectory(prefix="dasbi-ids-") as tmp:
            files = [open(Path(tmp) / f"b{i}.bin", "wb") for i in range(k)]  # noqa: SIM115
            try:
                for a in range(0, self.n, block_rows):
                    bar.update(min(block_rows, self.n - a))
                    ids = self.ids(a, min(a + block_rows, self.n))
                    self.width = max(self.width, int(np.char.str_len(_id_bytes(ids)).max()))
                    good = ~self._missing(ids)
                    rows = np.nonzero(good)[0].astype(np.int64) + a
                    h = hash_ids(ids[good])
                    bucket = (h % np.uint64(k)).astype(np.int64)
                    for i in np.unique(bucket):
                        sel = bucket == i
                        rec = np.empty(int(sel.sum()), [("row", "<i8"), ("hash", "<u8")])
                        rec["row"], rec["hash"] = rows[sel], h[sel]
                        files[i].write(rec.tobytes())
            finally:
                for f in files:
                    f.close()
            candidates = []
            for i in range(k):
                rec = np.fromfile(Path(tmp) / f"b{i}.bin", [("row", "<i8"), ("hash", "<u8")])
                (Path(tmp) / f"b{i}.bin").unlink()
                if len(rec) < 2:
                    continue
                order = np.argsort(rec["hash"], kind="stable")
                hs = rec["hash"][order]
                rep = np.zeros(len(hs), bool)
                rep[1:] = hs[1:] == hs[:-1]
                rep[:-1] |= rep[1:]
                candidates.append(rec["row"][order][rep])
        rows = np.sort(np.concatenate(candidates)) if candidates else np.zeros(0, np.int64)
        self.duplicates = self._confirm(rows)

    @staticmethod
    def _missing(ids: np.ndarray) -> np.ndarray:
        return np.isin(ids, np.array(_MISSING_IDS).astype(ids.dtype))

    def ids(self, a: int, b: int) -> np.ndarray:
        """The ids of rows [a, b) (stripped; row numbers without an id column)."""
        if not self.cmap.id:
            return np.arange(a, b).astype(str)
        if isinstance(self.table, Blocks):
            block = self.table._read(a, b, [self.cmap.id])
            block.meta[_ALL_COLUMNS] = self.table.all_colnames
        else:
            block = self.table[a:b]
        return catalogue_ids(block, self.cmap)

    def _confirm(self, rows: np.ndarray) -> np.ndarray:
        """Of the rows whose hashes repeat, those whose id really occurred before."""
        if not len(rows):
            return np.zeros(0, np.int64)
        found_rows, found_ids = [], []
        for a in range(0, self.n, self.block_rows):
            b = min(a + self.block_rows, self.n)
            lo, hi = np.searchsorted(rows, [a, b])
            if lo == hi:
                continue
            found_rows.append(rows[lo:hi])
            found_ids.append(_id_bytes(self.ids(a, b))[rows[lo:hi] - a])
        r = np.concatenate(found_rows)
        width = max(x.dtype.itemsize for x in found_ids)
        ids = np.concatenate([x.astype(f"S{width}") for x in found_ids])
        _, first = np.unique(ids, return_index=True)  # rows are increasing: first occurrence
        dup = np.ones(len(r), bool)
        dup[first] = False
        return r[dup]

    def status(self, a: int, b: int, ids: np.ndarray) -> np.ndarray:
        """:func:`id_problems` for rows [a, b) with their ``ids``."""
        out = np.full(b - a, "", dtype=object)
        out[self._missing(ids)] = "missing id"
        lo, hi = np.searchsorted(self.duplicates, [a, b])
        out[self.duplicates[lo:hi] - a] = "duplicate id"
        return out


@dataclass
class Report:
    """What happened to each row: rejected rows and ignored values, with reasons."""

    rows: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def add(
        self,
        rows: np.ndarray,
        ids: np.ndarray,
        column: str,
        action: str,
        reason: str,
        offset: int = 0,
    ) -> None:
        """Record ``rows`` (indices into ``ids``; ``offset`` + row is the input row)."""
        for r in np.asarray(rows).ravel():
            self.rows.append(int(r) + offset)
            self.ids.append(str(ids[r]))
            self.columns.append(column)
            self.actions.append(action)
            self.reasons.append(reason)

    def table(self) -> Any:
        from astropy.table import Table

        return Table(
            {
                "row": np.asarray(self.rows, np.int64),
                "id": np.asarray(self.ids, str),
                "column": np.asarray(self.columns, str),
                "action": np.asarray(self.actions, str),
                "reason": np.asarray(self.reasons, str),
            }
        )

    def extend(self, other: Report) -> None:
        for name in ("rows", "ids", "columns", "actions", "reasons"):
            getattr(self, name).extend(getattr(other, name))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The report as plain arrays (``report_<field>``) for an ``.npz`` part file."""
        return {
            "report_rows": np.asarray(self.rows, np.int64),
            **{
                f"report_{k}": np.asarray(getattr(self, k), dtype=np.str_)
                for k in ("ids", "columns", "actions", "reasons")
            },
        }

    @classmethod
    def from_arrays(cls, z: Any) -> Report:
        return cls(
            [int(r) for r in z["report_rows"]],
            *(
                [str(v) for v in z[f"report_{k}"]]
                for k in ("ids", "columns", "actions", "reasons")
            ),
        )

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a, r in zip(self.actions, self.reasons, strict=True):
            out[f"{a}: {r}"] = out.get(f"{a}: {r}", 0) + 1
        return out

    def write(self, path: str | os.PathLike[str]) -> Path:
        with ReportWriter(path) as w:
            w.write(self)
        return w.path


class ReportWriter:
    """Writes a :class:`Report` as ECSV piece by piece (memory ∝ one piece), atomically:
    the file appears under its name only when the writer is closed without an error."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._f = open(self._tmp, "w")
        self._f.write(self._ecsv(Report()))

    @staticmethod
    def _ecsv(report: Report) -> str:
        import io

        buf = io.StringIO()
        report.table().write(buf, format="ascii.ecsv")
        return buf.getvalue()

    def write(self, report: Report) -> None:
        if report.rows:
            lines = self._ecsv(report).splitlines(keepends=True)
            body = [ln for ln in lines if not ln.startswith("#")][1:]  # drop the names line
            self._f.writelines(body)

    def __enter__(self) -> ReportWriter:
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        self._f.close()
        if kind is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


@dataclass
class MappedCatalogue:
    """Model inputs for the accepted rows: node name → (N,) arrays."""

    ids: np.ndarray
    rows: np.ndarray  # row numbers in the input catalogue
    values: dict[str, np.ndarray]
    errors: dict[str, np.ndarray]
    upper_limits: dict[str, np.ndarray]
    report: Report
    n_input: int

    def __len__(self) -> int:
        return len(self.ids)

    def n_observed(self) -> np.ndarray:
        return np.sum([np.isfinite(v) for v in self.values.values()], axis=0).astype(np.int32)


def _column(t: Any, name: str, where: str) -> Any:
    if name not in t.colnames:
        names = list(getattr(t, "meta", {}).get(_ALL_COLUMNS, t.colnames))
        close = [c for c in names if c.lower() == name.lower()]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(
            f"{where}: column {name!r} is not in the catalogue{hint}; it has "
            f"{', '.join(names[:30])}{' …' if len(names) > 30 else ''}"
        )
    return t[name]


def _as_float(col: Any, sentinels: list[float]) -> np.ndarray:
    # a column read as integers (or booleans) can hold masked entries, e.g. a band empty in
    # the first rows of a CSV block: convert before filling them with NaN
    if hasattr(col, "filled") and col.dtype.kind in "fiub":
        data = np.ma.asarray(col).astype(np.float64).filled(np.nan)
    else:
        data = col
    try:
        arr = np.asarray(data, np.float64)
    except (TypeError, ValueError):
        arr = np.array([_to_float(v) for v in np.asarray(data).ravel()])
    if hasattr(col, "mask") and np.ndim(col.mask):
        arr = np.where(np.asarray(col.mask), np.nan, arr)
    for s in sentinels:
        arr = np.where(np.isclose(arr, s, rtol=0, atol=1e-9 * max(1.0, abs(s))), np.nan, arr)
    return arr


def _to_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return np.nan


def _flags(col: Any) -> np.ndarray:
    """True where a limit-flag column marks an upper limit."""
    kind = np.asarray(col).dtype.kind
    if hasattr(col, "filled"):
        col = col.filled(False if kind == "b" else 0 if kind in "iuf" else "")
    arr = np.asarray(col)
    if arr.dtype.kind == "b":
        return arr.astype(bool)
    if arr.dtype.kind in "iuf":
        return np.nan_to_num(arr.astype(float)) != 0
    s = np.char.strip(arr.astype(str))
    return ~np.isin(s, ["", "0", "False", "false", "F", "N", "--", "nan"])


def map_catalogue(
    t: Any,
    cmap: ColumnMap,
    nodes: list[Any],
    *,
    ids: np.ndarray | None = None,
    id_status: np.ndarray | None = None,
    offset: int = 0,
    needs_errors: list[str] | set[str] | None = None,
) -> MappedCatalogue:
    """Apply a column map to an astropy Table for a model's observable nodes.

    Args:
        t: The table, or a block of consecutive rows of it.
        cmap: The column map.
        nodes: The model's observable nodes.
        ids, id_status: The block's ids and :func:`id_problems` computed on the whole
            catalogue (default: from ``t`` alone).
        offset: Row number of the block's first row in the catalogue; reported rows and
            ``rows`` are catalogue rows.
        needs_errors: Nodes whose model was trained with uncertainties: a value whose error
            is 0 after the floor is ignored and reported (the model cannot take it). Error
            columns are held to that in any case (a 0 in one is a rounded error).
    """
    import astropy.units as u

    report = Report()
    n = len(t)
    by_name = {nd.name: nd for nd in nodes}
    unknown = [k for k in cmap.columns if k not in by_name]
    if unknown:
        raise ConfigError(
            f"{cmap.source}: catalogue.columns {unknown} are not observables of the model; "
            f"it has {sorted(by_name)}"
        )
    if ids is None:
        ids = catalogue_ids(t, cmap)
        if not cmap.id:
            ids = (np.arange(n) + offset).astype(str)
    if id_status is None:
        id_status = id_problems(ids)
    if ids.dtype.kind == "S":
        ids = np.char.decode(ids, "utf-8", "replace")

    def add(rows: np.ndarray, column: str, action: str, reason: str) -> None:
        report.add(rows, ids, column, action, reason, offset)

    values: dict[str, np.ndarray] = {}
    errors: dict[str, np.ndarray] = {}
    limits: dict[str, np.ndarray] = {}
    for node, spec in cmap.columns.items():
        where = f"catalogue.columns.{node}"
        nd = by_name[node]
        col = _column(t, spec.value, where)
        val = _as_float(col, cmap.sentinels)
        if isinstance(spec.error, str):
            err = _as_float(_column(t, spec.error, where + ".error"), cmap.sentinels)
        elif spec.error is None:
            err = np.zeros(n)
        else:
            err = np.full(n, float(spec.error))
        lim = _flags(_column(t, spec.limit, where + ".limit")) if spec.limit else np.zeros(n, bool)
        unit_str = spec.unit or (str(col.unit) if getattr(col, "unit", None) is not None else None)
        target = nd.unit or ""
        if unit_str and target and unit_str not in ("mag", target):
            try:
                unit = u.Unit(unit_str, parse_strict="raise")
            except ValueError:
                raise ConfigError(f"{where}: unknown unit {unit_str!r}") from None
            if target == "mag" and unit.physical_type == "spectral flux density":
                zp = spec.zero_point or nd.zero_point_jy
                if zp is None:  # a dataset written before nodes carried their zero point
                    from simulators.bandpasses import vega_zero_point_jy

                    zp = vega_zero_point_jy(node)
                f_jy = (val * unit).to_value(u.Jy)
                e_jy = (err * unit).to_value(u.Jy)
                bad = np.isfinite(f_jy) & (f_jy <= 0) & ~lim
                add(np.nonzero(bad)[0], node, "value ignored", "non-positive flux")
                f_jy = np.where(bad, np.nan, f_jy)
                with np.errstate(divide="ignore", invalid="ignore"):
                    val = -2.5 * np.log10(f_jy / zp)
                    err = np.where(lim, 0.0, 1.0857 * e_jy / f_jy)
            else:
                try:
                    val = (val * unit).to_value(target)
                    err = (err * unit).to_value(target)
                except u.UnitConversionError:
                    raise ConfigError(
                        f"{where}: values in {unit_str} cannot be converted to the node's unit "
                        f"{target}"
                    ) from None
        finite = np.isfinite(val)
        bad_err = finite & ~lim & ~(np.isfinite(err) & (err >= 0))
        add(np.nonzero(bad_err)[0], node, "value ignored", "missing or negative error")
        if spec.error_floor > 0:
            err = np.hypot(err, spec.error_floor)
        if isinstance(spec.error, str) or (needs_errors is not None and node in needs_errors):
            zero = finite & ~lim & ~bad_err & (err == 0)
            add(
                np.nonzero(zero)[0],
                node,
                "value ignored",
                f"zero error (rounded in the catalogue?); set catalogue.columns.{node}."
                "error_floor",
            )
            bad_err |= zero
        if target == "mag":
            out = finite & ((val < MAG_RANGE[0]) | (val > MAG_RANGE[1]))
            add(
                np.nonzero(out)[0],
                node,
                "value ignored",
                f"magnitude outside [{MAG_RANGE[0]}, {MAG_RANGE[1]}]",
            )
            bad_err |= out
        val = np.where(bad_err, np.nan, val)
        values[node] = val
        errors[node] = np.where(np.isfinite(val) & np.isfinite(err), np.maximum(err, 0.0), 0.0)
        limits[node] = lim & np.isfinite(val)
    usable = np.sum([np.isfinite(v) for v in values.values()], axis=0) > 0
    add(np.nonzero(~usable)[0], "*", "row rejected", "no usable value")
    ok = usable.copy()
    for reason in ("missing id", "duplicate id"):
        add(np.nonzero((id_status == reason) & ok)[0], cmap.id or "row", "row rejected", reason)
    ok &= id_status == ""
    keep = np.nonzero(ok)[0]
    return MappedCatalogue(
        ids=ids[keep],
        rows=keep + offset,
        values={k: v[keep] for k, v in values.items()},
        errors={k: v[keep] for k, v in errors.items()},
        upper_limits={k: v[keep] for k, v in limits.items()},
        report=report,
        n_input=n,
    )


def catalogue_to_dataset(
    catalogue: str | os.PathLike[str],
    survey: str | os.PathLike[str],
    like: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, Report]:
    """A real catalogue as a dasbi dataset of observables (``--real`` of domain adaptation).

    The column map converts each mapped column (units, fluxes → Vega magnitudes, limit
    flags, sentinels; :func:`map_catalogue`); the dataset carries every diffuse observable
    of ``like`` (a simulated dataset or a model folder), with the unmapped ones missing, and
    no θ. Rejected rows are listed in ``<out>.rejected.ecsv``; the source ids of the kept
    rows are stored as ``/source_id``.

    Returns:
        The dataset path and the report.
    """
    import h5py

    from .dataset import Block, Dataset, DatasetWriter
    from .nodes import NodeSet

    out = Path(out)
    recover(out)  # a killed run's temporary copies
    if out.exists() and not overwrite:
        from .errors import ResumeError

        raise ResumeError(f"{out} exists; pass --overwrite to replace it")
    like = Path(like)
    if like.is_dir():
        from .checkpoint import read_meta
        from .nodes import Node

        meta = read_meta(like)
        if "nodes" not in meta:
            raise DataError(f"{like} is not a dasbi model folder (no nodes in its metadata)")
        ref = NodeSet(Node.from_dict(d) for d in meta["nodes"])
    else:
        with Dataset(like) as ds:
            ref = ds.nodes
    obs = [n for n in ref.diffuse if n.kind == "observable"]
    if not obs:
        raise DataError(f"{like} has no observable nodes")
    cmap = load_column_map(survey)
    table = open_catalogue(catalogue, fmt, required_columns(cmap))
    if isinstance(table, Blocks):
        table = table[0 : len(table)]
    if not len(table):
        raise DataError(f"catalogue {catalogue} has no rows")
    m = map_catalogue(table, cmap, obs)
    if not len(m):
        raise DataError(
            f"no usable row in {catalogue}: all {m.n_input} rows were rejected "
            f"({m.report.counts()}); check the column map against the catalogue's columns, "
            "units and sentinels"
        )
    nodes = NodeSet(n for n in ref if n.kind == "observable" and n.role == "diffuse")
    blocks = {}
    for group in nodes.groups:
        members = nodes.group(group)
        vals = np.full((len(m), len(members)), np.nan)
        errs = np.zeros_like(vals)
        lims = np.zeros(vals.shape, bool)
        for j, nd in enumerate(members):
            if nd.name in m.values:
                vals[:, j] = m.values[nd.name]
                errs[:, j] = m.errors[nd.name]
                lims[:, j] = m.upper_limits[nd.name]
        seen = np.isfinite(vals)
        blocks[group] = Block(np.where(seen, vals, np.nan), errs, seen, lims & seen)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the report first, then the dataset with its ids in one atomic replacement: a crash
    # leaves either no dataset or a complete one
    m.report.write(out.with_name(out.stem + ".rejected.ecsv"))
    with atomic_path(out) as tmp:
        DatasetWriter.write(
            tmp,
            nodes,
            blocks,
            attrs={"catalogue": str(catalogue), "survey": str(survey), "like": str(like)},
        )
        with h5py.File(tmp, "a") as f:
            f.create_dataset("source_id", data=np.char.encode(m.ids.astype(str), "utf-8"))
    return out, m.report

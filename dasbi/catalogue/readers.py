"""Catalogue readers: FITS, CSV/ECSV/MRT/VOTable (also gzipped), HDF5 and Parquet, whole or
in row blocks that never load the file at once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

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
ALL_COLUMNS_KEY = "dasbi_all_colnames"  # Table.meta key: the file's columns


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
            t.meta[ALL_COLUMNS_KEY] = list(t.colnames)
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
        block.meta[ALL_COLUMNS_KEY] = self.all_colnames
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


def table_column(t: Any, name: str, where: str) -> Any:
    """Column ``name`` of a table, or a DataError that names the closest column."""
    if name not in t.colnames:
        names = list(getattr(t, "meta", {}).get(ALL_COLUMNS_KEY, t.colnames))
        close = [c for c in names if c.lower() == name.lower()]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(
            f"{where}: column {name!r} is not in the catalogue{hint}; it has "
            f"{', '.join(names[:30])}{' …' if len(names) > 30 else ''}"
        )
    return t[name]

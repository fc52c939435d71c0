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

Each key is a model node. ``value`` names the column; ``error`` a column or a constant
(1σ, in the value's unit); ``limit`` a flag column whose true or non-empty entries (``<``,
``1``, ``True``) mark an upper limit (a faint limit for magnitudes); ``unit`` the value's
unit where the table does not carry one; ``zero_point`` the flux [Jy] of magnitude 0 where a
survey defines its own (e.g. IRAC's 280.9 Jy at 3.6 µm for νF_ν = const). Fluxes (mJy, Jy,
erg/s/cm²/Hz, …) of photometric nodes become Vega magnitudes with the filter's zero point
(computed from the CALSPEC Vega spectrum on the filter curve,
:func:`simulators.bandpasses.vega_zero_point_jy`), flux errors become magnitude errors
(1.0857 σ_F/F); other units are converted with astropy.

Missing values are NaN, masked entries and sentinels. Every problem is reported, never
dropped silently: a bad value (non-positive flux, negative or non-finite error, a magnitude
outside [-5, 35]) is ignored and listed, and a row without a single usable value, or with a
missing or duplicate identifier, is rejected and listed (:class:`Report`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, DataError

__all__ = [
    "ColumnMap",
    "FitsBlocks",
    "MappedCatalogue",
    "Report",
    "load_column_map",
    "map_catalogue",
    "catalogue_ids",
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
_COLUMN_KEYS = {"value", "error", "limit", "unit", "zero_point"}
_MAP_KEYS = {"id", "sentinels", "columns"}
MAG_RANGE = (-5.0, 35.0)


@dataclass
class ColumnSpec:
    value: str
    error: str | float | None = None
    limit: str | None = None
    unit: str | None = None
    zero_point: float | None = None  # Jy of magnitude 0 (default: from the filter and Vega)


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

    from simulators.surveys import _find

    try:
        p = _find(path)
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
        specs[str(node)] = ColumnSpec(
            str(spec["value"]),
            err if isinstance(err, int | float) else (None if err is None else str(err)),
            None if spec.get("limit") is None else str(spec["limit"]),
            None if spec.get("unit") is None else str(spec["unit"]),
            None if spec.get("zero_point") is None else float(spec["zero_point"]),
        )
    sentinels = [float(s) for s in (cat.get("sentinels") or [])]
    return ColumnMap(specs, None if cat.get("id") is None else str(cat["id"]), sentinels, str(p))


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
    suffixes = "".join(p.suffixes[-2:]).lower()
    if fmt is None:
        fmt = FORMATS.get(p.suffix.lower()) or FORMATS.get(suffixes.replace(".gz", ""))
    if fmt is None:
        raise DataError(
            f"cannot tell the format of {p.name} from its extension; known: "
            f"{', '.join(sorted(FORMATS))} (or pass the astropy format)"
        )
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
            f"catalogue {p} could not be read as {fmt}: {type(err).__name__}: {err}"
        ) from None
    if columns is not None:
        keep = [c for c in t.colnames if c in set(columns)]
        if keep and len(keep) < len(t.colnames):
            t.keep_columns(keep)  # in place: no copy of the (memory-mapped) columns
    return t


class FitsBlocks:
    """A FITS binary table read block by block from the memory-mapped file.

    ``len()``, ``colnames``, ``blocks[name]`` (one whole column, e.g. the ids) and
    ``blocks[a:b]`` (an astropy Table of those rows, units from the header) read only
    what they return, so memory does not grow with the rows of the file.
    """

    def __init__(self, path: Path, columns: list[str] | None = None) -> None:
        from astropy.io import fits

        try:
            self._hdul = fits.open(path, memmap=True)
        except Exception as err:
            raise DataError(f"catalogue {path} could not be read as FITS: {err}") from None
        tables = [h for h in self._hdul if isinstance(h, fits.BinTableHDU)]
        if not tables:
            raise DataError(f"catalogue {path} has no binary table extension")
        self._hdu = tables[0]
        names = list(self._hdu.columns.names)
        self.colnames = [c for c in names if columns is None or c in set(columns)] or names
        self.path = path

    def __len__(self) -> int:
        return int(self._hdu.header["NAXIS2"])

    def __getitem__(self, item: str | slice) -> Any:
        import warnings

        from astropy.io import fits
        from astropy.table import Table

        if isinstance(item, str):  # the raw field: no conversion of the whole column
            if item not in self._hdu.columns.names:
                raise KeyError(item)
            return np.ndarray.view(self._hdu.data, np.ndarray)[item]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unit-parsing chatter of FITS headers
            hdu = fits.BinTableHDU(data=self._hdu.data[item], header=self._hdu.header)
            t = Table.read(hdu)
        t.keep_columns(self.colnames)
        return t


def open_catalogue(
    path: str | os.PathLike[str], fmt: str | None = None, columns: list[str] | None = None
) -> Any:
    """Like :func:`read_catalogue`, but FITS tables come as :class:`FitsBlocks`."""
    p = Path(path)
    if fmt in (None, "fits") and (fmt == "fits" or FORMATS.get(p.suffix.lower()) == "fits"):
        if not p.is_file():
            raise DataError(f"catalogue {p} does not exist")
        return FitsBlocks(p, columns)
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
    col = np.asarray(_column(t, cmap.id, "catalogue.id"))
    if col.dtype.kind not in "SU":
        col = col.astype(str)
    return np.char.strip(col)


def id_problems(ids: np.ndarray) -> np.ndarray:
    """Per row: "" for a good id, else why the row is rejected (missing or duplicate id).

    The first occurrence of a repeated id is kept; later ones are duplicates.
    """
    out = np.full(len(ids), "", dtype=object)
    out[np.isin(ids, np.array(["", "--", "nan"]).astype(ids.dtype))] = "missing id"
    _, first = np.unique(ids, return_index=True)
    dup = np.ones(len(ids), bool)
    dup[first] = False
    out[dup & (out == "")] = "duplicate id"
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
        p = Path(path)
        tmp = p.with_name(p.name + ".tmp")
        self.table().write(tmp, format="ascii.ecsv", overwrite=True)
        os.replace(tmp, p)
        return p


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
        close = [c for c in t.colnames if c.lower() == name.lower()]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(
            f"{where}: column {name!r} is not in the catalogue{hint}; it has "
            f"{', '.join(t.colnames[:30])}{' …' if len(t.colnames) > 30 else ''}"
        )
    return t[name]


def _as_float(col: Any, sentinels: list[float]) -> np.ndarray:
    data = col.filled(np.nan) if hasattr(col, "filled") and col.dtype.kind in "fiu" else col
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
                from simulators.bandpasses import vega_zero_point_jy

                zp = spec.zero_point or vega_zero_point_jy(node)
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

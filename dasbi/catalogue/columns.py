"""The column map (a survey YAML's ``catalogue:`` section) and the conversion of a
table's columns into model inputs: units, fluxes to magnitudes, limits, sentinels, error
floors, with every problem reported (see :mod:`dasbi.catalogue`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from .ids import catalogue_ids, id_problems
from .readers import table_column
from .report import Report

_COLUMN_KEYS = {"value", "error", "limit", "unit", "zero_point", "error_floor"}
_MAP_KEYS = {"id", "sentinels", "columns", "spectra"}
#: spectrum sources of a column map: kind → reader (dasbi.catalogue.xp for gaia_xp)
SPECTRUM_KINDS = ("gaia_xp",)
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
    #: spectrum node → (kind, file); file ``catalogue`` means the catalogue itself, a
    #: relative path is taken from the column map's folder
    spectra: dict[str, tuple[str, str]] = field(default_factory=dict)


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
    spectra = {}
    for node, spec in (cat.get("spectra") or {}).items():
        if (
            not isinstance(spec, dict)
            or spec.get("kind") not in SPECTRUM_KINDS
            or set(spec)
            - {
                "kind",
                "file",
            }
        ):
            raise ConfigError(
                f"{p}: catalogue.spectra.{node} must be {{kind: gaia_xp, file: FILE}} (file: "
                "the archive's XP coefficients, or 'catalogue' where the catalogue holds them)"
            )
        spectra[str(node)] = (str(spec["kind"]), str(spec.get("file", "catalogue")))
    cid = None if cat.get("id") is None else str(cat["id"])
    if spectra and cid is None:
        raise ConfigError(f"{p}: catalogue.spectra needs catalogue.id to match spectra to rows")
    return ColumnMap(specs, cid, sentinels, str(p), spectra)


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
        col = table_column(t, spec.value, where)
        val = _as_float(col, cmap.sentinels)
        if isinstance(spec.error, str):
            err = _as_float(table_column(t, spec.error, where + ".error"), cmap.sentinels)
        elif spec.error is None:
            err = np.zeros(n)
        else:
            err = np.full(n, float(spec.error))
        lim = (
            _flags(table_column(t, spec.limit, where + ".limit"))
            if spec.limit
            else np.zeros(n, bool)
        )
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

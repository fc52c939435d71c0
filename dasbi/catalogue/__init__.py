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
erg/s/cm²/Hz, …) of photometric nodes become magnitudes with the zero point the simulator
wrote into the node (``zero_point_jy``: the survey's published Vega zero point,
:func:`simulators.bandpasses.vega_zero_point_jy`), flux errors become magnitude errors
(1.0857 σ_F/F); other units are converted with astropy.

Missing values are NaN, masked entries and sentinels. Every problem is reported, never
dropped silently: a bad value (non-positive flux, negative or non-finite error, a magnitude
outside [-5, 35], an error column that reads 0 — a rounded error — where the column has no
``error_floor``) is ignored and listed, and a row without a single usable value, or with a
missing or duplicate identifier, is rejected and listed (:class:`Report`).

The package is split by concern: :mod:`~dasbi.catalogue.readers` (file formats, row
blocks), :mod:`~dasbi.catalogue.columns` (the column map and unit conversion),
:mod:`~dasbi.catalogue.ids` (identifiers, duplicate check) and
:mod:`~dasbi.catalogue.report` (the rejection report); this module re-exports them and
turns a catalogue into a dataset (:func:`catalogue_to_dataset`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import atomic_path, recover
from .columns import (
    MAG_RANGE,
    ColumnMap,
    ColumnSpec,
    MappedCatalogue,
    load_column_map,
    map_catalogue,
    required_columns,
)
from .ids import IdIndex, catalogue_ids, hash_ids, id_problems
from .readers import (
    FORMATS,
    Blocks,
    FitsBlocks,
    Hdf5Blocks,
    ParquetBlocks,
    TextBlocks,
    open_catalogue,
    read_catalogue,
)
from .report import Report, ReportWriter

__all__ = [
    "FORMATS",
    "MAG_RANGE",
    "Blocks",
    "ColumnMap",
    "ColumnSpec",
    "FitsBlocks",
    "Hdf5Blocks",
    "IdIndex",
    "MappedCatalogue",
    "ParquetBlocks",
    "Report",
    "ReportWriter",
    "TextBlocks",
    "catalogue_ids",
    "catalogue_to_dataset",
    "hash_ids",
    "id_problems",
    "load_column_map",
    "map_catalogue",
    "open_catalogue",
    "read_catalogue",
    "required_columns",
]


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

    from ..dataset import Block, Dataset, DatasetWriter
    from ..nodes import NodeSet

    out = Path(out)
    recover(out)  # a killed run's temporary copies
    if out.exists() and not overwrite:
        from ..errors import ResumeError

        raise ResumeError(f"{out} exists; pass --overwrite to replace it")
    like = Path(like)
    if like.is_dir():
        from ..checkpoint import read_meta
        from ..nodes import Node

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

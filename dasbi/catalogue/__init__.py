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
from typing import Any

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
    "parse_spectra",
    "read_catalogue",
    "required_columns",
    "spectrum_file",
]


def catalogue_to_dataset(
    catalogue: str | os.PathLike[str],
    survey: str | os.PathLike[str],
    like: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    overwrite: bool = False,
    spectra: dict[str, str | os.PathLike[str]] | None = None,
) -> tuple[Path, Report]:
    """A real catalogue as a dasbi dataset of observables (``--real`` of domain adaptation).

    Spectra: a spectrum node of ``like`` (``xp_spectrum``) is filled where the column map's
    ``spectra:`` section (or ``spectra``, node → file, which takes precedence) names a
    source: Gaia XP coefficients in the archive's layout (:mod:`dasbi.catalogue.xp`),
    matched to the catalogue's rows by identifier and sampled with GaiaXPy. Rows without a
    spectrum keep it missing; spectra of sources not in the catalogue, and bad ones, are
    reported.

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
    group_attrs: dict[str, dict[str, Any]] = {}
    sources = {k: ("gaia_xp", str(v)) for k, v in (spectra or {}).items()}
    sources = {**cmap.spectra, **sources}
    context = [n for n in ref if n.role == "context" and n.kind == "observable"]
    unknown = sorted(set(sources) - {n.name for n in context})
    if unknown:
        raise DataError(
            f"spectra for {unknown}, but {like} has no such spectrum node; it has "
            f"{[n.name for n in context] or 'none'}"
        )
    for node in context:
        if node.name not in sources:
            continue
        kind, file = sources[node.name]
        path = spectrum_file(file, catalogue, cmap)
        block, attrs = _xp_block(path, m.ids, node, m.report)
        blocks[node.modality] = block
        group_attrs[node.modality] = attrs
        nodes = NodeSet([*nodes, node])
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
            group_attrs=group_attrs,
        )
        with h5py.File(tmp, "a") as f:
            f.create_dataset("source_id", data=np.char.encode(m.ids.astype(str), "utf-8"))
    return out, m.report


def parse_spectra(items: list[str] | None) -> dict[str, str]:
    """``--spectra NODE=FILE`` arguments → {node: file}."""
    from ..errors import ConfigError

    out = {}
    for item in items or []:
        node, sep, file = item.partition("=")
        if not sep or not node or not file:
            raise ConfigError(f"--spectra {item!r}: expected NODE=FILE, e.g. xp_spectrum=xp.csv")
        out[node] = file
    return out


def spectrum_file(file: str, catalogue: str | os.PathLike[str], cmap: ColumnMap) -> Path:
    """A column map's spectrum file: the catalogue itself, an absolute path, or a path
    relative to the column map's folder (then to the current folder)."""
    if file == "catalogue":
        return Path(catalogue)
    p = Path(file)
    if p.is_absolute() or not cmap.source:
        return p
    near = Path(cmap.source).parent / p
    return near if near.exists() else p


def _xp_block(path: Path, ids: np.ndarray, node: Any, report: Report) -> tuple[Any, dict]:
    """The (rows, pixels) block of a spectrum node from Gaia XP coefficients."""
    from ..dataset import Block
    from .xp import SampledXP

    sp = SampledXP.load(path, node.name)
    if node.size and node.size != len(sp.wave):
        raise DataError(
            f"{node.name} has {node.size} samples in the model, Gaia XP from {path} has "
            f"{len(sp.wave)} (GaiaXPy's default sampling): simulate XP with the gaia_xp "
            "spectrograph preset"
        )
    keys = np.asarray(ids).astype(str)
    # problems with a spectrum are reported on its catalogue row (-1: not in the catalogue)
    sp.report_into(report, keys, np.arange(len(keys)), unmatched_row=-1)
    known = set(keys)
    extra = [s for s in dict.fromkeys(sp.source_id.tolist()) if s not in known]
    for s in extra:
        report.add_row(
            -1, s, node.name, "ignored", "source_id not among the catalogue's kept rows"
        )
    vals, errs = sp.rows(keys)
    seen = np.isfinite(vals) & np.isfinite(errs) & (errs > 0)
    block = Block(
        np.where(seen, vals, np.nan), np.where(seen, errs, 0.0), seen, np.zeros_like(seen)
    )
    attrs = {"wavelength_nm": sp.wave, "source": str(path), "errors_modelled": sp.errors_modelled}
    return block, attrs

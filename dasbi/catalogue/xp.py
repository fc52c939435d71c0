"""Real Gaia XP spectra: the archive's continuous representation → the model's XP modality.

Gaia DR3 publishes each BP and RP spectrum as 55 coefficients of a Hermite-function basis,
with their formal errors, the correlations between them (the 1,485 elements below the
diagonal, packed as GaiaXPy's ``array_to_symmetric_matrix`` reads them) and the standard
deviation of the least-squares fit. The coefficient covariance is
``diag(e) · C · diag(e)`` (the formal errors ``e`` already carry the fit's standard deviation;
GaiaXPy divides it out and multiplies it back when it samples).

:func:`read_xp` reads two layouts:

* the archive's (``xp_continuous_mean_spectrum``): CSV with the arrays as ``(a, b, ...)``
  strings, FITS, ECSV or VOTable with array columns; rows without BP or RP keep that band as
  missing;
* an ``.npz`` with ``source_id`` and ``X`` (N, 110): 55 BP then 55 RP coefficients, no
  errors. Such rows get errors and correlations from an
  :class:`~simulators.gaia_xp.XPNoiseModel` and are flagged ``errors_modelled``.

Every row is checked (coefficient count, finite values, positive errors, correlations in
[-1, 1], a positive-definite covariance); a bad band is dropped and a row without a usable
band is rejected, each with a :class:`~dasbi.catalogue.report.Report` row.

:func:`sample_xp` turns the coefficients into the model's XP modality, the flux on GaiaXPy's
default sampling (336-1020 nm, 343 points, W m⁻² nm⁻¹) with GaiaXPy's own calibration
(``gaiaxpy.calibrate``): its design matrices propagate the full covariance to each sample's
error and, on request, to the correlation between samples.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simulators.gaia_xp import (
    BANDS,
    N_COEF,
    XPNoiseModel,
    archive_frame,
    calibrate,
    pack_correlation,
    unpack_correlation,
)

from ..errors import DataError
from .report import Report

__all__ = [
    "BANDS",
    "CHUNK_ROWS",
    "N_COEF",
    "SampledXP",
    "XPCoefficients",
    "XPNoiseModel",
    "concat_xp",
    "fit_noise",
    "iter_xp",
    "pack_correlation",
    "read_xp",
    "sample_xp",
    "unpack_correlation",
]


@dataclass
class XPCoefficients:
    """BP/RP coefficients of N sources; a missing band is NaN (coefficients and errors)."""

    source_id: np.ndarray  # (N,) str
    coef: dict[str, np.ndarray]  # band → (N, 55)
    error: dict[str, np.ndarray]  # band → (N, 55) formal errors
    corr: dict[str, np.ndarray]  # band → (N, 55, 55)
    std: dict[str, np.ndarray]  # band → (N,) standard deviation of the fit
    errors_modelled: np.ndarray  # (N,) bool: errors from an XPNoiseModel, not the archive
    report: Report = field(default_factory=Report)

    def __len__(self) -> int:
        return len(self.source_id)

    def has(self, band: str) -> np.ndarray:
        return np.all(np.isfinite(self.coef[band]), axis=1)

    def covariance(self, band: str) -> np.ndarray:
        """(N, 55, 55) coefficient covariances, diag(e)·C·diag(e)."""
        e = self.error[band]
        return e[:, :, None] * self.corr[band] * e[:, None, :]

    def take(self, rows: np.ndarray) -> XPCoefficients:
        return XPCoefficients(
            self.source_id[rows],
            {b: v[rows] for b, v in self.coef.items()},
            {b: v[rows] for b, v in self.error.items()},
            {b: v[rows] for b, v in self.corr.items()},
            {b: v[rows] for b, v in self.std.items()},
            self.errors_modelled[rows],
            self.report,
        )


# -- reading ------------------------------------------------------------------------------------
def _array_cell(v: Any) -> np.ndarray | None:
    """One array cell: a '(a, b, …)' / '[a, b, …]' string, a sequence, or empty."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return None
    if np.ma.is_masked(v):
        return None
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, str):
        s = v.strip()
        if not s or s.lower() in ("nan", "null", "--"):
            return None
        try:
            v = [float(t) for t in s.strip("()[] ").split(",") if t.strip()]
        except ValueError:
            raise ValueError(f"cannot read {s[:40]!r}… as an array of numbers") from None
    a = np.ma.filled(np.ma.asarray(v, dtype=np.float64), np.nan).ravel()
    return a if a.size else None


#: sources read, checked and sampled at a time (:func:`iter_xp`, :meth:`SampledXP.load`):
#: the correlations take 48 kB a source and GaiaXPy's calibration more while it runs, so
#: blocks bound the peak (``dasbi bench memory``, step xp: 510 MB for 10⁴ or 4×10⁴ sources)
CHUNK_ROWS = 500

Getter = Callable[[str], Sequence[Any]]


def _blocks(path: Path, rows: int) -> tuple[list[str], Iterator[tuple[int, Getter]]]:
    """Column names, and ``(offset, column getter)`` of successive blocks of at most
    ``rows`` rows of a file in the archive's layout (CSV in chunks; FITS memory-mapped)."""
    suffix = "".join(path.suffixes[-2:]).lower()
    if suffix.endswith(".csv") or suffix.endswith(".csv.gz"):
        import pandas as pd

        try:
            cols = list(pd.read_csv(path, nrows=0).columns)
        except (ValueError, UnicodeDecodeError) as err:  # pandas' parser errors are ValueErrors
            raise DataError(f"{path}: cannot read it as CSV ({err})") from None

        def csv_blocks() -> Iterator[tuple[int, Getter]]:
            offset = 0
            try:
                for df in pd.read_csv(path, dtype={"source_id": str}, chunksize=rows):
                    yield offset, lambda c, df=df: df[c].to_numpy(object)
                    offset += len(df)
            except (ValueError, UnicodeDecodeError) as err:
                raise DataError(
                    f"{path}: cannot read it as CSV near row {offset} ({err})"
                ) from None

        return cols, csv_blocks()
    from astropy.table import Table

    try:
        memmap = path.suffix.lower() in (".fits", ".fit", ".fts")
        t = Table.read(path, memmap=True) if memmap else Table.read(path)
    except Exception as err:  # noqa: BLE001 - astropy raises many kinds
        raise DataError(
            f"{path}: cannot read it as a FITS, ECSV or VOTable table ({err}); XP "
            "coefficients come in the archive's CSV, FITS, ECSV or VOTable layout, or an .npz "
            "with source_id and X"
        ) from None

    def table_blocks() -> Iterator[tuple[int, Getter]]:
        for a in range(0, len(t), rows):
            tb = t[a : a + rows]
            yield a, lambda c, tb=tb: [tb[c][i] for i in range(len(tb))]

    return list(t.colnames), table_blocks()


def read_xp(
    path: str | os.PathLike[str],
    noise: XPNoiseModel | None = None,
    *,
    report: Report | None = None,
) -> XPCoefficients:
    """Read XP coefficients (module docstring); bad bands and rows go to the report.

    The whole file is held in memory, 48 kB a source; :func:`iter_xp` reads it in blocks.

    Args:
        path: A file in the archive's layout, or an ``.npz`` with ``source_id`` and ``X``.
        noise: Errors for files without them (default: the shipped reference,
            :meth:`~simulators.gaia_xp.XPNoiseModel.load`).

    Raises:
        DataError: Unreadable file, missing columns, or no usable row.
    """
    report = report if report is not None else Report()
    out = concat_xp(list(iter_xp(path, noise, report=report)))
    out.report = report
    return out


def iter_xp(
    path: str | os.PathLike[str],
    noise: XPNoiseModel | None = None,
    *,
    report: Report | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[XPCoefficients]:
    """The usable sources of an XP file, ``chunk_rows`` rows of the file at a time (as
    :func:`read_xp`, which gathers them). Report rows are the file's rows.

    Raises:
        DataError: Unreadable file or missing columns (before the first block), or no usable
            row in the whole file (after the last).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    report = report if report is not None else Report()
    if path.suffix.lower() == ".npz":
        blocks = _npz_blocks(path, noise, report, chunk_rows)
    else:
        blocks = _archive_blocks(path, report, chunk_rows)
    usable = False
    for offset, out in blocks:
        ok = out.has("bp") | out.has("rp")
        bad = np.flatnonzero(~ok)
        if len(bad):
            report.add(
                bad, out.source_id, "xp", "row rejected", "no usable BP or RP spectrum", offset
            )
        usable |= bool(ok.any())
        kept = out.take(np.flatnonzero(ok))
        kept.report = report
        yield kept
    if not usable:
        raise DataError(f"{path}: no row has a usable BP or RP spectrum (see the report)")


def _archive_blocks(
    path: Path, report: Report, chunk_rows: int
) -> Iterator[tuple[int, XPCoefficients]]:
    cols, blocks = _blocks(path, chunk_rows)
    need = ["source_id"] + [
        f"{b}_{k}" for b in BANDS for k in ("coefficients", "coefficient_errors")
    ]
    missing = [c for c in need if c not in cols]
    if missing:
        raise DataError(
            f"{path}: missing columns {missing}; XP coefficients need source_id and, for bp "
            "and rp, _coefficients, _coefficient_errors, _coefficient_correlations and "
            "_standard_deviation (the archive's xp_continuous_mean_spectrum)"
        )
    for offset, get in blocks:
        ids = np.array([str(s).strip() for s in get("source_id")])
        out = _empty(ids)
        for b in BANDS:
            _read_band(out, b, get, cols, report, offset)
        yield offset, out


def _read_band(
    out: XPCoefficients, b: str, get: Getter, cols: list[str], report: Report, offset: int
) -> None:
    """Fill band ``b`` of a block from its columns, reporting bad cells."""
    ids, n = out.source_id, len(out)
    coef, err = get(f"{b}_coefficients"), get(f"{b}_coefficient_errors")
    kc = f"{b}_coefficient_correlations"
    corr = get(kc) if kc in cols else None
    std = get(f"{b}_standard_deviation") if f"{b}_standard_deviation" in cols else [1.0] * n
    for r in range(n):
        try:
            c, e = _array_cell(coef[r]), _array_cell(err[r])
            k = None if corr is None else _array_cell(corr[r])
        except ValueError as exc:
            report.add([r], ids, f"{b}_coefficients", "band ignored", str(exc), offset)
            continue
        if c is None and e is None:
            continue  # the band was not measured: missing, not an error
        why = _check_band(c, e, k)
        if why:
            report.add([r], ids, f"{b}_coefficients", "band ignored", why, offset)
            continue
        assert c is not None and e is not None
        out.coef[b][r], out.error[b][r] = c, e
        out.corr[b][r] = np.eye(N_COEF) if k is None else unpack_correlation(k)
        s = std[r]
        out.std[b][r] = float(s) if s is not None and np.isfinite(float(s)) else 1.0
        if k is None:
            report.add(
                [r],
                ids,
                f"{b}_coefficient_correlations",
                "assumed",
                "no correlations: coefficients taken as independent",
                offset,
            )


def _empty(ids: np.ndarray) -> XPCoefficients:
    n = len(ids)
    return XPCoefficients(
        ids,
        {b: np.full((n, N_COEF), np.nan) for b in BANDS},
        {b: np.full((n, N_COEF), np.nan) for b in BANDS},
        {b: np.repeat(np.eye(N_COEF)[None], n, 0) for b in BANDS},
        {b: np.full(n, np.nan) for b in BANDS},
        np.zeros(n, bool),
    )


def _check_band(c: np.ndarray | None, e: np.ndarray | None, k: np.ndarray | None) -> str | None:
    """Why a band cannot be used, or None."""
    if c is None or e is None:
        return "coefficients without errors, or errors without coefficients"
    if c.size != N_COEF or e.size != N_COEF:
        return f"{c.size} coefficients and {e.size} errors, expected {N_COEF} (Gaia DR3)"
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(e))):
        return "NaN or inf among the coefficients or errors"
    if np.any(e <= 0):
        return "non-positive coefficient error"
    if k is not None:
        if k.size != N_COEF * (N_COEF - 1) // 2:
            return f"{k.size} correlations, expected {N_COEF * (N_COEF - 1) // 2}"
        if not np.all(np.isfinite(k)) or np.any(np.abs(k) > 1):
            return "correlations outside [-1, 1] or not finite"
        # positive definite: a Cholesky factor exists
        try:
            np.linalg.cholesky(unpack_correlation(k))
        except np.linalg.LinAlgError:
            return "the correlation matrix is not positive definite"
    return None


def _npz_blocks(
    path: Path, noise: XPNoiseModel | None, report: Report, chunk_rows: int
) -> Iterator[tuple[int, XPCoefficients]]:
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npz ({err})") from None
    if "X" not in z.files or "source_id" not in z.files:
        raise DataError(f"{path}: an XP .npz needs 'X' (N, 110) and 'source_id'; has {z.files}")
    x_all = z["X"]  # 880 B a source: read whole, expanded a block at a time
    if x_all.ndim != 2 or x_all.shape[1] != 2 * N_COEF:
        raise DataError(
            f"{path}: X has shape {x_all.shape}, expected (N, {2 * N_COEF}): BP then RP"
        )
    ids_all = np.asarray(z["source_id"]).astype(str)
    if len(ids_all) != len(x_all):
        raise DataError(f"{path}: {len(ids_all)} source_id for {len(x_all)} rows of X")
    noise = noise or XPNoiseModel.load()
    for offset in range(0, len(x_all), chunk_rows):
        x = np.asarray(x_all[offset : offset + chunk_rows], np.float64)
        ids = ids_all[offset : offset + chunk_rows]
        out = _empty(ids)
        for k, b in enumerate(BANDS):
            c = x[:, k * N_COEF : (k + 1) * N_COEF]
            fine = np.all(np.isfinite(c), axis=1)
            report.add(
                np.flatnonzero(~fine),
                ids,
                f"{b}_coefficients",
                "band ignored",
                "NaN or inf among the coefficients",
                offset,
            )
            out.coef[b][fine] = c[fine]
            out.error[b][fine] = noise.errors(b, c[fine])
            out.corr[b][fine] = noise.corr[b]
            out.std[b][fine] = 1.0
        out.errors_modelled[:] = True
        yield offset, out


# -- noise model --------------------------------------------------------------------------------
def fit_noise(ref: XPCoefficients) -> XPNoiseModel:
    """An :class:`~simulators.gaia_xp.XPNoiseModel` fitted on sources with published errors."""
    keep = ~ref.errors_modelled
    try:
        return XPNoiseModel.fit(
            {b: ref.coef[b][keep] for b in BANDS},
            {b: ref.error[b][keep] for b in BANDS},
            {b: ref.corr[b][keep] for b in BANDS},
        )
    except ValueError as err:
        raise DataError(str(err)) from None


def concat_xp(parts: list[XPCoefficients]) -> XPCoefficients:
    """The sources of several tables, in order."""
    cat = np.concatenate
    return XPCoefficients(
        cat([p.source_id for p in parts]),
        {b: cat([p.coef[b] for p in parts]) for b in BANDS},
        {b: cat([p.error[b] for p in parts]) for b in BANDS},
        {b: cat([p.corr[b] for p in parts]) for b in BANDS},
        {b: cat([p.std[b] for p in parts]) for b in BANDS},
        cat([p.errors_modelled for p in parts]),
    )


# -- sampling -----------------------------------------------------------------------------------
def sample_xp(
    xp: XPCoefficients, *, with_correlation: bool = False, quiet: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Sampled spectra of every source with GaiaXPy's calibration (module docstring).

    Returns:
        wavelength [nm] (P,), flux (N, P) and its 1σ error (N, P) in W m⁻² nm⁻¹ (NaN where
        the band that covers a sample is missing), and, with ``with_correlation``, the (N, P,
        P) correlation between samples (else None). ``quiet`` silences GaiaXPy's
        progress bar.
    """
    frame = archive_frame(xp.coef, xp.error, xp.corr, xp.std)
    out, sampling = calibrate(frame, with_correlation=with_correlation, quiet=quiet)
    flux = np.stack([np.asarray(v, np.float64) for v in out["flux"]])
    err = np.stack([np.asarray(v, np.float64) for v in out["flux_error"]])
    corr = None
    if with_correlation:
        p = len(sampling)
        corr = np.stack([_corr_matrix(v, p) for v in out["correlation"]])
    return np.asarray(sampling, np.float64), flux, err, corr


def _read_rows(ds: Any, sel: np.ndarray) -> np.ndarray:
    """Rows ``sel`` (sorted, unique) of an HDF5 dataset: one slice where they are dense."""
    if not len(sel):
        return np.zeros((0, *ds.shape[1:]), ds.dtype)
    a, b = int(sel[0]), int(sel[-1]) + 1
    if b - a <= 4 * len(sel):
        return ds[a:b][sel - a]
    return ds[sel]


def _stamp(path: Path) -> str:
    """What identifies a file's content cheaply: its path, size and modification time."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _corr_matrix(v: Any, p: int) -> np.ndarray:
    a = np.asarray(v, np.float64)
    if a.ndim == 2:
        return a
    if a.size == p * (p - 1) // 2:
        return unpack_correlation(a, p)
    return np.full((p, p), np.nan)


@dataclass
class SampledXP:
    """The Gaia XP spectra of one file, sampled once (:func:`sample_xp`) and looked up by
    source id: what ``dasbi ingest`` and ``dasbi infer`` give a spectrum node.

    The file is read and sampled :data:`CHUNK_ROWS` sources at a time. The sampled flux and
    errors (2.7 kB a source) stay in memory, or, with a ``store``, go to an HDF5 file from
    which :meth:`rows` reads only the sources asked for, so that memory does not grow with
    the file (``dasbi infer`` keeps it among the run's parts, and a resumed run reuses it).
    A source id given twice keeps its first spectrum (the others are reported).
    """

    path: Path
    node: str
    wave: np.ndarray  # (L,) nm
    source_id: np.ndarray  # (M,) str, the file's usable sources in file order
    report: Report  # the file's problems, by source id
    errors_modelled: int
    flux: np.ndarray | None = None  # (M, L) float32, or None: in ``store``
    error: np.ndarray | None = None
    store: Path | None = None

    def __post_init__(self) -> None:
        self._order = np.argsort(self.source_id, kind="stable")
        self._sorted = self.source_id[self._order]

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        node: str,
        *,
        store: str | os.PathLike[str] | None = None,
        chunk_rows: int = CHUNK_ROWS,
        progress: bool = False,
    ) -> SampledXP:
        """Read and sample the spectra of ``path`` (into ``store``, if given; a store that
        holds this file's spectra already is reused).

        Raises:
            DataError: As :func:`read_xp`.
        """
        from ..fileio import atomic_path
        from ..progress import progress_bar

        path = Path(path)
        stamp = _stamp(path) if path.exists() else ""
        if store is not None:
            got = cls._open(Path(store), path, node, stamp)
            if got is not None:
                return got
        report = Report()
        ids: list[np.ndarray] = []
        fluxes: list[np.ndarray] = []
        errors: list[np.ndarray] = []
        wave = np.zeros(0)
        modelled = 0
        bar = progress_bar(desc=f"XP spectra ({path.name})", unit="spec", disable=not progress)
        with contextlib.ExitStack() as stack:
            stack.enter_context(bar)
            h5: Any = None
            if store is not None:
                import h5py

                tmp = stack.enter_context(atomic_path(store))
                h5 = stack.enter_context(h5py.File(tmp, "w"))
            for part in iter_xp(path, report=report, chunk_rows=chunk_rows):
                bar.update(len(part))
                if not len(part):
                    continue
                wave, flux, err, _ = sample_xp(part, quiet=True)
                ids.append(part.source_id.astype(str))
                modelled += int(part.errors_modelled.sum())
                if h5 is None:
                    fluxes.append(flux.astype(np.float32))
                    errors.append(err.astype(np.float32))
                    continue
                if "flux" not in h5:
                    for k in ("flux", "error"):
                        h5.create_dataset(
                            k,
                            shape=(0, len(wave)),
                            maxshape=(None, len(wave)),
                            dtype=np.float32,
                            chunks=(min(256, chunk_rows), len(wave)),
                        )
                for k, v in (("flux", flux), ("error", err)):
                    h5[k].resize(h5[k].shape[0] + len(v), axis=0)
                    h5[k][-len(v) :] = v.astype(np.float32)
            source_id = np.concatenate(ids) if ids else np.zeros(0, str)
            out = cls(path, node, wave, source_id, report, modelled)
            out._report_duplicates()
            if h5 is None:
                empty = np.zeros((0, len(wave)), np.float32)
                out.flux = np.concatenate(fluxes) if fluxes else empty
                out.error = np.concatenate(errors) if errors else empty
                return out
            h5.attrs.update({"source": stamp, "node": node, "errors_modelled": modelled})
            h5["wavelength_nm"] = wave
            h5["source_id"] = np.char.encode(source_id.astype(np.str_), "utf-8")
            for k, v in report.to_arrays().items():
                h5[k] = np.char.encode(v, "utf-8") if v.dtype.kind == "U" else v
        out.store = Path(store)  # type: ignore[arg-type]
        return out

    @classmethod
    def _open(cls, store: Path, path: Path, node: str, stamp: str) -> SampledXP | None:
        """The spectra in ``store`` if it holds those of ``path`` as it is now, else None."""
        import h5py

        if not store.is_file():
            return None
        try:
            with h5py.File(store, "r") as f:
                if f.attrs.get("source") != stamp or f.attrs.get("node") != node:
                    return None
                arrays = {
                    k: np.char.decode(f[k][()], "utf-8") if f[k].dtype.kind == "S" else f[k][()]
                    for k in f
                    if k.startswith("report_")
                }
                out = cls(
                    path,
                    node,
                    np.asarray(f["wavelength_nm"][()], np.float64),
                    np.char.decode(f["source_id"][()], "utf-8"),
                    Report.from_arrays(arrays),
                    int(f.attrs["errors_modelled"]),
                    store=store,
                )
        except (OSError, KeyError):
            return None  # unreadable or incomplete: sampled again
        return out

    def _report_duplicates(self) -> None:
        dup = np.flatnonzero(self._sorted[1:] == self._sorted[:-1]) + 1
        for k in self._order[dup]:
            self.report.add_row(
                -1,
                str(self.source_id[k]),
                "source_id",
                "spectrum ignored",
                "source_id given more than once in the XP file: its first spectrum is used",
            )

    def __len__(self) -> int:
        return len(self.source_id)

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, L) flux and errors of the sources ``ids``; NaN where a source has none."""
        q = np.asarray(ids).astype(str)
        flux = np.full((len(q), len(self.wave)), np.nan, np.float32)
        err = np.full_like(flux, np.nan)
        if not len(self) or not len(q):
            return flux, err
        pos = np.minimum(np.searchsorted(self._sorted, q), len(self) - 1)
        hit = self._sorted[pos] == q
        k = self._order[pos[hit]]
        if self.store is None:
            assert self.flux is not None and self.error is not None
            flux[hit], err[hit] = self.flux[k], self.error[k]
            return flux, err
        import h5py

        sel, inv = np.unique(k, return_inverse=True)
        with h5py.File(self.store, "r") as f:
            flux[hit] = _read_rows(f["flux"], sel)[inv]
            err[hit] = _read_rows(f["error"], sel)[inv]
        return flux, err

    def report_into(
        self, report: Report, ids: np.ndarray, rows: np.ndarray, unmatched_row: int | None = None
    ) -> None:
        """Add the file's problems with the sources ``ids`` to ``report`` at their catalogue
        ``rows``; problems of other sources go to ``unmatched_row``, or are left out."""
        where = {str(i): int(r) for i, r in zip(ids, rows, strict=True)}
        r = self.report
        for sid, col, act, why in zip(r.ids, r.columns, r.actions, r.reasons, strict=True):
            row = where.get(str(sid), unmatched_row)
            if row is not None:
                report.add_row(row, sid, f"{self.node}:{col}", act, why)

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

import os
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
    "N_COEF",
    "SampledXP",
    "XPCoefficients",
    "XPNoiseModel",
    "concat_xp",
    "fit_noise",
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


def _table(path: Path) -> tuple[list[str], Any]:
    """Column names and a column getter of a file in the archive's layout."""
    suffix = "".join(path.suffixes[-2:]).lower()
    if suffix.endswith(".csv") or suffix.endswith(".csv.gz"):
        import pandas as pd

        df = pd.read_csv(path, dtype={"source_id": str})
        return list(df.columns), lambda c: df[c].to_numpy(object)
    from astropy.table import Table

    try:
        t = Table.read(path)
    except Exception as err:  # noqa: BLE001 - astropy raises many kinds
        raise DataError(
            f"{path}: cannot read it as a FITS, ECSV or VOTable table ({err}); XP "
            "coefficients come in the archive's CSV, FITS, ECSV or VOTable layout, or an .npz "
            "with source_id and X"
        ) from None
    return list(t.colnames), lambda c: [t[c][i] for i in range(len(t))]


def read_xp(
    path: str | os.PathLike[str],
    noise: XPNoiseModel | None = None,
    *,
    report: Report | None = None,
) -> XPCoefficients:
    """Read XP coefficients (module docstring); bad bands and rows go to the report.

    Args:
        path: A file in the archive's layout, or an ``.npz`` with ``source_id`` and ``X``.
        noise: Errors for files without them (default: the shipped reference,
            :meth:`~simulators.gaia_xp.XPNoiseModel.load`).

    Raises:
        DataError: Unreadable file, missing columns, or no usable row.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    report = report if report is not None else Report()
    if path.suffix.lower() == ".npz":
        return _read_npz(path, noise, report)
    cols, get = _table(path)
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
    ids = np.array([str(s).strip() for s in get("source_id")])
    n = len(ids)
    out = _empty(ids)
    for b in BANDS:
        coef, err = get(f"{b}_coefficients"), get(f"{b}_coefficient_errors")
        corr = (
            get(f"{b}_coefficient_correlations")
            if f"{b}_coefficient_correlations" in cols
            else None
        )
        std = get(f"{b}_standard_deviation") if f"{b}_standard_deviation" in cols else [1.0] * n
        for r in range(n):
            try:
                c, e = _array_cell(coef[r]), _array_cell(err[r])
                k = None if corr is None else _array_cell(corr[r])
            except ValueError as exc:
                report.add([r], ids, f"{b}_coefficients", "band ignored", str(exc))
                continue
            if c is None and e is None:
                continue  # the band was not measured: missing, not an error
            why = _check_band(c, e, k)
            if why:
                report.add([r], ids, f"{b}_coefficients", "band ignored", why)
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
                )
    return _finish(out, report, path)


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


def _finish(out: XPCoefficients, report: Report, path: Path) -> XPCoefficients:
    ok = out.has("bp") | out.has("rp")
    if not ok.any():
        raise DataError(f"{path}: no row has a usable BP or RP spectrum (see the report)")
    bad = np.flatnonzero(~ok)
    if len(bad):
        report.add(bad, out.source_id, "xp", "row rejected", "no usable BP or RP spectrum")
    kept = out.take(np.flatnonzero(ok))
    kept.report = report
    return kept


def _read_npz(path: Path, noise: XPNoiseModel | None, report: Report) -> XPCoefficients:
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npz ({err})") from None
    if "X" not in z.files or "source_id" not in z.files:
        raise DataError(f"{path}: an XP .npz needs 'X' (N, 110) and 'source_id'; has {z.files}")
    x = np.asarray(z["X"], np.float64)
    if x.ndim != 2 or x.shape[1] != 2 * N_COEF:
        raise DataError(f"{path}: X has shape {x.shape}, expected (N, {2 * N_COEF}): BP then RP")
    ids = np.asarray(z["source_id"]).astype(str)
    out = _empty(ids)
    noise = noise or XPNoiseModel.load()
    for k, b in enumerate(BANDS):
        c = x[:, k * N_COEF : (k + 1) * N_COEF]
        fine = np.all(np.isfinite(c), axis=1)
        report.add(
            np.flatnonzero(~fine),
            ids,
            f"{b}_coefficients",
            "band ignored",
            "NaN or inf among the coefficients",
        )
        out.coef[b][fine] = c[fine]
        out.error[b][fine] = noise.errors(b, c[fine])
        out.corr[b][fine] = noise.corr[b]
        out.std[b][fine] = 1.0
    out.errors_modelled[:] = True
    return _finish(out, report, path)


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
    xp: XPCoefficients, *, with_correlation: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Sampled spectra of every source with GaiaXPy's calibration (module docstring).

    Returns:
        wavelength [nm] (P,), flux (N, P) and its 1σ error (N, P) in W m⁻² nm⁻¹ (NaN where
        the band that covers a sample is missing), and, with ``with_correlation``, the (N, P,
        P) correlation between samples (else None).
    """
    frame = archive_frame(xp.coef, xp.error, xp.corr, xp.std)
    out, sampling = calibrate(frame, with_correlation=with_correlation)
    flux = np.stack([np.asarray(v, np.float64) for v in out["flux"]])
    err = np.stack([np.asarray(v, np.float64) for v in out["flux_error"]])
    corr = None
    if with_correlation:
        p = len(sampling)
        corr = np.stack([_corr_matrix(v, p) for v in out["correlation"]])
    return np.asarray(sampling, np.float64), flux, err, corr


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
    source id: what ``dasbi ingest`` and ``dasbi infer`` give a spectrum node."""

    path: Path
    node: str
    wave: np.ndarray  # (L,) nm
    flux: np.ndarray  # (M, L) float32
    error: np.ndarray  # (M, L) float32
    index: dict[str, int]  # source id → row
    report: Report  # the file's problems, by source id
    errors_modelled: int

    @classmethod
    def load(cls, path: str | os.PathLike[str], node: str) -> SampledXP:
        xp = read_xp(path, report=Report())
        wave, flux, err, _ = sample_xp(xp)
        return cls(
            Path(path),
            node,
            wave,
            flux.astype(np.float32),
            err.astype(np.float32),
            {str(s): i for i, s in enumerate(xp.source_id)},
            xp.report,
            int(xp.errors_modelled.sum()),
        )

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, L) flux and errors of the sources ``ids``; NaN where a source has none."""
        k = np.array([self.index.get(str(i), -1) for i in ids], dtype=np.int64)
        flux = np.full((len(k), len(self.wave)), np.nan, np.float32)
        err = np.full_like(flux, np.nan)
        flux[k >= 0], err[k >= 0] = self.flux[k[k >= 0]], self.error[k[k >= 0]]
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

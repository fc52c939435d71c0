"""Gaia XP as Gaia publishes it: 55 + 55 Hermite coefficients with correlated errors.

Real XP spectra (Gaia DR3; De Angeli et al. 2023, Montegriffo et al. 2023) are coefficient
vectors with a full covariance; sampled on a wavelength grid their pixel errors are strongly
correlated and follow the source's flux. This module simulates XP in that representation:

1. the linear map ``M`` (110 coefficients → 343 samples of GaiaXPy's default grid, W m⁻²
   nm⁻¹) is measured with GaiaXPy itself, by calibrating one unit coefficient at a time
   (:func:`xp_design`), so that simulated and real spectra go through the same
   calibration, BP/RP merge included;
2. a clean model spectrum on that grid becomes coefficients by least squares on ``M``,
   regularised by the coefficients' size in archive sources (:func:`project_model`; plain
   least squares, :func:`project`, is exact for real XP but blows up the near-null
   directions of ``M`` for model spectra);
3. coefficient noise is drawn from an :class:`XPNoiseModel` (errors from the band's first
   coefficient, correlations shared), and the noisy coefficients are sampled through ``M``;
   each sample's 1σ error is ``sqrt(diag(Mᵀ Σ M))``, as GaiaXPy computes it for real data.

:class:`XPNoiseModel` is fitted on archive sources with published errors
(``dasbi.catalogue.xp.read_xp``; ``scripts/fit_xp_noise.py`` writes the shipped
``xp_noise_reference.npz``). The archive packs the 1,485 correlations below the diagonal in
row order of the lower triangle (:func:`unpack_correlation`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BANDS",
    "N_COEF",
    "XPCoefficientNoise",
    "XPNoiseModel",
    "archive_frame",
    "calibrate",
    "pack_correlation",
    "project",
    "project_model",
    "projection_matrix",
    "unpack_correlation",
    "xp_design",
]

N_COEF = 55
BANDS = ("bp", "rp")
REFERENCE = Path(__file__).parent / "xp_noise_reference.npz"


def unpack_correlation(packed: np.ndarray, n: int = N_COEF) -> np.ndarray:
    """(…, n(n−1)/2) archive correlations → (…, n, n) symmetric matrices, unit diagonal."""
    packed = np.asarray(packed, np.float64)
    m = n * (n - 1) // 2
    if packed.shape[-1] != m:
        raise ValueError(f"{packed.shape[-1]} correlations, expected {m} for {n} coefficients")
    out = np.zeros((*packed.shape[:-1], n, n))
    i, j = np.tril_indices(n, -1)
    out[..., i, j] = packed
    out[..., j, i] = packed
    out[..., np.arange(n), np.arange(n)] = 1.0
    return out


def pack_correlation(corr: np.ndarray) -> np.ndarray:
    """Inverse of :func:`unpack_correlation`."""
    n = corr.shape[-1]
    i, j = np.tril_indices(n, -1)
    return np.asarray(corr)[..., i, j]


@dataclass
class XPNoiseModel:
    """Coefficient errors and correlations of XP spectra.

    Per band, ``log e_i = p_i + ½ log c_0 + ½ log(1 + c_0 / c_k)``, with ``c_0`` the first
    coefficient (proportional to the band's flux): photon noise (``e ∝ √c_0``) for faint
    sources, errors proportional to the flux above ``c_k`` (calibration-limited bright
    sources). ``c_k`` (on a grid) and the profile ``p`` along the basis are fitted on
    sources with published errors (median absolute log residual); the correlations are
    their median correlation matrix, made positive definite. Leave-one-out on the six
    archive sources of GaiaXPy's test files (G ≈ 5-18) it predicts the errors to within a
    factor 1.1-2.3 (median over coefficients); √c_0 alone is 50× too small for the brightest
    (tests/test_xp.py). It has no colour term and no dependence on the number of transits.
    """

    log_profile: dict[str, np.ndarray]  # band → (55,)
    c_knee: dict[str, float]  # band → c_0 above which errors grow as c_0
    corr: dict[str, np.ndarray]  # band → (55, 55)
    n_sources: int
    #: band → (55,) log10 RMS of each coefficient per unit mean sampled flux over the
    #: sources (the prior scale of :func:`project_model`)
    log_amplitude: dict[str, np.ndarray] | None = None

    @classmethod
    def fit(
        cls, coef: dict[str, np.ndarray], error: dict[str, np.ndarray], corr: dict[str, np.ndarray]
    ) -> XPNoiseModel:
        """Fit on sources with published errors: per band (N, 55) coefficients and errors and
        (N, 55, 55) correlations (rows with NaN are left out)."""
        prof, knee, cm = {}, {}, {}
        grid = 10 ** np.linspace(1.0, 8.0, 141)
        n = 0
        for b in BANDS:
            has = np.all(np.isfinite(coef[b]), axis=1) & np.all(np.isfinite(error[b]), axis=1)
            if has.sum() < 2:
                raise ValueError(f"the XP noise model needs 2 sources with published {b} errors")
            n = max(n, int(has.sum()))
            c0 = np.abs(coef[b][has, 0])
            le = np.log(error[b][has])
            best = (np.inf, 0.0, np.zeros(N_COEF))
            for ck in grid:
                base = 0.5 * np.log(c0) + 0.5 * np.log1p(c0 / ck)
                p = np.median(le - base[:, None], axis=0)
                cost = float(np.sum(np.median(np.abs(le - base[:, None] - p), axis=1)))
                if cost < best[0]:
                    best = (cost, float(ck), p)
            knee[b], prof[b] = best[1], best[2]
            m = np.median(corr[b][has], axis=0)
            w, v = np.linalg.eigh((m + m.T) / 2)
            m = (v * np.maximum(w, 1e-6)) @ v.T
            d = np.sqrt(np.diag(m))
            cm[b] = m / d[:, None] / d[None, :]
        # the coefficients' typical size per unit mean flux, over sources with both bands
        both = np.all(np.isfinite(coef["bp"]), 1) & np.all(np.isfinite(coef["rp"]), 1)
        amp = None
        if both.sum() >= 2:
            c = np.concatenate([coef["bp"][both], coef["rp"][both]], axis=1)
            mean = np.abs((c @ xp_design()[1]).mean(axis=1))
            rms = np.sqrt(np.mean((c / mean[:, None]) ** 2, axis=0))
            amp = {b: np.log10(rms[k * N_COEF : (k + 1) * N_COEF]) for k, b in enumerate(BANDS)}
        return cls(prof, knee, cm, n, amp)

    def save(self, path: str | os.PathLike[str]) -> None:
        arrays = {"n_sources": np.array(self.n_sources)}
        for b in BANDS:
            arrays[f"{b}_log_profile"] = self.log_profile[b]
            arrays[f"{b}_c_knee"] = np.array(self.c_knee[b])
            arrays[f"{b}_corr"] = pack_correlation(self.corr[b]).astype(np.float32)
            if self.log_amplitude is not None:
                arrays[f"{b}_log_amplitude"] = self.log_amplitude[b]
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str] = REFERENCE) -> XPNoiseModel:
        """A saved model; by default the shipped reference (fitted on archive sources)."""
        with np.load(path) as z:
            return cls(
                {b: np.asarray(z[f"{b}_log_profile"], np.float64) for b in BANDS},
                {b: float(z[f"{b}_c_knee"]) for b in BANDS},
                {b: unpack_correlation(z[f"{b}_corr"]) for b in BANDS},
                int(z["n_sources"]),
                {b: np.asarray(z[f"{b}_log_amplitude"], np.float64) for b in BANDS}
                if "bp_log_amplitude" in z.files
                else None,
            )

    def scale(self, band: str, coef: np.ndarray) -> np.ndarray:
        """(N,) per-source error scale ``sqrt(c_0 (1 + c_0 / c_k))`` of coefficients (N, 55)."""
        c0 = np.maximum(np.abs(np.asarray(coef, np.float64)[:, 0]), 1e-30)
        return np.sqrt(c0 * (1.0 + c0 / self.c_knee[band]))

    def errors(self, band: str, coef: np.ndarray) -> np.ndarray:
        """(N, 55) modelled errors of coefficients (N, 55): scale × exp(profile)."""
        return self.scale(band, coef)[:, None] * np.exp(self.log_profile[band])[None, :]


def archive_frame(
    coef: dict[str, np.ndarray],
    error: dict[str, np.ndarray],
    corr: dict[str, np.ndarray],
    std: dict[str, np.ndarray],
) -> Any:
    """Sources as GaiaXPy reads them, in the archive's layout: per band (N, 55) coefficients
    and errors, (N, 55, 55) correlations and (N,) standard deviations; a band whose
    coefficients are not all finite is missing for that source."""
    import pandas as pd

    n = len(next(iter(coef.values())))
    rows: dict[str, list[Any]] = {"source_id": list(range(n))}
    for b in BANDS:
        has = np.all(np.isfinite(coef[b]), axis=1)
        packed = pack_correlation(corr[b])

        def col(a: np.ndarray, has: np.ndarray = has) -> list[Any]:
            return [v if h else np.nan for v, h in zip(a, has, strict=True)]

        rows[f"{b}_n_parameters"] = col(np.full(n, N_COEF))
        rows[f"{b}_coefficients"] = col(coef[b])
        rows[f"{b}_coefficient_errors"] = col(error[b])
        rows[f"{b}_coefficient_correlations"] = col(packed)
        rows[f"{b}_standard_deviation"] = col(std[b])
    return pd.DataFrame(rows)


def calibrate(frame: Any, *, with_correlation: bool = False, quiet: bool = False) -> tuple:
    """``gaiaxpy.calibrate`` on its default sampling (GaiaXPy's precomputed design
    matrices), without files; restores matplotlib's ``text.usetex``, which GaiaXPy turns on.
    ``quiet`` also silences its progress bar (written to the stdout it imported)."""
    import contextlib
    import io
    import sys
    import warnings

    import matplotlib

    usetex = matplotlib.rcParams["text.usetex"]  # before the import: importing GaiaXPy sets it
    import gaiaxpy

    cal = sys.modules.get("gaiaxpy.calibrator.calibrator") if quiet else None
    out_stream = getattr(cal, "stdout", None)
    if cal is not None and out_stream is not None:
        cal.stdout = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return gaiaxpy.calibrate(frame, save_file=False, with_correlation=with_correlation)
    finally:
        matplotlib.rcParams["text.usetex"] = usetex
        if cal is not None and out_stream is not None:
            cal.stdout = out_stream


@lru_cache(maxsize=1)
def xp_design() -> tuple[np.ndarray, np.ndarray]:
    """GaiaXPy's default sampling [nm] (343,) and the linear map (110, 343) from BP then RP
    coefficients to its absolute flux [W m⁻² nm⁻¹], measured by calibrating unit vectors."""
    n = 2 * N_COEF
    unit = np.eye(n)
    frame = archive_frame(
        {b: unit[:, k * N_COEF : (k + 1) * N_COEF] for k, b in enumerate(BANDS)},
        {b: np.ones((n, N_COEF)) for b in BANDS},
        {b: np.broadcast_to(np.eye(N_COEF), (n, N_COEF, N_COEF)) for b in BANDS},
        {b: np.ones(n) for b in BANDS},
    )
    out, sampling = calibrate(frame, quiet=True)
    m = np.stack([np.asarray(v, np.float64) for v in out["flux"]])
    return np.asarray(sampling, np.float64), m


def project(flux: np.ndarray) -> np.ndarray:
    """(N, 343) spectra on the XP grid → (N, 110) coefficients (least squares through
    :func:`xp_design`): exact for spectra in the basis (real XP), but ill-conditioned for
    model spectra (use :func:`project_model`)."""
    return np.asarray(flux, np.float64) @ _pinv()


@lru_cache(maxsize=1)
def _pinv() -> np.ndarray:
    return np.linalg.pinv(xp_design()[1])


def projection_matrix() -> np.ndarray:
    """(343, 110) the least-squares map of :func:`project` (sampled spectrum → coefficients),
    e.g. to carry a covariance of sampled fluxes into coefficient space."""
    return _pinv().copy()


#: :func:`project_model`: the model spectrum is matched to :data:`MODEL_TOLERANCE` of its
#: mean flux per sample, with coefficients of at most about :data:`MODEL_PRIOR_WIDTH` × the
#: archive sources' RMS amplitude
MODEL_TOLERANCE = 0.01
MODEL_PRIOR_WIDTH = 3.0


def project_model(flux: np.ndarray, noise: XPNoiseModel | None = None) -> np.ndarray:
    """(N, 343) model spectra on the XP grid → (N, 110) coefficients as Gaia would publish
    them.

    A model spectrum (CK04 through a Gaussian line-spread function) is not exactly in the
    span of the XP basis (≈1% residuals), and the basis is ill-conditioned (singular values
    over 7 decades): plain least squares (:func:`project`) fits the residual with huge
    high-order coefficients (the first coefficient then has the wrong sign, and noise scaled
    by it is wrong). Here the fit is regularised: minimise
    ``|cM − f|² / (ε s)² + Σ_k c_k² / (w a_k s)²`` with ``s`` the spectrum's mean flux,
    ``ε`` = :data:`MODEL_TOLERANCE`, ``w`` = :data:`MODEL_PRIOR_WIDTH` and ``a_k`` the RMS
    size of coefficient k per unit mean flux of the archive sources (the noise model's
    ``log_amplitude``). Both terms scale with ``s``, so the map is one fixed linear matrix.
    """
    return np.asarray(flux, np.float64) @ _model_map(noise or XPNoiseModel.load())


_MODEL_MAPS: dict[int, np.ndarray] = {}


def _model_map(noise: XPNoiseModel) -> np.ndarray:
    key = id(noise)
    if key not in _MODEL_MAPS:
        if noise.log_amplitude is None:
            raise ValueError(
                "this XP noise model has no coefficient amplitudes (log_amplitude): refit it "
                "with scripts/fit_xp_noise.py"
            )
        m = xp_design()[1]
        amp = 10 ** np.concatenate([noise.log_amplitude[b] for b in BANDS])
        reg = (MODEL_TOLERANCE / (MODEL_PRIOR_WIDTH * amp)) ** 2
        _MODEL_MAPS.clear()
        _MODEL_MAPS[key] = m.T @ np.linalg.inv(m @ m.T + np.diag(reg))
    return _MODEL_MAPS[key]


class XPCoefficientNoise:
    """Observe clean XP-grid spectra as Gaia does (module docstring).

    Args:
        noise: The coefficient noise model (default: the shipped reference).
    """

    def __init__(self, noise: XPNoiseModel | None = None) -> None:
        self.noise = noise or XPNoiseModel.load()
        self.wave_nm, self.m = xp_design()
        self._chol = {b: np.linalg.cholesky(self.noise.corr[b]) for b in BANDS}
        # the errors of a source are its scale s = sqrt(c0 (1 + c0/c_k)) times the band's
        # profile q, so Σ = s² diag(q) L Lᵀ diag(q) and a sample's variance is s² v_p with
        # v_p = Σ_j (Σ_i M_ip q_i L_ij)², computed once
        self._unit_var = {}
        for k, b in enumerate(BANDS):
            q = np.exp(self.noise.log_profile[b])
            g = self.m[k * N_COEF : (k + 1) * N_COEF].T @ (q[:, None] * self._chol[b])
            self._unit_var[b] = np.sum(g**2, axis=1)  # (P,)

    def observe(
        self, clean: np.ndarray, rng: np.random.Generator, error_scale: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N, 343) clean spectra → noisy spectra and their 1σ sample errors (N, 343); the
        noise drawn is ``error_scale`` × the modelled (and reported) errors."""
        c = project_model(clean, self.noise)
        noisy = c.copy()
        var = np.zeros(np.shape(clean))
        for k, b in enumerate(BANDS):
            sl = slice(k * N_COEF, (k + 1) * N_COEF)
            scale = self.noise.scale(b, c[:, sl])  # (N,) s; the errors are s q
            e = scale[:, None] * np.exp(self.noise.log_profile[b])[None, :]
            z = rng.standard_normal((len(c), N_COEF))
            noisy[:, sl] += error_scale * e * (z @ self._chol[b].T)
            var += (scale**2)[:, None] * self._unit_var[b][None, :]
        # real XP spectra are always in the basis: so are the simulated ones
        return noisy @ self.m, np.sqrt(var)

r"""Instruments and noise: photometric errors and depths, parallaxes, and spectrographs.

Photometry. For a band with 5σ depth m_5 and error floor σ_0, a source of true magnitude m
has signal-to-noise :math:`\mathrm{S/N} = 5\cdot10^{-0.4(m - m_5)}` and error
:math:`\sigma_m = \sqrt{\sigma_0^2 + (1.0857/\mathrm{S/N})^2}` (background-limited faint end,
floor-limited bright end). Noise is drawn on the flux (:func:`observe_photometry`). A source
whose observed flux stays below the depth is a non-detection: it becomes missing or an
upper limit (value = depth, flagged), as the survey config says. Real depths vary from
object to object (coverage, background, nebulosity, crowding): with ``depth_scatter`` σ_d
each object has its own depth m_5 + σ_d ε, which sets both its errors and, for a
non-detection, its limit. In the NGC 1333 catalogue of Rebull et al. (2015) the limits
spread over an interquartile range of 0.7-1.5 mag in IRAC 4.5-8.0 µm and MIPS 24 µm
(``configs/surveys/spitzer_c2d.yaml`` takes σ_d from it).

Parallax. Gaia DR3 end-of-mission-like precision, σ_ϖ [µas] = √(40 + 800 z + 30 z²) with
z = 10^{0.4 (max(G, 13) - 15)} (Gaia science performance, Lindegren et al. 2021 Fig. 9
scaling), times a configurable factor.

Spectra. A :class:`Spectrograph` resamples the model spectrum to the instrument's grid after
convolving with a Gaussian line-spread function of FWHM λ/R(λ) (one sparse matrix, built
once), then adds Gaussian noise for a per-pixel S/N that scales with the source brightness.
Gaia XP uses gaiaxpy's default sampling (336-1020 nm, 2 nm) with R(λ) from ~100 in the blue
to ~30 at the red end of BP and ~70-100 in RP. LAMOST, BOSS and APOGEE presets set the
range, resolution, log-λ sampling and S/N. If the spectral library is sampled more coarsely
than the instrument's resolution element, the spectra carry the continuum only:
:class:`Spectrograph` warns, and says so in ``content`` / ``continuum_only``, which the
simulators write into the dataset's group attributes. With the CK04 grid (2 nm in the
optical, 5 nm in the H band) that holds for the LAMOST (270 library points over 370-910 nm),
BOSS (329) and APOGEE (26 over 1514-1694 nm) presets: they cannot constrain what lines
constrain (log g, [Fe/H], abundances, radial velocity). Gaia XP's resolution elements
(3-20 nm) are sampled.

References:
    Gaia Collaboration, Montegriffo, P. et al. (2023). A&A 674, A3 (XP spectra).
    Lindegren, L. et al. (2021). A&A 649, A2.
    Cui, X.-Q. et al. (2012). RAA 12, 1197 (LAMOST); Smee, S. A. et al. (2013). AJ 146, 32
    (BOSS); Majewski, S. R. et al. (2017). AJ 154, 94 (APOGEE).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

__all__ = [
    "BandSpec",
    "SPECTROGRAPHS",
    "Spectrograph",
    "gaiaxpy_sampling",
    "observe_photometry",
    "parallax_error_mas",
    "photometric_error",
]


@dataclass
class BandSpec:
    """Noise model of one photometric band."""

    depth: float = field(default=20.0, metadata={"help": "5σ limiting magnitude"})
    floor: float = field(default=0.01, metadata={"ge": 0.0, "help": "error floor [mag]"})
    non_detection: Literal["missing", "upper_limit"] = field(
        default="missing", metadata={"help": "what a source fainter than the depth becomes"}
    )
    depth_scatter: float = field(
        default=0.0,
        metadata={"ge": 0.0, "help": "σ [mag] of the object-to-object scatter of the depth"},
    )


def photometric_error(mag: np.ndarray, spec: BandSpec) -> np.ndarray:
    """1σ magnitude error of sources with true magnitude ``mag``."""
    snr = 5.0 * 10 ** (-0.4 * (np.asarray(mag) - spec.depth))
    return np.sqrt(spec.floor**2 + (1.0857 / snr) ** 2)


def observe_photometry(
    mag: np.ndarray, specs: list[BandSpec], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Noisy magnitudes with detection limits, drawn in flux space.

    With f = 10^{-0.4 (m - m_5)} (1 at the depth), the flux error is
    σ_f = √(0.2² + (f σ_0 / 1.0857)²); the observed flux is f + σ_f ε, and a source is
    detected when it reaches the depth (f_obs ≥ 1, i.e. S/N ≥ 5 against the background).
    Detected magnitudes are m_5 - 2.5 log10 f_obs with error 1.0857 σ_f / f_obs.

    Args:
        mag: (N, B) true magnitudes (NaN or inf: not observable, becomes missing).
        specs: One :class:`BandSpec` per band.

    Returns:
        values, errors, observed, upper_limit, each (N, B).
    """
    mag = np.asarray(mag, np.float64)
    if mag.ndim != 2 or mag.shape[1] != len(specs):
        raise ValueError(f"got {mag.shape[-1]} bands and {len(specs)} band specifications")
    values = np.full(mag.shape, np.nan)
    errors = np.zeros(mag.shape)
    observed = np.zeros(mag.shape, bool)
    upper = np.zeros(mag.shape, bool)
    for j, spec in enumerate(specs):
        m = mag[:, j]
        finite = np.isfinite(m)
        depth = np.full(len(m), spec.depth)
        if spec.depth_scatter > 0:  # each object's own depth
            depth = depth + spec.depth_scatter * rng.standard_normal(len(m))
        f = np.where(finite, 10 ** (-0.4 * (np.where(finite, m, 99.0) - depth)), 0.0)
        sigma_f = np.sqrt(0.2**2 + (f * spec.floor / 1.0857) ** 2)
        f_obs = f + sigma_f * rng.standard_normal(len(m))
        detected = finite & (f_obs >= 1.0)
        fo = np.where(detected, f_obs, 1.0)
        values[detected, j] = (depth - 2.5 * np.log10(fo))[detected]
        errors[detected, j] = (1.0857 * sigma_f / fo)[detected]
        observed[detected, j] = True
        if spec.non_detection == "upper_limit":
            lim = finite & ~detected
            values[lim, j] = depth[lim]
            errors[lim, j] = photometric_error(depth[lim], spec)
            observed[lim, j] = True
            upper[lim, j] = True
    return values, errors, observed, upper


def parallax_error_mas(g_mag: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """Gaia-like parallax error [mas] as a function of G."""
    z = 10 ** (0.4 * (np.maximum(np.asarray(g_mag), 13.0) - 15.0))
    return factor * np.sqrt(40.0 + 800.0 * z + 30.0 * z**2) / 1000.0


@dataclass
class SpectrographSpec:
    """Range, resolution, sampling and noise of a spectrograph."""

    wave_min_nm: float
    wave_max_nm: float
    resolution: float | tuple[tuple[float, float], ...]  # constant R or (λ nm, R) knots
    sampling: Literal["linear", "log"] = "linear"
    step: float = 2.0  # nm (linear) or Δlog10 λ (log)
    snr_at_ref: float = 100.0  # per-pixel S/N of a source of magnitude ref_mag
    ref_mag: float = 15.0
    snr_floor_mag: float = 0.0  # brightest magnitude at which S/N saturates
    #: ``pixels``: independent noise of S/N ``snr_at_ref`` at ``ref_mag``; ``xp_coefficients``
    #: (Gaia XP): correlated noise of the published coefficients (simulators.gaia_xp)
    noise: Literal["pixels", "xp_coefficients"] = "pixels"


SPECTROGRAPHS: dict[str, SpectrographSpec] = {
    "gaia_xp": SpectrographSpec(
        336.0,
        1020.0,
        ((336.0, 100.0), (640.0, 30.0), (645.0, 70.0), (1020.0, 100.0)),
        "linear",
        2.0,
        100.0,
        15.0,
        12.0,
        "xp_coefficients",
    ),
    "lamost_lrs": SpectrographSpec(370.0, 910.0, 1800.0, "log", 1e-4, 50.0, 15.0, 10.0),
    "boss": SpectrographSpec(360.0, 1040.0, 2000.0, "log", 1e-4, 40.0, 17.0, 12.0),
    "apogee": SpectrographSpec(1514.0, 1694.0, 22500.0, "log", 6e-6, 100.0, 11.0, 7.0),
}


class Spectrograph:
    """Observes model spectra (N, W) on a library grid as instrument spectra (N, P).

    Args:
        name: A preset in :data:`SPECTROGRAPHS` or ``"custom"`` with ``spec``.
        library_wave_aa: (W,) wavelengths of the model spectra in Å.
        spec: Settings for ``"custom"`` (or to override a preset).
    """

    def __init__(
        self, name: str, library_wave_aa: np.ndarray, spec: SpectrographSpec | None = None
    ) -> None:
        if spec is None:
            if name not in SPECTROGRAPHS:
                raise ValueError(
                    f"unknown spectrograph {name!r}; presets are: {', '.join(SPECTROGRAPHS)}"
                    + (" (lamost is now lamost_lrs, as its survey)" if name == "lamost" else "")
                )
            spec = SPECTROGRAPHS[name]
        self.name, self.spec = name, spec
        self._xp_noise: Any = None
        if name == "gaia_xp":
            self.wave_nm = gaiaxpy_sampling()
        elif spec.sampling == "linear":
            self.wave_nm = np.arange(spec.wave_min_nm, spec.wave_max_nm + 1e-9, spec.step)
        else:
            self.wave_nm = 10 ** np.arange(
                np.log10(spec.wave_min_nm), np.log10(spec.wave_max_nm), spec.step
            )
        lib_nm = np.asarray(library_wave_aa, np.float64) / 10.0
        if lib_nm[0] > self.wave_nm[0] or lib_nm[-1] < self.wave_nm[-1]:
            raise ValueError(
                f"{name}: the instrument covers {self.wave_nm[0]:.0f}-{self.wave_nm[-1]:.0f} "
                f"nm but the spectral library only {lib_nm[0]:.0f}-{lib_nm[-1]:.0f} nm"
            )
        fwhm = self.wave_nm / self.resolution(self.wave_nm)
        inside = (lib_nm >= self.wave_nm[0]) & (lib_nm <= self.wave_nm[-1])
        lib_step = np.median(np.diff(lib_nm[inside])) if inside.sum() > 1 else np.inf
        #: library points across the instrument's range, and what the spectra can carry:
        #: a library sampled more coarsely than the resolution element gives the continuum
        #: only (CK04 at 2 nm: LAMOST, BOSS, APOGEE; Gaia XP's 3-20 nm elements are sampled)
        self.library_points = int(inside.sum())
        self.continuum_only = bool(lib_step > np.min(fwhm))
        self.content = (
            f"continuum only: the spectral library has {self.library_points} points over "
            f"{self.wave_nm[0]:.0f}-{self.wave_nm[-1]:.0f} nm ({lib_step:.2g} nm apart) for a "
            f"resolution element of {np.min(fwhm):.2g} nm, so no line is resolved; these "
            "spectra cannot constrain what lines constrain (log g, [Fe/H], abundances, RV)"
            if self.continuum_only
            else f"sampled: {self.library_points} library points over "
            f"{self.wave_nm[0]:.0f}-{self.wave_nm[-1]:.0f} nm, at least one per resolution "
            "element"
        )
        if self.continuum_only:
            warnings.warn(
                f"{name}: the spectral library samples {lib_step:.2g} nm, coarser than "
                f"the instrument's resolution element ({np.min(fwhm):.2g} nm); simulated "
                "spectra are continuum only (no resolved lines) and smoother than real ones",
                stacklevel=2,
            )
        self.matrix = _lsf_matrix(lib_nm, self.wave_nm, fwhm)
        # the matrix touches a narrow band of library columns: a dense slice is faster on CPU
        used = torch.unique(self.matrix.indices()[1])
        self._cols = slice(int(used.min()), int(used.max()) + 1)
        self._dense_t = (self.matrix.to_dense()[:, self._cols].T * 1e-2).contiguous()

    def resolution(self, wave_nm: np.ndarray) -> np.ndarray:
        r = self.spec.resolution
        if isinstance(r, int | float):
            return np.full(len(wave_nm), float(r))
        knots = np.asarray(r, np.float64)
        return np.interp(wave_nm, knots[:, 0], knots[:, 1])

    def convolve(self, flam: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(N, W) F_λ [erg/s/cm²/Å] → (N, P) W m⁻² nm⁻¹ on the instrument grid."""
        flam = torch.as_tensor(flam, dtype=torch.float32)
        return flam[:, self._cols] @ self._dense_t

    def observe(
        self,
        flam: torch.Tensor | np.ndarray,
        mag: np.ndarray,
        rng: np.random.Generator,
        *,
        calibration: np.ndarray | None = None,
        error_scale: float = 1.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Noisy spectra (N, P) and 1σ errors for sources of magnitude ``mag`` (N,).

        With ``noise: xp_coefficients`` the spectrum becomes XP coefficients, gets their
        correlated noise and is sampled back, as real XP spectra are (:mod:`simulators.gaia_xp`;
        the noise follows each source's flux, so ``mag`` is not used).

        A misspecified instrument (the truth-known tests of ``dasbi bench domain-adapt``):
        ``calibration`` (P,) multiplies the clean spectrum (a flux-calibration error the
        reported errors do not know about), and the noise drawn is ``error_scale`` times the
        reported errors (> 1: errors underestimated)."""
        clean = self.convolve(flam).numpy().astype(np.float64)
        if calibration is not None:
            calibration = np.asarray(calibration, np.float64)
            if calibration.shape != self.wave_nm.shape:
                raise ValueError(
                    f"{self.name}: calibration must have one factor per pixel "
                    f"({len(self.wave_nm)}), got shape {calibration.shape}"
                )
            clean = clean * calibration[None, :]
        if self.spec.noise == "xp_coefficients":
            if self._xp_noise is None:
                from .gaia_xp import XPCoefficientNoise

                self._xp_noise = XPCoefficientNoise()
                if not np.array_equal(self._xp_noise.wave_nm, self.wave_nm):
                    raise ValueError(
                        f"{self.name}: xp_coefficients noise needs GaiaXPy's default sampling"
                    )
            return self._xp_noise.observe(clean, rng, error_scale=error_scale)
        m = np.maximum(np.asarray(mag, np.float64), self.spec.snr_floor_mag)
        snr = self.spec.snr_at_ref * 10 ** (-0.2 * (m - self.spec.ref_mag))  # photon noise
        err = np.abs(clean) / snr[:, None] + 1e-30
        return clean + error_scale * err * rng.standard_normal(clean.shape), err


def _lsf_matrix(lib_nm: np.ndarray, out_nm: np.ndarray, fwhm: np.ndarray) -> torch.Tensor:
    """Sparse (P, W) matrix: Gaussian LSF integrated against the linearly sampled spectrum."""
    sig = fwhm / 2.3548
    rows, cols, vals = [], [], []
    dl = np.gradient(lib_nm)
    for p, (c, s) in enumerate(zip(out_nm, sig, strict=True)):
        lo, hi = np.searchsorted(lib_nm, [c - 4 * s, c + 4 * s])
        lo, hi = max(lo - 1, 0), min(hi + 1, len(lib_nm))
        w = np.exp(-0.5 * ((lib_nm[lo:hi] - c) / s) ** 2) * dl[lo:hi]
        if w.sum() <= 0:  # the LSF falls between library points: linear interpolation
            k = np.clip(np.searchsorted(lib_nm, c) - 1, 0, len(lib_nm) - 2)
            f = (c - lib_nm[k]) / (lib_nm[k + 1] - lib_nm[k])
            rows += [p, p]
            cols += [k, k + 1]
            vals += [1 - f, f]
            continue
        rows += [p] * (hi - lo)
        cols += list(range(lo, hi))
        vals += list(w / w.sum())
    idx = torch.tensor(np.array([rows, cols]), dtype=torch.long)
    return torch.sparse_coo_tensor(
        idx, torch.tensor(vals, dtype=torch.float32), (len(out_nm), len(lib_nm))
    ).coalesce()


def gaiaxpy_sampling() -> np.ndarray:
    """gaiaxpy's default XP sampling grid in nm (336-1020 nm, 343 points)."""
    import matplotlib

    usetex = matplotlib.rcParams["text.usetex"]
    try:
        from gaiaxpy.core.config import load_xpmerge_from_xml

        return np.asarray(load_xpmerge_from_xml()[0], np.float64)
    except ImportError:  # pragma: no cover - gaiaxpy is a dependency
        return np.arange(336.0, 1020.0 + 1e-9, 2.0)
    finally:
        # importing gaiaxpy switches matplotlib to LaTeX text globally; undo that
        matplotlib.rcParams["text.usetex"] = usetex

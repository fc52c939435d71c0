r"""Filter curves from installed packages and synthetic photometry as one matrix product.

Filters come from maintained packages, never from the network: speclite (Gaia DR3 G/BP/RP,
2MASS J/H/Ks, WISE W1-W4), pyphot (Spitzer IRAC 1-4, Gaia DR2 curves) and astro-sedpy
(Spitzer MIPS 24 µm). Magnitudes are photon-counting band averages,

.. math:: m = -2.5\log_{10}\frac{\int F_\lambda T \lambda\,\mathrm d\lambda}
                               {\int F^{\mathrm{ref}}_\lambda T \lambda\,\mathrm d\lambda},

with a reference spectrum: AB (3631 Jy), the CALSPEC Vega spectrum shipped by pyphot
(``alpha_lyr_stis_011``, system ``"calspec"``; this is what
``synphot.Observation.effstim("vegamag")`` computes), or, for ``"vega"`` (the default), each
survey's own published Vega zero point (:data:`ZERO_POINTS`): a flat-spectrum source of
F_ν = ZP has magnitude 0. Surveys calibrated their Vega systems on other Vega models
(Cohen et al. 1992/2003 for 2MASS, IRAC, WISE and MIPS), which differ from CALSPEC by
0.7-4.6% in these bands, so the catalogues' magnitudes and fluxes follow their published zero
points, and so do the simulated ones. Bands without a published zero point (the Gaia DR2
curves, any pyphot name) use CALSPEC.

:class:`Photometry` precomputes, for a spectral library's wavelength grid, the weight
matrix ``W`` (W × B) of the integral of the *linearly interpolated* spectrum times the
filter on the merged wavelength grid (trapezoid rule, as synphot does), so that the
photometry of N spectra is one matmul ``flam @ W``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .units import C_AA_S

__all__ = [
    "band_nodes",
    "FILTERS",
    "Filter",
    "Photometry",
    "UnknownFilterError",
    "ZERO_POINTS",
    "ZeroPoint",
    "calspec_zero_point_jy",
    "get_filter",
    "pivot_wavelength",
    "vega_spectrum",
    "vega_zero_point_jy",
]

# canonical name -> (package, name in the package)
FILTERS: dict[str, tuple[str, str]] = {
    "gaia_G": ("speclite", "gaiadr3-G"),
    "gaia_BP": ("speclite", "gaiadr3-BP"),
    "gaia_RP": ("speclite", "gaiadr3-RP"),
    "2mass_J": ("speclite", "twomass-J"),
    "2mass_H": ("speclite", "twomass-H"),
    "2mass_Ks": ("speclite", "twomass-Ks"),
    "wise_W1": ("speclite", "wise2010-W1"),
    "wise_W2": ("speclite", "wise2010-W2"),
    "wise_W3": ("speclite", "wise2010-W3"),
    "wise_W4": ("speclite", "wise2010-W4"),
    "irac_1": ("pyphot", "SPITZER_IRAC_36"),
    "irac_2": ("pyphot", "SPITZER_IRAC_45"),
    "irac_3": ("pyphot", "SPITZER_IRAC_58"),
    "irac_4": ("pyphot", "SPITZER_IRAC_80"),
    "mips_24": ("sedpy", "spitzer_mips_24"),
    "gaiadr2_G": ("pyphot", "GaiaDR2v2_G"),
    "gaiadr2_BP": ("pyphot", "GaiaDR2v2_BP"),
    "gaiadr2_RP": ("pyphot", "GaiaDR2v2_RP"),
}

AB_FNU = 3631e-23  # erg/s/cm²/Hz


@dataclass(frozen=True)
class ZeroPoint:
    """A survey's published Vega zero point: F_ν [Jy] of a magnitude-0 source."""

    jy: float
    reference: str


def _gaia(zp_ab: float, zp_vega: float) -> float:
    """Jy of Gaia VEGAMAG 0 from the AB and Vega zero points of Riello et al. (2021)."""
    return 3631.0 * 10 ** (-0.4 * (zp_ab - zp_vega))


_COHEN = "Cohen, Wheaton & Megeath (2003), AJ 126, 1090, Table 2"
_REACH = "Reach et al. (2005), PASP 117, 978, Table 3"
_JARRETT = "Jarrett et al. (2011), ApJ 735, 112, Table 1"
_RIELLO = "Riello et al. (2021), A&A 649, A3, Table 3 (ZP_AB - ZP_Vega)"

#: published Vega zero points per survey convention (the flux density that the survey quotes
#: for a magnitude-0 source); catalogue fluxes convert to magnitudes with these, and
#: simulated magnitudes in system ``"vega"`` are defined by them
ZERO_POINTS: dict[str, ZeroPoint] = {
    "gaia_G": ZeroPoint(_gaia(25.8010, 25.6874), _RIELLO),
    "gaia_BP": ZeroPoint(_gaia(25.3540, 25.3385), _RIELLO),
    "gaia_RP": ZeroPoint(_gaia(25.1040, 24.7479), _RIELLO),
    "2mass_J": ZeroPoint(1594.0, _COHEN),
    "2mass_H": ZeroPoint(1024.0, _COHEN),
    "2mass_Ks": ZeroPoint(666.7, _COHEN),
    "wise_W1": ZeroPoint(309.540, _JARRETT),
    "wise_W2": ZeroPoint(171.787, _JARRETT),
    "wise_W3": ZeroPoint(31.674, _JARRETT),
    "wise_W4": ZeroPoint(8.363, _JARRETT),
    "irac_1": ZeroPoint(280.9, _REACH),
    "irac_2": ZeroPoint(179.7, _REACH),
    "irac_3": ZeroPoint(115.0, _REACH),
    "irac_4": ZeroPoint(64.13, _REACH),
    "mips_24": ZeroPoint(7.17, "Engelbracht et al. (2007), PASP 119, 994"),
}


class UnknownFilterError(KeyError, ValueError):
    """A filter name that no installed package provides."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass(frozen=True)
class Filter:
    """A transmission curve T(λ) (photon response), wavelengths in Å, sorted, unique."""

    name: str
    wave_aa: np.ndarray
    transmission: np.ndarray

    @property
    def pivot_aa(self) -> float:
        w, t = self.wave_aa, self.transmission
        return float(np.sqrt(np.trapezoid(t * w, w) / np.trapezoid(t / w, w)))


def _clean(name: str, wave: np.ndarray, trans: np.ndarray) -> Filter:
    wave = np.asarray(wave, np.float64)
    trans = np.clip(np.asarray(trans, np.float64), 0.0, None)
    order = np.argsort(wave, kind="stable")
    wave, trans = wave[order], trans[order]
    keep = np.concatenate([[True], np.diff(wave) > 0])  # drop duplicated rows (pyphot 2MASS)
    return Filter(name, wave[keep], trans[keep])


@functools.cache
def get_filter(name: str) -> Filter:
    """Load a filter by canonical name (see :data:`FILTERS`) or by a pyphot library name.

    Raises:
        UnknownFilterError: Listing the known names.
    """
    if name in FILTERS:
        package, key = FILTERS[name]
    else:
        package, key = "pyphot", name
    try:
        if package == "speclite":
            import speclite.filters

            f = speclite.filters.load_filter(key)
            return _clean(name, f.wavelength, f.response)
        if package == "sedpy":
            import sedpy.observate

            f = sedpy.observate.load_filters([key])[0]
            return _clean(name, f.wavelength, f.transmission)
        import pyphot

        lib = pyphot.get_library()
        if key not in lib.get_library_content():
            raise KeyError(key)
        f = lib[key]
        wave = np.asarray(
            f.wavelength.to("AA").value if hasattr(f.wavelength, "to") else f.wavelength,
            np.float64,
        )
        return _clean(name, wave, np.asarray(f.transmit))
    except (KeyError, ValueError, OSError):
        raise UnknownFilterError(
            f"unknown filter {name!r}; known filters are: {', '.join(FILTERS)} (or any name "
            "in pyphot's library)"
        ) from None


def pivot_wavelength(name: str) -> float:
    """Pivot wavelength in Å."""
    return get_filter(name).pivot_aa


@functools.cache
def vega_spectrum() -> tuple[np.ndarray, np.ndarray]:
    """CALSPEC alpha_lyr_stis_011 from pyphot: wavelength [Å] and F_λ [erg/s/cm²/Å]."""
    import os

    import pyphot
    from astropy.io import fits

    path = os.path.join(os.path.dirname(pyphot.__file__), "libs", "alpha_lyr_stis_011.fits")
    with fits.open(path) as hdul:
        data = hdul[1].data
        return (np.asarray(data["WAVELENGTH"], np.float64), np.asarray(data["FLUX"], np.float64))


def merged_weights(grid: np.ndarray, f: Filter) -> np.ndarray:
    """Weights w_k with Σ w_k F_k = trapz(F_interp T λ) on the merged wavelength set."""
    lo, hi = f.wave_aa[0], f.wave_aa[-1]
    merged = np.union1d(grid[(grid >= lo) & (grid <= hi)], f.wave_aa)
    merged = merged[(merged >= grid[0]) & (merged <= grid[-1])]
    t = np.interp(merged, f.wave_aa, f.transmission, left=0.0, right=0.0)
    # trapezoid weights on the merged grid
    dx = np.diff(merged)
    tw = np.zeros_like(merged)
    tw[:-1] += dx / 2
    tw[1:] += dx / 2
    coef = tw * t * merged
    # linear-interpolation basis: each merged point between grid nodes k and k+1
    k = np.clip(np.searchsorted(grid, merged, side="right") - 1, 0, len(grid) - 2)
    frac = (merged - grid[k]) / (grid[k + 1] - grid[k])
    w = np.zeros(len(grid))
    np.add.at(w, k, coef * (1 - frac))
    np.add.at(w, k + 1, coef * frac)
    return w


def _flat_integral(f: Filter) -> float:
    """c ∫T/λ dλ [Å/s]: ∫ F_λ T λ dλ of a source with F_ν = 1 erg/s/cm²/Hz."""
    return float(C_AA_S * np.trapezoid(f.transmission / f.wave_aa, f.wave_aa))


SYSTEMS = ("vega", "calspec", "ab")


def _reference_integral(f: Filter, system: str, zp_name: str | None = None) -> float:
    """∫ F_ref T λ dλ of a magnitude-0 source: the survey's Vega zero point (``vega``, of
    ``zp_name`` or the filter's name; CALSPEC where none is published), the CALSPEC Vega
    spectrum (``calspec``) or AB."""
    if system == "vega" and zp_name not in (None, f.name) and zp_name in ZERO_POINTS:
        # another curve standing in for a survey band: CALSPEC Vega through this curve,
        # moved by the offset between the survey's system and CALSPEC in the survey band
        scale = ZERO_POINTS[zp_name].jy / calspec_zero_point_jy(zp_name)
        return _reference_integral(f, "calspec") * scale
    if system == "vega" and f.name in ZERO_POINTS:
        return ZERO_POINTS[f.name].jy * 1e-23 * _flat_integral(f)
    if system in ("vega", "calspec"):
        wave, flux = vega_spectrum()
    elif system == "ab":
        wave = np.geomspace(f.wave_aa[0], f.wave_aa[-1], 20_000)
        flux = AB_FNU * C_AA_S / wave**2
    else:
        raise ValueError(
            f"unknown magnitude system {system!r}; valid: {', '.join(map(repr, SYSTEMS))}"
        )
    return float(merged_weights(wave, f) @ flux)


class Photometry:
    """Synthetic photometry of spectra on a fixed wavelength grid.

    Args:
        bands: Canonical filter names (or pyphot names).
        wave_aa: The spectra's wavelength grid (Å), increasing.
        system: ``"vega"`` (the surveys' published zero points), ``"calspec"`` or ``"ab"``,
            for all bands or per band.
        band_columns: For band-flux libraries (``wave_aa`` are band pivots): the column of
            each band in the library's output; photometry is then a column selection of
            band-averaged F_λ, with the zero point of the same filter.

    Example:
        >>> phot = Photometry(["gaia_G", "2mass_Ks"], lib.wave_aa)      # doctest: +SKIP
        >>> mags = phot.magnitudes(flam)   # (N, 2)                     # doctest: +SKIP
    """

    def __init__(
        self,
        bands: Sequence[str],
        wave_aa: np.ndarray,
        system: str | Sequence[str] = "vega",
        band_columns: Sequence[int] | None = None,
        zero_point_names: Sequence[str] | None = None,
    ) -> None:
        self.bands = list(bands)
        zp_names = list(zero_point_names) if zero_point_names is not None else self.bands
        if len(zp_names) != len(self.bands):
            raise ValueError(f"got {len(zp_names)} zero_point_names for {len(self.bands)} bands")
        if not self.bands:
            raise ValueError("Photometry needs at least one band")
        systems = [system] * len(self.bands) if isinstance(system, str) else list(system)
        if len(systems) != len(self.bands):
            raise ValueError(f"got {len(systems)} systems for {len(self.bands)} bands")
        self.systems = systems
        self.zero_point_names = zp_names
        self.wave_aa = np.asarray(wave_aa, np.float64)
        filters = [get_filter(b) for b in self.bands]
        self.band_columns = None if band_columns is None else list(band_columns)
        weights = np.zeros((len(self.wave_aa), len(self.bands)))
        ref = np.zeros(len(self.bands))
        for j, (f, sys_) in enumerate(zip(filters, systems, strict=True)):
            ref[j] = _reference_integral(f, sys_, zp_names[j])
            if self.band_columns is None:
                if f.wave_aa[0] < self.wave_aa[0] or f.wave_aa[-1] > self.wave_aa[-1]:
                    outside = _outside_fraction(f, self.wave_aa)
                    if outside > 5e-4:  # 0.5 mmag
                        raise ValueError(
                            f"filter {f.name!r} ({f.wave_aa[0]:.0f}-{f.wave_aa[-1]:.0f} Å) "
                            f"extends beyond the spectral grid ({self.wave_aa[0]:.0f}-"
                            f"{self.wave_aa[-1]:.0f} Å); {outside:.2%} of its response "
                            "would be lost"
                        )
                weights[:, j] = merged_weights(self.wave_aa, f)
            else:
                # band-averaged F_λ times ∫ T λ dλ gives the same integral as a spectrum
                weights[self.band_columns[j], j] = np.trapezoid(
                    f.transmission * f.wave_aa, f.wave_aa
                )
        self.weights = weights
        self.zero_points = 2.5 * np.log10(ref)
        self._w32 = torch.from_numpy(weights / ref).float()

    def relative_flux(self, flam: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, B) band flux relative to the reference (10^(-0.4 m))."""
        flam = torch.as_tensor(flam, dtype=torch.float32)
        return flam @ self._w32

    def zero_point_jy(self, j: int) -> float:
        """F_ν [Jy] of magnitude 0 in band j (its system and zero-point name)."""
        return zero_point_jy(self.zero_point_names[j], self.systems[j])

    def magnitudes(self, flam: np.ndarray | torch.Tensor) -> np.ndarray:
        """(N, B) magnitudes of F_λ spectra (N, W)."""
        rel = self.relative_flux(flam).double().numpy()
        with np.errstate(divide="ignore"):
            return -2.5 * np.log10(rel)


@functools.cache
def vega_zero_point_jy(name: str) -> float:
    """F_ν [Jy] of a source with Vega magnitude 0 in the band: the survey's published value
    (:data:`ZERO_POINTS`), else :func:`calspec_zero_point_jy`.

    Catalogue fluxes are quoted in their survey's convention together with this zero point,
    so m = -2.5 log10(F / ZP) is the survey's magnitude whatever that convention is (IRAC's
    νF_ν = const, WISE's F_ν ∝ ν⁻²): the convention cancels in the ratio.
    """
    if name in ZERO_POINTS:
        return ZERO_POINTS[name].jy
    return calspec_zero_point_jy(name)


def zero_point_jy(name: str, system: str = "vega") -> float:
    """F_ν [Jy] of magnitude 0 in a band and magnitude system (``vega``: the survey's
    published value, ``calspec``, ``ab``: 3631 Jy); simulators write it into the nodes of
    their magnitudes, so that fluxes can be turned into those magnitudes without them."""
    if system == "vega":
        return vega_zero_point_jy(name)
    if system == "calspec":
        return calspec_zero_point_jy(name)
    if system == "ab":
        return 3631.0
    raise ValueError(f"unknown magnitude system {system!r}; valid: vega, calspec, ab")


def band_nodes(bands: list[str], zero_points_jy: list[float]) -> list[dict[str, Any]]:
    """Node declarations of magnitudes in ``bands``, with each band's zero point [Jy] and
    pivot wavelength [µm] (what the model core needs of a band, without the filters)."""
    return [
        dict(
            name=b,
            kind="observable",
            modality="photometry",
            unit="mag",
            zero_point_jy=float(zp),
            wavelength_um=pivot_wavelength(b) / 1e4,
        )
        for b, zp in zip(bands, zero_points_jy, strict=True)
    ]


@functools.cache
def calspec_zero_point_jy(name: str) -> float:
    """F_ν [Jy] of a flat-spectrum source as bright as the CALSPEC Vega spectrum in the band.

    For photon-counting magnitudes, 10^{-0.4 m} = F_ν c ∫T/λ dλ / ∫F_Vega T λ dλ for a source
    of constant F_ν, so the zero point is ∫F_Vega T λ dλ / (c ∫T/λ dλ).
    """
    f = get_filter(name)
    return float(_reference_integral(f, "calspec") / _flat_integral(f) / 1e-23)


def _outside_fraction(f: Filter, grid: np.ndarray) -> float:
    total = np.trapezoid(f.transmission * f.wave_aa, f.wave_aa)
    inside = (f.wave_aa >= grid[0]) & (f.wave_aa <= grid[-1])
    part = np.trapezoid((f.transmission * f.wave_aa)[inside], f.wave_aa[inside])
    return float(1 - part / total)

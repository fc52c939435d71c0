r"""Field stars: Galactic population → isochrones → SED → dust → survey photometry, parallax, XP.

θ per star: T_eff [K], log g, [Fe/H], radius [R_sun], distance [pc], A_V [mag] (and R(V)
when ``rv_sigma > 0``). The prior is the analytic Milky Way of :mod:`simulators.galaxy` in a
cone on the sky, restricted to stars brighter than ``mag_limit`` in Gaia G: candidates are
drawn from the population, their parameters come from the isochrones, and those fainter than
the limit (or outside the spectral library's grid, or dead) are rejected.

x per star: magnitudes in the configured bands with survey noise and depths
(:mod:`simulators.instruments`), the parallax with a Gaia-like error, and optionally the
Gaia XP spectrum as a context node.

The SED pipeline per star is: interpolate log10 F_λ in the library, add
2 log10(R/d) and -0.4 A(λ) (one pass, in log space), exponentiate, then one matmul for all
bands and one for the XP spectrum.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from .base import ObsBlock, Simulator
from .instruments import BandSpec, Spectrograph, observe_photometry, parallax_error_mas
from .units import PC_CM, RSUN_CM

__all__ = ["DEFAULT_BANDS", "FieldStars", "FieldStarsConfig", "StellarSED"]

# 5σ depths and floors typical of each survey (Vega magnitudes)
DEFAULT_BANDS: dict[str, dict[str, float]] = {
    "gaia_G": {"depth": 20.7, "floor": 0.003},
    "gaia_BP": {"depth": 20.5, "floor": 0.005},
    "gaia_RP": {"depth": 19.8, "floor": 0.005},
    "2mass_J": {"depth": 16.8, "floor": 0.02},
    "2mass_H": {"depth": 16.1, "floor": 0.02},
    "2mass_Ks": {"depth": 15.5, "floor": 0.02},
    "wise_W1": {"depth": 17.0, "floor": 0.02},
    "wise_W2": {"depth": 15.8, "floor": 0.02},
    "wise_W3": {"depth": 11.5, "floor": 0.04},
    "wise_W4": {"depth": 8.0, "floor": 0.06},
    "irac_1": {"depth": 18.0, "floor": 0.03, "depth_scatter": 0.53},
    "irac_2": {"depth": 17.5, "floor": 0.03, "depth_scatter": 0.53},
    "irac_3": {"depth": 15.5, "floor": 0.04, "depth_scatter": 0.79},
    "irac_4": {"depth": 14.5, "floor": 0.04, "depth_scatter": 0.91},
    "mips_24": {"depth": 10.5, "floor": 0.06, "depth_scatter": 1.07},
}


@dataclass
class FieldStarsConfig:
    """Options of :class:`FieldStars` (the ``simulator:`` section of a simulate config)."""

    library: Literal[
        "ck04",
        "phoenix",
        "phoenix_pm13",
        "planck",
        "kurucz_bands",
        "ck04_bands",
        "phoenix_bands",
        "sphinx_bands",
        "bands",
    ] = field(
        default="phoenix",
        metadata={
            "help": "spectral library: ck04 (the CDBS grid), phoenix (CK04 mangled to PHOENIX "
            "v2 band fluxes: M dwarfs down to 2300 K), phoenix_pm13 (phoenix with the "
            "empirical dwarf-colour calibration of Pecaut & Mamajek 2013), planck "
            "(embedded), or a band-flux "
            "table: kurucz_bands / ck04_bands / phoenix_bands / sphinx_bands (the shared "
            "astroARIADNE tables), or bands (the table at library_path); band-flux tables "
            "give photometry only, Gaia bands through DR2 passbands, extinction at each "
            "band's pivot wavelength"
        },
    )
    library_path: str | None = field(
        default=None,
        metadata={
            "help": "ck04 and phoenix: the ck04models folder; *_bands and bands: the "
            "band-flux table (CSV with logg, teff, feh and one column per band)"
        },
    )
    isochrones: Literal["mist", "parsec"] = "mist"
    extinction_law: str = field(default="G23", metadata={"help": "dust_extinction law"})
    rv_mean: float = field(default=3.1, metadata={"ge": 2.3, "le": 5.6})
    rv_sigma: float = field(
        default=0.0, metadata={"ge": 0.0, "le": 1.0, "help": "> 0: per-star R(V) in θ"}
    )
    rv_in_theta: bool = field(
        default=True,
        metadata={"help": "with rv_sigma > 0: R(V) is a parameter (true) or hidden scatter"},
    )
    zero_point_offsets: dict[str, float] = field(
        default_factory=dict,
        metadata={"help": "band -> offset [mag] added to measured magnitudes (calibration)"},
    )
    error_scale: float = field(
        default=1.0,
        metadata={
            "gt": 0.0,
            "help": "true photometric scatter / reported error (> 1: errors underestimated)",
        },
    )
    l: float = field(  # noqa: E741 - Galactic longitude
        default=90.0, metadata={"ge": 0.0, "le": 360.0, "help": "cone centre [deg]"}
    )
    b: float = field(default=30.0, metadata={"ge": -90.0, "le": 90.0})
    radius: float = field(default=2.0, metadata={"gt": 0.0, "le": 90.0, "help": "cone [deg]"})
    d_max: float = field(default=20_000.0, metadata={"gt": 0.0, "help": "pc"})
    dust_kappa: float = field(default=0.7, metadata={"ge": 0.0, "help": "mag/kpc in the plane"})
    dust_map: str | None = field(
        default=None,
        metadata={
            "help": "3D dust map file (HDF5/FITS/npz with l, b, distance [pc], cumulative av) "
            "replacing the exponential disc"
        },
    )
    mag_limit: float = field(default=17.0, metadata={"help": "Gaia G limit of the sample"})
    m_min: float = field(default=0.1, metadata={"ge": 0.07, "help": "smallest stellar mass"})
    surveys: list[str] = field(
        default_factory=list,
        metadata={
            "help": "survey definitions (names in configs/surveys or YAML paths) giving the "
            "bands, astrometry and spectra; empty: the embedded 15-band default"
        },
    )
    bands: dict[str, dict[str, Any]] | None = field(
        default=None,
        metadata={
            "help": "band -> {depth, floor, depth_scatter, non_detection}; with surveys, "
            "per-band overrides of theirs"
        },
    )
    non_detection: Literal["missing", "upper_limit"] = "missing"
    parallax: bool | None = field(
        default=None, metadata={"help": "observe parallaxes (default: yes, or as the surveys)"}
    )
    parallax_error_factor: float | None = field(
        default=None, metadata={"gt": 0.0, "help": "× Gaia DR3-like σ_ϖ (default 1)"}
    )
    xp: bool | None = field(
        default=None,
        metadata={"help": "add Gaia XP spectra as a context node (default: no, or as surveys)"},
    )
    spectrographs: list[str] = field(
        default_factory=list,
        metadata={"help": "more spectra as context nodes: lamost_lrs, boss, apogee"},
    )
    xp_calibration: list[list[float]] = field(
        default_factory=list,
        metadata={
            "help": "misspecified XP: [[λ nm, δ], ...] knots of a smooth relative "
            "flux-calibration error (spectrum × (1 + δ(λ)), PCHIP between knots, constant "
            "beyond them) that the reported errors do not know about; empty: none"
        },
    )
    xp_error_scale: float = field(
        default=1.0,
        metadata={"gt": 0.0, "help": "true XP noise / reported XP errors (> 1: underestimated)"},
    )
    priors: dict[str, dict[str, Any]] = field(
        default_factory=dict,
        metadata={
            "help": "parameter -> {dist: uniform|loguniform|normal|lognormal|fixed, ...}: draw "
            "these parameters from the given priors instead of the Galactic population and "
            "its isochrones (e.g. a box over hot stars; simulators.priors); the magnitude "
            "limit and the library's coverage still apply"
        },
    )
    missing_prob: float = field(default=0.0, metadata={"ge": 0.0, "le": 0.95})

    def __post_init__(self) -> None:
        from .bandpasses import get_filter

        self._survey_spectra: dict[str, Any] = {}
        if self.surveys:
            from .surveys import load_survey, merge_surveys

            merged = merge_surveys([load_survey(s) for s in self.surveys])
            bands = {b: dict(v) for b, v in merged.bands.items()}
            for b, over in (self.bands or {}).items():
                bands[b] = {**bands.get(b, {}), **(over or {})}
            self.bands = bands
            if self.parallax is None:
                self.parallax = merged.parallax_error_factor is not None
            if self.parallax_error_factor is None:
                self.parallax_error_factor = merged.parallax_error_factor or 1.0
            if self.xp is None:
                self.xp = "gaia_xp" in merged.spectra
            extra = [n for n in merged.spectra if n != "gaia_xp"]
            self.spectrographs = list(dict.fromkeys([*self.spectrographs, *extra]))
            self._survey_spectra = merged.spectra
        if self.bands is None:
            self.bands = {k: dict(v) for k, v in DEFAULT_BANDS.items()}
        self.parallax = True if self.parallax is None else self.parallax
        self.parallax_error_factor = self.parallax_error_factor or 1.0
        self.xp = False if self.xp is None else self.xp
        if (self.xp_calibration or self.xp_error_scale != 1.0) and not self.xp:
            raise ValueError(
                "xp_calibration and xp_error_scale misspecify Gaia XP spectra: set xp: true "
                "(or add the gaia_xp survey)"
            )
        if self.xp_calibration:
            knots = np.asarray(self.xp_calibration, np.float64)
            if (
                knots.ndim != 2
                or knots.shape[1] != 2
                or len(knots) < 2
                or not np.all(np.isfinite(knots))
                or np.any(np.diff(knots[:, 0]) <= 0)
                or np.any(np.abs(knots[:, 1]) >= 0.5)
            ):
                raise ValueError(
                    "xp_calibration must be two or more [λ nm, δ] knots with increasing, "
                    f"finite λ and |δ| < 0.5 (a relative error), got {self.xp_calibration!r}"
                )
        if "gaia_G" not in self.bands:
            raise ValueError(
                "bands must include gaia_G (the sample's magnitude limit): add the gaia_dr3 "
                "survey or bands: {gaia_G: {}}"
            )
        bad = sorted(set(self.zero_point_offsets) - set(self.bands))
        if bad:
            raise ValueError(
                f"zero_point_offsets: {bad} are not simulated bands; bands: {sorted(self.bands)}"
            )
        if self.library.endswith("_bands"):
            from .spectra import BAND_COLUMNS

            no_col = sorted(set(self.bands) - set(BAND_COLUMNS))
            if no_col:
                raise ValueError(
                    f"library {self.library}: no band fluxes for {no_col}; it has "
                    f"{', '.join(BAND_COLUMNS)} (set bands: to a subset)"
                )
            if self.xp or self.spectrographs:
                raise ValueError(
                    f"library {self.library} has band fluxes only: no spectra (xp, "
                    "spectrographs); use ck04"
                )
        for name, spec in self.bands.items():
            get_filter(name)
            unknown = set(spec) - {"depth", "floor", "depth_scatter", "non_detection"}
            if unknown:
                raise ValueError(
                    f"bands.{name}: unknown keys {sorted(unknown)}; valid: depth, "
                    "floor, depth_scatter, non_detection"
                )


def _observed_curve(
    law: str, wave_aa: np.ndarray, weights: np.ndarray, spectrographs: list[Spectrograph]
) -> Any:
    """The extinction curve of ``law`` on a library grid. A law that does not span the whole
    grid (F99 stops at 3.3 µm, CK04 reaches 160 µm) is evaluated on the wavelengths some band
    or spectrograph sees, and held at their edges beyond: no observable depends on A(λ)
    there. A band or spectrum outside the law's range still raises."""
    from .dust import ExtinctionCurve, ExtinctionRangeError

    try:
        return ExtinctionCurve(law, wave_aa)
    except ExtinctionRangeError:
        used = np.any(weights != 0, axis=1)
        for sg in spectrographs:
            used[sg._cols] = True
        if not used.any():
            raise
        lo, hi = wave_aa[used].min(), wave_aa[used].max()
        ExtinctionCurve(law, np.array([lo, hi]), outside="raise")  # the observed range
        curve = ExtinctionCurve(law, np.clip(wave_aa, lo, hi))
        curve.wave_aa = np.asarray(wave_aa, np.float64)
        return curve


class StellarSED:
    """Library + dust + photometry (+ spectrograph), evaluated together in log space."""

    def __init__(
        self,
        library: Any,
        bands: list[str],
        law: str = "G23",
        spectrograph: str | None = None,
        spectrograph_spec: Any | None = None,
        also_observed: list[Spectrograph] | None = None,
    ) -> None:
        from .bandpasses import Photometry

        self.library = library
        if getattr(library, "kind", "spectrum") == "bands":
            # band-averaged fluxes: each band is a table column, with that column's filter
            # (e.g. Gaia DR2 curves for gaia_G) for the Vega zero point
            from .spectra import BAND_COLUMNS

            cols = [BAND_COLUMNS[b] for b in bands]
            self.phot = Photometry(
                cols,
                library.wave_aa,
                band_columns=[library.band_names.index(c) for c in cols],
                zero_point_names=bands,
            )
        else:
            self.phot = Photometry(bands, library.wave_aa)
        self.xp = None
        if spectrograph:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the XP sampling warning is documented
                self.xp = Spectrograph(spectrograph, library.wave_aa, spectrograph_spec)
        seen = [sg for sg in [self.xp, *(also_observed or [])] if sg is not None]
        self.dust = _observed_curve(law, library.wave_aa, self.phot.weights, seen)

    def flux(
        self,
        teff: np.ndarray,
        logg: np.ndarray,
        feh: np.ndarray,
        radius: np.ndarray,
        distance: np.ndarray,
        av: np.ndarray,
        rv: np.ndarray | float = 3.1,
    ) -> torch.Tensor:
        """(N, W) observed F_λ with extinction."""
        if hasattr(self.library, "log_surface_flux"):
            logf = self.library.log_surface_flux(teff, logg, feh)
        else:
            logf = torch.log10(torch.from_numpy(self.library.surface_flux(teff, logg, feh)))
        scale = 2 * np.log10(np.asarray(radius) * RSUN_CM / (np.asarray(distance) * PC_CM))
        av = np.broadcast_to(np.asarray(av, np.float64), np.shape(scale))
        if self.dust.linear is not False:
            # log10 F += 2 log10(R/d) - 0.4 A_V [a + b (1/R_V - 1/3.1)] as one addmm
            self.dust._check_rv(np.broadcast_to(rv, av.shape))
            eps = 1 / np.broadcast_to(np.asarray(rv, np.float64), av.shape) - 1 / 3.1
            if np.any(av < 0) or not np.all(np.isfinite(av)):
                raise ValueError("A(V) must be finite and >= 0")
            coef = np.stack([np.ravel(scale), -0.4 * av, -0.4 * av * eps], axis=1)
            basis = torch.stack(
                [torch.ones_like(self.dust._t_base), self.dust._t_base, self.dust._t_slope]
            )
            logf.addmm_(torch.from_numpy(coef.astype(np.float32)), basis)
        else:
            logf += torch.from_numpy(np.ravel(scale).astype(np.float32))[:, None]
            logf -= 0.4 * self.dust.a_lambda(av, rv)
        return logf.mul_(np.log(10.0)).exp_()

    def magnitudes(self, flux: torch.Tensor) -> np.ndarray:
        return self.phot.magnitudes(flux)


class FieldStars(Simulator):
    """Magnitude-limited field stars in a cone of the analytic Milky Way."""

    name = "field_stars"
    config_class = FieldStarsConfig

    def __init__(self, config: Any | None = None) -> None:
        super().__init__(config)
        from .galaxy import ExponentialDust, GalaxyModel, GridDustMap
        from .isochrones import IsochroneGrid
        from .spectra import (
            BAND_COLUMNS,
            BandFluxLibrary,
            CK04Library,
            MangledLibrary,
            PlanckLibrary,
        )

        c = self.config
        self.bands = list(c.bands)
        if c.library == "ck04":
            lib = CK04Library(c.library_path)
        elif c.library in ("phoenix", "phoenix_pm13"):
            cal = "pm13" if c.library == "phoenix_pm13" else "none"
            lib = MangledLibrary(base_path=c.library_path, calibration=cal)
        elif c.library == "planck":
            if c.library_path is not None:
                raise ValueError(
                    "library_path is not used by the planck library; drop it, or pick the "
                    "library that reads it (ck04, phoenix, bands)"
                )
            lib = PlanckLibrary(wave_range_aa=(3000.0, 320_000.0))
        else:
            names = {
                "kurucz_bands": "Kurucz",
                "ck04_bands": "CK04",
                "phoenix_bands": "Phoenixv2",
                "sphinx_bands": "SPHINX",
            }
            if c.library == "bands" and c.library_path is None:
                raise ValueError("library: bands needs library_path, the band-flux table (CSV)")
            table = c.library_path or names[c.library]
            lib = BandFluxLibrary(table, bands=[BAND_COLUMNS[b] for b in self.bands])
        self.band_specs = [
            BandSpec(**{"non_detection": c.non_detection, **c.bands[b]}) for b in self.bands
        ]
        specs = getattr(c, "_survey_spectra", {})
        unknown = [n for n in c.spectrographs if n not in ("lamost_lrs", "boss", "apogee")]
        if unknown:
            hint = " (lamost is now lamost_lrs, as its survey)" if "lamost" in unknown else ""
            raise ValueError(
                f"unknown spectrographs {unknown}; valid: lamost_lrs, boss, apogee{hint}"
            )
        # these warn when the library is coarser than the instrument (CK04 always is)
        self.spectrographs = {
            n: Spectrograph(n, lib.wave_aa, specs.get(n)) for n in c.spectrographs
        }
        self.sed = StellarSED(
            lib,
            self.bands,
            c.extinction_law,
            "gaia_xp" if c.xp else None,
            specs.get("gaia_xp"),
            also_observed=list(self.spectrographs.values()),
        )
        self._xp_calibration = None
        if c.xp and c.xp_calibration:
            from scipy.interpolate import PchipInterpolator

            knots = np.asarray(c.xp_calibration, np.float64)
            lam = np.clip(self.sed.xp.wave_nm, knots[0, 0], knots[-1, 0])
            self._xp_calibration = 1.0 + PchipInterpolator(knots[:, 0], knots[:, 1])(lam)
        self.iso = IsochroneGrid(c.isochrones)
        self.galaxy = GalaxyModel()
        if c.dust_map:
            self.dust = GridDustMap.from_file(c.dust_map)
        else:
            self.dust = ExponentialDust(kappa_mag_per_kpc=c.dust_kappa)
            if c.radius <= 10.0:  # tabulate the sight lines of the cone once
                top = abs(c.b) + c.radius
                dl = 180.0 if top >= 89.0 else min(180.0, c.radius / np.cos(np.radians(top)))
                self.dust = self.dust.grid(
                    (c.l - dl - 0.01, c.l + dl + 0.01),
                    (max(-90.0, c.b - c.radius - 0.01), min(90.0, c.b + c.radius + 0.01)),
                    c.d_max,
                )
        self._weights: dict[str, float] | None = None
        self._g = self.bands.index("gaia_G")
        from .priors import parse_priors

        self._priors = parse_priors(c.priors, [*self.theta_names, "rv"])
        for key, pr in self._priors.items():
            lo, hi = pr.support
            if key in ("radius", "distance") and lo <= 0:
                raise ValueError(f"simulator.priors.{key}: must be > 0, got low = {lo}")
            if key == "av" and lo < 0:
                raise ValueError(f"simulator.priors.av: A_V must be >= 0, got low = {lo}")

    # -- declarations ------------------------------------------------------------------
    @property
    def theta_names(self) -> list[str]:
        names = ["teff", "logg", "feh", "radius", "distance", "av"]
        c = self.config
        return names + (["rv"] if c.rv_sigma > 0 and c.rv_in_theta else [])

    def nodes(self) -> list[dict[str, Any]]:
        lib = self.sed.library
        spec = {
            "teff": dict(
                unit="K", transform="log10", low=lib.bounds["teff"][0], high=lib.bounds["teff"][1]
            ),
            "logg": dict(unit="dex"),
            "feh": dict(unit="dex"),
            "radius": dict(unit="solRad", transform="log10"),
            "distance": dict(unit="pc", transform="log10"),
            "av": dict(unit="mag", low=0.0),
            "rv": dict(unit="", low=2.3, high=5.6),
        }
        from .bandpasses import band_nodes, zero_point_jy

        out = [
            dict(name=n, kind="parameter", modality="theta", **spec[n]) for n in self.theta_names
        ]
        # StellarSED's magnitudes are on the surveys' Vega zero points
        out += band_nodes(self.bands, [zero_point_jy(b, "vega") for b in self.bands])
        if self.config.parallax:
            out.append(dict(name="parallax", kind="observable", modality="astrometry", unit="mas"))
        if self.config.xp:
            out.append(
                dict(
                    name="xp_spectrum",
                    kind="observable",
                    modality="xp",
                    unit="W m-2 nm-1",
                    role="context",
                    size=len(self.sed.xp.wave_nm),
                )
            )
        for name, sg in self.spectrographs.items():
            out.append(
                dict(
                    name=f"{name}_spectrum",
                    kind="observable",
                    modality=name,
                    unit="W m-2 nm-1",
                    role="context",
                    size=len(sg.wave_nm),
                )
            )
        return out

    def edges(self) -> list[tuple[str, str]]:
        out = [(p, b) for p in self.theta_names for b in self.bands]
        if self.config.parallax:
            out.append(("distance", "parallax"))
        return out

    def group_attrs(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        sgs = {"xp": self.sed.xp} if self.config.xp else {}
        for n, sg in {**sgs, **self.spectrographs}.items():
            out[n] = {
                "wavelength_nm": sg.wave_nm,
                "content": sg.content,
                "continuum_only": sg.continuum_only,
                "library_points": sg.library_points,
            }
        return out

    # -- prior and simulator -----------------------------------------------------------
    def _population(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """n stars of the Galactic population: ``l, b, distance, mass, log_age, feh`` (the
        ``galaxia`` simulator draws them from a mock catalogue instead, and may add ``teff,
        logg, radius`` and ``ebv``)."""
        from .galaxy import sample_stars

        c = self.config
        if self._weights is None:
            self._weights = self.galaxy.expected_counts(c.l, c.b, c.radius, c.d_max, c.m_min)
        return sample_stars(
            self.galaxy, n, c.l, c.b, c.radius, c.d_max, rng, c.m_min, self._weights
        )

    def _candidates(
        self, n: int, rng: np.random.Generator, population: dict[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        """θ of n stars of the population (or of the given ``population``), with those off
        the isochrones or the library removed."""
        c = self.config
        s = self._population(n, rng) if population is None else population
        n = len(s["distance"])
        lo, hi = self.iso.bounds["feh"]
        feh = np.clip(s["feh"], lo, hi)
        if "teff" in s:  # the catalogue's own stellar parameters
            props = {"teff": s["teff"], "logg": s["logg"], "radius": s["radius"]}
            feh = s["feh"]
        else:
            props = self.iso.interpolate(s["mass"], s["log_age"], feh)
        rv = (
            np.clip(c.rv_mean + c.rv_sigma * rng.standard_normal(n), 2.3, 5.6)
            if c.rv_sigma > 0
            else np.full(n, c.rv_mean)
        )
        # a catalogue's reddening E(B-V) becomes A_V = R(V) E(B-V) with each star's R(V)
        av = rv * s["ebv"] if "ebv" in s else self.dust.av(s["l"], s["b"], s["distance"])
        theta = {
            "teff": props["teff"],
            "logg": props["logg"],
            "feh": feh,
            "radius": props["radius"],
            "distance": s["distance"],
            "av": av,
            "rv": rv,
        }
        for key, pr in self._priors.items():  # user priors replace the population's
            theta[key] = pr.sample(n, rng)
        ok = np.all([np.isfinite(v) for v in theta.values()], axis=0)
        ok &= self.in_library(theta["teff"], theta["logg"], theta["feh"])
        return {k: v[ok] for k, v in theta.items()}

    def in_library(self, teff: np.ndarray, logg: np.ndarray, feh: np.ndarray) -> np.ndarray:
        """(N,) bool: the spectral library has models at these (T_eff, log g, [Fe/H])."""
        lib = self.sed.library
        teff, logg, feh = (np.asarray(v, np.float64) for v in (teff, logg, feh))
        ok = np.isfinite(teff) & np.isfinite(logg) & np.isfinite(feh)
        for key, v in (("teff", teff), ("logg", logg), ("feh", feh)):
            lo, hi = lib.bounds[key]
            ok &= (v >= lo) & (v <= hi)
        if hasattr(lib, "_logg_min"):  # CK04 holes at low log g
            from .spectra import axis_weights

            it, _ = axis_weights(lib.teff_grid, np.clip(teff, *lib.bounds["teff"]))
            iz, _ = axis_weights(lib.feh_grid, np.clip(feh, *lib.bounds["feh"]))
            need = np.max(
                np.stack([lib._logg_min[iz + a, it + b] for a in (0, 1) for b in (0, 1)]), axis=0
            )
            ok &= logg >= need
        if hasattr(lib, "covers"):  # band-flux tables have holes too
            ok &= lib.covers(teff, logg, feh)
        return ok

    def _draw(
        self, n: int, rng: np.random.Generator
    ) -> tuple[dict[str, np.ndarray], torch.Tensor, np.ndarray]:
        """n accepted stars: θ dict, their SEDs and true magnitudes."""
        kept: list[tuple[dict[str, np.ndarray], torch.Tensor, np.ndarray]] = []
        have, rate, tries = 0, 0.2, 0
        while have < n:
            tries += 1
            if tries > 200:
                raise RuntimeError(
                    f"field_stars: only {have} of {n} stars brighter than G = "
                    f"{self.config.mag_limit} after 200 batches; raise mag_limit or m_min"
                )
            k = int(min(max((n - have) / max(rate, 1e-3) * 1.2, 256), 200_000))
            th = self._candidates(k, rng)
            if len(th["teff"]) == 0:
                rate = max(rate / 4, 1e-4)
                continue
            flux = self.sed.flux(
                th["teff"], th["logg"], th["feh"], th["radius"], th["distance"], th["av"], th["rv"]
            )
            mags = self.sed.magnitudes(flux)
            sel = mags[:, self._g] <= self.config.mag_limit
            rate = max(sel.sum() / k, 1e-4)
            idx = np.nonzero(sel)[0]
            kept.append(({key: v[idx] for key, v in th.items()}, flux[idx], mags[idx]))
            have += len(idx)
        theta = {key: np.concatenate([t[0][key] for t in kept])[:n] for key in kept[0][0]}
        flux = torch.cat([t[1] for t in kept])[:n]
        mags = np.concatenate([t[2] for t in kept])[:n]
        return theta, flux, mags

    def sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        theta, _, _ = self._draw(n, rng)
        return np.stack([theta[k] for k in self.theta_names], axis=1)

    def _observe(
        self,
        theta: dict[str, np.ndarray],
        flux: torch.Tensor,
        mags: np.ndarray,
        rng: np.random.Generator,
    ) -> dict[str, ObsBlock]:
        c = self.config
        values, errors, observed, upper = observe_photometry(mags, self.band_specs, rng)
        if c.error_scale != 1.0 or c.zero_point_offsets:
            # misspecified instruments: more scatter than reported, calibration offsets
            det = observed & ~upper
            offset = np.array([c.zero_point_offsets.get(b, 0.0) for b in self.bands])
            noisy = mags + c.error_scale * (values - mags) + offset
            values = np.where(det, noisy, values).astype(values.dtype)
        out = {"photometry": ObsBlock(values, errors, observed, upper)}
        if c.parallax:
            err = parallax_error_mas(mags[:, self._g], c.parallax_error_factor)
            plx = 1000.0 / theta["distance"] + err * rng.standard_normal(len(err))
            out["astrometry"] = ObsBlock(plx[:, None], err[:, None], True, False)
        if c.xp:
            spec, err = self.sed.xp.observe(
                flux,
                mags[:, self._g],
                rng,
                calibration=self._xp_calibration,
                error_scale=c.xp_error_scale,
            )
            out["xp"] = ObsBlock(spec, err, True, False)
        for name, sg in self.spectrographs.items():
            spec, err = sg.observe(flux, mags[:, self._g], rng)
            out[name] = ObsBlock(spec, err, True, False)
        if c.missing_prob > 0:
            for key in ("photometry", "astrometry"):
                if key in out:
                    block = out[key]
                    out[key] = block.apply_missing(rng.random(block.values.shape) < c.missing_prob)
        return out

    def simulate(self, theta: np.ndarray, rng: np.random.Generator) -> dict[str, ObsBlock]:
        theta = np.asarray(theta, np.float64)
        names = self.theta_names
        if theta.ndim != 2 or theta.shape[1] != len(names):
            raise ValueError(
                f"field_stars: theta must have shape (N, {len(names)}) for "
                f"{names}, got {theta.shape}"
            )
        if not np.all(np.isfinite(theta)):
            raise ValueError("field_stars: theta contains NaN or inf")
        th = {k: theta[:, i] for i, k in enumerate(names)}
        c = self.config
        if "rv" not in th:  # hidden R(V) scatter, or a single R(V)
            th["rv"] = (
                np.clip(c.rv_mean + c.rv_sigma * rng.standard_normal(len(theta)), 2.3, 5.6)
                if c.rv_sigma > 0
                else np.full(len(theta), c.rv_mean)
            )
        for key in ("radius", "distance"):
            if np.any(th[key] <= 0):
                raise ValueError(f"field_stars: {key} must be > 0")
        flux = self.sed.flux(
            th["teff"], th["logg"], th["feh"], th["radius"], th["distance"], th["av"], th["rv"]
        )
        return self._observe(th, flux, self.sed.magnitudes(flux), rng)

    def __call__(self, n: int, rng: np.random.Generator) -> Any:
        from .base import SimOutput

        theta, flux, mags = self._draw(n, rng)
        x = self._observe(theta, flux, mags, rng)
        arr = np.stack([theta[k] for k in self.theta_names], axis=1).astype(np.float32)
        return SimOutput(theta=arr, x=x)

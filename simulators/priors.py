r"""Population priors: a distribution per parameter, and young-star populations.

A simulate config can replace the prior of any parameter of a simulator that supports it
(``yso``)::

    simulator:
      name: yso
      priors:
        star.temperature: {dist: loguniform, low: 2300, high: 7000}
        distance: {dist: normal, mean: 150, sigma: 10}        # a cloud's distance [pc]
        av: {dist: uniform, low: 0, high: 10}
      population: {kind: young, age_myr: [1, 10], mass: [0.02, 1.4]}

Distributions (:class:`ParameterPrior`):

* ``uniform`` on [low, high]; ``loguniform``: log10 x uniform on [log10 low, log10 high];
* ``normal`` N(mean, sigma²) and ``lognormal`` (log10 x ~ N(log10 mean, sigma²), sigma in
  dex), both truncated to [low, high] where given (by redrawing);
* ``fixed`` at ``value``.

A **young population** (:func:`sample_young_stars`) draws masses from the Kroupa (2001) IMF
in ``mass`` [M_sun] and ages log-uniform in ``age_myr``, and places each star on the BHAC15
pre-main-sequence isochrones (Baraffe et al. 2015, from lachesis-grids), so that T_eff,
radius, luminosity and log g come jointly, as they do in a real young cluster.

References:
    Kroupa, P. (2001). MNRAS 322, 231. Baraffe, I. et al. (2015). A&A 577, A42.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DISTRIBUTIONS",
    "KROUPA",
    "ParameterPrior",
    "YoungPopulation",
    "parse_population",
    "parse_priors",
    "sample_young_stars",
]

DISTRIBUTIONS = ("uniform", "loguniform", "normal", "lognormal", "fixed")
#: Kroupa (2001) IMF: (upper mass [M_sun], α) of dN/dm ∝ m^-α per segment
KROUPA = ((0.08, 0.3), (0.5, 1.3), (150.0, 2.3))
_KEYS = {
    "uniform": {"low", "high"},
    "loguniform": {"low", "high"},
    "normal": {"mean", "sigma", "low", "high"},
    "lognormal": {"mean", "sigma", "low", "high"},
    "fixed": {"value"},
}
_REQUIRED = {
    "uniform": {"low", "high"},
    "loguniform": {"low", "high"},
    "normal": {"mean", "sigma"},
    "lognormal": {"mean", "sigma"},
    "fixed": {"value"},
}


@dataclass(frozen=True)
class ParameterPrior:
    """A one-dimensional prior (see the module docstring)."""

    dist: str
    low: float = -np.inf
    high: float = np.inf
    mean: float = 0.0
    sigma: float = 1.0
    value: float = 0.0

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n,) draws."""
        if self.dist == "fixed":
            return np.full(n, self.value)
        if self.dist == "uniform":
            return rng.uniform(self.low, self.high, n)
        if self.dist == "loguniform":
            return 10 ** rng.uniform(np.log10(self.low), np.log10(self.high), n)
        out = np.empty(0)
        for _ in range(1000):  # truncated: redraw what falls outside [low, high]
            if self.dist == "normal":
                x = rng.normal(self.mean, self.sigma, 2 * n + 16)
            else:
                x = 10 ** rng.normal(np.log10(self.mean), self.sigma, 2 * n + 16)
            out = np.concatenate([out, x[(x >= self.low) & (x <= self.high)]])
            if len(out) >= n:
                return out[:n]
        raise ValueError(f"{self}: [low, high] holds almost none of the distribution")

    @property
    def support(self) -> tuple[float, float]:
        """The smallest interval holding every draw."""
        if self.dist == "fixed":
            return (self.value, self.value)
        return (self.low, self.high)


def _number(where: str, key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v):
        raise ValueError(f"{where}.{key} must be a finite number, got {v!r}")
    return float(v)


def parse_priors(
    spec: dict[str, Any] | None, names: list[str], where: str = "simulator.priors"
) -> dict[str, ParameterPrior]:
    """Validate ``{parameter: {dist: ..., ...}}`` against the simulator's parameter names.

    Raises:
        ValueError: Naming the parameter or key that is wrong and what is valid.
    """
    out: dict[str, ParameterPrior] = {}
    for name, p in (spec or {}).items():
        w = f"{where}.{name}"
        if name not in names:
            raise ValueError(f"{where}: unknown parameter {name!r}; valid: {', '.join(names)}")
        if not isinstance(p, dict) or "dist" not in p:
            raise ValueError(f"{w} must be a mapping with 'dist' (one of {DISTRIBUTIONS})")
        dist = p["dist"]
        if dist not in DISTRIBUTIONS:
            raise ValueError(f"{w}.dist: unknown {dist!r}; valid: {', '.join(DISTRIBUTIONS)}")
        keys = set(p) - {"dist"}
        bad = keys - _KEYS[dist]
        if bad:
            raise ValueError(
                f"{w}: {sorted(bad)} do not apply to {dist}; valid: {sorted(_KEYS[dist])}"
            )
        missing = _REQUIRED[dist] - keys
        if missing:
            raise ValueError(f"{w}: {dist} needs {sorted(missing)}")
        vals = {k: _number(w, k, p[k]) for k in keys}
        pr = ParameterPrior(dist, **vals)
        if pr.low >= pr.high and dist != "fixed":
            raise ValueError(f"{w}: low must be < high, got [{pr.low}, {pr.high}]")
        if dist in ("loguniform", "lognormal") and (pr.low <= 0 and dist == "loguniform"):
            raise ValueError(f"{w}: loguniform needs low > 0")
        if dist in ("normal", "lognormal") and pr.sigma <= 0:
            raise ValueError(f"{w}.sigma must be > 0")
        if dist == "lognormal" and pr.mean <= 0:
            raise ValueError(f"{w}.mean must be > 0 for lognormal")
        out[name] = pr
    return out


@dataclass(frozen=True)
class YoungPopulation:
    """Masses from the Kroupa IMF, ages log-uniform, on the BHAC15 isochrones."""

    age_myr: tuple[float, float] = (1.0, 10.0)
    mass: tuple[float, float] = (0.02, 1.4)
    isochrones: str = "bhac15"


def parse_population(
    spec: dict[str, Any] | None, where: str = "simulator.population"
) -> YoungPopulation | None:
    """Validate ``{kind: young, age_myr: [lo, hi], mass: [lo, hi]}``."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("kind") != "young":
        raise ValueError(f"{where} must be {{kind: young, age_myr: [lo, hi], mass: [lo, hi]}}")
    bad = set(spec) - {"kind", "age_myr", "mass", "isochrones"}
    if bad:
        raise ValueError(
            f"{where}: unknown keys {sorted(bad)}; valid: age_myr, isochrones, kind, mass"
        )
    pop = YoungPopulation(
        tuple(spec.get("age_myr", (1.0, 10.0))),  # type: ignore[arg-type]
        tuple(spec.get("mass", (0.02, 1.4))),  # type: ignore[arg-type]
        str(spec.get("isochrones", "bhac15")),
    )
    for key in ("age_myr", "mass"):
        v = getattr(pop, key)
        if len(v) != 2 or not all(np.isfinite(v)) or not 0 < v[0] <= v[1]:
            raise ValueError(f"{where}.{key} must be [lo, hi] with 0 < lo <= hi, got {list(v)}")
    if pop.isochrones != "bhac15":
        raise ValueError(f"{where}.isochrones: only bhac15 (pre-main sequence) is supported")
    return pop


def sample_young_stars(
    pop: YoungPopulation,
    n: int,
    rng: np.random.Generator,
    teff_range: tuple[float, float] = (2000.0, 30000.0),
    radius_range: tuple[float, float] = (0.1, 100.0),
) -> dict[str, np.ndarray]:
    """(n,) ``teff`` [K], ``radius`` [R_sun], ``logg``, ``mass`` [M_sun], ``age_myr`` of young
    stars; stars off the isochrones or outside the ranges are redrawn."""
    from .galaxy import sample_imf
    from .isochrones import IsochroneGrid

    iso = _isochrones(pop.isochrones, IsochroneGrid)
    lo, hi = iso.bounds["log_age"]
    la = np.log10(np.asarray(pop.age_myr) * 1e6)
    if la[0] < lo - 1e-3 or la[1] > hi + 1e-3:
        raise ValueError(
            f"population.age_myr {list(pop.age_myr)} is outside the {pop.isochrones} isochrones "
            f"({10**lo / 1e6:.3g}-{10**hi / 1e6:.3g} Myr)"
        )
    la = np.clip(la, lo, hi)
    keys = ("teff", "radius", "logg", "mass", "age_myr")
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    got = 0
    for _ in range(100):
        m = sample_imf(KROUPA, 2 * n + 16, rng, m_lo=pop.mass[0], m_hi=pop.mass[1])
        log_age = rng.uniform(la[0], la[1], len(m))
        p = iso.interpolate(m, log_age, np.zeros(len(m)))
        ok = np.isfinite(p["teff"]) & np.isfinite(p["radius"])
        ok &= (p["teff"] >= teff_range[0]) & (p["teff"] <= teff_range[1])
        ok &= (p["radius"] >= radius_range[0]) & (p["radius"] <= radius_range[1])
        for k, v in (
            ("teff", p["teff"]),
            ("radius", p["radius"]),
            ("logg", p["logg"]),
            ("mass", m),
            ("age_myr", 10**log_age / 1e6),
        ):
            out[k].append(v[ok])
        got += int(ok.sum())
        if got >= n:
            return {k: np.concatenate(v)[:n] for k, v in out.items()}
    raise ValueError(f"population {pop}: almost no star falls on the isochrones")


_ISO_CACHE: dict[str, Any] = {}


def _isochrones(name: str, cls: Any) -> Any:
    if name not in _ISO_CACHE:
        _ISO_CACHE[name] = cls(name)
    return _ISO_CACHE[name]


#: log10 of the Sun's surface gravity [cgs] (IAU 2015 nominal GM_sun / R_sun²)
LOGG_SUN = 4.438


def _teff_table(age_myr: tuple[float, float], isochrones: str) -> tuple[np.ndarray, ...]:
    """log T_eff (increasing), log mass and log g along the isochrone at the geometric mean
    of ``age_myr``."""
    from .isochrones import IsochroneGrid

    iso = _isochrones(isochrones, IsochroneGrid)
    lo, hi = iso.bounds["log_age"]
    la = float(np.clip(np.mean(np.log10(np.asarray(age_myr, float) * 1e6)), lo, hi))
    key = (isochrones, round(la, 4))
    if key not in _TEFF_TABLES:
        m = np.geomspace(0.01, 1.4, 400)
        p = iso.interpolate(m, np.full(len(m), la), np.zeros(len(m)))
        ok = np.isfinite(p["teff"]) & np.isfinite(p["logg"])
        m, t, g = m[ok], p["teff"][ok], p["logg"][ok]
        keep = np.concatenate([[True], t[1:] > np.maximum.accumulate(t)[:-1]])
        _TEFF_TABLES[key] = (np.log10(t[keep]), np.log10(m[keep]), g[keep])
    return _TEFF_TABLES[key]


_TEFF_TABLES: dict[tuple[str, float], tuple[np.ndarray, ...]] = {}


def mass_from_teff(
    teff: np.ndarray, age_myr: tuple[float, float] = (1.0, 10.0), isochrones: str = "bhac15"
) -> np.ndarray:
    """Mass [M_sun] of a pre-main-sequence star of T_eff on the isochrone at the geometric
    mean of ``age_myr``.

    Below ~1 M_sun young stars descend Hayashi tracks at almost constant T_eff, so T_eff
    alone fixes the mass to ~10% over 1-15 Myr. T_eff beyond the isochrone's ends takes the
    end masses.
    """
    lt, lm, _ = _teff_table(age_myr, isochrones)
    return 10 ** np.interp(np.log10(np.asarray(teff, float)), lt, lm)


def isochrone_logg(
    teff: np.ndarray, age_myr: tuple[float, float] = (1.0, 10.0), isochrones: str = "bhac15"
) -> np.ndarray:
    """log g of the isochrone star of T_eff at the geometric mean of ``age_myr``."""
    lt, _, lg = _teff_table(age_myr, isochrones)
    return np.interp(np.log10(np.asarray(teff, float)), lt, lg)


def young_logg(
    teff: np.ndarray,
    radius: np.ndarray,
    age_myr: tuple[float, float] = (1.0, 10.0),
    isochrones: str = "bhac15",
) -> np.ndarray:
    """Surface gravity log10 g [cgs] = log g_sun + log M − 2 log R of a young star of T_eff
    [K] and radius [R_sun], its mass from :func:`mass_from_teff`."""
    m = mass_from_teff(teff, age_myr, isochrones)
    return LOGG_SUN + np.log10(m) - 2 * np.log10(np.asarray(radius, float))

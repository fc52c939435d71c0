"""Young clusters: members with discs and envelopes, plus Galactic field contaminants.

A cluster has parameters θ_C (sky position l, b; distance; log age; mean A_V; number of
members) and each member parameters θ_S. Members get masses from a Kroupa (2001) IMF
(0.07-1.4 M_sun), T_eff and radius from the BHAC15 pre-main-sequence isochrones at the
cluster's age (Baraffe et al. 2015), and an evolutionary class: a disc survives with
probability exp(-t / 2.5 Myr) (Mamajek 2009) and a disc-bearing star is still embedded in an
envelope (Class 0/I) with probability exp(-t / 0.5 Myr) (Evans et al. 2009 lifetimes). The
SEDs come from :class:`simulators.yso.YSOModel` (R17 sets ``s---s-i``, ``sp--s-i`` and
``spubsmi`` for Class III, II and I), with the R17 priors for the disc and envelope, random
inclinations and a fixed photometric aperture. Members sit at the cluster distance with a
Gaussian depth spread of ``size_pc`` and have A_V = A_V,C + an exponential embedding term.

Field contaminants (a ``contaminants`` fraction of the members) come from the analytic Milky
Way of :mod:`simulators.galaxy` in a cone of radius ``cone_deg`` towards (l, b), through
:class:`simulators.stars.FieldStars`. Everything is observed with the same surveys (bands,
depths, non-detections, Gaia parallaxes).

The :class:`YoungClusterSimulator` (``yso_cluster``) turns this into rows for
``dasbi simulate``: one row per source, with θ = (member, cluster_distance,
cluster_log_age, cluster_av, teff, radius, distance, av); :meth:`catalogue` returns one
cluster's catalogue with every true parameter as an astropy Table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .base import ObsBlock, SimOutput, Simulator
from .priors import KROUPA

__all__ = ["YoungClusterConfig", "YoungClusterSimulator"]

#: the R17 model set of each YSO class (Class I: disc and envelope; II: disc; III: neither)
CLASS_SETS = {"I": "spubsmi", "II": "sp--s-i", "III": "s---s-i"}


@dataclass
class YoungClusterConfig:
    """Options of :class:`YoungClusterSimulator`."""

    l: float = field(  # noqa: E741 - Galactic longitude
        default=158.3, metadata={"ge": 0.0, "le": 360.0, "help": "deg (default: NGC 1333)"}
    )
    b: float = field(default=-20.5, metadata={"ge": -90.0, "le": 90.0})
    distance: list[float] = field(
        default_factory=lambda: [200.0, 500.0], metadata={"help": "[min, max] pc, log-uniform"}
    )
    log_age: list[float] = field(
        default_factory=lambda: [5.7, 7.0], metadata={"help": "[min, max] log10 age [yr]"}
    )
    av: list[float] = field(
        default_factory=lambda: [0.0, 8.0], metadata={"help": "[min, max] cluster A_V [mag]"}
    )
    av_embedded: float = field(
        default=2.0, metadata={"ge": 0.0, "help": "mean of the per-member exponential A_V"}
    )
    n_members: list[int] = field(
        default_factory=lambda: [50, 400], metadata={"help": "[min, max] members per cluster"}
    )
    size_pc: float = field(default=1.0, metadata={"gt": 0.0, "help": "Gaussian σ of depth"})
    contaminants: float = field(
        default=1.0, metadata={"ge": 0.0, "help": "field stars per member in the catalogue"}
    )
    cone_deg: float = field(default=0.5, metadata={"gt": 0.0, "le": 10.0})
    field_mag_limit: float = field(default=20.0, metadata={"help": "G limit of contaminants"})
    aperture_arcsec: float = field(default=3.0, metadata={"gt": 0.0})
    library: Literal["phoenix", "ck04", "planck"] = "phoenix"
    library_path: str | None = None
    surveys: list[str] = field(
        default_factory=lambda: ["gaia_dr3", "2mass", "allwise", "spitzer_c2d"]
    )
    non_detection: Literal["missing", "upper_limit"] = "missing"
    missing_prob: float = field(default=0.0, metadata={"ge": 0.0, "le": 0.95})

    def __post_init__(self) -> None:
        for key, lo in (("distance", 1.0), ("log_age", 5.699), ("av", 0.0), ("n_members", 1)):
            v = getattr(self, key)
            if len(v) != 2 or v[0] > v[1] or v[0] < lo:
                raise ValueError(f"{key} must be [min, max] with {lo} <= min <= max, got {v}")
        if self.log_age[1] > 10.0:
            raise ValueError("log_age: BHAC15 stops at log10(age/yr) = 10")


class YoungClusterSimulator(Simulator):
    """Catalogue-level simulation of young clusters and their field (module docstring)."""

    name = "yso_cluster"
    config_class = YoungClusterConfig
    theta_names = [
        "member",
        "cluster_distance",
        "cluster_log_age",
        "cluster_av",
        "teff",
        "radius",
        "distance",
        "av",
    ]

    def __init__(self, config: Any | None = None) -> None:
        super().__init__(config)
        from .bandpasses import Photometry
        from .isochrones import IsochroneGrid
        from .stars import FieldStars
        from .yso import YSOConfig, YSOModel

        c = self.config
        yc = YSOConfig(surveys=list(c.surveys), non_detection=c.non_detection, library=c.library)
        self.bands = list(yc.bands)
        from .instruments import BandSpec

        self.band_specs = [
            BandSpec(**{"non_detection": c.non_detection, **yc.bands[b]}) for b in self.bands
        ]
        self.parallax = bool(yc.parallax)
        self._plx_factor = yc._plx_factor
        self.models = {
            s: YSOModel(ms, library=c.library, library_path=c.library_path)
            for s, ms in CLASS_SETS.items()
        }
        self.phot = Photometry(self.bands, self.models["III"].wave_aa)
        self.iso = IsochroneGrid("bhac15")
        self.field = None
        if c.contaminants > 0:
            self.field = FieldStars(
                dict(
                    library=c.library,
                    library_path=c.library_path,
                    l=c.l,
                    b=c.b,
                    radius=c.cone_deg,
                    mag_limit=c.field_mag_limit,
                    surveys=list(c.surveys),
                    non_detection=c.non_detection,
                    m_min=0.08,
                )
            )
            if list(self.field.bands) != self.bands:
                raise ValueError("field stars and YSOs must share the survey bands")
        self._g = self.bands.index("gaia_G") if "gaia_G" in self.bands else None

    # -- declarations ------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        from .bandpasses import band_nodes

        spec = {
            "member": dict(unit="", low=0.0, high=1.0),
            "cluster_distance": dict(unit="pc", transform="log10"),
            "cluster_log_age": dict(unit="dex"),
            "cluster_av": dict(unit="mag", low=0.0),
            "teff": dict(unit="K", transform="log10"),
            "radius": dict(unit="solRad", transform="log10"),
            "distance": dict(unit="pc", transform="log10"),
            "av": dict(unit="mag", low=0.0),
        }
        out = [
            dict(name=n, kind="parameter", modality="theta", **spec[n]) for n in self.theta_names
        ]
        out += band_nodes(self.bands, [self.phot.zero_point_jy(j) for j in range(len(self.bands))])
        if self.parallax:
            out.append(dict(name="parallax", kind="observable", modality="astrometry", unit="mas"))
        return out

    # -- simulation --------------------------------------------------------------------
    def sample_cluster(self, rng: np.random.Generator) -> dict[str, float]:
        """θ_C of one cluster from the configured ranges."""
        c = self.config
        return {
            "l": c.l,
            "b": c.b,
            "distance": float(10 ** rng.uniform(*np.log10(c.distance))),
            "log_age": float(rng.uniform(*c.log_age)),
            "av": float(rng.uniform(*c.av)),
            "n_members": int(rng.integers(c.n_members[0], c.n_members[1] + 1)),
        }

    def _members(self, tc: dict[str, float], rng: np.random.Generator) -> dict[str, np.ndarray]:
        from .galaxy import sample_imf
        from .yso import sample_parameters

        c = self.config
        n = tc["n_members"]
        teff = radius = logg = np.zeros(0)
        tries = 0
        while len(teff) < n and tries < 50:  # masses off the isochrone are redrawn
            tries += 1
            m = sample_imf(KROUPA, 2 * n, rng, m_lo=0.02, m_hi=1.4)
            p = self.iso.interpolate(m, np.full(2 * n, tc["log_age"]), np.zeros(2 * n))
            ok = np.isfinite(p["teff"]) & (p["teff"] >= 2000.0) & (p["teff"] <= 30000.0)
            ok &= (p["radius"] >= 0.1) & (p["radius"] <= 100.0)
            teff = np.concatenate([teff, p["teff"][ok]])
            radius = np.concatenate([radius, p["radius"][ok]])
            logg = np.concatenate([logg, p["logg"][ok]])
        teff, radius, logg = teff[:n], radius[:n], logg[:n]
        n = len(teff)
        age_myr = 10 ** tc["log_age"] / 1e6
        disc = rng.random(n) < np.exp(-age_myr / 2.5)
        env = disc & (rng.random(n) < np.exp(-age_myr / 0.5))
        yso_class = np.where(env, "I", np.where(disc, "II", "III"))
        dist = np.maximum(tc["distance"] + c.size_pc * rng.standard_normal(n), 1.0)
        av = (
            tc["av"] + rng.exponential(c.av_embedded, n)
            if c.av_embedded > 0
            else np.full(n, tc["av"])
        )
        mags = np.full((n, len(self.bands)), np.inf)
        for s, model in self.models.items():
            sel = np.nonzero(yso_class == s)[0]
            if len(sel) == 0:
                continue
            p = sample_parameters(model.set, len(sel), rng, aperture=False)
            p["star.temperature"], p["star.radius"] = teff[sel], radius[sel]
            p["star.logg"] = logg[sel]  # the isochrone's gravity for the photosphere
            p["aperture"] = np.clip(c.aperture_arcsec * dist[sel], 100.0, 1e6)
            mags[sel] = self.phot.magnitudes(model.sed(p, dist[sel], av[sel]))
        return dict(teff=teff, radius=radius, distance=dist, av=av, yso_class=yso_class, mags=mags)

    def _field(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        if n == 0 or self.field is None:
            z = np.zeros(0)
            return dict(teff=z, radius=z, distance=z, av=z, mags=np.zeros((0, len(self.bands))))
        th, _, mags = self.field._draw(n, rng)
        return dict(
            teff=th["teff"], radius=th["radius"], distance=th["distance"], av=th["av"], mags=mags
        )

    def cluster(
        self, rng: np.random.Generator, theta_c: dict[str, float] | None = None
    ) -> dict[str, Any]:
        """True parameters and noiseless magnitudes of one cluster's catalogue (shuffled)."""
        tc = theta_c or self.sample_cluster(rng)
        mem = self._members(tc, rng)
        fld = self._field(int(round(self.config.contaminants * len(mem["teff"]))), rng)
        n_m, n_f = len(mem["teff"]), len(fld["teff"])
        cols = {k: np.concatenate([mem[k], fld[k]]) for k in ("teff", "radius", "distance", "av")}
        cols["mags"] = np.concatenate([mem["mags"], fld["mags"]])
        cols["member"] = np.concatenate([np.ones(n_m), np.zeros(n_f)])
        cols["yso_class"] = np.concatenate([mem["yso_class"], np.full(n_f, "field")])
        order = rng.permutation(n_m + n_f)
        out = {k: v[order] for k, v in cols.items()}
        out["theta_c"] = tc
        return out

    def _observe(
        self, mags: np.ndarray, distance: np.ndarray, rng: np.random.Generator
    ) -> dict[str, ObsBlock]:
        from .instruments import observe_photometry, parallax_error_mas

        values, errors, observed, upper = observe_photometry(mags, self.band_specs, rng)
        out = {"photometry": ObsBlock(values, errors, observed, upper)}
        if self.parallax and self._g is not None:
            g = mags[:, self._g]
            seen = np.isfinite(g) & (g <= 21.0)
            err = parallax_error_mas(np.where(seen, g, 21.0), self._plx_factor)
            plx = 1000.0 / distance + err * rng.standard_normal(len(err))
            out["astrometry"] = ObsBlock(
                np.where(seen, plx, np.nan)[:, None], err[:, None], seen[:, None], False
            )
        if self.config.missing_prob > 0:
            for key in list(out):
                b = out[key]
                out[key] = b.apply_missing(rng.random(b.values.shape) < self.config.missing_prob)
        return out

    def sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self(n, rng).theta

    def simulate(self, theta: np.ndarray, rng: np.random.Generator) -> dict[str, ObsBlock]:
        raise NotImplementedError(
            "yso_cluster simulates whole catalogues (members and field drawn together); use "
            "the simulator's __call__ (dasbi simulate) or .catalogue()"
        )

    def __call__(self, n: int, rng: np.random.Generator) -> SimOutput:
        rows: list[np.ndarray] = []
        mags: list[np.ndarray] = []
        have = 0
        while have < n:
            cl = self.cluster(rng)
            tc = cl["theta_c"]
            k = len(cl["teff"])
            th = np.stack(
                [
                    cl["member"],
                    np.full(k, tc["distance"]),
                    np.full(k, tc["log_age"]),
                    np.full(k, tc["av"]),
                    cl["teff"],
                    cl["radius"],
                    cl["distance"],
                    cl["av"],
                ],
                1,
            )
            rows.append(th)
            mags.append(cl["mags"])
            have += k
        theta = np.concatenate(rows)[:n]
        m = np.concatenate(mags)[:n]
        x = self._observe(m, theta[:, 6], rng)
        return SimOutput(theta=theta.astype(np.float32), x=x)

    def catalogue(self, rng: np.random.Generator, theta_c: dict[str, float] | None = None) -> Any:
        """One cluster's observed catalogue with the truth, as an astropy Table."""
        from astropy.table import Table

        cl = self.cluster(rng, theta_c)
        obs = self._observe(cl["mags"], cl["distance"], rng)
        t = Table()
        t["source_id"] = np.arange(len(cl["teff"]))
        for k in ("member", "yso_class", "teff", "radius", "distance", "av"):
            t[f"true_{k}"] = cl[k]
        ph = obs["photometry"]
        for j, b in enumerate(self.bands):
            t[b] = ph.values[:, j]
            t[f"{b}_error"] = ph.errors[:, j]
            t[f"{b}_upper_limit"] = ph.upper_limit[:, j]
        if "astrometry" in obs:
            t["parallax"] = obs["astrometry"].values[:, 0]
            t["parallax_error"] = obs["astrometry"].errors[:, 0]
        t.meta.update({f"cluster_{k}": v for k, v in cl["theta_c"].items()})
        return t

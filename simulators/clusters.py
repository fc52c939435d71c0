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

Field contaminants come from the analytic Milky Way of :mod:`simulators.galaxy`: the stars of
a cone of radius ``cone_deg`` towards (l, b) between ``field_distance`` × the cluster distance
(the parallax window of a membership list), their number Poisson about the model's expected
count in that volume (``contaminants: galaxy``; ``ratio`` draws ``contaminant_ratio`` per
member instead), with the isochrones, atmospheres and Galactic dust of
:class:`simulators.stars.FieldStars`; those behind the cluster also sit behind its cloud
(+ the cluster A_V). Members and contaminants are then observed alike: the same surveys,
per-band depths, noise, non-detections and Gaia parallaxes, and one catalogue selection, a
detection (not a limit) in at least ``min_detections`` bands. So which bands a source lacks
says nothing about membership beyond what its SED says.

The :class:`YoungClusterSimulator` (``yso_cluster``) turns this into rows for
``dasbi simulate``: one row per source, with θ = (member, cluster_distance,
cluster_log_age, cluster_av, teff, radius, distance, av); :meth:`catalogue` returns one
cluster's catalogue with every true parameter as an astropy Table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .base import ObsBlock, SimOutput, Simulator, observation_columns
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
    contaminants: Literal["galaxy", "ratio", "none"] = field(
        default="galaxy",
        metadata={
            "help": "galaxy: the Galactic model's stars in the cone and distance window; "
            "ratio: contaminant_ratio field stars per member; none"
        },
    )
    contaminant_ratio: float = field(
        default=1.0, metadata={"ge": 0.0, "help": "field stars per member (contaminants: ratio)"}
    )
    cone_deg: float = field(default=0.5, metadata={"gt": 0.0, "le": 10.0})
    field_distance: list[float] = field(
        default_factory=lambda: [0.5, 2.0],
        metadata={"help": "[min, max] distance of contaminants, × the cluster distance"},
    )
    min_detections: int = field(
        default=1,
        metadata={"ge": 1, "help": "bands a source must be detected in to enter the catalogue"},
    )
    select_bands: list[str] = field(
        default_factory=list,
        metadata={"help": "the bands of that selection (default: every band)"},
    )
    aperture_arcsec: float = field(default=3.0, metadata={"gt": 0.0})
    library: Literal["phoenix", "phoenix_pm13", "ck04", "planck"] = "phoenix"
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
        f = self.field_distance
        if len(f) != 2 or not 0.0 <= f[0] < f[1]:
            raise ValueError(f"field_distance must be [min, max] with 0 <= min < max, got {f}")


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
        if c.contaminants != "none":
            self.field = FieldStars(
                dict(
                    library=c.library,
                    library_path=c.library_path,
                    l=c.l,
                    b=c.b,
                    radius=c.cone_deg,
                    d_max=c.distance[1] * c.field_distance[1],
                    surveys=list(c.surveys),
                    non_detection=c.non_detection,
                    m_min=0.08,
                )
            )
            if list(self.field.bands) != self.bands:
                raise ValueError("field stars and YSOs must share the survey bands")
        self._g = self.bands.index("gaia_G") if "gaia_G" in self.bands else None
        unknown = [b for b in c.select_bands if b not in self.bands]
        if unknown:
            raise ValueError(f"select_bands: unknown {unknown}; the bands are {self.bands}")
        if c.min_detections > len(c.select_bands or self.bands):
            raise ValueError(
                f"min_detections={c.min_detections} is more than the "
                f"{len(c.select_bands or self.bands)} selection bands"
            )

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

    def expected_field(self, distance: float) -> float:
        """Expected number of Galactic stars (≥ 0.08 M_sun) in the cone between
        ``field_distance`` × ``distance``, before the catalogue selection."""
        if self.field is None:
            return 0.0
        c = self.config
        lo, hi = (f * distance for f in c.field_distance)
        gal, m_min = self.field.galaxy, self.field.config.m_min

        def total(d: float) -> float:
            return sum(gal.expected_counts(c.l, c.b, c.cone_deg, d, m_min).values()) if d else 0.0

        return max(total(hi) - total(lo), 0.0)

    def _field(
        self, tc: dict[str, float], n_members: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        c = self.config
        if c.contaminants == "galaxy":
            n = int(rng.poisson(self.expected_field(tc["distance"])))
        elif c.contaminants == "ratio":
            n = int(round(c.contaminant_ratio * n_members))
        else:
            n = 0
        z = np.zeros(0)
        empty = dict(teff=z, radius=z, distance=z, av=z, mags=np.zeros((0, len(self.bands))))
        if n == 0 or self.field is None:
            return empty
        lo, hi = (f * tc["distance"] for f in c.field_distance)
        got: list[dict[str, np.ndarray]] = []
        have, tries = 0, 0
        while have < n:
            tries += 1
            if tries > 200:
                raise RuntimeError(
                    f"yso_cluster: only {have} of {n} field stars between {lo:.0f} and "
                    f"{hi:.0f} pc fall on the isochrones and the {c.library} library"
                )
            th = self.field._candidates(max(4 * (n - have), 256), rng)
            keep = (th["distance"] >= lo) & (th["distance"] <= hi)
            th = {k: v[keep] for k, v in th.items()}
            got.append(th)
            have += int(keep.sum())
        th = {k: np.concatenate([g[k] for g in got])[:n] for k in got[0]}
        # behind the cluster is behind its cloud: the members' A_V distribution on top
        behind = th["distance"] > tc["distance"]
        cloud = tc["av"] + (rng.exponential(c.av_embedded, n) if c.av_embedded > 0 else 0.0)
        th["av"] = th["av"] + np.where(behind, cloud, 0.0)
        flux = self.field.sed.flux(
            th["teff"], th["logg"], th["feh"], th["radius"], th["distance"], th["av"], th["rv"]
        )
        mags = self.field.sed.magnitudes(flux)
        return dict(
            teff=th["teff"], radius=th["radius"], distance=th["distance"], av=th["av"], mags=mags
        )

    def cluster(
        self, rng: np.random.Generator, theta_c: dict[str, float] | None = None
    ) -> dict[str, Any]:
        """True parameters and noiseless magnitudes of one cluster's catalogue (shuffled)."""
        tc = theta_c or self.sample_cluster(rng)
        mem = self._members(tc, rng)
        fld = self._field(tc, len(mem["teff"]), rng)
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
            # a parallax wherever Gaia detects the source (its G is a detection)
            seen = observed[:, self._g] & ~upper[:, self._g] & np.isfinite(g)
            err = parallax_error_mas(np.where(seen, g, 21.0), self._plx_factor)
            plx = 1000.0 / distance + err * rng.standard_normal(len(err))
            out["astrometry"] = ObsBlock(
                np.where(seen, plx, np.nan)[:, None], err[:, None], seen[:, None], False
            )
        return out

    def _selected(self, obs: dict[str, ObsBlock]) -> np.ndarray:
        """Rows that enter the catalogue: detected (not a limit) in ``min_detections`` bands,
        members and contaminants alike."""
        ph = obs["photometry"]
        det = ph.observed & ~ph.upper_limit
        if self.config.select_bands:
            det = det[:, [self.bands.index(b) for b in self.config.select_bands]]
        return det.sum(axis=1) >= self.config.min_detections

    def _missing(self, obs: dict[str, ObsBlock], rng: np.random.Generator) -> None:
        if self.config.missing_prob > 0:
            for key in list(obs):
                b = obs[key]
                obs[key] = b.apply_missing(rng.random(b.values.shape) < self.config.missing_prob)

    def sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self(n, rng).theta

    def simulate(self, theta: np.ndarray, rng: np.random.Generator) -> dict[str, ObsBlock]:
        raise NotImplementedError(
            "yso_cluster simulates whole catalogues (members and field drawn together); use "
            "the simulator's __call__ (dasbi simulate) or .catalogue()"
        )

    def __call__(self, n: int, rng: np.random.Generator) -> SimOutput:
        rows: list[np.ndarray] = []
        blocks: list[dict[str, ObsBlock]] = []
        have = 0
        while have < n:
            cl = self.cluster(rng)
            obs = self._observe(cl["mags"], cl["distance"], rng)
            sel = self._selected(obs)
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
            rows.append(th[sel])
            blocks.append({key: b.take(sel) for key, b in obs.items()})
            have += int(sel.sum())
        theta = np.concatenate(rows)[:n]
        x = {
            key: ObsBlock(
                *(
                    np.concatenate([getattr(b[key], f) for b in blocks])[:n]
                    for f in ("values", "errors", "observed", "upper_limit")
                )
            )
            for key in blocks[0]
        }
        self._missing(x, rng)
        return SimOutput(theta=theta.astype(np.float32), x=x)

    def catalogue(self, rng: np.random.Generator, theta_c: dict[str, float] | None = None) -> Any:
        """One cluster's observed catalogue with the truth, as an astropy Table."""
        from astropy.table import Table

        cl = self.cluster(rng, theta_c)
        obs = self._observe(cl["mags"], cl["distance"], rng)
        sel = self._selected(obs)
        obs = {key: b.take(sel) for key, b in obs.items()}
        self._missing(obs, rng)
        t = Table()
        t["source_id"] = np.arange(int(sel.sum()))
        for k in ("member", "yso_class", "teff", "radius", "distance", "av"):
            t[f"true_{k}"] = cl[k][sel]
        observation_columns(t, obs, self.bands)
        t.meta.update({f"cluster_{k}": v for k, v in cl["theta_c"].items()})
        t.meta["cluster_members_drawn"] = int(cl["member"].sum())
        t.meta["field_stars_drawn"] = int((cl["member"] == 0).sum())
        return t

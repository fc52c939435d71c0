"""`dasbi bench simulate`: stars per second of the forward model against a synphot loop.

The timed pipeline is the one `dasbi simulate` runs for every star: SED interpolation in
the spectral library, dust (G23 with per-star R(V)), photometry in 15 bands and the Gaia XP
spectrum. The baseline runs the same stars one by one the usual way: the library spectrum,
``dust_extinction.G23(Rv).extinguish``, a ``synphot.SourceSpectrum`` and
``Observation.effstim("vegamag")`` per band (moved onto each survey's published zero point, as
dasbi's ``vega`` magnitudes are), and ``np.interp`` onto the XP grid. Both sides
use the same stars; the largest magnitude difference between them is reported too.

A second measurement runs ``dasbi simulate`` for ``rss_stars`` stars in a subprocess and
reports its peak resident memory.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import from_dict, param, to_dict
from . import register_bench

__all__ = ["SimulateBenchConfig", "bench_simulate"]

BANDS = [
    "gaia_G",
    "gaia_BP",
    "gaia_RP",
    "2mass_J",
    "2mass_H",
    "2mass_Ks",
    "wise_W1",
    "wise_W2",
    "wise_W3",
    "wise_W4",
    "irac_1",
    "irac_2",
    "irac_3",
    "irac_4",
    "mips_24",
]


@dataclass
class SimulateBenchConfig:
    """Settings of the simulate benchmark."""

    model: str = param("stars", help="stars (field stars) or yso (R17 YSO SEDs)")
    model_sets: list[str] = param(
        default_factory=lambda: ["s---s-i", "sp--s-i", "spubhmi"],
        help="YSO model sets timed with model=yso",
    )
    library: str = param("ck04", help="ck04 or planck")
    num_stars: int = param(100_000, ge=100, help="stars in the timed batch")
    repeats: int = param(3, ge=1, help="timed repetitions (the best is reported)")
    synphot_stars: int = param(20, ge=1, help="stars in the synphot loop")
    rss_stars: int = param(0, ge=0, help="stars for the peak-RSS run (0: skip)")
    rss_xp: bool = param(
        False, help="XP spectra in the RSS run too (343 pixels per star: ~27 GB at 1e7 stars)"
    )
    rss_dir: str | None = param(None, help="folder for the RSS run's file (default: a tmp dir)")
    threads: int = param(2, ge=1, help="torch threads")
    seed: int = param(0, ge=0)


def _pipeline(sim: Any, th: dict[str, np.ndarray]) -> tuple[np.ndarray, torch.Tensor]:
    flux = sim.sed.flux(
        th["teff"], th["logg"], th["feh"], th["radius"], th["distance"], th["av"], th["rv"]
    )
    mags = sim.sed.magnitudes(flux)
    xp = sim.sed.xp.convolve(flux)
    return mags, xp


def _survey_offsets(bands: list[str]) -> np.ndarray:
    """Survey Vega magnitude − synphot ``vegamag`` (CALSPEC Vega) per band: dasbi's ``vega``
    system sits on each survey's published zero point (simulators.bandpasses.ZERO_POINTS)."""
    from simulators.bandpasses import calspec_zero_point_jy, vega_zero_point_jy

    return np.array(
        [-2.5 * np.log10(calspec_zero_point_jy(b) / vega_zero_point_jy(b)) for b in bands]
    )


def _synphot_star(
    sim: Any, th: dict[str, np.ndarray], i: int, vega: Any, bandpasses: list[Any]
) -> np.ndarray:
    import astropy.units as u
    from dust_extinction.parameter_averages import G23
    from synphot import Observation, SourceSpectrum
    from synphot.models import Empirical1D

    from simulators.units import PC_CM, RSUN_CM

    lib = sim.sed.library
    wave = lib.wave_aa
    flux = lib.surface_flux([th["teff"][i]], [th["logg"][i]], [th["feh"][i]])[0].astype(float)
    flux *= (th["radius"][i] * RSUN_CM / (th["distance"][i] * PC_CM)) ** 2
    flux *= G23(Rv=float(th["rv"][i])).extinguish(wave * u.AA, Av=float(th["av"][i]))
    sp = SourceSpectrum(
        Empirical1D,
        points=wave * u.AA,
        lookup_table=flux * u.Unit("erg/(s cm2 AA)"),
        keep_neg=True,
    )
    mags = [
        Observation(sp, bp, force="taper").effstim("vegamag", vegaspec=vega).value
        for bp in bandpasses
    ]
    np.interp(sim.sed.xp.wave_nm * 10, wave, flux)
    return np.array(mags)


@register_bench("simulate")
def bench_simulate(
    quick: bool, options: dict[str, Any], progress: bool
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import astropy.units as u
    from synphot import SourceSpectrum, SpectralElement
    from synphot.models import Empirical1D

    from simulators.bandpasses import get_filter, vega_spectrum
    from simulators.stars import FieldStars

    if quick:
        options = {"num_stars": 5000, "repeats": 1, "synphot_stars": 5, **options}
    cfg = from_dict(SimulateBenchConfig, options)
    if cfg.model not in ("stars", "yso"):
        raise ValueError(f"unknown model {cfg.model!r} for bench simulate; valid: stars, yso")
    torch.set_num_threads(cfg.threads)
    if cfg.model == "yso":
        return to_dict(cfg), _bench_yso(cfg)
    sim = FieldStars(
        {"library": cfg.library, "xp": True, "rv_sigma": 0.3, "bands": {b: {} for b in BANDS}}
    )
    rng = np.random.default_rng(cfg.seed)
    parts: list[dict[str, np.ndarray]] = []
    while sum(len(p["teff"]) for p in parts) < cfg.num_stars:
        parts.append(sim._candidates(cfg.num_stars, rng))
    th = {k: np.concatenate([p[k] for p in parts])[: cfg.num_stars] for k in parts[0]}
    n = len(th["teff"])
    _pipeline(sim, {k: v[:100] for k, v in th.items()})  # warm-up
    best = np.inf
    for _ in range(cfg.repeats):
        t0 = time.perf_counter()
        mags, _ = _pipeline(sim, th)
        best = min(best, time.perf_counter() - t0)
    vw, vf = vega_spectrum()
    vega = SourceSpectrum(
        Empirical1D, points=vw * u.AA, lookup_table=vf * u.Unit("erg/(s cm2 AA)")
    )
    bps = []
    for b in BANDS:
        f = get_filter(b)
        bps.append(
            SpectralElement(Empirical1D, points=f.wave_aa * u.AA, lookup_table=f.transmission)
        )
    k = min(cfg.synphot_stars, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        ref = np.stack([_synphot_star(sim, th, i, vega, bps) for i in range(k)])
        loop_s = time.perf_counter() - t0
    ref = ref + _survey_offsets(BANDS)
    diff = float(np.nanmax(np.abs(ref - mags[:k])))
    dasbi_rate = n / best
    synphot_rate = k / loop_s
    results = [
        {
            "method": "dasbi",
            "stars": n,
            "seconds": round(best, 4),
            "stars_per_s": round(dasbi_rate, 1),
            "bands": len(BANDS),
            "xp_pixels": 343,
        },
        {
            "method": "synphot_loop",
            "stars": k,
            "seconds": round(loop_s, 4),
            "stars_per_s": round(synphot_rate, 3),
            "bands": len(BANDS),
            "xp_pixels": 343,
        },
        {
            "method": "ratio",
            "speedup": round(dasbi_rate / synphot_rate, 1),
            "max_abs_mag_difference": diff,
        },
    ]
    if cfg.rss_stars:
        results.append(_rss_run(cfg))
    return to_dict(cfg), results


def _synphot_mags(wave_aa: np.ndarray, flam: np.ndarray, vega: Any, bps: list[Any]) -> np.ndarray:
    import astropy.units as u
    from synphot import Observation, SourceSpectrum
    from synphot.models import Empirical1D

    sp = SourceSpectrum(
        Empirical1D, points=wave_aa * u.AA, lookup_table=flam * u.Unit("erg/(s cm2 AA)")
    )
    from synphot.exceptions import SynphotError

    out = []
    for bp in bps:
        try:
            out.append(Observation(sp, bp, force="taper").effstim("vegamag", vegaspec=vega).value)
        except SynphotError:  # no flux in the band (a deeply embedded source)
            out.append(np.nan)
    return np.array(out)


def _bench_yso(cfg: SimulateBenchConfig) -> list[dict[str, Any]]:
    """YSO SEDs with 15-band photometry per second, per model set, against a synphot loop.

    The timed batch is ``YSOSimulator.magnitudes`` on prior draws (SED model, distance,
    interstellar A_V and photometry); the loop evaluates the same model one object at a time
    and integrates each band with synphot's ``Observation.effstim``.
    """
    import astropy.units as u
    from synphot import SourceSpectrum, SpectralElement
    from synphot.models import Empirical1D

    from simulators.bandpasses import get_filter, vega_spectrum
    from simulators.yso import YSOSimulator

    vw, vf = vega_spectrum()
    vega = SourceSpectrum(
        Empirical1D, points=vw * u.AA, lookup_table=vf * u.Unit("erg/(s cm2 AA)")
    )
    bps = [
        SpectralElement(
            Empirical1D,
            points=get_filter(b).wave_aa * u.AA,
            lookup_table=get_filter(b).transmission,
        )
        for b in BANDS
    ]
    results: list[dict[str, Any]] = []
    for ms in cfg.model_sets:
        sim = YSOSimulator({"model_set": ms, "library": cfg.library})
        rng = np.random.default_rng(cfg.seed)
        theta = sim.sample_prior(cfg.num_stars, rng)
        sim.magnitudes(theta[:100])  # warm-up
        best = np.inf
        for _ in range(cfg.repeats):
            t0 = time.perf_counter()
            mags = sim.magnitudes(theta)
            best = min(best, time.perf_counter() - t0)
        k = min(cfg.synphot_stars, len(theta))
        names = sim.theta_names
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            ref = []
            for i in range(k):
                th = {n: theta[i : i + 1, j] for j, n in enumerate(names)}
                flam = sim.model.sed(th, th["distance"], th["av"]).double().numpy()[0]
                ref.append(_synphot_mags(sim.model.wave_aa, flam, vega, bps))
            loop_s = time.perf_counter() - t0
        ref_a = np.array(ref) + _survey_offsets(BANDS)
        ok = np.isfinite(ref_a) & np.isfinite(mags[:k]) & (ref_a < 30)
        rate, loop_rate = len(theta) / best, k / loop_s
        results.append(
            {
                "method": "dasbi",
                "model_set": ms,
                "seds": len(theta),
                "seconds": round(best, 4),
                "seds_per_s": round(rate, 1),
                "bands": len(BANDS),
            }
        )
        results.append(
            {
                "method": "synphot_loop",
                "model_set": ms,
                "seds": k,
                "seconds": round(loop_s, 4),
                "seds_per_s": round(loop_rate, 3),
            }
        )
        results.append(
            {
                "method": "ratio",
                "model_set": ms,
                "speedup": round(rate / loop_rate, 1),
                "max_abs_mag_difference": float(np.max(np.abs(ref_a - mags[:k])[ok])),
            }
        )
    return results


def _rss_run(cfg: SimulateBenchConfig) -> dict[str, Any]:
    """Peak RSS of `dasbi simulate` for rss_stars field stars (in a child process)."""
    with tempfile.TemporaryDirectory(dir=cfg.rss_dir) as tmp:
        out = Path(tmp) / "rss.h5"
        cmd = [
            sys.executable,
            "-m",
            "dasbi.cli",
            "simulate",
            "--simulator",
            "field_stars",
            "--num",
            str(cfg.rss_stars),
            "--chunk-size",
            "20000",
            "--quiet",
            "--set",
            f"simulator.library={cfg.library}",
            "--set",
            f"simulator.xp={str(cfg.rss_xp).lower()}",
            "--out",
            str(out),
        ]
        t0 = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        subprocess.run(cmd, check=True, capture_output=True)
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        return {
            "method": "dasbi simulate",
            "stars": cfg.rss_stars,
            "seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_mb": round(max(peak_kb, before) / 1024, 1),
            "file_mb": round(out.stat().st_size / 2**20, 1),
            "xp": cfg.rss_xp,
            "chunk_size": 20000,
        }

"""`dasbi bench photospheres`: stellar photospheres against published colours and real stars.

For each photosphere library (``phoenix``: CK04 mangled to PHOENIX v2 band fluxes,
``phoenix_pm13``: the same with the empirical calibration to Mamajek's mean dwarf colours,
``ck04`` continued below 3500 K by B_λ(T)/B_λ(3500 K) as the YSO model does, ``planck``):

1. **Dwarf sequence.** V-Ks, J-H, H-Ks and Ks-W1 at log g 5 against the mean dwarf colours of
   Pecaut & Mamajek (2013; E. Mamajek's table, version 2018.08.02), K5V-M6V.
2. **Real discless young stars.** Class III members of Corona Australis with A_V < ``av_max``
   (``real/yso/CrA/cra_members_dev.csv``: Esplin & Luhman 2022, Gaia DR3, 2MASS, WISE),
   modelled at their spectral-type T_eff (Herczeg & Hillenbrand 2014 scale), log g 4 (and,
   for ``phoenix@bhac15`` and ``phoenix_pm13@bhac15``, the log g of the BHAC15 star of that
   T_eff), solar metallicity, reddened by their published A_V through G23 on the spectrum:
   median and robust scatter of observed - model in BP-RP, G-J, J-H, H-Ks, Ks-W1 and W1-W2
   per T_eff range.
   Also the IC 348 and NGC 1333 members of Luhman et al. (2016) in J, H, Ks at their
   spectral-type T_eff, BHAC15 gravity and published A_V, by disc type and A_V range, and the
   A_V that J−H alone gives at the true T_eff against the published one.
   And the SED shape, band by band from Gaia to WISE, of the discless K5-M6 members with a
   published A_V above 0 (each star's residuals shifted to a median of 0 over J, H, Ks), at
   the spectral-type T_eff shifted by ``teff_shifts`` and on the Luhman (2003) scale: which
   T_eff scale the PHOENIX SEDs of real young M stars agree with.
3. **Gaia DR3 against DR2 passbands** (the band-flux tables hold DR2): G, BP, RP and BP-RP of
   the ``phoenix`` spectra through both sets of curves, per T_eff.
   Also BP-RP of the ``phoenix`` spectra at log g 3-5 (young late-M stars have log g 3-4).
4. **Extinction at a band's pivot wavelength** (what band-flux tables can do) against the
   spectrum extinguished through the filter curve, per T_eff, A_V and band.

A figure (``photospheres_members.png``) draws the real members' colour residuals.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import from_dict, param, to_dict
from . import register_bench

__all__ = ["MAMAJEK_DWARFS", "PhotosphereBenchConfig", "bench_photospheres"]

#: Pecaut & Mamajek (2013) mean dwarf colours (E. Mamajek's table, version 2018.08.02):
#: spectral type → (T_eff, V-Ks, J-H, H-Ks, Ks-W1); NaN where the table has no value
MAMAJEK_DWARFS: dict[str, tuple[float, float, float, float, float]] = {
    "K5V": (4410.0, 2.883, 0.568, 0.132, 0.042),
    "K7V": (4070.0, 3.330, 0.617, 0.162, 0.057),
    "M0V": (3870.0, 3.680, 0.626, 0.193, 0.122),
    "M1V": (3700.0, 4.02, 0.613, 0.225, 0.137),
    "M2V": (3550.0, 4.24, 0.600, 0.234, 0.110),
    "M3V": (3410.0, 4.60, 0.579, 0.252, 0.122),
    "M3.5V": (3250.0, 5.00, 0.558, 0.269, 0.132),
    "M4V": (3200.0, 5.25, 0.557, 0.282, 0.139),
    "M5V": (3030.0, 5.94, 0.580, 0.311, np.nan),
    "M6V": (2850.0, 7.30, 0.605, 0.352, np.nan),
}
#: photosphere libraries the bench knows (``phoenix_pm13``: with the dwarf-colour calibration)
LIBRARIES = ("phoenix", "phoenix_pm13", "ck04", "planck")
_CRA_BANDS = {
    "gaia_BP": "gaia_bp",
    "gaia_RP": "gaia_rp",
    "gaia_G": "gaia_g",
    "2mass_J": "j",
    "2mass_H": "h",
    "2mass_Ks": "ks",
    "wise_W1": "w1",
    "wise_W2": "w2",
}
_COLOURS = [
    ("BP-RP", "gaia_BP", "gaia_RP"),
    ("G-J", "gaia_G", "2mass_J"),
    ("J-H", "2mass_J", "2mass_H"),
    ("H-Ks", "2mass_H", "2mass_Ks"),
    ("Ks-W1", "2mass_Ks", "wise_W1"),
    ("W1-W2", "wise_W1", "wise_W2"),
]


@dataclass
class PhotosphereBenchConfig:
    """Settings of the photosphere check."""

    libraries: list[str] = param(
        default_factory=lambda: ["phoenix", "phoenix_pm13", "ck04", "planck"],
        help=", ".join(LIBRARIES),
    )
    av_max: float = param(2.0, ge=0.0, help="largest published A_V of the discless members")
    teff_bins: list[float] = param(
        default_factory=lambda: [2300.0, 3000.0, 3300.0, 3600.0, 3900.0, 4500.0],
        help="T_eff bin edges [K] of the member residuals",
    )
    av_grid: list[float] = param(default_factory=lambda: [1.0, 5.0, 10.0], help="A_V [mag]")
    teff_shifts: list[float] = param(
        default_factory=lambda: [0.0, 100.0, 150.0, 200.0],
        help="T_eff shifts [K] of the SED-shape check (added to the spectral-type T_eff)",
    )
    member_ages_myr: list[float] = param(
        default_factory=lambda: [1.0, 15.0],
        help="ages of the 'phoenix@bhac15' member models: log g of the BHAC15 star of each "
        "T_eff at the geometric mean age (what the YSO simulator's photosphere_logg does)",
    )


@functools.cache
def _library(name: str) -> Any:
    """One instance per library for the whole run (the PHOENIX fit takes a second or two)."""
    from simulators.spectra import MangledLibrary, PlanckLibrary

    if name in ("phoenix", "ck04"):
        return MangledLibrary()  # ck04: its base spectra
    if name == "phoenix_pm13":
        return MangledLibrary(calibration="pm13")
    if name == "planck":
        return PlanckLibrary(wave_range_aa=(2500.0, 320_000.0))
    raise ValueError(f"unknown library {name!r}; valid: {', '.join(LIBRARIES)}")


def _library_flux(
    name: str, teff: np.ndarray, logg: float | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Surface F_λ of a library at (teff, logg, [Fe/H] = 0); ck04 is Planck-continued below
    3500 K, as the YSO model and the PHOENIX base do."""
    teff = np.asarray(teff, float)
    lib = _library(name)
    args = (teff, np.broadcast_to(np.asarray(logg, float), teff.shape), np.zeros(len(teff)))
    if name == "ck04":
        return lib.wave_aa, lib.base_flux(*args)
    return lib.wave_aa, lib.surface_flux(*args).astype(float)


def _luhman_residuals(cfg: PhotosphereBenchConfig) -> list[dict[str, Any]]:
    """Observed − model J−H and H−Ks of the IC 348 and NGC 1333 members (Luhman et al. 2016)
    at their spectral-type T_eff, BHAC15 gravity and published A_V (A_J / 0.274, G23), by
    disc type and A_V range, and the A_V that J−H alone would give at the true T_eff minus
    the published one (class III)."""
    from simulators.bandpasses import Photometry
    from simulators.dust import ExtinctionCurve
    from simulators.priors import isochrone_logg

    from .yso_real import truth_luhman

    table, tr = truth_luhman()

    def col(name: str) -> np.ndarray:
        c = table[name]
        return np.asarray(c.filled(np.nan) if hasattr(c, "filled") else c, float)

    j, h, k = col("Jmag"), col("Hmag"), col("Ksmag")
    teff, av, disc, spt = tr["teff"], tr["av"], tr["disc"], tr["spt_num"]
    ok = np.isfinite(j + h + k + teff + av) & (spt >= -5) & (spt <= 6)
    lg = isochrone_logg(teff[ok], tuple(cfg.member_ages_myr))  # type: ignore[arg-type]
    wave, f = _library_flux("phoenix", teff[ok], lg)
    a = np.ravel(ExtinctionCurve("G23", wave).a_over_av(3.1))
    ph = Photometry(["2mass_J", "2mass_H", "2mass_Ks"], wave)
    m0 = ph.magnitudes(f)
    m = ph.magnitudes(f * 10 ** (-0.4 * av[ok][:, None] * a))
    rjh = (j[ok] - h[ok]) - (m[:, 0] - m[:, 1])
    rhk = (h[ok] - k[ok]) - (m[:, 1] - m[:, 2])
    ejh = np.median(((m[:, 0] - m[:, 1]) - (m0[:, 0] - m0[:, 1]))[av[ok] > 1] / av[ok][av[ok] > 1])
    out: list[dict[str, Any]] = []
    for lab in ("III", "disc"):
        for lo, hi in ((0.0, 2.0), (2.0, 5.0), (5.0, 10.0), (10.0, 40.0), (0.0, 40.0)):
            sel = (disc[ok] == lab) & (av[ok] >= lo) & (av[ok] < hi)
            for colour, r in (("J-H", rjh), ("H-Ks", rhk)):
                out.append(
                    {
                        "check": "luhman_members",
                        "library": "phoenix@bhac15",
                        "disc": lab,
                        "av_range": [lo, hi],
                        "colour": colour,
                        **_robust(r[sel]),
                    }
                )
    iii = disc[ok] == "III"
    d_av = (j[ok] - h[ok] - (m0[:, 0] - m0[:, 1]))[iii] / ejh - av[ok][iii]
    out.append(
        {
            "check": "luhman_av_from_jh",
            "library": "phoenix@bhac15",
            "e_jh_over_av": round(float(ejh), 4),
            **_robust(d_av),
        }
    )
    return out


def _sed_shape(cfg: PhotosphereBenchConfig, s: Any, obs: np.ndarray, names: list[str]) -> list:
    """Observed − model per band of the discless K5-M6 members with a published A_V above 0
    (labels clipped to 0 are limits), each star's residuals shifted so that its J, H, Ks
    residuals have median 0 (radius and distance drop out): the SED shape, from Gaia to
    WISE, at the spectral-type T_eff + ``teff_shifts`` and on the Luhman (2003) scale,
    PHOENIX at BHAC15 gravity reddened by the published A_V through G23."""
    from simulators.bandpasses import Photometry
    from simulators.dust import ExtinctionCurve
    from simulators.priors import isochrone_logg

    spt = s.spt_num.to_numpy(float)
    keep = (spt >= -5) & (spt <= 6) & (s.a_v.to_numpy(float) > 0)
    nir = [names.index(b) for b in ("2mass_J", "2mass_H", "2mass_Ks")]
    av = s.a_v.to_numpy(float)[keep]
    scales = {f"{d:+.0f} K": s.teff_spt.to_numpy(float)[keep] + d for d in cfg.teff_shifts}
    scales["luhman2003"] = s.teff_spt_l03.to_numpy(float)[keep]
    out: list[dict[str, Any]] = []
    for scale, teff in scales.items():
        ok = np.isfinite(teff)
        lg = isochrone_logg(teff[ok], tuple(cfg.member_ages_myr))  # type: ignore[arg-type]
        wave, f = _library_flux("phoenix", teff[ok], lg)
        a = np.ravel(ExtinctionCurve("G23", wave).a_over_av(3.1))
        m = Photometry(names, wave).magnitudes(f * 10 ** (-0.4 * av[ok][:, None] * a))
        r = obs[keep][ok] - m
        r -= np.nanmedian(r[:, nir], axis=1, keepdims=True)
        for j, band in enumerate(names):
            out.append(
                {
                    "check": "cra_sed_shape",
                    "library": "phoenix@bhac15",
                    "teff_scale": scale,
                    "band": band,
                    **_robust(r[:, j]),
                }
            )
    return out


def _robust(d: np.ndarray) -> dict[str, float]:
    d = d[np.isfinite(d)]
    if not len(d):
        return {"n": 0, "median": float("nan"), "robust_scatter": float("nan")}
    med = float(np.median(d))
    return {
        "n": int(len(d)),
        "median": round(med, 4),
        "robust_scatter": round(float(1.4826 * np.median(np.abs(d - med))), 4),
    }


@register_bench("photospheres")
def bench_photospheres(
    quick: bool, options: dict[str, Any], progress: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    import pandas as pd

    from simulators.bandpasses import Photometry, pivot_wavelength
    from simulators.data import find_data
    from simulators.dust import ExtinctionCurve

    cfg = from_dict(PhotosphereBenchConfig, options)
    for name in cfg.libraries:
        if name not in LIBRARIES:
            raise ValueError(f"libraries: unknown {name!r}; valid: {', '.join(LIBRARIES)}")
    results: list[dict[str, Any]] = []
    # 1. dwarf sequence
    spt = list(MAMAJEK_DWARFS)
    ref = np.array([MAMAJEK_DWARFS[s] for s in spt])
    bands = ["GROUND_JOHNSON_V", "2mass_J", "2mass_H", "2mass_Ks", "wise_W1"]
    systems = ["calspec", "vega", "vega", "vega", "vega"]
    for name in cfg.libraries:
        wave, f = _library_flux(name, ref[:, 0], 5.0)
        m = Photometry(bands, wave, system=systems).magnitudes(f)
        model = {
            "V-Ks": m[:, 0] - m[:, 3],
            "J-H": m[:, 1] - m[:, 2],
            "H-Ks": m[:, 2] - m[:, 3],
            "Ks-W1": m[:, 3] - m[:, 4],
        }
        for k, s in enumerate(spt):
            for c, colour in enumerate(model):
                if np.isfinite(ref[k, c + 1]):
                    results.append(
                        {
                            "check": "dwarf_sequence",
                            "library": name,
                            "spt": s,
                            "teff": ref[k, 0],
                            "colour": colour,
                            "model": round(float(model[colour][k]), 4),
                            "reference": ref[k, c + 1],
                            "residual": round(float(model[colour][k] - ref[k, c + 1]), 4),
                        }
                    )
    # 2. real discless members
    d = pd.read_csv(find_data("real/yso/CrA/cra_members_dev.csv"))
    s = d[(d.disk_type == "III") & (d.a_v < cfg.av_max) & d.teff_spt.notna()]
    teff, av = s.teff_spt.to_numpy(float), s.a_v.to_numpy(float)
    obs = s[list(_CRA_BANDS.values())].to_numpy(float)
    names = list(_CRA_BANDS)
    members: dict[str, dict[str, np.ndarray]] = {}
    member_models = list(cfg.libraries)
    member_models += [f"{n}@bhac15" for n in cfg.libraries if n.startswith("phoenix")]
    for name in member_models:
        if name.endswith("@bhac15"):
            from simulators.priors import isochrone_logg

            lg = isochrone_logg(teff, tuple(cfg.member_ages_myr))  # type: ignore[arg-type]
            wave, f = _library_flux(name.split("@")[0], teff, lg)
        else:
            wave, f = _library_flux(name, teff, 4.0)
        a = np.ravel(ExtinctionCurve("G23", wave).a_over_av(3.1))
        m = Photometry(names, wave).magnitudes(f * 10 ** (-0.4 * av[:, None] * a))
        members[name] = {}
        for colour, b1, b2 in _COLOURS:
            i, j = names.index(b1), names.index(b2)
            r = (obs[:, i] - obs[:, j]) - (m[:, i] - m[:, j])
            members[name][colour] = r
            for lo, hi in zip(cfg.teff_bins[:-1], cfg.teff_bins[1:], strict=True):
                sel = (teff >= lo) & (teff < hi)
                results.append(
                    {
                        "check": "cra_discless",
                        "library": name,
                        "teff_range": [lo, hi],
                        "colour": colour,
                        **_robust(r[sel]),
                    }
                )
    # 2a. the SED shape of the same members, band by band, at shifted T_eff scales
    if "phoenix" in cfg.libraries:
        results += _sed_shape(cfg, s, obs, names)
    # 2b. IC 348 / NGC 1333 members (J, H, Ks) at their published T_eff and A_V
    if "phoenix" in cfg.libraries:
        results += _luhman_residuals(cfg)
    # 3. Gaia DR3 against DR2 passbands, on the phoenix spectra
    grid = np.array([2400.0, 2700.0, 3000.0, 3300.0, 3600.0, 4000.0, 5000.0, 6000.0])
    wave, f = _library_flux("phoenix", grid, 4.0)
    m3 = Photometry(["gaia_G", "gaia_BP", "gaia_RP"], wave, system="calspec").magnitudes(f)
    m2 = Photometry(["gaiadr2_G", "gaiadr2_BP", "gaiadr2_RP"], wave, system="calspec")
    m2 = m2.magnitudes(f)
    for k, t in enumerate(grid):
        delta = m3[k] - m2[k]
        results.append(
            {
                "check": "dr3_minus_dr2",
                "teff": t,
                "G": round(float(delta[0]), 4),
                "BP": round(float(delta[1]), 4),
                "RP": round(float(delta[2]), 4),
                "BP-RP": round(float(delta[1] - delta[2]), 4),
            }
        )
    # 3b. gravity: young late-M stars have log g 3-4
    for g in (3.0, 3.5, 4.0, 4.5, 5.0):
        wg, fg = _library_flux("phoenix", np.array([2800.0, 3000.0, 3300.0]), g)
        mg = Photometry(["gaia_BP", "gaia_RP"], wg).magnitudes(fg)
        for t, c in zip((2800.0, 3000.0, 3300.0), mg[:, 0] - mg[:, 1], strict=True):
            results.append(
                {
                    "check": "logg_bp_rp",
                    "library": "phoenix",
                    "teff": t,
                    "logg": g,
                    "bp_rp": round(float(c), 4),
                }
            )
    # 4. extinction at the pivot wavelength against the spectrum through the curve
    ext_bands = ["gaia_G", "gaia_BP", "gaia_RP", "2mass_J", "2mass_Ks", "wise_W1"]
    a = np.ravel(ExtinctionCurve("G23", wave).a_over_av(3.1))
    piv = np.array([pivot_wavelength(b) for b in ext_bands])
    a_piv = np.ravel(ExtinctionCurve("G23", piv).a_over_av(3.1))
    ph = Photometry(ext_bands, wave)
    m0 = ph.magnitudes(f)
    for av_k in cfg.av_grid:
        true = ph.magnitudes(f * 10 ** (-0.4 * av_k * a)) - m0
        for k, t in enumerate(grid):
            for j, b in enumerate(ext_bands):
                results.append(
                    {
                        "check": "pivot_extinction",
                        "teff": t,
                        "av": av_k,
                        "band": b,
                        "a_band_true": round(float(true[k, j]), 4),
                        "a_band_pivot": round(float(av_k * a_piv[j]), 4),
                        "error": round(float(av_k * a_piv[j] - true[k, j]), 4),
                    }
                )
    extra = {
        "members": int(len(s)),
        "summary_table": _table(results, cfg.libraries, member_models),
        "figures": {"members": _figure(members, teff)},
    }
    return to_dict(cfg), results, extra


def _table(results: list[dict[str, Any]], libraries: list[str], member_models: list[str]) -> str:
    lines = ["Discless CrA members (median observed - model, mag; n stars):", ""]
    head = "| T_eff range | colour | " + " | ".join(member_models) + " |"
    lines += [head, "|" + "---|" * (2 + len(member_models))]
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for r in results:
        if r["check"] == "cra_discless" and r["n"]:
            key = (f"{r['teff_range'][0]:.0f}-{r['teff_range'][1]:.0f}", r["colour"])
            rows.setdefault(key, {})[r["library"]] = f"{r['median']:+.3f} ({r['n']})"
    for (rng, colour), v in rows.items():
        cells = " | ".join(v.get(k, "") for k in member_models)
        lines.append(f"| {rng} | {colour} | {cells} |")
    shape = [r for r in results if r["check"] == "cra_sed_shape"]
    if shape:
        bands = list(dict.fromkeys(r["band"] for r in shape))
        lines += ["", "SED shape of discless K5-M6 CrA members with A_V > 0 (observed - model,"]
        lines += ["median over stars, each star's J/H/Ks residuals at median 0; phoenix@bhac15):"]
        lines += ["", "| T_eff scale | n | " + " | ".join(bands) + " |"]
        lines += ["|" + "---|" * (2 + len(bands))]
        for scale in dict.fromkeys(r["teff_scale"] for r in shape):
            row = {r["band"]: r for r in shape if r["teff_scale"] == scale}
            cells = " | ".join(f"{row[b]['median']:+.3f}" for b in bands)
            lines.append(f"| {scale} | {row[bands[0]]['n']} | {cells} |")
    lines += ["", "Dwarf sequence (Pecaut & Mamajek 2013), max |model - reference| [mag]:", ""]
    lines += ["| colour | " + " | ".join(libraries) + " |", "|" + "---|" * (1 + len(libraries))]
    for colour in ("V-Ks", "J-H", "H-Ks", "Ks-W1"):
        cells = []
        for lib in libraries:
            res = [
                abs(r["residual"])
                for r in results
                if r["check"] == "dwarf_sequence" and r["library"] == lib and r["colour"] == colour
            ]
            cells.append(f"{max(res):.3f}" if res else "")
        lines.append(f"| {colour} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _figure(members: dict[str, dict[str, np.ndarray]], teff: np.ndarray) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = [c for c, _, _ in _COLOURS]
    fig, axes = plt.subplots(1, len(colours), figsize=(3.2 * len(colours), 3.4), sharex=True)
    for ax, colour in zip(axes, colours, strict=True):
        for k, (name, res) in enumerate(members.items()):
            ax.scatter(teff, res[colour], s=7, alpha=0.6, color=f"C{k}", label=name)
        ax.axhline(0, color="k", lw=0.8)
        ax.set(title=colour, xlabel="T_eff (spectral type) [K]", ylim=(-1.5, 1.5))
    axes[0].set_ylabel("observed - model [mag]")
    axes[0].legend(fontsize=8, markerscale=2)
    fig.suptitle("Discless Corona Australis members, A_V < 2, dereddened spectrally (G23)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()

"""Validation figures of the stellar forward model against real data and between libraries.

``python -m simulators.validation OUT_DIR`` writes:

* ``cmd_ccd_young_clusters.png``: simulated young cluster members (BHAC15 isochrones at
  1-3 Myr, 300 pc, A_V uniform in 0-10 mag, CK04 atmospheres with T_eff clipped at the grid's
  3500 K edge, G23 dust) in J-H vs H-Ks and Ks vs J-Ks, next to the members of IC 348 and
  NGC 1333 of Luhman et al. (2016);
* ``kurucz_vs_ck04.png``: the G, BP-RP and J-Ks differences between the Kurucz and CK04
  band-flux tables across the (T_eff, log g) plane at [Fe/H] = 0 — the size of the
  atmosphere-model misspecification that dasbi's domain adaptation has to absorb.

Each function returns the numbers it plotted, so tests can check them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from .data import find_data

__all__ = [
    "kurucz_vs_ck04",
    "luhman2016_members",
    "rebull2015_ysos",
    "simulate_young_cluster",
    "simulate_ysos",
    "yso_colour_coverage",
    "yso_figure",
]


def luhman2016_members() -> dict[str, np.ndarray]:
    """J, H, Ks and A_J of the IC 348 and NGC 1333 members (Luhman et al. 2016)."""
    from astropy.table import Table, vstack

    tables = []
    for rel in (
        "IC348/Luhman2016_Table1_apjaa2cabt1_mrt.txt",
        "NGC1333/Luhman2016_Table2_apjaa2cabt1_mrt.txt",
    ):
        t = Table.read(find_data(f"real/yso/{rel}"), format="ascii.mrt")
        tables.append(t["Jmag", "Hmag", "Ksmag", "Aj"])
    t = vstack(tables)
    return {
        c: np.asarray(t[c].filled(np.nan) if hasattr(t[c], "filled") else t[c], float)
        for c in ("Jmag", "Hmag", "Ksmag", "Aj")
    }


def simulate_young_cluster(
    n: int = 3000, distance_pc: float = 300.0, rng: np.random.Generator | None = None
) -> dict[str, np.ndarray]:
    """J, H, Ks of young cluster members (see the module docstring)."""
    from .bandpasses import Photometry
    from .dust import ExtinctionCurve
    from .galaxy import sample_imf
    from .isochrones import IsochroneGrid
    from .spectra import CK04Library

    rng = rng or np.random.default_rng(0)
    iso = IsochroneGrid("bhac15")
    mass = sample_imf(((0.5, 1.3), (1.4, 2.3)), n, rng, m_lo=0.02, m_hi=1.4)
    age = np.log10(rng.uniform(1e6, 3e6, n))
    p = iso.interpolate(mass, age, np.zeros(n))
    ok = np.isfinite(p["teff"])
    lib = CK04Library(out_of_grid="clip")
    flux = lib.observed_flux(
        np.maximum(p["teff"][ok], 3500.0), p["logg"][ok], 0.0, p["radius"][ok], distance_pc
    )
    av = rng.uniform(0.0, 10.0, ok.sum())
    a = ExtinctionCurve("G23", lib.wave_aa).a_lambda(av).numpy()
    mags = Photometry(["2mass_J", "2mass_H", "2mass_Ks"], lib.wave_aa).magnitudes(
        flux * 10 ** (-0.4 * a)
    )
    return {"J": mags[:, 0], "H": mags[:, 1], "Ks": mags[:, 2], "av": av, "teff": p["teff"][ok]}


def kurucz_vs_ck04(
    bands: tuple[str, ...] = (
        "GaiaDR2v2_G",
        "GaiaDR2v2_BP",
        "GaiaDR2v2_RP",
        "2MASS_J",
        "2MASS_Ks",
    ),
) -> dict[str, np.ndarray]:
    """Magnitude differences Kurucz - CK04 on their common grid points at [Fe/H] = 0."""
    import pandas as pd

    a = pd.read_csv(find_data("atmospheres/bandflux/Kurucz_DF.csv"))
    b = pd.read_csv(find_data("atmospheres/bandflux/CK04_DF.csv"))
    m = a.merge(b, on=["logg", "teff", "feh"], suffixes=("_k", "_c"))
    m = m[(m.feh == 0.0)]
    out: dict[str, np.ndarray] = {"teff": m.teff.to_numpy(float), "logg": m.logg.to_numpy(float)}
    for band in bands:
        with np.errstate(divide="ignore", invalid="ignore"):
            out[band] = -2.5 * np.log10(
                m[f"{band}_k"].to_numpy(float) / m[f"{band}_c"].to_numpy(float)
            )
    return out


YSO_SETS = ("s---s-i", "sp--s-i", "sp--h-i", "spu-smi", "spubsmi", "spubhmi")
IRAC = ("irac_1", "irac_2", "irac_3", "irac_4")


def rebull2015_ysos() -> dict[str, np.ndarray]:
    """K, IRAC 1-4 and MIPS 24 µm of the NGC 1333 YSOs of Rebull et al. (2015) and their class.

    Magnitudes that are limits (``l_*`` flags) or absent are NaN.
    """
    from astropy.table import Table

    t = Table.read(find_data("real/yso/NGC1333/Rebull_2015AJ_150_17R_table1.fit"), hdu=1)
    cls = np.char.strip(
        np.asarray(t["cl1"].filled("") if hasattr(t["cl1"], "filled") else t["cl1"]).astype(str)
    )
    keep = np.isin(cls, ["I", "flat", "II", "III"])
    out: dict[str, np.ndarray] = {"class": cls[keep]}
    for name, col in (
        ("Ks", "Kmag"),
        ("irac_1", "__3_6_"),
        ("irac_2", "__4_5_"),
        ("irac_3", "__5_8_"),
        ("irac_4", "__8_0_"),
        ("mips_24", "__24_"),
    ):
        v = t[col]
        v = np.asarray(v.filled(np.nan) if hasattr(v, "filled") else v, float)
        lim = t["l_" + (col[1:] if col.startswith("__") else col)]
        lim = np.char.strip(
            np.asarray(lim.filled("") if hasattr(lim, "filled") else lim).astype(str)
        )
        out[name] = np.where(lim == "", v, np.nan)[keep]
    return out


def simulate_ysos(
    n_per_set: int = 4000, distance_pc: float = 300.0, seed: int = 0, library: str = "ck04"
) -> dict[str, np.ndarray]:
    """Observed (noisy) Ks, IRAC and MIPS 24 of YSOs from several R17 sets at NGC 1333's distance.

    Stars at 300 pc ± 10% (Ortiz-León et al. 2018) behind A_V 0-20 mag, in a 3-arcsec
    aperture, with 2MASS and Spitzer c2d noise and depths; non-detections are NaN.
    """
    from .yso import YSOSimulator

    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {}
    for k, ms in enumerate(YSO_SETS):
        sim = YSOSimulator(
            {
                "model_set": ms,
                "library": library,
                "distance": [0.9 * distance_pc, 1.1 * distance_pc],
                "av": [0.0, 20.0],
                "aperture_arcsec": 3.0,
                "surveys": ["2mass", "spitzer_c2d"],
            }
        )
        theta = sim.sample_prior(n_per_set, rng)
        x = sim.simulate(theta, rng)["photometry"]
        vals = np.where(x.observed & ~x.upper_limit, x.values, np.nan)
        for b in ("2mass_Ks", *IRAC, "mips_24"):
            out.setdefault("Ks" if b == "2mass_Ks" else b, []).append(vals[:, sim.bands.index(b)])
        out.setdefault("set", []).append(np.full(n_per_set, k))
    return {k: np.concatenate(v) for k, v in out.items()}


def _support_fraction(
    sim_xy: np.ndarray, real_xy: np.ndarray, step: float = 0.1, min_count: int = 2
) -> float:
    """Fraction of real points in cells (step mag, dilated by one cell) holding ≥ min_count
    simulated points."""
    sim_xy = sim_xy[np.all(np.isfinite(sim_xy), 1)]
    real_xy = real_xy[np.all(np.isfinite(real_xy), 1)]
    if len(real_xy) == 0:
        return float("nan")
    cells: dict[tuple[int, ...], int] = {}
    for c in map(tuple, np.floor(sim_xy / step).astype(int)):
        cells[c] = cells.get(c, 0) + 1
    occupied = {c for c, k in cells.items() if k >= min_count}
    offsets = np.stack(np.meshgrid(*[[-1, 0, 1]] * sim_xy.shape[1]), -1).reshape(
        -1, sim_xy.shape[1]
    )
    inside = 0
    for c in np.floor(real_xy / step).astype(int):
        inside += any(tuple(c + o) in occupied for o in offsets)
    return inside / len(real_xy)


def yso_colour_coverage(sim: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """How much of the real NGC 1333 YSO colour space the simulated YSOs cover.

    Returns the fraction of Rebull et al. (2015) Class I/flat/II/III YSOs inside the simulated
    support of the IRAC colour-colour plane ([3.6]-[4.5] vs [5.8]-[8.0], 0.1 mag cells) and of
    K-[24] (1-D, 0.1 mag cells), with the counts.
    """
    sim = sim or simulate_ysos()
    real = rebull2015_ysos()
    cc = lambda d: np.stack([d["irac_3"] - d["irac_4"], d["irac_1"] - d["irac_2"]], 1)  # noqa: E731
    k24 = lambda d: (d["Ks"] - d["mips_24"])[:, None]  # noqa: E731
    return {
        "irac_cc_fraction": _support_fraction(cc(sim), cc(real)),
        "irac_cc_n_real": int(np.all(np.isfinite(cc(real)), 1).sum()),
        "k24_fraction": _support_fraction(k24(sim), k24(real)),
        "k24_n_real": int(np.isfinite(k24(real)).sum()),
        "n_sim": len(sim["Ks"]),
    }


def yso_figure(out_dir: str | Path, sim: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """``yso_ngc1333.png``: simulated YSO colours against the NGC 1333 YSOs of Rebull+2015."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .yso import spectral_index

    sim = sim or simulate_ysos()
    real = rebull2015_ysos()
    cov = yso_colour_coverage(sim)
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.6))
    ax[0].scatter(
        sim["irac_3"] - sim["irac_4"],
        sim["irac_1"] - sim["irac_2"],
        s=1,
        c="0.7",
        rasterized=True,
        label="simulated (6 R17 sets)",
    )
    colours = {"I": "C3", "flat": "C1", "II": "C2", "III": "C0"}
    for c, col in colours.items():
        m = real["class"] == c
        ax[0].scatter(
            real["irac_3"][m] - real["irac_4"][m],
            real["irac_1"][m] - real["irac_2"][m],
            s=10,
            c=col,
            label=f"Class {c}",
        )
    ax[0].set_xlabel("[5.8] - [8.0]")
    ax[0].set_ylabel("[3.6] - [4.5]")
    ax[0].set_xlim(-1, 3.5)
    ax[0].set_ylim(-1, 3.5)
    ax[0].legend(fontsize=7, loc="upper left")
    ax[0].set_title(
        f"IRAC colours: {cov['irac_cc_fraction']:.0%} of real YSOs inside the support", fontsize=9
    )
    bins = np.linspace(-2, 16, 73)
    ax[1].hist(sim["Ks"] - sim["mips_24"], bins=bins, density=True, color="0.7", label="simulated")
    for c, col in colours.items():
        m = real["class"] == c
        ax[1].hist(
            (real["Ks"] - real["mips_24"])[m],
            bins=bins,
            density=True,
            histtype="step",
            color=col,
            lw=1.5,
            label=f"Class {c}",
        )
    ax[1].set_xlabel("Ks - [24]")
    ax[1].legend(fontsize=7)
    alpha = spectral_index(sim["Ks"], sim["mips_24"])
    ax[1].set_title(
        f"Ks-[24]: {cov['k24_fraction']:.0%} inside; simulated α 2-24 µm spans "
        f"{np.nanpercentile(alpha, 1):.1f} to {np.nanpercentile(alpha, 99):.1f}",
        fontsize=9,
    )
    fig.tight_layout()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fig.savefig(Path(out_dir) / "yso_ngc1333.png", dpi=120)
    plt.close(fig)
    return cov


def make_figures(out_dir: str | Path) -> dict[str, Any]:
    """Write both figures; returns summary numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sim = simulate_young_cluster()
    real = luhman2016_members()
    fig, ax = plt.subplots(1, 2, figsize=(10, 4.5))
    ax[0].scatter(sim["H"] - sim["Ks"], sim["J"] - sim["H"], s=2, c="0.6", label="simulated")
    ax[0].scatter(
        real["Hmag"] - real["Ksmag"],
        real["Jmag"] - real["Hmag"],
        s=4,
        c="C3",
        label="IC 348 + NGC 1333 (Luhman+2016)",
    )
    ax[0].set_xlabel("H - Ks")
    ax[0].set_ylabel("J - H")
    ax[0].legend(loc="upper left", fontsize=8)
    ax[1].scatter(sim["J"] - sim["Ks"], sim["Ks"], s=2, c="0.6")
    ax[1].scatter(real["Jmag"] - real["Ksmag"], real["Ksmag"], s=4, c="C3")
    ax[1].invert_yaxis()
    ax[1].set_xlabel("J - Ks")
    ax[1].set_ylabel("Ks")
    fig.suptitle("young clusters: BHAC15 + CK04 + G23 (1-3 Myr, 300 pc, A_V 0-10) vs members")
    fig.tight_layout()
    fig.savefig(out / "cmd_ccd_young_clusters.png", dpi=120)
    plt.close(fig)

    diff = kurucz_vs_ck04()
    fig, ax = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    panels = [
        ("G", diff["GaiaDR2v2_G"]),
        ("BP - RP", diff["GaiaDR2v2_BP"] - diff["GaiaDR2v2_RP"]),
        ("J - Ks", diff["2MASS_J"] - diff["2MASS_Ks"]),
    ]
    for axis, (name, d) in zip(ax, panels, strict=True):
        lim = np.nanpercentile(np.abs(d), 98)
        sc = axis.scatter(
            diff["teff"], diff["logg"], c=d, cmap="RdBu_r", vmin=-lim, vmax=lim, s=18, marker="s"
        )
        axis.set_xscale("log")
        axis.invert_xaxis()
        axis.invert_yaxis()
        axis.set_xlabel("T_eff [K]")
        axis.set_title(f"Δ{name} (Kurucz - CK04) [mag]")
        fig.colorbar(sc, ax=axis)
    ax[0].set_ylabel("log g")
    fig.tight_layout()
    fig.savefig(out / "kurucz_vs_ck04.png", dpi=120)
    plt.close(fig)
    yso = yso_figure(out)
    return {
        **{f"yso_{k}": v for k, v in yso.items()},
        "sim_stars": len(sim["J"]),
        "real_members": int(np.isfinite(real["Jmag"]).sum()),
        "median_abs_dG": float(np.nanmedian(np.abs(diff["GaiaDR2v2_G"]))),
    }


if __name__ == "__main__":  # pragma: no cover
    print(make_figures(sys.argv[1] if len(sys.argv) > 1 else "figures"))

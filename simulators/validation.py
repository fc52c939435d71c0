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

__all__ = ["kurucz_vs_ck04", "luhman2016_members", "simulate_young_cluster"]


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
    return {
        "sim_stars": len(sim["J"]),
        "real_members": int(np.isfinite(real["Jmag"]).sum()),
        "median_abs_dG": float(np.nanmedian(np.abs(diff["GaiaDR2v2_G"]))),
    }


if __name__ == "__main__":  # pragma: no cover
    print(make_figures(sys.argv[1] if len(sys.argv) > 1 else "figures"))

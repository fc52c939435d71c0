"""`dasbi bench luhman2016`: posteriors for the real IC 348 and NGC 1333 members, checked
against their spectral types and extinctions (Luhman, Esplin & Loutrel 2016).

One run:

1. simulates ``num_sims`` young stars (``simulators.yso``, ``model_set``, embedded
   photosphere ``library``) at the clusters' distance behind A_V in ``av``, observed in the
   bands of the members' table (2MASS/UKIDSS J, H, Ks);
2. ingests the members of both tables through ``configs/surveys/luhman2016.yaml``
   (:func:`dasbi.catalogue.catalogue_to_dataset`) as the unlabelled real domain;
3. trains, for each entry of ``variants`` (``none``: no alignment; ``C``, ``OT`` joined by
   ``+``; no pairs exist for real stars), the encoder + Simformer model of
   `dasbi train --domain-adapt`;
4. samples the posterior of every member (real-side encoders) and compares the posterior
   median of ``star.temperature`` with the spectral-type temperature (K5-M9: Luhman 2003
   scale from M1, Herczeg & Hillenbrand 2014 before; other types are left out) and of the
   interstellar A_V with the published A_J converted with the G23 law at R(V) = 3.1:
   robust scatter 1.4826 × MAD and median bias, in log10 Teff and in A_V;
5. draws the comparison for each variant (``luhman2016.png`` next to the JSON).
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import from_dict, param, to_dict
from . import register_bench
from .domain_adapt import default_train, observations, variant_config, variant_weights

__all__ = ["LuhmanBenchConfig", "bench_luhman", "spectral_type_teff"]

TABLES = (
    "IC348/Luhman2016_Table1_apjaa2cabt1_mrt.txt",
    "NGC1333/Luhman2016_Table2_apjaa2cabt1_mrt.txt",
)


@dataclass
class LuhmanBenchConfig:
    """Settings of the real-data check on the Luhman et al. (2016) members."""

    num_sims: int = param(20_000, ge=100, help="simulated young stars")
    num_samples: int = param(200, ge=10, help="posterior samples per member")
    model_set: str = param("sp--s-i", help="R17 model set (star + passive disc)")
    library: str = param("planck", help="photospheres: planck covers M stars, ck04 >= 3500 K")
    distance: list[float] = param(default_factory=lambda: [270.0, 340.0], help="pc")
    av: list[float] = param(default_factory=lambda: [0.0, 15.0], help="A_V prior [mag]")
    train: dict[str, Any] = param(
        default_factory=lambda: default_train(),
        help="DomainAdaptConfig settings shared by every variant (as bench domain-adapt)",
    )
    weights: dict[str, float] = param(
        default_factory=lambda: {"C": 0.1, "OT": 1.0}, help="λ of each alignment term"
    )
    variants: list[str] = param(
        default_factory=lambda: ["none", "C+OT"], help="none or '+'-joined C, OT"
    )
    sampler: dict[str, Any] = param(
        default_factory=lambda: {"method": "dpm2m", "steps": 15}, help="posterior sampler"
    )
    threads: int = param(2, ge=1)
    seed: int = param(0, ge=0)


def spectral_type_teff(spt: Any) -> np.ndarray:
    """Teff [K] of K5-M9 spectral types (``"M3.5"``, ``"K7"``; NaN for anything else):
    Luhman et al. (2003) from M1, Herczeg & Hillenbrand (2014) before, interpolated in
    subtype (../shared/data/real/yso/TeffSpT_relations.csv)."""
    import pandas as pd

    from simulators.data import find_data

    rel = pd.read_csv(find_data("real/yso/TeffSpT_relations.csv"))
    num = rel["SpTnum"].to_numpy(float)
    teff = np.where(rel["L03"].notna(), rel["L03"], rel["HH14"]).astype(float)
    ok = np.isfinite(teff)
    num, teff = num[ok], teff[ok]
    out = []
    for s in np.atleast_1d(np.asarray(spt, dtype=str)):
        m = re.fullmatch(r"\s*([KM])(\d(?:\.\d+)?)\s*", s)
        if m is None:
            out.append(np.nan)
            continue
        x = float(m.group(2)) + (-10.0 if m.group(1) == "K" else 0.0)
        out.append(float(np.interp(x, num, teff)) if num[0] <= x <= num[-1] else np.nan)
    return np.array(out)


def luhman_members() -> dict[str, np.ndarray]:
    from astropy.table import Table, vstack

    from simulators.data import find_data

    parts = [Table.read(find_data(f"real/yso/{rel}"), format="ascii.mrt") for rel in TABLES]
    t = vstack(parts)
    aj = t["Aj"].filled(np.nan) if hasattr(t["Aj"], "filled") else t["Aj"]
    return t, {
        "id": np.char.strip(np.asarray(t["Name"], str)),
        "cluster": np.repeat([rel.split("/")[0] for rel in TABLES], [len(p) for p in parts]),
        "teff_spt": spectral_type_teff(np.asarray(t["Adopt"], str)),
        "aj": np.asarray(aj, float),
    }


def _robust(d: np.ndarray) -> dict[str, float]:
    d = d[np.isfinite(d)]
    if not len(d):
        return {"n": 0, "bias": float("nan"), "robust_scatter": float("nan")}
    med = float(np.median(d))
    return {
        "n": int(len(d)),
        "bias": round(med, 4),
        "robust_scatter": round(float(1.4826 * np.median(np.abs(d - med))), 4),
    }


@register_bench("luhman2016")
def bench_luhman(
    quick: bool, options: dict[str, Any], progress: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    import h5py

    from simulators.bandpasses import pivot_wavelength
    from simulators.dust import ExtinctionCurve

    from ..adapt import train_domain_adapt
    from ..catalogue import catalogue_to_dataset
    from ..simulate import SimulateConfig, run_simulate

    if quick:
        options = {
            "num_sims": 600,
            "num_samples": 20,
            "train": {
                "max_steps": 20,
                "batch_size": 64,
                "real_batch_size": 64,
                "val_every": 10,
                "network": {"dim": 16, "depth": 1, "heads": 2},
                "encoder": {"dim": 16, "depth": 1, "heads": 2, "tokens": 2},
                "align": {"warmup_steps": 5},
            },
            "sampler": {"method": "dpm2m", "steps": 4},
            **options,
        }
    cfg = from_dict(LuhmanBenchConfig, options)
    for v in cfg.variants:
        variant_weights(v, cfg.weights)
        if "RS" in v.split("+"):
            raise ValueError("variants: no sim-real pairs exist for real stars; drop RS")
    torch.set_num_threads(cfg.threads)
    bands = {"2mass_J": {}, "2mass_H": {}, "2mass_Ks": {}}
    sim_opts = {
        "name": "yso",
        "model_set": cfg.model_set,
        "library": cfg.library,
        "surveys": [],
        "bands": bands,
        "distance": cfg.distance,
        "av": cfg.av,
        "aperture_arcsec": 3.0,
        "parallax": False,
    }
    curve = ExtinctionCurve("G23", np.array([pivot_wavelength("2mass_J")]))
    a_j = float(np.ravel(curve.a_over_av(3.1))[0])
    both, members = luhman_members()
    results: list[dict[str, Any]] = []
    curves: dict[str, dict[str, np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        sims = run_simulate(
            from_dict(
                SimulateConfig,
                {"num": cfg.num_sims, "seed": cfg.seed, "simulator": sim_opts, "chunk_size": 5000},
            ),
            d / "sims.h5",
            progress=progress,
        )
        sim_s = time.perf_counter() - t0
        both.write(d / "members.fits")
        real, report = catalogue_to_dataset(d / "members.fits", "luhman2016", sims, d / "real.h5")
        with h5py.File(real) as f:
            ids = np.char.decode(f["source_id"][:])
        index = {k: i for i, k in enumerate(members["id"])}
        rows = np.array([index[i] for i in ids])
        teff_spt, aj = members["teff_spt"][rows], members["aj"][rows]
        _, kw = observations(real)
        for variant in cfg.variants:
            da = variant_config(cfg.train, variant, cfg.weights, cfg.seed, cfg.threads)
            t1 = time.perf_counter()
            post, _ = train_domain_adapt(sims, real, da, progress=progress)
            train_s = time.perf_counter() - t1
            z = post.sample(
                (cfg.num_samples,), **kw, domain="real", sampler=cfg.sampler, seed=cfg.seed
            ).numpy()
            names = post.parameter_names
            med = np.median(z, 0)
            teff = med[:, names.index("star.temperature")]
            av = med[:, names.index("av")]
            d_teff = np.log10(teff) - np.log10(teff_spt)
            d_av = av - aj / a_j
            curves[variant] = {"teff": teff, "av": av}
            results.append(
                {
                    "variant": variant,
                    "train_s": round(train_s, 1),
                    "members": int(len(ids)),
                    "log10_teff": _robust(d_teff),
                    "teff_K": _robust(teff - teff_spt),
                    "av_mag": _robust(d_av),
                }
            )
    png = _figure(curves, teff_spt, aj / a_j, results)
    extra = {
        "simulate_s": round(sim_s, 1),
        "a_j_over_a_v": round(a_j, 4),
        "rejected": report.counts(),
        "summary_table": _table(results),
        "figures": {"members": png},
    }
    return to_dict(cfg), results, extra


def _figure(
    curves: dict[str, dict[str, np.ndarray]],
    teff_spt: np.ndarray,
    av_ref: np.ndarray,
    results: list[dict[str, Any]],
) -> bytes:
    """Posterior medians against the spectral-type Teff and the published A_V (PNG)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(curves)
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n, 8), squeeze=False)
    for k, (variant, c) in enumerate(curves.items()):
        r = next(x for x in results if x["variant"] == variant)
        ax = axes[0, k]
        ax.scatter(teff_spt, c["teff"], s=6, alpha=0.6)
        lim = [2000, 6000]
        ax.plot(lim, lim, "k--", lw=1)
        ax.set(
            xlim=lim,
            ylim=[1800, 12000],
            yscale="log",
            xlabel="T_eff from spectral type [K]",
            ylabel="posterior median T_eff [K]",
            title=f"{variant}",
        )
        t = r["log10_teff"]
        ax.text(
            0.04,
            0.95,
            f"Δlog T: bias {t['bias']:+.3f}\nσ_rob {t['robust_scatter']:.3f}\nn = {t['n']}",
            transform=ax.transAxes,
            va="top",
            fontsize=9,
        )
        ax = axes[1, k]
        ax.scatter(av_ref, c["av"], s=6, alpha=0.6, color="C1")
        ax.plot([0, 15], [0, 15], "k--", lw=1)
        ax.set(
            xlim=[0, 15],
            ylim=[0, 15],
            xlabel="A_V from A_J (Luhman+16) [mag]",
            ylabel="posterior median A_V [mag]",
        )
        a = r["av_mag"]
        ax.text(
            0.04,
            0.95,
            f"ΔA_V: bias {a['bias']:+.2f}\nσ_rob {a['robust_scatter']:.2f}",
            transform=ax.transAxes,
            va="top",
            fontsize=9,
        )
    fig.suptitle("IC 348 + NGC 1333 members (Luhman et al. 2016), J H Ks only")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | members | Δlog10 Teff bias | σ_rob | ΔTeff bias [K] | ΔA_V bias | σ_rob "
        "| train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t, k, a = r["log10_teff"], r["teff_K"], r["av_mag"]
        lines.append(
            f"| {r['variant']} | {t['n']} | {t['bias']} | {t['robust_scatter']} | {k['bias']} "
            f"| {a['bias']} | {a['robust_scatter']} | {r['train_s']} |"
        )
    return "\n".join(lines) + "\n"

"""`dasbi bench xp-real`: real Gaia XP spectra through a domain-adapted model, measured
without labels.

The real sources (by default the 2,815 Gaia DR3 sources of
``real/gaia_xp/GaiaXP_Spectra_Analysis/gaia_dr3_xp_c110_binary.npz``: 55+55 coefficients
without errors, so their errors and correlations come from the XP noise model and are
flagged modelled) have no physical labels. One run:

1. reads them (:func:`dasbi.catalogue.xp.read_xp`), samples them with GaiaXPy on the XP grid
   of the simulations and gives them GaiaXPy's synthetic G, BP and RP (``gaiaxpy.generate``,
   Gaia DR3 Vega), the photometry the simulations carry;
2. simulates ``num_sims`` training stars, ``num_test`` held-out test stars (θ known) and a
   pool of ``num_pool`` stars for matching, with ``field_stars`` under the ``sim`` options:
   by default the CK04 spectra and a box prior over hot stars, since these sources are blue
   (synthetic BP−RP −0.53 to +0.30 from the 1st to the 99th percentile; the prior covers
   their G and BP−RP, :func:`_hot_box`);
3. trains one encoder + Simformer model per variant with `dasbi train --domain-adapt`
   (``none``, ``C``, ``OT``, ``C+OT``: no pairs exist) on the simulations, with the real
   spectra as the unlabelled real set;
4. scores, for each variant:

   * **(a) posterior-predictive check**: each star's posterior draws are forward-modelled to
     clean XP coefficients; the observed coefficients' χ² under the predictive distribution
     (noise covariance plus the draws' covariance), divided by 110, for ``num_eval`` real
     stars and for the held-out simulated stars. The ratio of the medians is the figure
     (1: the real spectra are as well explained as simulated ones);
   * **(b) classifier checks**: a random-forest C2ST (sbi's ``c2st``) between the real
     spectra and simulated ones matched one to one in G and BP−RP (nearest pool star, without
     replacement), on the L2-normalised coefficients (data space; the same for every variant)
     and on the encoder's pooled embeddings (0.5: indistinguishable);
   * the held-out simulated stars' recovery (normalised RMSE, expected-coverage error),
     beside every real figure.

Each variant's record is appended to ``partial_jsonl`` when it is scored; a rerun with the
same settings reuses it. ``--quick`` trains for 20 steps on a few hundred stars: its figures
check the plumbing only and say so.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import from_dict, param, to_dict
from . import append_record, load_records, register_bench, settings_stamp
from .domain_adapt import default_train, observations, variant_config

__all__ = ["XPRealBenchConfig", "bench_xp_real", "ppc_chi2", "match_nearest", "real_dataset"]

SOURCE = "real/gaia_xp/GaiaXP_Spectra_Analysis/gaia_dr3_xp_c110_binary.npz"
QUICK_NOTE = (
    "--quick: every variant trains 20 steps on a few hundred stars with a 16-wide network; "
    "this run checks the plumbing only (reading, simulation, training, predictive checks, "
    "classifiers, records), not the agreement of real and simulated spectra"
)


def _hot_box() -> dict[str, dict[str, Any]]:
    """A box prior over hot stars that covers the real sources' synthetic G (13-17) and
    BP−RP (−0.46 to +0.08 from the 10th to the 90th percentile); CK04's hottest models
    (50,000 K, unreddened) reach BP−RP ≈ −0.48, so the bluest tenth of the real sources lies
    beyond the simulator (hot white dwarfs or subdwarfs, judging by the colours)."""
    return {
        "teff": {"dist": "loguniform", "low": 10000.0, "high": 50000.0},
        "logg": {"dist": "uniform", "low": 3.5, "high": 5.0},
        "feh": {"dist": "uniform", "low": -1.0, "high": 0.5},
        "radius": {"dist": "loguniform", "low": 0.005, "high": 2.0},
        "distance": {"dist": "loguniform", "low": 100.0, "high": 20000.0},
        "av": {"dist": "uniform", "low": 0.0, "high": 1.0},
    }


@dataclass
class XPRealBenchConfig:
    """Settings of the real-XP benchmark."""

    source: str = param(
        SOURCE,
        help="real XP coefficients: the archive's continuous layout or an .npz with source_id "
        "and X (a path, or relative to the data folder)",
    )
    num_real: int | None = param(None, ge=10, help="real sources used (a random subset)")
    num_eval: int = param(300, ge=10, help="real stars scored by the predictive check")
    num_sims: int = param(20_000, ge=100, help="simulated training stars")
    num_test: int = param(300, ge=10, help="held-out simulated test stars (θ known)")
    num_pool: int = param(20_000, ge=100, help="simulated stars to match real ones from")
    num_samples: int = param(50, ge=10, help="posterior draws per star")
    sim: dict[str, Any] = param(
        default_factory=lambda: {
            "library": "ck04",
            "xp": True,
            "parallax": False,
            "mag_limit": 18.0,
            "bands": {b: {"floor": 0.01} for b in ("gaia_G", "gaia_BP", "gaia_RP")},
            "priors": _hot_box(),
        },
        help="field_stars options of the simulations",
    )
    train: dict[str, Any] = param(
        default_factory=lambda: default_train(),
        help="DomainAdaptConfig settings shared by every variant",
    )
    weights: dict[str, float] = param(
        default_factory=lambda: {"C": 0.1, "OT": 1.0},
        help="λ of each alignment term when a variant switches it on",
    )
    variants: list[str] = param(
        default_factory=lambda: ["none", "C", "OT", "C+OT"],
        help="alignment terms per trained model: none or '+'-joined C, OT (no pairs exist)",
    )
    sampler: dict[str, Any] = param(
        default_factory=lambda: {"method": "dpm2m", "steps": 15},
        help="posterior sampler settings",
    )
    partial_jsonl: str | None = param(
        None,
        help="append each variant's record to this JSON-lines file when it is scored; a "
        "rerun with the same settings reuses them",
    )
    threads: int = param(2, ge=1)
    seed: int = param(0, ge=0)


def _log(msg: str) -> None:
    import sys

    print(f"[bench xp-real] {msg}", file=sys.stderr, flush=True)


def _synthetic_photometry(xp: Any) -> dict[str, np.ndarray]:
    """GaiaXPy's synthetic Gaia DR3 (Vega) G, BP and RP of the sources (NaN where a band's
    coefficients are missing)."""
    import matplotlib

    usetex = matplotlib.rcParams["text.usetex"]
    try:
        from gaiaxpy import PhotometricSystem, generate
    finally:
        matplotlib.rcParams["text.usetex"] = usetex  # GaiaXPy sets it on import
    from simulators.gaia_xp import archive_frame

    frame = archive_frame(xp.coef, xp.error, xp.corr, xp.std)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = generate(frame, photometric_system=PhotometricSystem.Gaia_DR3_Vega, save_file=False)
    return {
        f"gaia_{b}": np.asarray(out[f"GaiaDr3Vega_mag_{b}"], np.float64) for b in ("G", "BP", "RP")
    }


def real_dataset(
    cfg: XPRealBenchConfig, sim: Any, path: Path, rng: np.random.Generator
) -> dict[str, Any]:
    """Write the real sources as a dataset with the simulations' nodes (θ unobserved);
    returns its ``path``, the sources' ``coef`` (N, 110), ``ids``, ``G`` and ``bp_rp``."""
    from simulators.data import find_data

    from ..catalogue.xp import read_xp, sample_xp
    from ..dataset import Block, DatasetWriter
    from ..nodes import Node, NodeSet

    src = Path(cfg.source)
    xp = read_xp(src if src.exists() else find_data(cfg.source))
    full = np.all(np.isfinite(xp.coef["bp"]), axis=1) & np.all(np.isfinite(xp.coef["rp"]), 1)
    keep = np.flatnonzero(full)
    if cfg.num_real is not None and cfg.num_real < len(keep):
        keep = np.sort(rng.choice(keep, cfg.num_real, replace=False))
    xp = xp.take(keep)
    _, flux, err, _ = sample_xp(xp)
    mags = _synthetic_photometry(xp)
    # a real catalogue's dataset: the observables only, no θ
    nodes = NodeSet(Node.from_dict(n) for n in sim.nodes() if n["kind"] == "observable")
    n = len(keep)
    blocks: dict[str, Any] = {}
    for g in nodes.groups:
        members = nodes.group(g)
        if g == "photometry":
            vals = np.stack([mags.get(m.name, np.full(n, np.nan)) for m in members], 1)
            floor = [float(sim.config.bands[m.name].get("floor", 0.01)) for m in members]
            obs = np.isfinite(vals)
            errs = np.broadcast_to(np.asarray(floor, np.float32), vals.shape)
            blocks[g] = Block(np.where(obs, vals, np.nan), errs, obs, np.zeros(vals.shape, bool))
        elif g == "xp":
            obs = np.isfinite(flux) & np.isfinite(err) & (err > 0)
            blocks[g] = Block(np.where(obs, flux, np.nan), err, obs, np.zeros(flux.shape, bool))
        else:
            raise ValueError(f"xp-real: the simulations have a group {g!r} real XP cannot fill")
    DatasetWriter.write(path, nodes, blocks, group_attrs=sim.group_attrs())
    coef = np.concatenate([xp.coef["bp"], xp.coef["rp"]], axis=1)
    return {
        "path": path,
        "coef": coef,
        "ids": np.asarray(xp.source_id).astype(str),
        "G": mags["gaia_G"],
        "bp_rp": mags["gaia_BP"] - mags["gaia_RP"],
        "errors_modelled": int(np.sum(xp.errors_modelled)),
    }


def _sim_dataset(sim: Any, n: int, path: Path, rng: np.random.Generator) -> dict[str, Any]:
    """Simulate n stars into ``path``; returns θ, the clean-spectrum coefficients' stand-in
    (the noisy spectra's coefficients), G and BP−RP."""
    from simulators.gaia_xp import project

    from ..dataset import Block, DatasetWriter
    from ..nodes import THETA, Node, NodeSet

    nodes = NodeSet(Node.from_dict(d) for d in sim.nodes())
    out = sim(n, rng)
    blocks = {THETA: Block.exact(out.theta.astype(np.float32))}
    blocks.update({k: Block.coerce(v) for k, v in out.x.items()})
    DatasetWriter.write(path, nodes, blocks, group_attrs=sim.group_attrs())
    ph = np.asarray(out.x["photometry"].values, np.float64)
    j = {b: sim.bands.index(b) for b in ("gaia_G", "gaia_BP", "gaia_RP")}
    return {
        "path": path,
        "theta": out.theta.astype(np.float64),
        "coef": project(np.asarray(out.x["xp"].values, np.float32).astype(np.float64)),
        "spectra": np.asarray(out.x["xp"].values, np.float32),
        "G": ph[:, j["gaia_G"]],
        "bp_rp": ph[:, j["gaia_BP"]] - ph[:, j["gaia_RP"]],
    }


def match_nearest(real: np.ndarray, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each real row (N, F), the nearest pool row (M, F) not taken before, in units of
    the real rows' spread (greedy, rows in random order of real-star index); returns the pool
    indices and the distances."""
    from scipy.spatial import cKDTree

    scale = real.std(0) + 1e-9
    tree = cKDTree(pool / scale)
    if len(pool) < len(real):
        raise ValueError(
            f"match_nearest: {len(real)} rows to match from a pool of {len(pool)}; raise num_pool"
        )
    taken = np.zeros(len(pool), bool)
    idx = np.full(len(real), -1)
    dist = np.full(len(real), np.inf)
    for i in range(len(real)):
        k = 16
        while idx[i] < 0:
            k = min(k * 4, len(pool))
            d, j = tree.query(real[i] / scale, k=k)
            free = ~taken[np.atleast_1d(j)]
            if free.any():
                first = int(np.argmax(free))
                idx[i], dist[i] = int(np.atleast_1d(j)[first]), float(np.atleast_1d(d)[first])
                taken[idx[i]] = True
    return idx, dist


#: relative rounding error (1σ) of a float32 value: ulp / √12 at the top of a binade
FLOAT32_ROUNDING = 2.0**-23 / np.sqrt(12.0)


def ppc_chi2(
    sim: Any,
    draws: np.ndarray,
    coef: np.ndarray,
    noise: Any,
    float32_spectra: np.ndarray | None = None,
) -> np.ndarray:
    """Posterior-predictive χ²_ν of observed coefficients (N, 110) given posterior draws
    (S, N, P) of the simulator's θ: each draw is forward-modelled to clean XP coefficients,
    and χ² = rᵀ (Σ_noise + C_draws)⁻¹ r / 110 with r the observed minus the draws' mean
    coefficients. Draws outside the library are left out (a star with fewer than 3 draws
    left gets NaN).

    Simulated stars' coefficients come back from their stored (float32) spectra; the XP
    basis is ill-conditioned, so that rounding becomes noise in the high BP orders (3x the
    XP noise there). Pass those spectra as ``float32_spectra`` (N, 343): their rounding
    covariance is added (real coefficients are read as published and need none).
    """
    from simulators.gaia_xp import BANDS, N_COEF, project_model, projection_matrix

    s, n, _ = draws.shape
    names = sim.theta_names
    flat = draws.reshape(s * n, -1)
    th = {k: flat[:, i] for i, k in enumerate(names)}
    ok = sim.in_library(th["teff"], th["logg"], th["feh"])
    ok &= (th["radius"] > 0) & (th["distance"] > 0) & (th["av"] >= 0)
    pred = np.full((s * n, 2 * N_COEF), np.nan)
    if ok.any():
        rv = th["rv"][ok] if "rv" in th else sim.config.rv_mean
        flux = sim.sed.flux(
            *(th[k][ok] for k in ("teff", "logg", "feh", "radius", "distance", "av")), rv
        )
        pred[ok] = project_model(sim.sed.xp.convolve(flux).numpy().astype(np.float64))
    pred = pred.reshape(s, n, -1)
    out = np.full(n, np.nan)
    pinv = projection_matrix() if float32_spectra is not None else None  # (343, 110)
    for i in range(n):
        p = pred[:, i][np.all(np.isfinite(pred[:, i]), axis=1)]
        if len(p) < 3 or not np.all(np.isfinite(coef[i])):
            continue
        cov = np.cov(p, rowvar=False)
        if pinv is not None and float32_spectra is not None:
            q = FLOAT32_ROUNDING * np.abs(np.asarray(float32_spectra[i], np.float64))
            cov += (pinv * q[:, None] ** 2).T @ pinv
        for k, b in enumerate(BANDS):
            sl = slice(k * N_COEF, (k + 1) * N_COEF)
            e = noise.errors(b, coef[i : i + 1, sl])[0]
            cov[sl, sl] += e[:, None] * noise.corr[b] * e[None, :]
        r = coef[i] - p.mean(0)
        out[i] = float(r @ np.linalg.solve(cov, r)) / (2 * N_COEF)
    return out


def _l2(coef: np.ndarray) -> np.ndarray:
    return coef / np.linalg.norm(coef, axis=1, keepdims=True)


def _c2st(a: np.ndarray, b: np.ndarray, seed: int) -> float:
    from sbi.utils.metrics import c2st

    return float(
        c2st(
            torch.as_tensor(a, dtype=torch.float32),
            torch.as_tensor(b, dtype=torch.float32),
            seed=seed,
            classifier="rf",
        )
    )


def _table(results: list[dict[str, Any]], quick: bool) -> str:
    lines = [f"> {QUICK_NOTE}", ""] if quick else []
    lines += [
        "| variant | PPC χ²_ν real (median) | PPC χ²_ν sim (median) | ratio | data C2ST | "
        "emb. C2ST | nRMSE sim | coverage err sim | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['variant']} | {r['real_ppc_chi2_median']} | {r['sim_ppc_chi2_median']} | "
            f"{r['ppc_ratio']} | {r['data_c2st']} | {r['embedding_c2st']} | "
            f"{r['sim_nrmse']} | {r['sim_coverage_error']} | {r['train_s']} |"
        )
    return "\n".join(lines) + "\n"


_STAMP_EXCLUDE = ("variants", "partial_jsonl", "threads")


@register_bench("xp-real")
def bench_xp_real(
    quick: bool, options: dict[str, Any], progress: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    from simulators.gaia_xp import XPNoiseModel
    from simulators.stars import FieldStars

    from ..adapt import train_domain_adapt
    from ..nodes import Node, NodeSet
    from .infer import coverage_error, log_space

    if quick:
        options = {
            "num_real": 60,
            "num_eval": 30,
            "num_sims": 600,
            "num_test": 30,
            "num_pool": 400,
            "num_samples": 12,
            "train": {
                "max_steps": 20,
                "batch_size": 64,
                "real_batch_size": 32,
                "val_every": 10,
                "network": {"dim": 16, "depth": 1, "heads": 2},
                "encoder": {"dim": 16, "depth": 1, "heads": 2, "tokens": 2},
                "align": {"warmup_steps": 5},
            },
            "variants": ["none", "C+OT"],
            "sampler": {"method": "dpm2m", "steps": 4},
            **options,
        }
    cfg = from_dict(XPRealBenchConfig, options)
    for v in cfg.variants:
        if "RS" in v.split("@")[0].split("+"):
            raise ValueError(f"variant {v!r}: the real XP sources have no simulated twins (RS)")
        variant_config(cfg.train, v, cfg.weights, cfg.seed, cfg.threads)
    torch.set_num_threads(cfg.threads)
    stamp = settings_stamp(cfg, _STAMP_EXCLUDE)
    done = load_records(cfg.partial_jsonl, stamp, "variant")
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = FieldStars(dict(cfg.sim))
    if not sim.config.xp:
        raise ValueError("xp-real: the simulations must observe Gaia XP (sim.xp: true)")
    nodes = NodeSet(Node.from_dict(d) for d in sim.nodes())
    params = [n for n in nodes.diffuse if n.kind == "parameter"]
    names = [n.name for n in params]
    fwd, _ = log_space(params)
    noise = XPNoiseModel.load()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        real = real_dataset(cfg, sim, d / "real.h5", rng)
        _sim_dataset(sim, cfg.num_sims, d / "sim.h5", rng)  # the training set
        test = _sim_dataset(sim, cfg.num_test, d / "test.h5", rng)
        pool = _sim_dataset(sim, cfg.num_pool, d / "pool.h5", rng)
        sim_s = time.perf_counter() - t0
        n_real = len(real["ids"])
        feats = np.stack([real["G"], real["bp_rp"]], 1)
        good = np.all(np.isfinite(feats), axis=1)
        rows = np.flatnonzero(good)
        match, dist = match_nearest(feats[rows], np.stack([pool["G"], pool["bp_rp"]], 1))
        data_c2st = round(_c2st(_l2(real["coef"][rows]), _l2(pool["coef"][match]), cfg.seed), 4)
        ev = np.sort(rng.choice(n_real, min(cfg.num_eval, n_real), replace=False))
        _, kw_real = observations(real["path"])
        _, kw_test = observations(test["path"])

        def take(kw: dict[str, Any], idx: np.ndarray) -> dict[str, Any]:
            out: dict[str, Any] = {}
            for key, m in kw.items():
                out[key] = {
                    k: (tuple(a[idx] for a in v) if isinstance(v, tuple) else v[idx])
                    for k, v in m.items()
                }
            return out

        truth = fwd(test["theta"])
        scale = truth.std(0) + 1e-12
        for variant in cfg.variants:
            if variant in done:
                _log(f"{variant}: reusing the record in {cfg.partial_jsonl}")
                results.append(done[variant])
                continue
            da = variant_config(cfg.train, variant, cfg.weights, cfg.seed, cfg.threads)
            t1 = time.perf_counter()
            post, _ = train_domain_adapt(d / "sim.h5", real["path"], da, progress=progress)
            train_s = round(time.perf_counter() - t1, 1)
            rec: dict[str, Any] = {"variant": variant, "train_s": train_s}
            s = (cfg.num_samples,)
            z_real = post.sample(
                s, **take(kw_real, ev), domain="real", sampler=cfg.sampler, seed=cfg.seed
            ).numpy()
            z_sim = post.sample(s, **kw_test, domain="sim", sampler=cfg.sampler, seed=cfg.seed)
            z_sim = z_sim.numpy()
            chi_real = ppc_chi2(sim, z_real.astype(np.float64), real["coef"][ev], noise)
            chi_sim = ppc_chi2(sim, z_sim.astype(np.float64), test["coef"], noise, test["spectra"])
            med_r, med_s = float(np.nanmedian(chi_real)), float(np.nanmedian(chi_sim))
            zt = fwd(z_sim.astype(np.float64))
            med = np.median(zt, 0)
            ece, _ = coverage_error(zt, truth)
            emb_real = post.embed(real["path"], "real")[rows]
            emb_pool = post.embed(pool["path"], "sim")[match]
            teff = np.median(z_real[..., names.index("teff")], 0)
            av = np.median(z_real[..., names.index("av")], 0)
            rec.update(
                {
                    "real_ppc_chi2_median": round(med_r, 3),
                    "real_ppc_chi2_p84": round(float(np.nanpercentile(chi_real, 84)), 3),
                    "sim_ppc_chi2_median": round(med_s, 3),
                    "sim_ppc_chi2_p84": round(float(np.nanpercentile(chi_sim, 84)), 3),
                    "ppc_ratio": round(med_r / med_s, 3),
                    "real_ppc_scored": int(np.isfinite(chi_real).sum()),
                    "data_c2st": data_c2st,
                    "embedding_c2st": round(_c2st(emb_real, emb_pool, cfg.seed), 4),
                    "sim_nrmse": round(
                        float(np.mean(np.sqrt(np.mean((med - truth) ** 2, 0)) / scale)), 4
                    ),
                    "sim_coverage_error": round(float(ece), 4),
                    "real_teff_median_p16_p50_p84": [
                        round(float(q), 1) for q in np.percentile(teff, [16, 50, 84])
                    ],
                    "real_av_median_p16_p50_p84": [
                        round(float(q), 3) for q in np.percentile(av, [16, 50, 84])
                    ],
                }
            )
            _log(str(rec))
            append_record(cfg.partial_jsonl, rec, stamp)
            results.append(rec)
    extra: dict[str, Any] = {
        "simulate_s": round(sim_s, 1),
        "parameters": names,
        "real_sources": n_real,
        "real_errors_modelled": real["errors_modelled"],
        "matched": int(len(rows)),
        "match_distance_median": round(float(np.median(dist)), 4),
        "real_G_p1_p50_p99": [
            round(float(q), 3) for q in np.nanpercentile(real["G"], [1, 50, 99])
        ],
        "real_bp_rp_p1_p50_p99": [
            round(float(q), 3) for q in np.nanpercentile(real["bp_rp"], [1, 50, 99])
        ],
        "summary_table": _table(results, quick),
    }
    if quick:
        extra["note"] = QUICK_NOTE
    return to_dict(cfg), results, extra

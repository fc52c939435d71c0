"""`dasbi bench domain-adapt`: sim-to-real transfer of field-star posteriors, truth known.

Two forward models of the same stars:

* **simulation** (what the model is trained on): `field_stars` with the CK04 spectra,
  speclite filter curves (Gaia DR3 passbands), the G23 extinction law at R(V) = 3.1 and the
  reported photometric errors;
* **"real"** (a misspecified stand-in for a survey, θ known for scoring only): the Kurucz
  band-flux table (another atmosphere model, Gaia through DR2 passbands), another extinction
  law (F99 by default, applied at each band's pivot wavelength) with a hidden R(V) spread,
  zero-point offsets and photometric errors that underestimate the true scatter.

θ of the "real" stars are drawn from the simulation prior, so the shift is in the
likelihood only. One run:

1. simulates ``num_sims`` training stars, ``num_real`` unlabelled "real" stars, ``num_pairs``
   stars observed in both domains (the pair set), and ``num_test`` test stars in both
   domains;
2. trains, for each entry of ``variants``, the same encoder + Simformer model with
   `dasbi train --domain-adapt` settings: ``none`` (no alignment: the score loss alone) and
   the combinations of ``C`` (contrastive), ``OT`` and ``RS`` (pairs);
3. scores posterior samples for the test stars of each domain: normalised RMSE and bias of
   the posterior medians (θ in the model's log/linear space, divided by the test θ's
   standard deviation), the expected-coverage error of marginal intervals, TARP
   (`tarp` package; mean |ECP - α| and sbi's ``check_tarp`` ATC), and the rf C2ST between
   the pooled sim and real embeddings of the test stars (0.5: indistinguishable);
4. reports the fraction of the sim-to-real RMSE gap closed by each variant:
   (nRMSE_real(none) - nRMSE_real(variant)) / (nRMSE_real(none) - nRMSE_sim(none)).

**Spectra** (``xp: true``): both sides also observe Gaia XP, simulated as Gaia publishes it
(coefficients with correlated noise, :mod:`simulators.gaia_xp`), from the CK04 spectra. The
"real" XP carries the real side's extinction law and hidden R(V) spread, a smooth
flux-calibration error of the size of the known XP systematics (``xp_real.xp_calibration``:
+6% at 336 nm, +2.5% at 400 nm, 0 at 500 nm, −1% at 650 nm, +2% at 1020 nm; Montegriffo et
al. 2023 and Huang et al. 2024 find errors of a few per cent, largest in the blue of BP) and
noise 1.5× its reported errors; its photometry keeps the zero-point offsets and error scale.

Each variant's record is appended to ``partial_jsonl`` as soon as it is scored; a rerun with
the same settings (the list of variants and the threads aside) reuses them and trains only
the rest. ``--quick`` trains every variant for 20 steps on 800 stars: its figures check the
plumbing only and say so.
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
from .infer import coverage_error, log_space

__all__ = [
    "DomainAdaptBenchConfig",
    "observations",
    "bench_domain_adapt",
    "make_domains",
    "variant_config",
    "variant_weights",
]

# Gaia + 2MASS: F99 (the 'real' law) is defined to 3.3 µm, so WISE is left out by default
BANDS = ["gaia_G", "gaia_BP", "gaia_RP", "2mass_J", "2mass_H", "2mass_Ks"]
TERMS = {"C": "contrastive", "OT": "ot", "RS": "pair"}


def default_train() -> dict[str, Any]:
    """The DomainAdaptConfig settings of the domain-adaptation benchmarks (a fresh copy)."""
    return {
        "max_steps": 2000,
        "batch_size": 256,
        "real_batch_size": 256,
        "pair_batch_size": 64,
        "val_every": 500,
        "lr": 1e-3,
        "network": {"dim": 64, "depth": 3, "heads": 4},
        "encoder": {"dim": 64, "depth": 2, "heads": 4, "tokens": 4},
        "align": {"warmup_steps": 400, "ot_method": "emd"},
    }


@dataclass
class DomainAdaptBenchConfig:
    """Settings of the domain-adaptation benchmark."""

    num_sims: int = param(20_000, ge=100, help="simulated training stars (θ known)")
    num_real: int = param(4_000, ge=50, help="unlabelled 'real' stars for the alignment")
    num_pairs: int = param(300, ge=10, help="stars observed in both domains (RS term)")
    num_test: int = param(300, ge=20, help="test stars per domain, θ known")
    num_samples: int = param(100, ge=10, help="posterior samples per test star")
    sim: dict[str, Any] = param(
        default_factory=lambda: {
            "library": "ck04",
            "bands": {b: {} for b in BANDS},
            "mag_limit": 16.0,
            "l": 90.0,
            "b": 1.0,
            "radius": 2.0,
        },
        help="field_stars options of the simulation side",
    )
    real: dict[str, Any] = param(
        default_factory=lambda: {
            "library": "kurucz_bands",
            "extinction_law": "F99",
            "rv_sigma": 0.4,
            "rv_in_theta": False,
            "zero_point_offsets": {
                "gaia_BP": 0.04,
                "gaia_RP": -0.03,
                "2mass_J": 0.03,
                "2mass_Ks": 0.05,
            },
            "error_scale": 2.0,
        },
        help="field_stars options of the 'real' side, on top of the sim options",
    )
    train: dict[str, Any] = param(
        default_factory=lambda: default_train(),
        help="DomainAdaptConfig settings shared by every variant",
    )
    weights: dict[str, float] = param(
        default_factory=lambda: {"C": 0.1, "OT": 1.0, "RS": 1.0},
        help="λ of each alignment term when a variant switches it on",
    )
    modes: dict[str, dict[str, Any]] = param(
        default_factory=lambda: {
            "rope": {
                "encoders": "separate",
                "detach_sim": True,
                "level": "tokens",
                "start_step": 1000,
            }
        },
        help="align settings of a variant 'terms@mode' on top of train.align",
    )
    variants: list[str] = param(
        default_factory=lambda: [
            "none",
            "C",
            "OT",
            "RS",
            "C+OT",
            "C+RS",
            "OT+RS",
            "C+OT+RS",
            "OT@rope",
            "RS@rope",
            "OT+RS@rope",
            "C+RS@rope",
        ],
        help="alignment terms per trained model: none or '+'-joined C, OT, RS, optionally "
        "with '@mode' (align settings from modes)",
    )
    xp: bool = param(
        False,
        help="truth-known spectral test: both sides also observe Gaia XP (CK04 spectra); "
        "the real side adds xp_real",
    )
    xp_real: dict[str, Any] = param(
        default_factory=lambda: {
            "library": "ck04",
            "xp_calibration": [
                [336.0, 0.06],
                [400.0, 0.025],
                [500.0, 0.0],
                [650.0, -0.01],
                [800.0, 0.005],
                [1020.0, 0.02],
            ],
            "xp_error_scale": 1.5,
        },
        help="with xp: field_stars options of the real side on top of sim and real (a "
        "spectral library, the XP calibration error and error scale)",
    )
    sampler: dict[str, Any] = param(
        default_factory=lambda: {"method": "dpm2m", "steps": 15},
        help="posterior sampler settings",
    )
    partial_jsonl: str | None = param(
        None,
        help="append each variant's record to this JSON-lines file when it is scored; a "
        "rerun with the same settings reuses them and trains only the other variants",
    )
    threads: int = param(2, ge=1)
    seed: int = param(0, ge=0)


def variant_weights(variant: str, weights: dict[str, float]) -> dict[str, float]:
    """``"C+OT"`` → the align λ overrides (contrastive, ot, pair), unused terms at 0
    (an ``@mode`` suffix is ignored here)."""
    terms = variant.split("@")[0]
    on = set() if terms == "none" else set(terms.split("+"))
    unknown = on - set(TERMS)
    if unknown:
        raise ValueError(
            f"variant {variant!r}: unknown terms {sorted(unknown)}; use none or '+'-joined "
            "C, OT, RS"
        )
    return {TERMS[k]: (float(weights.get(k, 1.0)) if k in on else 0.0) for k in TERMS}


def variant_config(
    train: dict[str, Any],
    variant: str,
    weights: dict[str, float],
    seed: int,
    threads: int,
    modes: dict[str, dict[str, Any]] | None = None,
) -> Any:
    """The DomainAdaptConfig of one variant: the shared settings with its λ switched on
    and, for ``terms@mode``, the align settings of ``modes[mode]`` on top."""
    from ..adapt import DomainAdaptConfig

    mode = variant.split("@")[1] if "@" in variant else None
    if mode is not None and mode not in (modes or {}):
        raise ValueError(
            f"variant {variant!r}: unknown mode {mode!r}; modes: {sorted(modes or {})}"
        )
    tcfg = {**train, "seed": seed, "threads": threads}
    extra = (modes or {}).get(mode, {}) if mode else {}
    tcfg["align"] = {**train.get("align", {}), **extra, **variant_weights(variant, weights)}
    return from_dict(DomainAdaptConfig, tcfg)


def _simulators(cfg: DomainAdaptBenchConfig) -> tuple[Any, Any]:
    from simulators.stars import FieldStars

    if cfg.xp:
        sim = FieldStars({**cfg.sim, "library": cfg.xp_real.get("library", "ck04"), "xp": True})
        real = FieldStars({**cfg.sim, **cfg.real, "xp": True, **cfg.xp_real})
    else:
        sim = FieldStars(dict(cfg.sim))
        real = FieldStars({**cfg.sim, **cfg.real})
    if real.theta_names != sim.theta_names:
        raise ValueError(
            f"the real side must have the sim side's parameters {sim.theta_names}, got "
            f"{real.theta_names} (keep rv_in_theta: false for a hidden R(V) spread)"
        )
    return sim, real


def _draw_theta(sim: Any, real: Any, n: int, rng: np.random.Generator) -> np.ndarray:
    """n stars from the simulation prior that the 'real' model can also render."""
    out, have = [], 0
    lib = real.sed.library
    while have < n:
        th = sim.sample_prior(max(256, int(1.1 * (n - have))), rng)
        names = sim.theta_names
        d = {k: th[:, i] for i, k in enumerate(names)}
        if hasattr(lib, "covers"):
            th = th[lib.covers(d["teff"], d["logg"], d["feh"])]
        out.append(th)
        have += len(th)
    return np.concatenate(out)[:n]


def _write(
    path: Path, nodes: Any, theta: np.ndarray, x: dict[str, Any], attrs: dict[str, Any]
) -> Path:
    from ..dataset import Block, DatasetWriter
    from ..nodes import THETA

    blocks = {THETA: Block.exact(theta.astype(np.float32))}
    blocks.update({k: Block.coerce(v) for k, v in x.items()})
    return DatasetWriter.write(path, nodes, blocks, group_attrs=attrs)


def observations(ds_path: Path) -> tuple[np.ndarray | None, dict[str, dict[str, Any]]]:
    """θ and the x/errors/upper_limits (and, for context nodes such as XP, spectra)
    mappings of a dataset, for Posterior.sample."""
    from ..dataset import Dataset
    from ..nodes import THETA

    with Dataset(ds_path) as ds:
        blocks = ds.read()
        obs = [(g, j, m) for g in ds.nodes.groups for j, m in enumerate(ds.nodes.group(g))]
    kw: dict[str, dict[str, Any]] = {"x": {}, "errors": {}, "upper_limits": {}}
    for g, j, m in obs:
        if m.kind == "observable" and m.role == "context":
            b = blocks[g]  # a spectrum is its group's one node
            flux = np.where(b.observed, b.values, np.nan)
            kw.setdefault("spectra", {})[m.name] = (flux, np.asarray(b.errors))
            continue
        if m.kind != "observable" or m.role != "diffuse":
            continue
        b = blocks[g]
        kw["x"][m.name] = np.where(b.observed[:, j], b.values[:, j], np.nan)
        kw["errors"][m.name] = np.asarray(b.errors[:, j])
        kw["upper_limits"][m.name] = np.asarray(b.upper_limit[:, j])
    theta = np.asarray(blocks[THETA].values, np.float64) if THETA in blocks else None
    return theta, kw


def _tarp(z: np.ndarray, truth: np.ndarray, seed: int) -> dict[str, float]:
    import tarp
    from sbi.diagnostics import check_tarp

    ecp, alpha = tarp.get_tarp_coverage(z, truth, references="random", norm=True, seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy: exact KS not possible, asymptotic used
        atc, ks_p = check_tarp(torch.as_tensor(ecp), torch.as_tensor(alpha))
    return {
        "tarp_error": round(float(np.mean(np.abs(ecp - alpha))), 4),
        "tarp_atc": round(float(atc), 4),
        "tarp_ks_pvalue": round(float(ks_p), 4),
    }


def _score(
    z: np.ndarray, truth: np.ndarray, scale: np.ndarray, names: list[str], seed: int
) -> dict[str, Any]:
    med = np.median(z, 0)
    rmse = np.sqrt(np.mean((med - truth) ** 2, 0)) / scale
    bias = np.mean(med - truth, 0) / scale
    ece, _ = coverage_error(z, truth)
    return {
        "nrmse": round(float(rmse.mean()), 4),
        "abs_bias": round(float(np.abs(bias).mean()), 4),
        "coverage_error": round(ece, 4),
        **_tarp(z, truth, seed),
        **{f"nrmse_{n}": round(float(r), 4) for n, r in zip(names, rmse, strict=True)},
        **{f"bias_{n}": round(float(b), 4) for n, b in zip(names, bias, strict=True)},
    }


@torch.no_grad()
def _embedding_c2st(post: Any, sim_path: Path, real_path: Path, seed: int) -> float:
    """rf C2ST between pooled embeddings of the first half of the sim test stars and the
    second half of the real ones (the test sets share θ row by row; twins on both sides
    of the split would push the score below 0.5)."""
    from sbi.utils.metrics import c2st

    zs = [
        torch.as_tensor(post.embed(sim_path, "sim")),
        torch.as_tensor(post.embed(real_path, "real")),
    ]
    half = len(zs[0]) // 2
    return float(c2st(zs[0][:half], zs[1][half:], seed=seed, classifier="rf"))


def make_domains(cfg: DomainAdaptBenchConfig, folder: str | Path) -> dict[str, Any]:
    """Simulate the datasets of one run into ``folder``: ``sim`` (training, θ known),
    ``real`` (unlabelled), ``pairs`` (the same stars in both domains) and ``test_sim`` /
    ``test_real`` (the same test stars in both domains); also ``theta_test`` and the
    ``nodes``."""
    from ..nodes import Node, NodeSet

    rng = np.random.default_rng(cfg.seed)
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    sim, real = _simulators(cfg)
    nodes = NodeSet(Node.from_dict(n) for n in sim.nodes())
    attrs = sim.group_attrs()  # pixel wavelengths of the spectra (the same on both sides)
    out = sim(cfg.num_sims, rng)
    paths: dict[str, Any] = {
        "nodes": nodes,
        "sim": _write(d / "sim.h5", nodes, out.theta, out.x, attrs),
    }
    th = _draw_theta(sim, real, cfg.num_real, rng)
    paths["real"] = _write(d / "real.h5", nodes, th, real.simulate(th, rng), attrs)
    th = _draw_theta(sim, real, cfg.num_pairs, rng)
    paths["pairs"] = (
        _write(d / "pairs_sim.h5", nodes, th, sim.simulate(th, rng), attrs),
        _write(d / "pairs_real.h5", nodes, th, real.simulate(th, rng), attrs),
    )
    th = _draw_theta(sim, real, cfg.num_test, rng)
    paths["test_sim"] = _write(d / "test_sim.h5", nodes, th, sim.simulate(th, rng), attrs)
    paths["test_real"] = _write(d / "test_real.h5", nodes, th, real.simulate(th, rng), attrs)
    paths["theta_test"] = th
    return paths


@register_bench("domain-adapt")
def bench_domain_adapt(
    quick: bool, options: dict[str, Any], progress: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    from ..adapt import train_domain_adapt
    from ..adapted import embedding_gap
    from ..nodes import Node, NodeSet

    if quick:
        options = {
            "num_sims": 800,
            "num_real": 200,
            "num_pairs": 50,
            "num_test": 40,
            "num_samples": 20,
            "train": {
                "max_steps": 20,
                "batch_size": 64,
                "real_batch_size": 64,
                "pair_batch_size": 16,
                "val_every": 10,
                "network": {"dim": 16, "depth": 1, "heads": 2},
                "encoder": {"dim": 16, "depth": 1, "heads": 2, "tokens": 2},
                "align": {"warmup_steps": 5},
            },
            "variants": ["none", "C+OT+RS", "RS@rope"],
            "modes": {
                "rope": {
                    "encoders": "separate",
                    "detach_sim": True,
                    "level": "tokens",
                    "start_step": 10,
                }
            },
            "sampler": {"method": "dpm2m", "steps": 4},
            **options,
        }
    cfg = from_dict(DomainAdaptBenchConfig, options)
    for v in cfg.variants:  # bad variant names fail before any simulation
        variant_config(cfg.train, v, cfg.weights, cfg.seed, cfg.threads, cfg.modes)
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    sim, _ = _simulators(cfg)
    nodes = NodeSet(Node.from_dict(d) for d in sim.nodes())
    params = [n for n in nodes.diffuse if n.kind == "parameter"]
    names = [n.name for n in params]
    fwd, _ = log_space(params)
    results: list[dict[str, Any]] = []
    done = _load_partial(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        made = make_domains(cfg, tmp)
        sim_path, real_path, pairs = made["sim"], made["real"], made["pairs"]
        test = {"sim": made["test_sim"], "real": made["test_real"]}
        th = made["theta_test"]
        sim_s = time.perf_counter() - t0
        truth = fwd(th)
        scale = truth.std(0) + 1e-12
        for variant in cfg.variants:
            if variant in done:
                _log(f"{variant}: reusing the record in {cfg.partial_jsonl}")
                results.append(done[variant])
                continue
            da = variant_config(cfg.train, variant, cfg.weights, cfg.seed, cfg.threads, cfg.modes)
            use_pairs = pairs if "RS" in variant.split("@")[0].split("+") else None
            t1 = time.perf_counter()
            post, _ = train_domain_adapt(
                sim_path, real_path, da, pairs=use_pairs, progress=progress
            )
            train_s = time.perf_counter() - t1
            rec: dict[str, Any] = {"variant": variant, "train_s": round(train_s, 1)}
            for dom, path in test.items():
                _, kw = observations(path)
                t1 = time.perf_counter()
                z = post.sample(
                    (cfg.num_samples,), **kw, domain=dom, sampler=cfg.sampler, seed=cfg.seed
                ).numpy()
                dt = time.perf_counter() - t1
                for k, v in _score(
                    fwd(z.astype(np.float64)), truth, scale, names, cfg.seed
                ).items():
                    rec[f"{dom}_{k}"] = v
                rec[f"{dom}_objects_per_s"] = round(cfg.num_test / dt, 1)
            rec["embedding_c2st"] = round(
                _embedding_c2st(post, test["sim"], test["real"], cfg.seed), 4
            )
            rec["embedding_gap"] = round(embedding_gap(post, test["sim"], test["real"]), 4)
            _log(str(rec))
            _append_partial(cfg, rec)
            results.append(rec)
    base = next((r for r in results if r["variant"] == "none"), None)
    if base is not None:
        gap = base["real_nrmse"] - base["sim_nrmse"]
        for r in results:
            r["gap_closed"] = (
                round((base["real_nrmse"] - r["real_nrmse"]) / gap, 3) if gap > 0 else None
            )
            for n in names:  # per parameter: the mean is dominated by unconstrained ones
                g = base[f"real_nrmse_{n}"] - base[f"sim_nrmse_{n}"]
                r[f"gap_closed_{n}"] = (
                    round((base[f"real_nrmse_{n}"] - r[f"real_nrmse_{n}"]) / g, 3)
                    if g > 0
                    else None
                )
    extra: dict[str, Any] = {
        "simulate_s": round(sim_s, 1),
        "parameters": names,
        "summary_table": _table(results, quick),
    }
    if quick:
        extra["note"] = QUICK_NOTE
    return to_dict(cfg), results, extra


QUICK_NOTE = (
    "--quick: every variant trains 20 steps on 800 stars with a 16-wide network, so the "
    "variants are indistinguishable; this run checks the plumbing only (simulation, "
    "training, sampling, scoring, records), not domain adaptation"
)


def _log(msg: str) -> None:
    import sys

    print(f"[bench domain-adapt] {msg}", file=sys.stderr, flush=True)


_STAMP_EXCLUDE = ("variants", "partial_jsonl", "threads")


def _load_partial(cfg: DomainAdaptBenchConfig) -> dict[str, dict[str, Any]]:
    """Records of an earlier, interrupted run with the same settings, by variant."""
    return load_records(cfg.partial_jsonl, settings_stamp(cfg, _STAMP_EXCLUDE), "variant")


def _append_partial(cfg: DomainAdaptBenchConfig, rec: dict[str, Any]) -> None:
    append_record(cfg.partial_jsonl, rec, settings_stamp(cfg, _STAMP_EXCLUDE))


def _table(results: list[dict[str, Any]], quick: bool = False) -> str:
    lines = [f"> {QUICK_NOTE}", ""] if quick else []
    lines += [
        "| variant | nRMSE sim | nRMSE real | gap closed | |bias| real | coverage err real | "
        "TARP err real | emb. C2ST | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['variant']} | {r['sim_nrmse']} | {r['real_nrmse']} | "
            f"{r.get('gap_closed', '')} | {r['real_abs_bias']} | {r['real_coverage_error']} | "
            f"{r['real_tarp_error']} | {r['embedding_c2st']} | {r['train_s']} |"
        )
    return "\n".join(lines) + "\n"

"""`dasbi bench yso-align`: does alignment with labelled pairs help on real young stars?

RoPE-style calibration (Wehenkel et al. 2024) takes a small labelled calibration set: real
members with spectroscopic T_eff and A_V become sim-real pairs, each with a simulated twin
at its labelled θ (:mod:`dasbi.pairs`). This benchmark measures it honestly, by
cross-validation: the pairs come from one part of a set, the scores from the other part,
whose labels the model never saw.

Sets and folds (the development sets of `dasbi bench yso-real`):

* ``ic348_ngc1333``: pairs from the IC 348 members, scores on NGC 1333, and the reverse;
* ``cra``: the CrA development members split into two halves by a hash of their name
  (``truth_cra``'s ``group``); pairs from one half, scores on the other, and the reverse.

For each set, one simulation (``num_sims`` YSOs under the yso-real ``prior`` variant,
``library/prior``) serves every alignment variant, and every member of the set (labelled or
not) is the unlabelled real domain. Variants use the grammar of `dasbi bench domain-adapt`:
``none``, or ``+``-joined ``C`` (contrastive), ``OT`` and ``RS`` (the pair term), with an
optional ``@mode`` (``modes``; ``@rope`` trains a real-side copy of the encoders on the
alignment terms only, from the sim encoders at ``start_step``). A variant without ``RS``
does not see the labels, so it is trained once per set and scored on every member; a variant
with ``RS`` is trained once per fold. Each member is thus scored by a model that never had its
labels, and every variant is scored on the same members: bias, robust σ and the fraction of
truths inside p16-p84 for T_eff (K, dex) and A_V, over all members, K5-M6, by disc type and
by spectral-type range, beside the recovery on held-out simulated stars of every trained
model (its sim side). Pairs whose labels lie outside the prior (A_V above the prior's
range, T_eff outside the prior's draws) cannot have a twin and are left out; their number
is reported.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import from_dict, param, to_dict
from . import register_bench
from .domain_adapt import default_train, observations, variant_config, variant_weights
from .yso_real import (
    SETS,
    YSORealBenchConfig,
    append_partial,
    check_variant,
    load_partial,
    member_figure,
    member_splits,
    member_stats,
    score_label_censoring,
    score_luhman2003,
    set_truth,
    simulator_options,
    summaries,
    unpack_record,
)

__all__ = ["YSOAlignBenchConfig", "bench_yso_align"]


@dataclass
class YSOAlignBenchConfig:
    """Settings of the cross-validated alignment benchmark on real YSOs."""

    sets: list[str] = param(default_factory=lambda: ["ic348_ngc1333", "cra"], help="see SETS")
    variants: list[str] = param(
        default_factory=lambda: ["none", "RS@rope", "C+RS@rope", "OT@rope"],
        help="none, or '+'-joined C, OT, RS with an optional '@mode'",
    )
    weights: dict[str, float] = param(
        default_factory=lambda: {"C": 0.1, "OT": 1.0, "RS": 1.0}, help="λ of each term"
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
        help="align settings of a variant 'terms@mode'",
    )
    prior: str = param("phoenix/young", help="library/prior of the simulations (as yso-real)")
    num_sims: int = param(20_000, ge=100, help="simulated YSOs per set")
    num_test: int = param(300, ge=10, help="held-out simulated stars for the recovery check")
    num_samples: int = param(200, ge=10, help="posterior samples per star")
    simulation: dict[str, Any] = param(
        default_factory=dict,
        help="yso-real settings of the simulation (model_set, av, age_myr, missing_prob, "
        "photosphere_logg)",
    )
    pool: int = param(50, ge=1, help="prior draws per pair for the twins' other parameters")
    train: dict[str, Any] = param(
        default_factory=default_train, help="DomainAdaptConfig settings of every variant"
    )
    sampler: dict[str, Any] = param(
        default_factory=lambda: {"method": "dpm2m", "steps": 15}, help="posterior sampler"
    )
    threads: int = param(2, ge=1)
    seed: int = param(0, ge=0)
    partial_jsonl: str | None = param(
        None,
        help="append every (set, variant) record, with its members' posterior summaries, to "
        "this JSON-lines file; a rerun with the same file and settings reuses them",
    )


def _pair_rows(
    tr: dict[str, np.ndarray], group: str, av_range: tuple[float, float], teff_range: np.ndarray
) -> tuple[np.ndarray, int]:
    """Rows (of the ingested real set) that give pairs for a fold, and how many labelled
    members of the fold fall outside the prior and so cannot."""
    lab = (tr["group"] == group) & np.isfinite(tr["teff"]) & np.isfinite(tr["av"])
    inside = (
        (tr["av"] <= av_range[1])
        & (tr["av"] >= av_range[0] - 0.5)
        & (tr["teff"] >= teff_range[0])
        & (tr["teff"] <= teff_range[1])
    )
    return np.flatnonzero(lab & inside), int(np.sum(lab & ~inside))


@register_bench("yso-align")
def bench_yso_align(
    quick: bool, options: dict[str, Any], progress: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    import h5py
    import torch

    from ..adapt import train_domain_adapt
    from ..catalogue import catalogue_to_dataset
    from ..pairs import make_pairs
    from ..simulate import SimulateConfig, build_simulator, run_simulate

    if quick:
        options = {
            "num_sims": 600,
            "num_test": 20,
            "num_samples": 16,
            "pool": 5,
            "train": {
                "max_steps": 24,
                "batch_size": 64,
                "real_batch_size": 64,
                "pair_batch_size": 16,
                "val_every": 12,
                "network": {"dim": 16, "depth": 1, "heads": 2},
                "encoder": {"dim": 16, "depth": 1, "heads": 2, "tokens": 2},
                "align": {"warmup_steps": 4, "ot_method": "emd"},
            },
            "modes": {"rope": {"encoders": "separate", "detach_sim": True, "start_step": 12}},
            "sampler": {"method": "dpm2m", "steps": 3},
            **options,
        }
    cfg = from_dict(YSOAlignBenchConfig, options)
    check_variant(cfg.prior)
    for v in cfg.variants:
        variant_weights(v, cfg.weights)
        variant_config(cfg.train, v, cfg.weights, cfg.seed, cfg.threads, cfg.modes)
    unknown = [s for s in cfg.sets if s not in SETS]
    if unknown:
        raise ValueError(f"sets: unknown {unknown}; valid: {', '.join(SETS)}")
    ycfg = from_dict(YSORealBenchConfig, {"seed": cfg.seed, **cfg.simulation})
    torch.set_num_threads(cfg.threads)
    kw_sampler = {"sampler": cfg.sampler, "seed": cfg.seed}

    results: list[dict[str, Any]] = []
    figures: dict[str, bytes] = {}
    setup: dict[str, Any] = {}
    done = load_partial(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for set_name in cfg.sets:
            table, truth = set_truth(set_name)
            todo = [v for v in cfg.variants if (set_name, v) not in done]
            drawn: dict[str, Any] = {}
            for v in cfg.variants:
                if v in todo:
                    continue
                rec = dict(done[(set_name, v)])
                stars = rec.pop("stars")
                setup[set_name] = rec.pop("setup")
                rec.pop("settings_stamp", None)
                drawn[v] = unpack_record(stars, truth)
                if "av_mag_label_above_0" not in rec["real"]["K5-M6"]:  # older records
                    score_label_censoring(rec, *drawn[v][:2])
                results.append(rec)
            if todo:
                cat = d / f"{set_name}.fits"
                table.write(cat, overwrite=True)
                sim_opts = simulator_options(ycfg, set_name, cfg.prior)
                t0 = time.perf_counter()
                sims = run_simulate(
                    from_dict(
                        SimulateConfig,
                        {
                            "num": cfg.num_sims,
                            "seed": cfg.seed,
                            "simulator": sim_opts,
                            "chunk_size": 10_000,
                        },
                    ),
                    d / f"{set_name}.h5",
                    progress=progress,
                )
                test = run_simulate(
                    from_dict(
                        SimulateConfig,
                        {"num": cfg.num_test, "seed": cfg.seed + 1, "simulator": sim_opts},
                    ),
                    d / f"{set_name}_test.h5",
                    progress=False,
                )
                sim_s = time.perf_counter() - t0
                real, report = catalogue_to_dataset(
                    cat, SETS[set_name]["survey"], sims, d / f"{set_name}_real.h5"
                )
                with h5py.File(real) as f:
                    ids = np.char.decode(f["source_id"][:])
                index = {k: i for i, k in enumerate(truth["id"])}
                tr = {k: v[np.array([index[i] for i in ids])] for k, v in truth.items()}
                _, kw_real = observations(real)
                theta_test, kw_test = observations(test)
                sim = build_simulator(sim_opts)
                draws = sim.sample_prior(20_000, np.random.default_rng(cfg.seed))
                teff_range = np.percentile(
                    draws[:, sim.theta_names.index("star.temperature")], [0, 100]
                )
                groups = sorted(set(tr["group"]))
                folds: dict[str, dict[str, Any]] = {}
                for g in groups:
                    rows, n_out = _pair_rows(tr, g, tuple(ycfg.av), teff_range)
                    labels = {
                        "star.temperature": tr["teff"][rows],
                        "av": np.clip(tr["av"][rows], ycfg.av[0], ycfg.av[1]),
                    }
                    p_sim, p_real = make_pairs(
                        sim_opts,
                        real,
                        labels,
                        d / f"{set_name}_{g}_pairs_sim.h5",
                        d / f"{set_name}_{g}_pairs_real.h5",
                        rows=rows,
                        seed=cfg.seed + 7,
                        pool=cfg.pool,
                    )
                    folds[g] = {
                        "pairs": (p_sim, p_real),
                        "n_pairs": int(len(rows)),
                        "n_outside_prior": n_out,
                        "scored": tr["group"] != g,
                    }
                setup[set_name] = {
                    "simulate_s": round(sim_s, 1),
                    "members_ingested": int(len(ids)),
                    "rejected": report.counts(),
                    "folds": {
                        g: {
                            "pairs_from": g,
                            "scored": sorted({str(x) for x in tr["group"][f["scored"]]}),
                            "n_pairs": f["n_pairs"],
                            "n_labelled_outside_prior": f["n_outside_prior"],
                        }
                        for g, f in folds.items()
                    },
                }
            for variant in todo:
                uses_pairs = variant_weights(variant, cfg.weights)["pair"] > 0
                da = variant_config(
                    cfg.train, variant, cfg.weights, cfg.seed, cfg.threads, cfg.modes
                )
                z_real = None
                models = []
                runs = [(g, folds[g]) for g in groups] if uses_pairs else [(None, None)]
                for g, fold in runs:
                    t1 = time.perf_counter()
                    post, hist = train_domain_adapt(
                        sims,
                        real,
                        da,
                        pairs=fold["pairs"] if fold else None,
                        progress=progress,
                    )
                    train_s = time.perf_counter() - t1
                    names = post.parameter_names
                    separate = (
                        post.modalities is not None and post.modalities.real_encoders is not None
                    )
                    with torch.no_grad():
                        z_sim = post.sample(
                            (cfg.num_samples,), **kw_test, domain="sim", **kw_sampler
                        ).numpy()
                        # the real-side encoders on simulated stars: what they still know
                        z_sim_r = (
                            post.sample(
                                (cfg.num_samples,), **kw_test, domain="real", **kw_sampler
                            ).numpy()
                            if separate
                            else None
                        )
                        z = post.sample(
                            (cfg.num_samples,), **kw_real, domain="real", **kw_sampler
                        ).numpy()
                    if fold is None:
                        z_real = z
                    else:  # each member is scored by the fold that had no pair of it
                        z_real = np.full_like(z, np.nan) if z_real is None else z_real
                        z_real[:, fold["scored"]] = z[:, fold["scored"]]
                    s_sim = summaries(z_sim, names)
                    t_true = theta_test[:, names.index("star.temperature")]
                    a_true = theta_test[:, names.index("av")]
                    target = (t_true >= 2800.0) & (t_true <= 4400.0)
                    models.append(
                        {
                            "pairs_from": g,
                            "train_s": round(train_s, 1),
                            "train_steps": int(post.meta["training"].get("steps", 0) or 0),
                            "sim_test_2800-4400K": member_stats(s_sim, t_true, a_true, target),
                            "sim_test_real_encoders_2800-4400K": None
                            if z_sim_r is None
                            else member_stats(summaries(z_sim_r, names), t_true, a_true, target),
                            "last_losses": {
                                k: round(float(v), 4)
                                for k, v in hist[-1].items()
                                if isinstance(v, (int, float))
                            }
                            if hist
                            else {},
                        }
                    )
                assert z_real is not None
                s_real = summaries(z_real, names)
                splits = member_splits(tr)
                rec = {
                    "set": set_name,
                    "variant": variant,
                    "uses_pairs": bool(uses_pairs),
                    "models": models,
                    "real": {
                        k: member_stats(s_real, tr["teff"], tr["av"], v) for k, v in splits.items()
                    },
                }
                score_luhman2003(rec, s_real, tr)
                score_label_censoring(rec, s_real, tr)
                results.append(rec)
                drawn[variant] = (s_real, tr, splits["all"])
                append_partial(cfg, rec, tr["id"], s_real, setup=setup[set_name])
            order = {v: i for i, v in enumerate(cfg.variants)}
            drawn = dict(sorted(drawn.items(), key=lambda kv: order[kv[0]]))
            figures[set_name] = member_figure(
                drawn, SETS[set_name]["title"] + ": cross-validated alignment"
            )
    order = {(s, v): i for i, (s, v) in enumerate((s, v) for s in cfg.sets for v in cfg.variants)}
    results.sort(key=lambda r: order[(r["set"], r["variant"])])
    extra = {"setup": setup, "summary_table": _table(results), "figures": figures}
    return to_dict(cfg), results, extra


def _table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| set | variant | split | n | T_eff bias [K] | σ [K] | in p16-p84 | Δlog T bias | "
        "A_V bias | σ | in p16-p84 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(r: dict[str, Any], split: str, st: dict[str, Any]) -> None:
        t, g, a = st["teff_K"], st["log10_teff"], st["av_mag"]
        if t["n"]:
            lines.append(
                f"| {r['set']} | {r['variant']} | {split} | {t['n']} | {t['bias']:+.0f} | "
                f"{t['robust_sigma']:.0f} | {t['in_p16_p84']:.2f} | {g['bias']:+.3f} | "
                f"{a['bias']:+.2f} | {a['robust_sigma']:.2f} | {a['in_p16_p84']:.2f} |"
            )

    for r in results:
        for m in r["models"]:
            what = "sim test" + (f" (pairs {m['pairs_from']})" if m["pairs_from"] else "")
            row(r, what + " 2800-4400K", m["sim_test_2800-4400K"])
            if m.get("sim_test_real_encoders_2800-4400K"):
                row(r, what + ", real-side encoders", m["sim_test_real_encoders_2800-4400K"])
        for split in ("all", "K5-M6", "K5-M6 III", "K5-M6 disc"):
            row(r, split, r["real"][split])
    return "\n".join(lines)

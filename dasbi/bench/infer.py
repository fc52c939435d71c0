"""`dasbi bench infer`: catalogue inference throughput and calibration for the YSO model.

One run:

1. simulates ``num_sims`` training and ``num_test`` test YSOs (``simulators.yso``, the
   configured R17 set, 15 bands with survey-depth upper limits so that every value is
   finite and sbi's NPE sees the same numbers);
2. trains dasbi (or loads ``model``) and sbi's NPE (default flow, θ in the model's
   log/linear space with a box prior) on the same simulations;
3. samples ``num_samples`` posterior draws for each test object with both, timing samples/s
   and objects/s, and scores calibration as the expected-coverage error of central
   marginal credible intervals (mean |coverage - level| over 19 levels and all parameters)
   and the RMSE of posterior medians in that space;
4. runs ``dasbi infer`` on a catalogue of ``objects`` test objects (written as FITS with its
   column map) locally and with Ray for each entry of ``workers``, for objects/s end to end;
5. projects the time for 10⁶ objects × ``num_samples`` on this machine and the core-hours
   for 10⁹ objects.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import from_dict, param, to_dict
from . import register_bench

__all__ = ["InferBenchConfig", "bench_infer", "coverage_error", "log_space"]

LEVELS = np.linspace(0.05, 0.95, 19)


@dataclass
class InferBenchConfig:
    """Settings of the inference benchmark."""

    model_set: str = param("sp--s-i", help="R17 model set of the simulated YSOs")
    library: str = param("ck04", help="ck04 or planck photospheres")
    num_sims: int = param(30_000, ge=100, help="training simulations")
    num_test: int = param(300, ge=10, help="test objects with known θ")
    num_samples: int = param(100, ge=2, help="posterior samples per object")
    train: dict[str, Any] = param(
        default_factory=lambda: {
            "max_steps": 4000,
            "batch_size": 256,
            "network": {"dim": 64, "depth": 4, "heads": 4},
            "val_every": 500,
        },
        help="dasbi TrainConfig overrides",
    )
    model: str | None = param(None, help="use this checkpoint instead of training")
    samplers: list[str] = param(
        default_factory=lambda: ["dpm2m-15", "dpm2m-15-bf16", "dpm2m-10-bf16"],
        help="dasbi samplers as method-steps[-bf16][@key=value,…], each scored on the same "
        "weights; the first one also runs the end-to-end `dasbi infer` measurements",
    )
    npe: bool = param(True, help="train and score sbi's NPE on the same simulations")
    sbi_max_epochs: int | None = param(None, ge=1, help="cap on NPE epochs (sbi: none)")
    objects: int = param(2000, ge=10, help="catalogue rows for the end-to-end runs")
    chunk_size: int = param(500, ge=1, help="dasbi infer chunk size")
    workers: list[int] = param(default_factory=lambda: [1, 2], help="Ray worker counts")
    threads: int = param(2, ge=1, help="torch threads (local run; Ray uses 1 per worker)")
    seed: int = param(0, ge=0)


def coverage_error(samples: np.ndarray, truth: np.ndarray) -> tuple[float, np.ndarray]:
    """Expected-coverage error of central marginal intervals.

    Args:
        samples: (S, N, P) posterior draws; truth: (N, P).

    Returns:
        The mean |empirical coverage - level| over :data:`LEVELS` and parameters, and the
        (levels,) coverage averaged over parameters.
    """
    rank = np.mean(samples < truth[None], axis=0)  # (N, P) in [0, 1]
    dist = np.abs(rank - 0.5) * 2  # the central level at which truth sits on the edge
    cov = np.array([np.mean(dist <= a, axis=0) for a in LEVELS])  # (L, P)
    return float(np.mean(np.abs(cov - LEVELS[:, None]))), cov.mean(1)


def log_space(nodes: list[Any]) -> tuple[Any, Any]:
    logs = np.array([n.transform == "log10" for n in nodes])

    def fwd(th: np.ndarray) -> np.ndarray:
        return np.where(logs, np.log10(np.maximum(th, 1e-300)), th)

    def inv(z: np.ndarray) -> np.ndarray:
        return np.where(logs, 10.0**z, z)

    return fwd, inv


@register_bench("infer")
def bench_infer(
    quick: bool, options: dict[str, Any], progress: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    from ..dataset import Dataset
    from ..simulate import SimulateConfig, run_simulate
    from ..train import TrainConfig, train

    if quick:
        options = {
            "num_sims": 600,
            "num_test": 30,
            "num_samples": 20,
            "train": {"max_steps": 30, "batch_size": 64, "network": {"dim": 16, "depth": 1}},
            "sbi_max_epochs": 2,
            "objects": 60,
            "chunk_size": 30,
            "workers": [1],
            "samplers": ["dpm2m-3", "dpm2m-3-bf16"],
            **options,
        }
    cfg = from_dict(InferBenchConfig, options)
    from .sbibm import parse_sampler_specs

    samplers = parse_sampler_specs(cfg.samplers)
    covs: dict[str, np.ndarray] = {}
    torch.set_num_threads(cfg.threads)
    sim_opts = {
        "name": "yso",
        "model_set": cfg.model_set,
        "library": cfg.library,
        "aperture_arcsec": 3.0,
        "non_detection": "upper_limit",
        "parallax": False,
    }
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        t0 = time.perf_counter()
        train_path = run_simulate(
            from_dict(
                SimulateConfig,
                {"num": cfg.num_sims, "seed": cfg.seed, "simulator": sim_opts, "chunk_size": 5000},
            ),
            tmpd / "train.h5",
            progress=progress,
        )
        test_path = run_simulate(
            from_dict(
                SimulateConfig,
                {"num": max(cfg.num_test, 10), "seed": cfg.seed + 1, "simulator": sim_opts},
            ),
            tmpd / "test.h5",
            progress=False,
        )
        sim_s = time.perf_counter() - t0
        with Dataset(train_path) as ds:
            tr = ds.read()
            nodes = list(ds.nodes.parameters)
            obs_nodes = [n for n in ds.nodes.diffuse if n.kind == "observable"]
        with Dataset(test_path) as ds:
            te = ds.read()
        fwd, inv = log_space(nodes)
        # -- dasbi -------------------------------------------------------------------------
        if cfg.model:
            from ..posterior import Posterior

            post, train_s, model_dir = Posterior.load(cfg.model), 0.0, Path(cfg.model)
        else:
            tcfg = from_dict(TrainConfig, {"seed": cfg.seed, **cfg.train})
            model_dir = tmpd / "model"
            res = train(train_path, tcfg, out=model_dir, progress=progress)
            post, train_s = res.posterior, res.train_seconds
        x = te["photometry"]
        names = [n.name for n in obs_nodes]
        given = {n: x.values[:, j] for j, n in enumerate(names)}
        errs = {n: x.errors[:, j] for j, n in enumerate(names)}
        lims = {n: x.upper_limit[:, j] for j, n in enumerate(names)}
        truth = fwd(np.asarray(te["theta"].values, np.float64))
        post.sample(
            (2,),
            x={k: v[:2] for k, v in given.items()},
            errors={k: v[:2] for k, v in errs.items()},
        )
        for spec, sampler in samplers.items():
            t0 = time.perf_counter()
            s = post.sample(
                (cfg.num_samples,),
                x=given,
                errors=errs,
                upper_limits=lims,
                seed=cfg.seed,
                sampler=sampler,
            ).numpy()
            dt = time.perf_counter() - t0
            record, covs[spec] = _score(
                fwd(s.astype(np.float64)), truth, dt, nodes, cfg.num_samples
            )
            results.append(
                {
                    "method": "dasbi",
                    "sampler": spec,
                    "limits": post.limit_mode,
                    "train_s": round(train_s, 1),
                    **record,
                }
            )
        cov_n = None
        if cfg.npe:
            record, cov_n = _npe(cfg, tr, x, truth, fwd, nodes)
            results.append(record)
        # -- dasbi infer end to end, local and Ray -----------------------------------------
        results += _end_to_end(cfg, tmpd, model_dir, x, names, progress)
    best = max(r["objects_per_s"] for r in results if r["method"].startswith("dasbi infer"))
    hours_1e6 = 1e6 / best / 3600
    core_hours_1e9 = 1e9 / (best / 2) / 3600
    extra = {
        "projection": {
            "objects_per_s_best": best,
            "hours_1e6_objects_this_machine": round(hours_1e6, 2),
            "core_hours_1e9_objects": round(core_hours_1e9, 0),
            "hours_1e9_objects_on_1000_cores": round(core_hours_1e9 / 1000, 1),
            "note": "2 cores here; 1e9 assumes the per-core rate of this machine, linear scaling",
        },
        "coverage_curve": {
            "levels": LEVELS.round(3).tolist(),
            **{f"dasbi {k}": c.round(4).tolist() for k, c in covs.items()},
            **({} if cov_n is None else {"npe": cov_n.round(4).tolist()}),
        },
        "simulate_s": round(sim_s, 1),
        "summary_table": _table(results, hours_1e6, core_hours_1e9),
    }
    return to_dict(cfg), results, extra


def _npe(
    cfg: InferBenchConfig, tr: dict[str, Any], x: Any, truth: np.ndarray, fwd: Any, nodes: list
) -> tuple[dict[str, Any], np.ndarray]:
    """sbi's NPE (default flow) on the same simulations: the record and its coverage curve."""
    from sbi.inference import NPE
    from sbi.utils import BoxUniform

    th_tr = fwd(np.asarray(tr["theta"].values, np.float64))
    lo, hi = th_tr.min(0), th_tr.max(0)
    pad = 1e-3 * (hi - lo + 1e-9)
    prior = BoxUniform(
        torch.as_tensor(lo - pad, dtype=torch.float32),
        torch.as_tensor(hi + pad, dtype=torch.float32),
    )
    torch.manual_seed(cfg.seed)
    npe = NPE(prior=prior, show_progress_bars=False)
    t0 = time.perf_counter()
    kw = {} if cfg.sbi_max_epochs is None else {"max_num_epochs": cfg.sbi_max_epochs}
    npe.append_simulations(
        torch.as_tensor(th_tr, dtype=torch.float32),
        torch.as_tensor(tr["photometry"].values, dtype=torch.float32),
    ).train(**kw)
    npe_train = time.perf_counter() - t0
    npe_post = npe.build_posterior()
    t0 = time.perf_counter()
    # without leakage rejection (an undertrained flow can put most mass outside the
    # box and stall it); the fraction of draws outside the prior is reported instead
    zs = (
        npe_post.sample_batched(
            (cfg.num_samples,),
            x=torch.as_tensor(x.values, dtype=torch.float32),
            show_progress_bars=False,
            reject_outside_prior=False,
        )
        .detach()
        .numpy()
        .astype(np.float64)
    )
    dt = time.perf_counter() - t0
    leak = float(np.mean(np.any((zs < lo - pad) | (zs > hi + pad), axis=-1)))
    record, cov_n = _score(zs, truth, dt, nodes, cfg.num_samples)
    return (
        {
            "method": "npe",
            "train_s": round(npe_train, 1),
            "outside_prior": round(leak, 4),
            **record,
        },
        cov_n,
    )


def _score(
    z: np.ndarray, truth: np.ndarray, seconds: float, nodes: list, num_samples: int
) -> tuple[dict[str, Any], np.ndarray]:
    """Throughput, calibration and RMSE of samples z (S, N, P) against truth (N, P)."""
    ece, cov = coverage_error(z, truth)
    rmse = np.sqrt(np.mean((np.median(z, 0) - truth) ** 2, axis=0))
    n = len(truth)
    return (
        {
            "objects": n,
            "samples_per_object": num_samples,
            "samples_per_s": round(n * num_samples / seconds, 1),
            "objects_per_s": round(n / seconds, 2),
            "coverage_error": round(ece, 4),
            "rmse_mean": round(float(rmse.mean()), 4),
            **{f"rmse_{n.name}": round(float(r), 4) for n, r in zip(nodes, rmse, strict=True)},
        },
        cov,
    )


def _end_to_end(
    cfg: InferBenchConfig,
    tmpd: Path,
    model_dir: Path,
    x: Any,
    names: list[str],
    progress: bool,
) -> list[dict[str, Any]]:
    from astropy.table import Table

    from ..infer import InferConfig, run_infer
    from .sbibm import parse_sampler_specs

    rng = np.random.default_rng(cfg.seed)
    idx = rng.integers(0, len(x.values), cfg.objects)
    t = Table()
    t["id"] = np.arange(cfg.objects)
    lines = ["name: bench", "catalogue:", "  id: id", "  columns:"]
    for j, n in enumerate(names):
        t[f"m{j}"] = x.values[idx, j]
        t[f"e{j}"] = x.errors[idx, j]
        t[f"l{j}"] = x.upper_limit[idx, j]
        lines.append(f"    {n}: {{value: m{j}, error: e{j}, limit: l{j}}}")
    cat = tmpd / "catalogue.fits"
    t.write(cat)
    smap = tmpd / "map.yaml"
    smap.write_text("\n".join(lines) + "\n")
    runs = [("local", 1, cfg.threads)] + [("ray", w, 1) for w in cfg.workers]
    first = parse_sampler_specs(cfg.samplers[:1])[cfg.samplers[0]]
    out = []
    for backend, workers, threads in runs:
        icfg = from_dict(
            InferConfig,
            {
                "model": str(model_dir),
                "catalogue": str(cat),
                "survey": str(smap),
                "num_samples": cfg.num_samples,
                "chunk_size": cfg.chunk_size,
                "seed": cfg.seed,
                "sampler": first["method"],
                "sampler_steps": first["steps"],
                "precision": first["precision"],
                "threads": threads,
                "backend": backend,
                "workers": workers,
                "fits": False,
            },
        )
        t0 = time.perf_counter()
        run_infer(icfg, tmpd / f"post_{backend}_{workers}.h5", progress=progress)
        dt = time.perf_counter() - t0
        out.append(
            {
                "method": f"dasbi infer ({backend})",
                "sampler": cfg.samplers[0],
                "workers": workers,
                "threads_per_worker": threads,
                "objects": cfg.objects,
                "samples_per_object": cfg.num_samples,
                "seconds": round(dt, 2),
                "objects_per_s": round(cfg.objects / dt, 2),
                "samples_per_s": round(cfg.objects * cfg.num_samples / dt, 1),
            }
        )
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except ImportError:
        pass
    return out


def _table(results: list[dict[str, Any]], hours: float, core_hours: float) -> str:
    lines = [
        "| method | objects/s | samples/s | coverage error | RMSE (mean) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        name = r["method"] + (f", {r['workers']} worker(s)" if "workers" in r else "")
        lines.append(
            f"| {name} | {r['objects_per_s']} | {r['samples_per_s']} | "
            f"{r.get('coverage_error', '')} | {r.get('rmse_mean', '')} |"
        )
    lines.append("")
    lines.append(f"10⁶ objects here: {hours:.1f} h; 10⁹ objects: {core_hours:,.0f} core-hours.")
    return "\n".join(lines) + "\n"

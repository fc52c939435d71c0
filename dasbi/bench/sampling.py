"""`dasbi bench sampling`: posterior samples per second of dasbi's samplers against sbi's.

The cost of drawing samples does not depend on what the weights are, only on the network
and the solver, so this benchmark trains each model for a token number of steps (dasbi:
``train_steps``; NPE/NPSE: ``sbi_epochs``) and times sampling for one observation, all in
one process with the same threads, one after the other. It isolates the speed comparison
from the accuracy one: `dasbi bench sbibm` gives C2ST per sampler (and samples/s, but there
runs of different methods are minutes apart on a possibly loaded machine).
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

__all__ = ["SamplingBenchConfig", "bench_sampling"]


@dataclass
class SamplingBenchConfig:
    """Settings of the sampling-speed benchmark."""

    task: str = param("two_moons", help="simulator of the model (two_moons, slcp, …)")
    num_samples: int = param(5000, ge=10, help="posterior samples per timed call")
    repeats: int = param(2, ge=1, help="timed calls per method (the best is reported)")
    samplers: list[str] = param(
        default_factory=lambda: ["heun-25", "dpm2m-15", "heun-12"],
        help="dasbi samplers as method-steps[-bf16][@key=value,…], e.g. dpm2m-10@sigma_end=0.01",
    )
    baselines: list[str] = param(default_factory=lambda: ["npse", "npe"], help="npse, npe")
    network: dict[str, Any] = param(
        default_factory=lambda: {"heads": 2}, help="dasbi NetworkConfig overrides"
    )
    train_steps: int = param(20, ge=1, help="dasbi training steps (weights do not matter)")
    sbi_epochs: int = param(2, ge=1, help="NPE/NPSE epochs (weights do not matter)")
    threads: int = param(2, ge=1, help="torch threads")
    seed: int = param(0, ge=0)


def _best_rate(fn: Any, n: int, repeats: int) -> float:
    fn()  # warm-up
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


@register_bench("sampling")
def bench_sampling(
    quick: bool, options: dict[str, Any], progress: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    from ..dataset import Dataset
    from ..simulate import SimulateConfig, run_simulate
    from ..train import TrainConfig, train
    from .sbibm import parse_sampler_specs, simulator_prior

    if quick:
        options = {"num_samples": 500, "repeats": 1, **options}
    cfg = from_dict(SamplingBenchConfig, options)
    for b in cfg.baselines:
        if b not in ("npse", "npe"):
            raise ValueError(f"unknown baseline {b!r}; valid: npse, npe")
    samplers = parse_sampler_specs(cfg.samplers)
    torch.set_num_threads(cfg.threads)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        sim_cfg = from_dict(
            SimulateConfig, {"num": 2000, "seed": cfg.seed, "simulator": {"name": cfg.task}}
        )
        data = run_simulate(sim_cfg, Path(tmp) / "sims.h5", progress=False)
        tcfg = from_dict(
            TrainConfig,
            {
                "max_steps": cfg.train_steps,
                "val_every": max(cfg.train_steps, 10),
                "network": cfg.network,
                "seed": cfg.seed,
            },
        )
        post = train(data, tcfg, progress=False).posterior
        with Dataset(data) as ds:
            blocks = ds.read()
        x_obs = blocks["x"].values[:1]
        errors = blocks["x"].errors[:1] if np.any(blocks["x"].errors > 0) else None
        for spec, sampler in samplers.items():
            rate = _best_rate(
                lambda sampler=sampler: post.sample(
                    (cfg.num_samples,), x=x_obs, errors=errors, seed=0, sampler=sampler
                ),
                cfg.num_samples,
                cfg.repeats,
            )
            results.append({"method": f"dasbi {spec}", "samples_per_s": round(rate, 1)})
        theta = torch.as_tensor(blocks["theta"].values)
        x = torch.as_tensor(blocks["x"].values)
        from sbi.inference import NPE, NPSE

        for name in cfg.baselines:
            torch.manual_seed(cfg.seed)
            prior = simulator_prior(cfg.task)
            inf = (
                NPSE(prior=prior, sde_type="ve", show_progress_bars=False)
                if name == "npse"
                else NPE(prior=prior, show_progress_bars=False)
            )
            inf.append_simulations(theta, x).train(max_num_epochs=cfg.sbi_epochs)
            po = inf.build_posterior()
            xo = torch.as_tensor(x_obs[0], dtype=torch.float32)
            rate = _best_rate(
                lambda po=po, xo=xo: po.sample((cfg.num_samples,), x=xo, show_progress_bars=False),
                cfg.num_samples,
                cfg.repeats,
            )
            sampler = "500-step Euler-Maruyama (sbi default)" if name == "npse" else "flow"
            results.append({"method": name, "samples_per_s": round(rate, 1), "sampler": sampler})
    rates = {r["method"]: r["samples_per_s"] for r in results}
    if "npse" in rates:
        for r in results:
            if r["method"].startswith("dasbi"):
                r["speedup_vs_npse"] = round(r["samples_per_s"] / rates["npse"], 2)
    table = "\n".join(
        ["| method | samples/s | × NPSE |", "|---|---|---|"]
        + [
            f"| {r['method']} | {r['samples_per_s']} | {r.get('speedup_vs_npse', '—')} |"
            for r in results
        ]
    )
    return to_dict(cfg), results, {"summary_table": table}

"""`dasbi evaluate`: calibration and recovery diagnostics of a model on held-out simulations.

For the first ``num_objects`` rows of a simulated dataset that the model was not trained on
(e.g. ``dasbi simulate --seed 99``), draw ``num_samples`` posterior samples given each row's
observables (with its missing values, uncertainties and upper limits, exactly as
``dasbi infer`` would), then compare them with the true θ (:mod:`dasbi.diagnostics`):

* SBC rank histograms and their χ² uniformity p-values (``sbc.png``);
* expected coverage of central intervals, with a calibration flag per parameter
  (``coverage.png``);
* TARP with sbi's ATC and KS test (``tarp.png``);
* recovery: posterior median against truth coloured by the posterior width, with the bias
  and robust σ (1.4826 × MAD) in each panel (``recovery.png``);
* C2ST (sbi's random forest) against reference posterior samples, where the simulator has
  an analytic posterior (the linear Gaussian task).

Everything lands in the output folder (replaced atomically): ``evaluation.json`` and the
PNG figures. Parameters with a log transform are evaluated in log10.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import (
    apply_overrides,
    check_device,
    from_dict,
    param,
    read_yaml,
    resolve_config,
    to_dict,
)
from .errors import ConfigError, DataError

__all__ = ["EvaluateConfig", "run_evaluate", "run_evaluate_cli"]


@dataclass
class EvaluateConfig:
    """Settings of `dasbi evaluate`."""

    model: str | None = param(None, help="checkpoint folder")
    data: str | None = param(None, help="held-out simulated dataset (.h5)")
    num_objects: int = param(500, ge=10, help="test objects (the first rows of the dataset)")
    num_samples: int = param(200, ge=10, help="posterior samples per object")
    seed: int = param(0, ge=0, help="sampling seed")
    sampler: str | None = param(None, help="sampler method (default: the model's)")
    sampler_steps: int | None = param(
        None, ge=2, help="sampler (solver) steps (default: the model's)"
    )
    device: str = param("cpu", help="torch device of the model: cpu, cuda, cuda:1, mps")
    batch_objects: int = param(50, ge=1, help="objects sampled per call")
    c2st_objects: int = param(10, ge=0, help="objects with a C2ST against reference samples")


def _space(nodes: list[Any]) -> tuple[list[str], Any]:
    """Labels and the map to the evaluation space (log10 for log-transformed nodes)."""
    logs = np.array([n.transform in ("log10", "log") for n in nodes])
    labels = [f"log10 {n.name}" if lg else n.name for n, lg in zip(nodes, logs, strict=True)]

    def fwd(x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(logs, np.log10(np.where(logs, x, 1.0)), x)

    return labels, fwd


def _reference_sampler(ds: Any) -> Any:
    """The simulator's analytic posterior sampler, if the dataset's simulator has one."""
    import yaml

    from .simulate import build_simulator

    try:
        options = (yaml.safe_load(ds.config) or {}).get("simulator")
        sim = build_simulator(options) if options else None
    except Exception:  # noqa: BLE001 - no reference then (e.g. a grid that moved)
        return None
    return getattr(sim, "reference_posterior", None)


def run_evaluate(cfg: EvaluateConfig, out: str | Path, progress: bool = True) -> Path:
    """Run the diagnostics of ``cfg`` and write them to the folder ``out``."""
    from . import diagnostics as dg
    from . import plots
    from .dataset import Dataset
    from .fileio import atomic_dir
    from .inputs import diffuse_arrays
    from .posterior import Posterior
    from .progress import progress_bar

    for key in ("model", "data"):
        if not getattr(cfg, key):
            raise ConfigError(f"dasbi evaluate needs --{key} (or {key}: in the config)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; dasbi evaluate writes a folder")
    check_device(cfg.device)
    post = Posterior.load(cfg.model, device=cfg.device)
    with Dataset(cfg.data) as ds:
        nodes = {n.name: n for n in ds.nodes.diffuse}
        params = post.parameter_names
        obs_names = post.observable_names
        missing = [n for n in (*params, *obs_names) if n not in nodes]
        if missing:
            raise DataError(
                f"dataset {cfg.data} lacks the model's nodes {missing}; evaluate on data "
                "simulated with the model's simulator"
            )
        n = min(cfg.num_objects, ds.num_rows)
        if n < 10:
            raise DataError(f"dataset {cfg.data} has {ds.num_rows} rows; evaluate needs >= 10")
        values, errors, observed, upper = diffuse_arrays(ds.read(0, n), ds.nodes)
        reference = _reference_sampler(ds) if cfg.c2st_objects else None
    col = {name: j for j, name in enumerate(nodes)}
    truth = values[:, [col[p] for p in params]].astype(np.float64)
    oi = [col[o] for o in obs_names]
    x, e, m, lim = values[:, oi], errors[:, oi], observed[:, oi], upper[:, oi]
    from .checkpoint import read_meta

    trained_on = read_meta(cfg.model).get("dataset")
    held_out = not trained_on or Path(trained_on).resolve() != Path(cfg.data).resolve()
    if not held_out:
        print(
            f"dasbi evaluate: warning: {cfg.data} is the model's training dataset; "
            "the diagnostics are optimistic",
            file=sys.stderr,
        )
    kw: dict[str, Any] = {}
    if cfg.sampler:
        kw["sampler"] = cfg.sampler
    if cfg.sampler_steps:
        kw["steps"] = cfg.sampler_steps
    samples = np.empty((cfg.num_samples, n, len(params)), np.float64)
    bar = progress_bar(total=n, desc="evaluate", unit="obj", disable=not progress)
    with bar:
        for a in range(0, n, cfg.batch_objects):
            b = min(a + cfg.batch_objects, n)
            draw = post.sample(
                (cfg.num_samples,),
                x=np.where(m[a:b], x[a:b], np.nan),
                observed=m[a:b],
                errors=np.where(m[a:b], e[a:b], 0.0),
                upper_limits=lim[a:b] & m[a:b],
                seed=cfg.seed + a,
                **kw,
            )
            samples[:, a:b] = draw.numpy()
            bar.update(b - a)

    pnodes = [nodes[p] for p in params]
    labels, fwd = _space(pnodes)
    z, zt = fwd(samples), fwd(truth)
    ranks = dg.sbc_ranks(z, zt)
    pvals = dg.rank_uniformity(ranks, cfg.num_samples)
    cov = dg.expected_coverage(z, zt)
    flags = dg.calibration_flags(cov, n)
    tarp = dg.tarp_coverage(z, zt, seed=cfg.seed)
    rec = dg.recovery_stats(z, zt)
    c2st = _c2st(reference, samples, x, m, lim, cfg, params) if reference is not None else None
    per_param = {
        name: {
            "space": labels[j],
            "bias": float(rec["bias"][j]),
            "robust_sigma": float(rec["robust_sigma"][j]),
            "rmse": float(rec["rmse"][j]),
            "median_width": float(rec["median_width"][j]),
            "sbc_pvalue": float(pvals[j]),
            "coverage_error": float(np.mean(np.abs(cov[:, j] - dg.LEVELS))),
            "coverage_68": float(np.interp(0.68, dg.LEVELS, cov[:, j])),
            "coverage_95": float(np.interp(0.95, dg.LEVELS, cov[:, j])),
            "flag": flags[j],
        }
        for j, name in enumerate(params)
    }
    record = {
        "model": str(cfg.model),
        "data": str(cfg.data),
        "held_out": held_out,
        "settings": to_dict(cfg),
        "num_objects": n,
        "parameters": per_param,
        "coverage": {"levels": dg.LEVELS.tolist(), "per_parameter": cov.T.tolist()},
        "tarp": {
            "error": tarp["error"],
            "atc": tarp["atc"],
            "ks_pvalue": tarp["ks_pvalue"],
            "alpha": tarp["alpha"].tolist(),
            "ecp": tarp["ecp"].tolist(),
        },
        "c2st": c2st,
        "flagged": sorted(p for p, f in zip(params, flags, strict=True) if f),
    }
    figures = {
        "sbc": plots.plot_sbc(ranks, cfg.num_samples, labels, pvals),
        "coverage": plots.plot_coverage(dg.LEVELS, cov, labels, n),
        "tarp": plots.plot_tarp(tarp["alpha"], tarp["ecp"], tarp["atc"], tarp["ks_pvalue"]),
        "recovery": plots.plot_recovery(
            zt, rec["median"], rec["width"], labels, rec["bias"], rec["robust_sigma"]
        ),
    }
    import matplotlib.pyplot as plt

    with atomic_dir(out) as tmp:
        (tmp / "evaluation.json").write_text(json.dumps(record, indent=1))
        for name, fig in figures.items():
            fig.savefig(tmp / f"{name}.png", dpi=110)
            plt.close(fig)
    return out


def _c2st(
    reference: Any,
    samples: np.ndarray,
    x: np.ndarray,
    m: np.ndarray,
    lim: np.ndarray,
    cfg: EvaluateConfig,
    params: list[str],
) -> dict[str, Any] | None:
    """rf-C2ST of the model's samples against the analytic posterior, per object."""
    import torch
    from sbi.utils.metrics import c2st

    rng = np.random.default_rng(cfg.seed)
    rows = [i for i in range(len(x)) if not lim[i].any()][: cfg.c2st_objects]
    if not rows:
        return None
    scores = []
    for i in rows:
        ref = reference(np.where(m[i], x[i], np.nan), cfg.num_samples, rng)
        if ref is None:
            return None
        scores.append(
            float(
                c2st(
                    torch.as_tensor(samples[:, i], dtype=torch.float32),
                    torch.as_tensor(ref, dtype=torch.float32),
                    classifier="rf",
                    seed=cfg.seed,
                )
            )
        )
    return {"objects": len(rows), "mean": float(np.mean(scores)), "per_object": scores}


def run_evaluate_cli(args: argparse.Namespace) -> int:
    data = read_yaml(resolve_config(args.config, "evaluate")) if args.config else {}
    data = apply_overrides(data, args.overrides)
    for key in ("model", "data", "num_objects", "num_samples", "sampler_steps", "device"):
        if getattr(args, key, None) is not None:
            data[key] = getattr(args, key)
    if "steps" in data:
        raise ConfigError(
            "evaluate: 'steps' is now 'sampler_steps' (the sampler's solver steps; training "
            "steps are `dasbi train --max-steps`)"
        )
    cfg = from_dict(EvaluateConfig, data)
    path = run_evaluate(cfg, args.out, progress=not args.quiet)
    record = json.loads((path / "evaluation.json").read_text())
    for name, p in record["parameters"].items():
        flag = f"  [{p['flag']}]" if p["flag"] else ""
        print(
            f"{name:>16}: bias {p['bias']:+.3g}, σ {p['robust_sigma']:.3g}, coverage error "
            f"{p['coverage_error']:.3f}, SBC p {p['sbc_pvalue']:.2g}{flag}"
        )
    print(f"wrote diagnostics (evaluation.json, sbc/coverage/tarp/recovery.png) to {path}")
    return 0

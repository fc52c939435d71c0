"""`dasbi bench sbibm`: C2ST against sbibm reference posteriors, with sbi NPE and NPSE.

For every task, simulation budget and reference observation, each method is trained on the
same simulations (dasbi's own simulators reproduce sbibm's tasks exactly) and sampled
``num_samples`` times. Its samples are compared with sbibm's 10,000 reference posterior
samples by two classifier two-sample tests, each the mean accuracy of 5 folds with the
reference passed first (its statistics z-score both sets):

* ``c2st_rf``: ``sbi.utils.metrics.c2st(classifier="rf")``, the Simformer paper's choice;
* ``c2st_mlp``: sbibm's MLP C2ST (ReLU MLP with hidden sizes (10·d, 10·d), Adam,
  max_iter 10,000), through the same sbi function.

Wall-clock training time and posterior samples per second are recorded for every method.
The reference files come from the installed ``sbibm`` wheel (``pip install --no-deps
sbibm``); sbibm itself is never imported.
"""

from __future__ import annotations

import bz2
import contextlib
import importlib.util
import io
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import dumps, from_dict, param, to_dict
from ..errors import CheckpointError, NotAvailableError, ResumeError
from ..fileio import atomic_path
from ..simulate import SimulateConfig, run_simulate
from ..train import TrainConfig, train
from . import register_bench

__all__ = [
    "SbibmBenchConfig",
    "bench_sbibm",
    "reference_files",
    "sbibm_prior",
    "simulator_prior",
    "task_simulator",
]

TASKS = ("two_moons", "gaussian_linear", "slcp")
METHODS = ("dasbi", "npe", "npse")
#: simulator options that change how dasbi sees a task but not the task itself
SIMULATOR_OPTIONS = frozenset({"theta_transform"})


@dataclass
class SbibmBenchConfig:
    """Settings of the sbibm benchmark (pass a YAML with --config or --set key=value)."""

    tasks: list[str] = param(
        default_factory=lambda: list(TASKS),
        help="sbibm tasks: any task whose reference posteriors ship with sbibm, simulated by "
        "the dasbi simulator of that name or the one task_simulators gives",
    )
    task_simulators: dict[str, str] = param(
        default_factory=dict,
        help="task -> dasbi simulator (a registered name, a dasbi.simulators plug-in or "
        "package.module:Class), e.g. {gaussian_mixture: my_tasks:GaussianMixture}; its "
        "prior() is what NPE and NPSE use",
    )
    budgets: list[int] = param(
        default_factory=lambda: [1000, 10_000, 100_000], help="numbers of simulations"
    )
    observations: list[int] = param(
        default_factory=lambda: list(range(1, 11)), help="sbibm reference observations (1-10)"
    )
    num_samples: int = param(10_000, ge=100, help="posterior samples per observation")
    methods: list[str] = param(default_factory=lambda: list(METHODS), help="dasbi, npe, npse")
    attention: list[str] = param(
        default_factory=lambda: ["dense"],
        help="dasbi attention masks to run (dense, undirected, …)",
    )
    npse_observations: list[int] | None = param(
        None, help="observations sampled with NPSE (default: all; its sampler is slow)"
    )
    samplers: list[str] = param(
        default_factory=lambda: ["heun-25", "dpm2m-15"],
        help="dasbi samplers as method-steps[-bf16][@key=value,…] (bf16: bfloat16 network; "
        "key=value: other sampler settings, e.g. dpm2m-10@sigma_end=0.01), each run on the "
        "same trained model",
    )
    c2st: list[str] = param(default_factory=lambda: ["rf", "mlp"], help="C2ST classifiers")
    train: dict[str, Any] = param(default_factory=dict, help="dasbi TrainConfig overrides")
    simulator: dict[str, dict[str, Any]] = param(
        default_factory=dict,
        help="simulator options per task, e.g. {slcp: {theta_transform: logit}}; they must "
        "leave the task itself unchanged (NPE and NPSE train on the same simulations)",
    )
    sbi_max_epochs: int | None = param(None, ge=1, help="cap on NPE/NPSE epochs (sbi: none)")
    seed: int = param(0, ge=0, help="seed of simulations and training")
    partial_jsonl: str | None = param(
        None,
        help="append every record to this JSON-lines file as soon as it is measured; a rerun "
        "with the same file reuses the records it already holds, the dasbi models saved next "
        "to it, and resumes a dasbi training killed part-way from its last checkpoint",
    )
    threads: int = param(2, ge=1, help="torch threads")


def _sbibm_root() -> Path:
    spec = importlib.util.find_spec("sbibm")
    if spec is None or not spec.submodule_search_locations:
        raise NotAvailableError(
            "the sbibm reference posteriors are needed: pip install --no-deps sbibm==1.1.0"
        )
    return Path(list(spec.submodule_search_locations)[0])


def reference_files(task: str, observation: int) -> tuple[np.ndarray, np.ndarray]:
    """sbibm's observation (D,) and reference posterior samples (10000, P) of a task."""
    folder = _sbibm_root() / "tasks" / task / "files" / f"num_observation_{observation}"
    if not folder.is_dir():
        have = sorted(
            d.name
            for d in (_sbibm_root() / "tasks").iterdir()
            if (d / "files" / "num_observation_1").is_dir()
        )
        raise NotAvailableError(
            f"sbibm has no reference files in {folder}; tasks with reference posteriors: "
            f"{', '.join(have)}"
        )
    obs = np.loadtxt(folder / "observation.csv", delimiter=",", skiprows=1, ndmin=2)[0]
    with bz2.open(folder / "reference_posterior_samples.csv.bz2", "rt") as fh:
        ref = np.loadtxt(io.StringIO(fh.read()), delimiter=",", skiprows=1, ndmin=2)
    return obs, ref


def task_simulator(cfg: SbibmBenchConfig, task: str) -> str:
    """The dasbi simulator (name or module:Class) that simulates a task."""
    return cfg.task_simulators.get(task, task)


def simulator_prior(name: str, options: dict[str, Any] | None = None) -> Any:
    """A dasbi simulator's prior() (the one object dasbi's simulator and sbi share)."""
    from ..simulate import build_simulator

    dist = build_simulator({"name": name, **(options or {})}).prior()
    if dist is None:
        raise ValueError(
            f"simulator {name!r} has no prior(): define prior() returning a torch "
            "distribution over θ, so that NPE and NPSE use the same prior"
        )
    return dist


def sbibm_prior(cfg: SbibmBenchConfig, task: str, options: dict[str, Any] | None = None) -> Any:
    """The prior of a task's simulator (:func:`task_simulator`)."""
    return simulator_prior(task_simulator(cfg, task), options)


def _task_options(data: Path) -> dict[str, Any]:
    """The simulator options the dataset was simulated with (e.g. gaussian_linear's dim)."""
    import yaml

    from ..dataset import Dataset

    with Dataset(data) as ds:
        text = ds.config
    sim = (yaml.safe_load(text) or {}).get("simulator", {}) if text else {}
    return {k: v for k, v in sim.items() if k not in ("name", "theta_transform")}


def _c2st(reference: np.ndarray, samples: np.ndarray, kinds: list[str]) -> dict[str, float]:
    """C2ST accuracies with equal class sizes (the reference is subsampled if larger)."""
    from sbi.utils.metrics import c2st

    n = min(len(reference), len(samples))
    rng = np.random.default_rng(0)
    reference = reference[rng.permutation(len(reference))[:n]]
    samples = samples[:n]
    ref = torch.as_tensor(reference, dtype=torch.float32)
    smp = torch.as_tensor(samples, dtype=torch.float32)
    out = {}
    for kind in kinds:
        if kind == "rf":
            out["c2st_rf"] = float(c2st(ref, smp, classifier="rf"))
        elif kind == "mlp":
            d = ref.shape[1]
            kwargs = {
                "activation": "relu",
                "hidden_layer_sizes": (10 * d, 10 * d),
                "max_iter": 10_000,
                "solver": "adam",
            }
            out["c2st_mlp"] = float(c2st(ref, smp, classifier="mlp", classifier_kwargs=kwargs))
        else:
            raise ValueError(f"unknown C2ST classifier {kind!r}; valid: rf, mlp")
    return out


def _log(msg: str) -> None:
    print(f"[bench sbibm] {msg}", file=sys.stderr, flush=True)


def _load_partial(cfg: SbibmBenchConfig) -> dict[tuple[str, int, str], list[dict[str, Any]]]:
    """Records of an earlier, interrupted run of the same benchmark, grouped by method."""
    done: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    if not cfg.partial_jsonl or not Path(cfg.partial_jsonl).exists():
        return done
    with open(cfg.partial_jsonl) as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
            key = (rec.get("task"), rec.get("budget"), rec.get("method"))
            done.setdefault(key, []).append(rec)
    return done


def _earlier(
    done: dict[tuple[str, int, str], list[dict[str, Any]]], key: tuple[str, int, str]
) -> dict[int, dict[str, Any]]:
    """The earlier records of one (task, budget, method) group, by observation."""
    return {r["observation"]: r for r in done.get(key, [])}


def _reuse(
    done: dict[tuple[str, int, str], list[dict[str, Any]]],
    key: tuple[str, int, str],
    wanted: list[int],
) -> list[dict[str, Any]] | None:
    """The earlier records of one group if they cover every wanted observation."""
    recs = _earlier(done, key)
    if all(k in recs for k in wanted):
        _log(f"{key[0]} {key[1]} {key[2]}: reusing {len(wanted)} records from partial_jsonl")
        return [recs[k] for k in wanted]
    return None


def _record(cfg: SbibmBenchConfig, rec: dict[str, Any]) -> dict[str, Any]:
    _log(str(rec))
    if cfg.partial_jsonl:
        with open(cfg.partial_jsonl, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
    return rec


@register_bench("sbibm")
def bench_sbibm(
    quick: bool, options: dict[str, Any], progress: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    if quick:
        quick_defaults = {
            "tasks": ["two_moons"],
            "budgets": [1000],
            "observations": [1, 2],
            "num_samples": 1000,
            "c2st": ["rf"],
            "sbi_max_epochs": 30,
            "train": {
                "max_steps": 600,
                "batch_size": 256,
                "val_every": 200,
                "network": {"dim": 32, "depth": 2, "heads": 2},
            },
        }
        options = {**quick_defaults, **options}
    cfg = from_dict(SbibmBenchConfig, options)
    for m in cfg.methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; valid methods are: {', '.join(METHODS)}")
    for task, opts in cfg.simulator.items():
        if task not in cfg.tasks:
            raise ValueError(
                f"simulator options given for {task!r}, which is not among the tasks "
                f"({', '.join(cfg.tasks)}); remove them or add the task"
            )
        bad = sorted(set(opts) - SIMULATOR_OPTIONS)
        if bad:
            raise ValueError(
                f"simulator option(s) {bad} for {task!r} are not allowed here: they would "
                "change the sbibm task, so its reference posteriors would no longer apply; "
                f"allowed: {', '.join(sorted(SIMULATOR_OPTIONS))}"
            )
    torch.set_num_threads(cfg.threads)
    results: list[dict[str, Any]] = []
    done = _load_partial(cfg)
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        for task in cfg.tasks:
            refs = {k: reference_files(task, k) for k in cfg.observations}
            for budget in cfg.budgets:
                sim = {"name": task_simulator(cfg, task), **cfg.simulator.get(task, {})}
                sim_cfg = from_dict(
                    SimulateConfig, {"num": budget, "seed": cfg.seed, "simulator": sim}
                )
                data = run_simulate(sim_cfg, Path(tmp) / f"{task}_{budget}.h5", progress=False)
                results += _run_dasbi(cfg, task, budget, data, refs, progress, done)
                if "npe" in cfg.methods or "npse" in cfg.methods:
                    results += _run_sbi(cfg, task, budget, data, refs, done)
    summary = _summary(results)
    return to_dict(cfg), results, {"summary": summary, "summary_table": _table(summary)}


def _run_dasbi(
    cfg: SbibmBenchConfig,
    task: str,
    budget: int,
    data: Path,
    refs: dict[int, tuple[np.ndarray, np.ndarray]],
    progress: bool,
    done: dict[tuple[str, int, str], list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    if "dasbi" not in cfg.methods:
        return []
    samplers = parse_sampler_specs(cfg.samplers)
    errors = _task_errors(data)
    out = []
    for attention in cfg.attention:
        tcfg = from_dict(TrainConfig, {"seed": cfg.seed, **cfg.train, "attention": attention})
        method = "dasbi" if attention == "dense" else f"dasbi-{attention}"
        names = [method if i == 0 else f"{method}[{sp}]" for i, sp in enumerate(samplers)]
        earlier = {n: _earlier(done, (task, budget, n)) for n in names}
        if all(k in earlier[n] for n in names for k in refs):
            _log(f"{task} {budget} {method}: reusing all records from partial_jsonl")
            out += [earlier[n][k] for n in names for k in refs]
            continue
        post, train_s, steps = _dasbi_model(cfg, task, budget, method, data, tcfg, progress)
        for name, (spec, sampler) in zip(names, samplers.items(), strict=True):
            for k, (obs, ref) in refs.items():
                if k in earlier[name]:
                    out.append(earlier[name][k])
                    continue
                t0 = time.perf_counter()
                s = post.sample(
                    (cfg.num_samples,),
                    x=obs[None],
                    errors=errors,
                    seed=cfg.seed + k,
                    sampler=sampler,
                )[:, 0]
                dt = time.perf_counter() - t0
                rec = _measurement(cfg, task, budget, k, name, train_s, dt, ref, s)
                rec.update(steps=steps, sampler=spec)
                if cfg.simulator.get(task):
                    rec["simulator"] = cfg.simulator[task]
                out.append(_record(cfg, rec))
    return out


def _dasbi_model(
    cfg: SbibmBenchConfig,
    task: str,
    budget: int,
    method: str,
    data: Path,
    tcfg: TrainConfig,
    progress: bool,
) -> tuple[Any, float, int]:
    """Train one dasbi model, or load the one an interrupted run saved next to its
    ``partial_jsonl`` (the model folder records its training time and steps).

    With ``partial_jsonl``, training also checkpoints to ``<model>.train`` every
    ``checkpoint_every`` steps, so a run killed during training resumes from its last
    checkpoint with the same weights as an uninterrupted run. The folder is removed once the
    model is saved; its loss history (``history.json``, ``loss.png``) is kept in the model."""
    from ..posterior import Posterior

    saved = ckpt = None
    if cfg.partial_jsonl:
        saved = Path(f"{cfg.partial_jsonl}.{task}_{budget}_{method}.model")
        ckpt = Path(f"{saved}.train")
        info_file = Path(f"{saved}.json")
        if saved.is_dir() and info_file.is_file():
            info = json.loads(info_file.read_text())
            same_sim = info.get("simulator", {}) == cfg.simulator.get(task, {})
            if info.get("train") == to_dict(tcfg) and same_sim:
                _log(f"{task} {budget} {method}: loaded the model trained earlier ({saved})")
                return Posterior.load(saved), float(info["train_s"]), int(info["steps"])
    result = None
    if ckpt is not None and ckpt.exists():
        _log(f"{task} {budget} {method}: resuming training from {ckpt}")
        try:
            result = train(data, tcfg, out=ckpt, resume=True, progress=progress)
        except (ResumeError, CheckpointError) as err:
            _log(f"{task} {budget} {method}: not resuming from {ckpt} ({err}); training afresh")
    if result is None:
        result = train(data, tcfg, out=ckpt, overwrite=True, progress=progress)
    _log(f"{task} {budget} {method}: trained {result.steps} steps in {result.train_seconds:.0f} s")
    post = result.posterior
    if saved is not None:
        post.save(saved, config=dumps(tcfg))
        for name in ("history.json", "loss.png"):  # the loss curves outlive the checkpoint
            if (ckpt / name).is_file():
                shutil.copy2(ckpt / name, saved / name)
        info = {
            "train": to_dict(tcfg),
            "simulator": cfg.simulator.get(task, {}),
            "train_s": result.train_seconds,
            "steps": result.steps,
        }
        with atomic_path(f"{saved}.json") as tmp:
            tmp.write_text(json.dumps(info))
        shutil.rmtree(ckpt, ignore_errors=True)
    return post, result.train_seconds, result.steps


def _task_errors(data: Path) -> np.ndarray | None:
    """The observation noise of a task (constant per node in sbibm), from its simulations.

    The Simformer conditions on each value's 1σ error, so a reference observation is
    passed with the errors its simulator reports; tasks without them give None.
    """
    from ..dataset import Dataset

    with Dataset(data) as ds:
        x = ds.read()["x"]
    if not np.any(x.errors > 0):
        return None
    return np.median(np.where(x.observed, x.errors, np.nan), axis=0)[None]


def parse_sampler_specs(specs: list[str]) -> dict[str, dict[str, Any]]:
    """``method-steps[-bf16][@key=value,…]`` → {spec: sampler settings}.

    ``bf16`` runs the network in bfloat16; the ``key=value`` pairs after ``@`` set any other
    :class:`~dasbi.samplers.SamplerConfig` field, e.g. ``dpm2m-10-bf16@sigma_end=0.01``.
    """
    from typing import get_args, get_type_hints

    import yaml

    from ..samplers import SamplerConfig

    valid = get_args(get_type_hints(SamplerConfig)["method"])
    out: dict[str, dict[str, Any]] = {}
    for spec in specs:
        head, _, extra = spec.partition("@")
        body, precision = head, "float32"
        if head.endswith("-bf16"):
            body, precision = head[: -len("-bf16")], "bfloat16"
        kind, _, steps = body.rpartition("-")
        if kind not in valid or not steps.isdigit():
            raise ValueError(
                f"samplers: {spec!r} is not method-steps[-bf16][@key=value,…] with method one "
                f"of {list(valid)}, e.g. heun-25, dpm2m-15, dpm2m-15-bf16 (bfloat16 network) "
                "or dpm2m-10@sigma_end=0.01"
            )
        settings: dict[str, Any] = {"method": kind, "steps": int(steps), "precision": precision}
        for item in extra.split(",") if extra else []:
            key, eq, value = (part.strip() for part in item.partition("="))
            if not eq or not key or key in settings:
                raise ValueError(
                    f"samplers: {spec!r}: after '@' give key=value settings other than the "
                    f"method, steps and precision, e.g. dpm2m-10@sigma_end=0.01 (got {item!r})"
                )
            settings[key] = yaml.safe_load(value)
        from_dict(SamplerConfig, settings, path=f"samplers[{spec}]")
        out[spec] = settings
    if not out:
        raise ValueError("samplers: give at least one, e.g. [heun-25]")
    return out


def _run_sbi(
    cfg: SbibmBenchConfig,
    task: str,
    budget: int,
    data: Path,
    refs: dict[int, tuple[np.ndarray, np.ndarray]],
    done: dict[tuple[str, int, str], list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    from sbi.inference import NPE, NPSE

    from ..dataset import Dataset

    with Dataset(data) as ds:
        blocks = ds.read()
    theta = torch.as_tensor(blocks["theta"].values)
    x = torch.as_tensor(blocks["x"].values)
    opts = {k: v for k, v in cfg.simulator.get(task, {}).items()}
    opts.pop("theta_transform", None)  # how dasbi sees θ, not the task
    prior = sbibm_prior(cfg, task, {**_task_options(data), **opts})
    out = []
    for method in ("npe", "npse"):
        if method not in cfg.methods:
            continue
        wanted = list(refs)
        if method == "npse" and cfg.npse_observations is not None:
            wanted = [k for k in refs if k in cfg.npse_observations]
        earlier = _reuse(done, (task, budget, method), wanted)
        if earlier is not None:
            out += earlier
            continue
        torch.manual_seed(cfg.seed)
        inference = (
            NPE(prior=prior, show_progress_bars=False)
            if method == "npe"
            else NPSE(prior=prior, sde_type="ve", show_progress_bars=False)
        )
        t0 = time.perf_counter()
        train_kwargs = {} if cfg.sbi_max_epochs is None else {"max_num_epochs": cfg.sbi_max_epochs}
        inference.append_simulations(theta, x).train(**train_kwargs)
        train_s = time.perf_counter() - t0
        posterior = inference.build_posterior()
        _log(f"{task} {budget} {method}: trained in {train_s:.0f} s")
        for k in wanted:
            obs, ref = refs[k]
            torch.manual_seed(cfg.seed + k)
            t0 = time.perf_counter()
            kwargs = {"show_progress_bars": False}
            s = posterior.sample(
                (cfg.num_samples,), x=torch.as_tensor(obs, dtype=torch.float32), **kwargs
            )
            dt = time.perf_counter() - t0
            rec = _measurement(cfg, task, budget, k, method, train_s, dt, ref, s)
            rec["sampler"] = "default"
            out.append(_record(cfg, rec))
    return out


def _measurement(
    cfg: SbibmBenchConfig,
    task: str,
    budget: int,
    observation: int,
    method: str,
    train_s: float,
    sample_s: float,
    reference: np.ndarray,
    samples: Tensor,
) -> dict[str, Any]:
    """One record: timings of a method on one observation and its C2ST scores."""
    return {
        "task": task,
        "budget": budget,
        "observation": observation,
        "method": method,
        "train_s": round(train_s, 2),
        "sample_s": round(sample_s, 3),
        "samples_per_s": round(cfg.num_samples / sample_s, 1),
        **_c2st(reference, samples.numpy(), cfg.c2st),
    }


def _summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means per (task, budget, method); where the methods of a task and budget were run on
    different observations (NPSE on a few), ``*_common`` are the means over the ones all of
    them share, so that methods are compared on the same observations."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["task"], r["budget"], r["method"]), []).append(r)
    obs_sets: dict[tuple[str, int], list[set[int]]] = {}
    for (task, budget, _), recs in groups.items():
        obs_sets.setdefault((task, budget), []).append({r["observation"] for r in recs})
    # the observations every method of a task and budget was run on, where they differ
    shared = {
        key: set.intersection(*sets)
        for key, sets in obs_sets.items()
        if len(set(map(frozenset, sets))) > 1
    }
    rows = []
    for (task, budget, method), recs in groups.items():
        row: dict[str, Any] = {
            "task": task,
            "budget": budget,
            "method": method,
            "n_obs": len(recs),
        }
        for key in ("c2st_rf", "c2st_mlp", "samples_per_s"):
            vals = [r[key] for r in recs if key in r]
            if vals:
                row[key] = round(float(np.mean(vals)), 4)
        common = shared.get((task, budget))
        if common:
            row["common_obs"] = sorted(common)
            for key in ("c2st_rf", "c2st_mlp"):
                vals = [r[key] for r in recs if key in r and r["observation"] in common]
                if vals:
                    row[f"{key}_common"] = round(float(np.mean(vals)), 4)
        row["train_s"] = recs[0]["train_s"]
        rows.append(row)
    return rows


def _table(summary: list[dict[str, Any]]) -> str:
    common = any("common_obs" in r for r in summary)
    head = "| task | budget | method | obs | c2st_rf | c2st_mlp |"
    head += " c2st_rf (shared obs) |" if common else ""
    head += " train_s | samples/s |"
    lines = [head, "|" + "---|" * (9 if common else 8)]
    for r in summary:
        line = (
            f"| {r['task']} | {r['budget']} | {r['method']} | {r['n_obs']} | "
            f"{r.get('c2st_rf', '—')} | {r.get('c2st_mlp', '—')} |"
        )
        if common:
            line += f" {r.get('c2st_rf_common', '—')} |"
        line += f" {r['train_s']} | {r.get('samples_per_s', '—')} |"
        lines.append(line)
    return "\n".join(lines)

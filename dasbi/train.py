"""Training the Simformer: `dasbi train` and :func:`train`.

AdamW with linear warm-up and cosine decay, gradient clipping, an exponential moving average
(EMA) of the weights, a held-out validation split (the last ``val_fraction`` of the rows)
with early stopping on the EMA weights, and periodic checkpoints from which training resumes.

Determinism: the weights are initialised from ``seed``; the batch, condition masks, noise
levels and noise of step k come from generators seeded with ``(seed, k)``. A run resumed
from a checkpoint therefore produces exactly the weights of an uninterrupted run.

The checkpoint folder holds ``weights`` (raw), ``ema`` and ``best`` (a copy of the EMA
weights at the best validation loss), the resolved config, the training history as JSON and
a loss-curve PNG.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .config import dumps, fingerprint, load_config, param, to_dict
from .dataset import Dataset
from .errors import CheckpointError, ConfigError, DataError, ResumeError
from .fileio import atomic_path, recover
from .inputs import ModelInputs, context_tensors, diffuse_arrays, model_inputs
from .loss import DenoisingScoreLoss, training_state
from .masks import ConditionMaskConfig
from .network import NetworkConfig, Simformer
from .posterior import Posterior, SDEConfig, build_sde
from .progress import progress_bar
from .samplers import SamplerConfig
from .transforms import Standardizer

__all__ = ["TrainConfig", "TrainResult", "run_train_cli", "train"]


@dataclass
class TrainConfig:
    """Settings of `dasbi train` (YAML files in ``configs/train/`` override them)."""

    network: NetworkConfig = field(default_factory=NetworkConfig)
    sde: SDEConfig = field(default_factory=SDEConfig)
    masks: ConditionMaskConfig = field(default_factory=ConditionMaskConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    attention: Literal["dense", "undirected", "directed"] = param(
        "dense", help="attention mask: dense, or derived from the simulator's DAG"
    )
    batch_size: int = param(512, ge=1, help="examples per step")
    max_steps: int | None = param(
        None, ge=1, help="optimisation steps; default clip(3 × training rows, 5k, 100k)"
    )
    lr: float = param(1e-3, gt=0.0, help="peak learning rate")
    min_lr: float = param(1e-5, ge=0.0, help="learning rate at the end of the cosine decay")
    warmup_steps: int = param(200, ge=0, help="linear learning-rate warm-up")
    weight_decay: float = param(1e-4, ge=0.0, help="AdamW weight decay")
    grad_clip: float = param(5.0, gt=0.0, help="maximum gradient norm")
    ema_decay: float = param(0.999, ge=0.0, lt=1.0, help="EMA decay of the weights")
    val_fraction: float = param(0.05, ge=0.0, lt=0.9, help="rows held out for validation")
    val_every: int = param(500, ge=1, help="steps between validation checks")
    val_rows: int = param(4096, ge=1, help="validation rows used per check (at most)")
    val_repeats: int = param(4, ge=1, help="noise draws per validation row")
    patience: int = param(10, ge=1, help="checks without improvement before stopping")
    checkpoint_every: int = param(1000, ge=1, help="steps between resumable checkpoints")
    seed: int = param(0, ge=0, help="random seed")
    threads: int | None = param(None, ge=1, help="torch CPU threads (default: torch's)")
    in_memory: bool | None = param(None, help="load the data into memory (default: if small)")
    device: str = param("cpu", help="torch device")


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    posterior: Posterior
    history: list[dict[str, float]]
    train_seconds: float  # wall time of all segments of a resumed run together
    steps: int
    out: Path | None


def _step_seed(seed: int, step: int, salt: int = 0) -> int:
    return int(np.random.SeedSequence([seed, step, salt]).generate_state(1)[0])


class _Data:
    """Training batches, in memory (random batches) or streamed (block-shuffled epochs)."""

    def __init__(
        self,
        ds: Dataset,
        std: Standardizer,
        n_train: int,
        cfg: TrainConfig,
        context: bool = False,
    ) -> None:
        self.ds, self.std, self.n_train, self.cfg = ds, std, n_train, cfg
        self.context = context  # also the context (spectrum) nodes, for modality encoders
        n_nodes = len(std.nodes) + (sum(n.size for n in ds.nodes.context) if context else 0)
        in_memory = cfg.in_memory
        if in_memory is None:
            in_memory = n_train * n_nodes * 14 < 2 * 2**30
        self.in_memory = in_memory
        self._iter: Any = None
        self._pos = -1
        if in_memory:
            self.all = self.inputs(0, n_train)

    def inputs(self, start: int, stop: int) -> ModelInputs:
        return _to_inputs(self.ds.read(start, stop), self.ds, self.std, self.context)

    def batch(self, step: int) -> ModelInputs:
        b = self.cfg.batch_size
        if self.in_memory:
            rng = np.random.default_rng(_step_seed(self.cfg.seed, step, 1))
            return self.all.take(torch.from_numpy(rng.integers(0, self.n_train, b)))
        per_epoch = max(1, self.n_train // b)
        epoch, offset = divmod(step, per_epoch)
        if self._iter is None or self._pos != step - 1 or offset == 0:
            self._iter = self.ds.iter_batches(
                b,
                shuffle=True,
                seed=_step_seed(self.cfg.seed, epoch, 2),
                stop=self.n_train,
                drop_last=True,
                block_rows=max(64 * b, 65536),
            )
            for _ in range(offset):
                next(self._iter)
        self._pos = step
        blocks = next(self._iter)
        return _to_inputs(blocks, self.ds, self.std, self.context)


def _to_inputs(blocks: dict, ds: Dataset, std: Standardizer, context: bool = False) -> ModelInputs:
    values, errors, observed, upper = diffuse_arrays(blocks, ds.nodes)
    out = model_inputs(values, errors, observed, upper, std)
    if context:
        out.context = context_tensors(blocks, ds.nodes)
    return out


def _fit_standardizer(ds: Dataset, n_train: int) -> tuple[Standardizer, list[str], bool]:
    """Per-node statistics of the training rows, the nodes that carry uncertainties, and
    whether any training value is an upper limit (then the model learns limit tokens)."""
    nodes = ds.nodes.diffuse
    needs_errors: set[str] = set()
    limits = False

    def batches() -> Any:
        nonlocal limits
        for blocks in ds.iter_batches(65536, stop=n_train):
            values, errors, observed, upper = diffuse_arrays(blocks, ds.nodes)
            limits = limits or bool((upper & observed).any())
            present = observed & ~upper
            for j, node in enumerate(nodes):
                if node.kind == "observable" and (errors[present[:, j], j] > 0).any():
                    needs_errors.add(node.name)
            yield values, present

    std = Standardizer.fit(nodes, batches())
    return std, [n.name for n in nodes if n.name in needs_errors], limits


def _lr_lambda(cfg: TrainConfig, total: int) -> Any:
    def fn(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
        floor = cfg.min_lr / cfg.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


def plot_loss_curves(
    history: list[dict[str, float]],
    path: Path,
    series: dict[str, str],
    ylabel: str = "denoising score-matching loss",
) -> None:
    """Loss curves as PNG (object-oriented matplotlib: no pyplot, no backend switch).

    Args:
        history: Records with a ``step`` and the keys of ``series``.
        path: Output PNG (written atomically).
        series: History key → legend label; ``val_loss`` is drawn with markers. Absolute
            values are drawn (a debiased Sinkhorn term can dip below zero).
    """
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"text.usetex": False}):
        fig = Figure(figsize=(6, 3.5))
        ax = fig.subplots()
        for key, label in series.items():
            pts = [(h["step"], abs(h[key]) + 1e-12) for h in history if h.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), "o-" if key == "val_loss" else "-", label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)


def train(
    data: str | os.PathLike | Dataset,
    cfg: TrainConfig | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train a Simformer on a dataset file and (optionally) write a checkpoint folder.

    Args:
        data: A dataset path or open :class:`Dataset`.
        cfg: Training settings (defaults if None).
        out: Checkpoint folder; periodic checkpoints make the run resumable.
        resume: Continue from the checkpoint in ``out``; the training time reported then
            includes the segments before the resume.
        overwrite: Replace an existing checkpoint in ``out``.
        progress: Show a progress bar.
    """
    cfg = cfg or TrainConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ds = data if isinstance(data, Dataset) else Dataset(data)
    out = Path(out) if out is not None else None
    if ds.nodes.context:
        warnings.warn(
            f"context nodes {[n.name for n in ds.nodes.context]} are ignored: they need "
            "modality encoders (dasbi train --domain-adapt)",
            stacklevel=2,
        )
    diffuse = ds.nodes.diffuse
    if not any(n.kind == "parameter" for n in diffuse):
        raise DataError("the dataset has no parameter (θ) nodes to learn")
    n_val = int(round(cfg.val_fraction * ds.num_rows))
    n_train = ds.num_rows - n_val
    if n_train < 2:
        raise DataError(f"need at least 2 training rows, the dataset has {ds.num_rows}")
    total = cfg.max_steps or int(np.clip(3 * n_train, 5_000, 100_000))
    run_fp = fingerprint(
        {
            "config": to_dict(cfg),
            "data": ds.attrs.get("fingerprint", ""),
            "rows": ds.num_rows,
            "nodes": ds.nodes.to_json(),
        }
    )

    state: dict[str, Any] | None = None
    if out is not None:
        recover(out)  # a killed run's temporary copies
    if out is not None and out.exists():
        if resume:
            ck = load_checkpoint(out, train_state=True)
            if ck.meta.get("run_fingerprint") != run_fp:
                raise ResumeError(
                    f"{out} was trained with another config or dataset; pass --overwrite to "
                    "start again, or resume with the original arguments"
                )
            state = ck.train_state
            if state is None:
                raise CheckpointError(f"{out} holds no training state to resume from")
        elif not overwrite:
            raise ResumeError(
                f"{out} already exists; pass --resume to continue training or --overwrite "
                "to replace it"
            )
    if state is not None:
        std = Standardizer(diffuse, np.array(state["std_mean"]), np.array(state["std_std"]))
        needs_errors = list(state["needs_errors"])
        limits = bool(state.get("limits", False))
    else:
        std, needs_errors, limits = _fit_standardizer(ds, n_train)

    torch.manual_seed(cfg.seed)
    dev = torch.device(cfg.device)
    is_obs = torch.tensor([n.kind == "observable" for n in diffuse])
    net = Simformer(len(diffuse), is_obs, cfg.network).to(dev)
    sde = build_sde(cfg.sde)
    meta = {
        "network": to_dict(cfg.network),
        "sde": to_dict(cfg.sde),
        "needs_errors": needs_errors,
        "limits": "tokens" if limits else "guidance",
    }
    post = Posterior(net, sde, std, ds.nodes, ds.edges, cfg.attention, cfg.sampler, meta)
    loss_fn = DenoisingScoreLoss(net, sde, cfg.sde.weighting)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, total))
    ema = [p.detach().clone() for p in net.parameters()]
    best: list[torch.Tensor] | None = None
    history: list[dict[str, float]] = []
    start, best_val, bad_checks, running = 0, math.inf, 0, None
    earlier_s = 0.0  # training time of the segments before a resume
    if state is not None:
        net.load_state_dict(ck.tensors["weights"])
        ema_sd = ck.tensors["ema"]
        ema = [ema_sd[name].to(dev).clone() for name, _ in net.named_parameters()]
        if "best" in ck.tensors:
            best = [ck.tensors["best"][name].to(dev).clone() for name, _ in net.named_parameters()]
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, best_val, bad_checks = (
            int(state["step"]),
            float(state["best_val"]),
            int(state["bad_checks"]),
        )
        running = state["running"]
        history = json.loads(state["history"])
        earlier_s = float(state.get("train_seconds", 0.0))

    data_src = _Data(ds, std, n_train, cfg)
    val_inputs = (
        data_src.inputs(n_train, min(ds.num_rows, n_train + cfg.val_rows)) if n_val > 0 else None
    )
    graph = post.graph if cfg.attention != "dense" else None
    is_param = post.is_param

    def ema_state() -> dict[str, torch.Tensor]:
        sd = net.state_dict()
        for (name, _), e in zip(net.named_parameters(), ema, strict=True):
            sd[name] = e
        return sd

    def weights_of(params: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        sd = net.state_dict()
        for (name, _), p in zip(net.named_parameters(), params, strict=True):
            sd[name] = p
        return sd

    @torch.no_grad()
    def validate() -> float:
        assert val_inputs is not None
        raw = [p.detach().clone() for p in net.parameters()]
        for p, e in zip(net.parameters(), ema, strict=True):
            p.copy_(e)
        net.eval()
        gen = torch.Generator().manual_seed(_step_seed(cfg.seed, 0, 3))
        total_loss, count = 0.0, 0
        for _ in range(cfg.val_repeats):
            for lo in range(0, len(val_inputs), 2048):
                chunk = val_inputs.take(slice(lo, lo + 2048))
                chunk = _to_device(chunk, dev)
                st = training_state(chunk, is_param, cfg.masks, gen)
                total_loss += float(loss_fn(chunk, st, gen, graph).sum())
                count += len(chunk)
        for p, r in zip(net.parameters(), raw, strict=True):
            p.copy_(r)
        net.train()
        return total_loss / count

    def save(step: int) -> None:
        if out is None:
            return
        tensors = {"weights": net.state_dict(), "ema": ema_state()}
        if best is not None:
            tensors["best"] = weights_of(best)
        train_state = {
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step": step,
            "best_val": best_val,
            "bad_checks": bad_checks,
            "running": running,
            "history": json.dumps(history),
            "std_mean": std.mean.tolist(),
            "std_std": std.std.tolist(),
            "needs_errors": needs_errors,
            "limits": limits,
            "train_seconds": elapsed(),
        }
        summary = post.meta.get("training") or {
            "steps": step,
            "best_val_loss": best_val if best is not None else None,
            "train_rows": n_train,
            "val_rows": n_val,
            "train_seconds": round(elapsed(), 3),
            "finished": False,
        }
        save_checkpoint(
            out,
            tensors=tensors,
            config=dumps(cfg),
            train_state=train_state,
            meta={
                **post.model_meta(),
                "run_fingerprint": run_fp,
                "training": summary,
                "dataset": str(ds.path),
            },
        )
        (out / "history.json").write_text(json.dumps(history, indent=1))
        if history:
            plot_loss_curves(
                history,
                out / "loss.png",
                {"train_loss": "train (running mean)", "val_loss": "validation (EMA weights)"},
            )

    t0 = time.perf_counter()

    def elapsed() -> float:
        return earlier_s + time.perf_counter() - t0

    net.train()
    bar = progress_bar(total=total, initial=start, desc="train", unit="step", disable=not progress)
    step = start
    stopped_early = False
    with bar:
        for step in range(start, total):
            gen = torch.Generator().manual_seed(_step_seed(cfg.seed, step))
            batch = _to_device(data_src.batch(step), dev)
            st = training_state(batch, is_param, cfg.masks, gen)
            loss = loss_fn(batch, st, gen, graph).mean()
            if not torch.isfinite(loss):
                raise DataError(
                    f"training loss became {float(loss)} at step {step}; lower --set lr=... "
                    "or check the dataset for extreme values"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(ema, list(net.parameters()), 1 - decay)
            lv = float(loss.detach())
            running = lv if running is None else 0.98 * running + 0.02 * lv
            done = step + 1
            record = None
            if done % cfg.val_every == 0 or done == total:
                record = {
                    "step": done,
                    "train_loss": running,
                    "lr": sched.get_last_lr()[0],
                    "val_loss": None,
                }
                if val_inputs is not None:
                    val = validate()
                    record["val_loss"] = val
                    if val < best_val:
                        best_val, bad_checks = val, 0
                        best = [e.clone() for e in ema]
                    else:
                        bad_checks += 1
                history.append(record)
                bar.set_postfix(
                    loss=f"{running:.4g}",
                    val=f"{record['val_loss']:.4g}" if record["val_loss"] else "-",
                )
            bar.update(1)
            if bad_checks >= cfg.patience:
                stopped_early = True
                break
            if done % cfg.checkpoint_every == 0 and done < total:
                save(done)
    steps_done = step + 1 if total > start else start
    train_s = elapsed()
    post.meta["training"] = {
        "steps": steps_done,
        "stopped_early": stopped_early,
        "best_val_loss": None if best is None else best_val,
        "train_rows": n_train,
        "val_rows": n_val,
        "train_seconds": round(train_s, 3),
        "finished": True,
    }
    save(steps_done)
    final = best if best is not None else ema
    with torch.no_grad():
        for p, w in zip(net.parameters(), final, strict=True):
            p.copy_(w)
    net.eval()
    return TrainResult(post, history, train_s, steps_done, out)


def _to_device(inputs: ModelInputs, dev: torch.device) -> ModelInputs:
    if dev.type == "cpu":
        return inputs
    return ModelInputs(
        inputs.values.to(dev),
        inputs.errors.to(dev),
        inputs.present.to(dev),
        inputs.limit.to(dev),
        inputs.limit_value,
    )


def run_train_cli(args: argparse.Namespace) -> int:
    """`dasbi train` (the thin CLI layer calls this)."""
    if (args.real or args.pairs) and not args.domain_adapt:
        raise ConfigError("--real and --pairs need --domain-adapt")
    if not args.data:
        raise ConfigError("dasbi train needs --data FILE (a dataset from `dasbi simulate`)")
    updates: dict[str, Any] = {}
    if args.steps is not None:
        updates["max_steps"] = args.steps
    if args.seed is not None:
        updates["seed"] = args.seed
    if args.domain_adapt:
        from .adapt import DomainAdaptConfig, train_domain_adapt

        if not args.real:
            raise ConfigError("--domain-adapt needs --real FILE (a dataset of real objects)")
        da_cfg = load_config(DomainAdaptConfig, args.config, args.overrides, updates)
        post, history = train_domain_adapt(
            args.data,
            args.real,
            da_cfg,
            pairs=tuple(args.pairs) if args.pairs else None,
            out=args.out,
            overwrite=args.overwrite,
            resume=args.resume,
            progress=not args.quiet,
        )
        last = history[-1] if history else {}
        terms = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "step")
        steps = post.meta["training"]["steps"]
        print(f"trained {steps} steps ({terms}); checkpoint in {args.out}")
        return 0
    cfg = load_config(TrainConfig, args.config, args.overrides, updates)
    result = train(
        args.data,
        cfg,
        out=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    best = result.posterior.meta["training"]["best_val_loss"]
    print(
        f"trained {result.steps} steps in {result.train_seconds:.1f} s"
        + (f" (best validation loss {best:.4g})" if best is not None else "")
        + f"; checkpoint in {args.out}"
    )
    return 0

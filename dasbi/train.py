"""Training the Simformer: `dasbi train` and :func:`train`.

AdamW with linear warm-up and cosine decay, gradient clipping, an exponential moving average
(EMA) of the weights, a held-out validation split (the last ``val_fraction`` of the rows)
with early stopping on the EMA weights, and periodic checkpoints from which training resumes.
The loop itself is :class:`dasbi.trainer.Trainer`, shared with `dasbi train --domain-adapt`;
this module defines what a step's loss is (denoising score matching over the joint (θ, x)).

Determinism: the weights are initialised from ``seed``; the batch, condition masks, noise
levels and noise of step k come from generators seeded with ``(seed, k)``. A run resumed
from a checkpoint therefore produces exactly the weights of an uninterrupted run.

The checkpoint folder holds ``weights`` (raw), ``ema`` and ``best`` (a copy of the EMA
weights at the best validation loss) as loadable state dicts, the trainer's copies for
resuming, the resolved config, the training history as JSON and a loss-curve PNG.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .config import dumps, fingerprint, param, to_dict
from .dataset import Dataset
from .errors import CheckpointError, DataError, ResumeError
from .fileio import recover
from .loss import DenoisingScoreLoss, training_state
from .masks import ConditionMaskConfig
from .network import NetworkConfig, Simformer
from .posterior import Posterior, SDEConfig, build_sde
from .samplers import SamplerConfig
from .trainer import (
    Trainer,
    TrainingData,
    fit_standardizer,
    module_tensors,
    plot_loss_curves,
    to_device,
)
from .transforms import Standardizer

__all__ = ["TrainConfig", "TrainResult", "plot_loss_curves", "train"]


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
            if state is None or "live" not in ck.tensors:
                raise CheckpointError(
                    f"{out} holds no training state this dasbi can resume from (written by "
                    "an older version?); pass --overwrite to train again"
                )
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
        std, needs_errors, limits = fit_standardizer(ds, n_train)

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
    params = list(net.parameters())

    def plot(history: list[dict[str, Any]]) -> None:
        assert out is not None
        plot_loss_curves(
            history,
            out / "loss.png",
            {"train_loss": "train (running mean)", "val_loss": "validation (EMA weights)"},
        )

    def checkpoint_meta(summary: dict[str, Any]) -> dict[str, Any]:
        done = post.meta.get("training")
        return {
            **post.model_meta(),
            "run_fingerprint": run_fp,
            "training": done or {**summary, "train_rows": n_train, "val_rows": n_val},
            "dataset": str(ds.path),
        }

    trainer = Trainer(
        params,
        cfg,
        total,
        modules=[net],
        out=out,
        meta=checkpoint_meta,
        model_tensors=module_tensors({"": net}, params),
        config_text=dumps(cfg),
        on_save=plot,
        extra_state={
            "std_mean": std.mean.tolist(),
            "std_std": std.std.tolist(),
            "needs_errors": needs_errors,
            "limits": limits,
        },
    )
    if state is not None:
        trainer.restore(ck.tensors, state)

    data_src = TrainingData(ds, std, n_train, cfg.batch_size, cfg.seed, cfg.in_memory)
    val_inputs = (
        data_src.inputs(n_train, min(ds.num_rows, n_train + cfg.val_rows)) if n_val > 0 else None
    )
    graph = post.graph if cfg.attention != "dense" else None
    is_param = post.is_param

    def step_fn(step: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        batch = to_device(data_src.batch(step), dev)
        st = training_state(batch, is_param, cfg.masks, gen)
        return {"loss": loss_fn(batch, st, gen, graph).mean()}

    def validate(gen: torch.Generator) -> float:
        assert val_inputs is not None
        total_loss, count = 0.0, 0
        for _ in range(cfg.val_repeats):
            for lo in range(0, len(val_inputs), 2048):
                chunk = to_device(val_inputs.take(slice(lo, lo + 2048)), dev)
                st = training_state(chunk, is_param, cfg.masks, gen)
                total_loss += float(loss_fn(chunk, st, gen, graph).sum())
                count += len(chunk)
        return total_loss / count

    trainer.run(step_fn, validate if val_inputs is not None else None, progress=progress)
    steps_done = trainer.step_done
    train_s = trainer.elapsed()
    post.meta["training"] = {
        **trainer.summary(finished=True),
        "train_rows": n_train,
        "val_rows": n_val,
    }
    trainer.save(steps_done, finished=True)
    trainer.finish()
    history = trainer.history
    return TrainResult(post, history, train_s, steps_done, out)

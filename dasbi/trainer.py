"""The one training loop of dasbi: optimiser, schedule, EMA, validation, early stopping,
checkpoints, resume and history, for every model (:func:`dasbi.train.train` and
:func:`dasbi.adapt.train_domain_adapt` differ only in what a step's loss is).

A step draws its randomness from a generator seeded with ``(seed, step)``
(:func:`step_seed`), so a run resumed from a checkpoint gives exactly the weights of an
uninterrupted run. The loop keeps three copies of the trained tensors: the live ones, their
exponential moving average (EMA) and the EMA at the best validation loss; the model is the
best EMA (or the last EMA where no validation ran). Every ``val_every`` steps it validates
the EMA weights and appends a history record (running training loss, learning rate, the
mean of each loss term since the last record, validation loss); after ``patience`` checks
without improvement it stops. Every ``checkpoint_every`` steps it writes a resumable
checkpoint (:mod:`dasbi.checkpoint`).

Also here, shared by the trainers: the training data stream (:class:`TrainingData`), the
standardisation fit (:func:`fit_standardizer`) and the learning-rate schedule
(:func:`lr_lambda`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .checkpoint import save_checkpoint
from .dataset import Dataset
from .errors import DataError
from .fileio import atomic_path
from .inputs import ModelInputs, context_tensors, diffuse_arrays, model_inputs
from .progress import progress_bar
from .transforms import Standardizer

__all__ = [
    "Trainer",
    "TrainerSettings",
    "TrainingData",
    "fit_standardizer",
    "lr_lambda",
    "module_tensors",
    "plot_loss_curves",
    "step_seed",
    "to_device",
    "to_inputs",
]


def step_seed(seed: int, step: int, salt: int = 0) -> int:
    """The seed of step ``step`` (``salt`` separates streams: 1 batches, 2 epochs, 3
    validation)."""
    return int(np.random.SeedSequence([seed, step, salt]).generate_state(1)[0])


def to_inputs(blocks: dict, ds: Dataset, std: Standardizer, context: bool = False) -> ModelInputs:
    """Dataset blocks → model inputs (and the context nodes, for modality encoders)."""
    values, errors, observed, upper = diffuse_arrays(blocks, ds.nodes)
    out = model_inputs(values, errors, observed, upper, std)
    if context:
        out.context = context_tensors(blocks, ds.nodes)
    return out


def to_device(inputs: ModelInputs, dev: torch.device) -> ModelInputs:
    if dev.type == "cpu":
        return inputs
    return ModelInputs(
        inputs.values.to(dev),
        inputs.errors.to(dev),
        inputs.present.to(dev),
        inputs.limit.to(dev),
        inputs.limit_value,
        {k: tuple(t.to(dev) for t in v) for k, v in inputs.context.items()},  # type: ignore[misc]
    )


class TrainingData:
    """Training batches, in memory (random batches) or streamed (block-shuffled epochs).

    Args:
        ds: The dataset; rows ``[0, n_train)`` are the training rows.
        std: The standardisation.
        batch_size, seed: Per step.
        in_memory: Load the rows (default: when they take < 2 GiB).
        context: Also the context (spectrum) nodes, for modality encoders.
    """

    def __init__(
        self,
        ds: Dataset,
        std: Standardizer,
        n_train: int,
        batch_size: int,
        seed: int,
        in_memory: bool | None = None,
        context: bool = False,
    ) -> None:
        self.ds, self.std, self.n_train = ds, std, n_train
        self.batch_size, self.seed = batch_size, seed
        self.context = context
        n_nodes = len(std.nodes) + (sum(n.size for n in ds.nodes.context) if context else 0)
        if in_memory is None:
            in_memory = n_train * n_nodes * 14 < 2 * 2**30
        self.in_memory = in_memory
        self._iter: Any = None
        self._pos = -1
        if in_memory:
            self.all = self.inputs(0, n_train)

    def inputs(self, start: int, stop: int) -> ModelInputs:
        return to_inputs(self.ds.read(start, stop), self.ds, self.std, self.context)

    def batch(self, step: int) -> ModelInputs:
        b = self.batch_size
        if self.in_memory:
            rng = np.random.default_rng(step_seed(self.seed, step, 1))
            return self.all.take(torch.from_numpy(rng.integers(0, self.n_train, b)))
        per_epoch = max(1, self.n_train // b)
        epoch, offset = divmod(step, per_epoch)
        if self._iter is None or self._pos != step - 1 or offset == 0:
            self._iter = self.ds.iter_batches(
                b,
                shuffle=True,
                seed=step_seed(self.seed, epoch, 2),
                stop=self.n_train,
                drop_last=True,
                block_rows=max(64 * b, 65536),
            )
            for _ in range(offset):
                next(self._iter)
        self._pos = step
        return to_inputs(next(self._iter), self.ds, self.std, self.context)


def fit_standardizer(ds: Dataset, n_train: int) -> tuple[Standardizer, list[str], bool]:
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


def lr_lambda(lr: float, min_lr: float, warmup_steps: int, total: int) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to ``min_lr`` at ``total`` (a LambdaLR factor)."""

    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
        floor = min_lr / lr
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


@dataclass
class TrainerSettings:
    """What the loop needs of a training config (``TrainConfig`` has all of these)."""

    lr: float
    min_lr: float
    warmup_steps: int
    weight_decay: float
    grad_clip: float
    ema_decay: float
    val_every: int
    patience: int
    checkpoint_every: int
    seed: int

    @classmethod
    def of(cls, cfg: Any) -> TrainerSettings:
        import dataclasses

        return cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls)})


#: a step's loss terms: ``{"loss": total}`` or the total under ``"loss"`` plus named terms
StepFn = Callable[[int, torch.Generator], dict[str, Tensor]]


class Trainer:
    """The training loop over a list of tensors (see the module docstring).

    Args:
        params: The trained tensors (all modules' parameters, in a fixed order).
        cfg: Training settings (a ``TrainConfig`` or subclass).
        total: Steps of the schedule.
        modules: Modules switched to eval mode while validating.
        out: Checkpoint folder (None: no checkpoints).
        meta: Called with the (live) summary to give the checkpoint's ``meta``.
        model_tensors: Called with a list of tensor values (like ``params``) to give the
            loadable model tensors of that copy (e.g. a state dict); the checkpoint holds
            ``weights`` (live), ``ema`` and ``best`` of them.
        config_text: The resolved config written beside the checkpoint.
        on_save: Called after each checkpoint (e.g. to write a loss plot).
        extra_state: Saved with the training state (e.g. the standardisation), for resume.
        desc: Progress-bar label.
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        cfg: Any,
        total: int,
        *,
        modules: Sequence[torch.nn.Module] = (),
        out: Path | None = None,
        meta: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        model_tensors: Callable[[list[Tensor]], dict[str, Any]] | None = None,
        config_text: str = "",
        on_save: Callable[[list[dict[str, Any]]], None] | None = None,
        extra_state: dict[str, Any] | None = None,
        desc: str = "train",
    ) -> None:
        self.params = list(params)
        self.cfg = TrainerSettings.of(cfg)
        self.total = int(total)
        self.modules = list(modules)
        self.out = out
        self.meta = meta or (lambda summary: {"training": summary})
        self.model_tensors = model_tensors
        self.config_text = config_text
        self.on_save = on_save
        self.extra_state = dict(extra_state or {})
        self.desc = desc
        c = self.cfg
        self.opt = torch.optim.AdamW(self.params, lr=c.lr, weight_decay=c.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lr_lambda(c.lr, c.min_lr, c.warmup_steps, self.total)
        )
        self.ema = [p.detach().clone() for p in self.params]
        self.best: list[Tensor] | None = None
        self.best_val = math.inf
        self.bad_checks = 0
        self.running: float | None = None
        self.sums: dict[str, float] = {}
        self.history: list[dict[str, Any]] = []
        self.start = 0
        self.step_done = 0
        self.stopped_early = False
        self.earlier_s = 0.0
        self._t0 = time.perf_counter()

    # -- state -------------------------------------------------------------------------
    @staticmethod
    def _indexed(ts: Sequence[Tensor]) -> dict[str, Tensor]:
        return {f"{i:05d}": t.detach().clone() for i, t in enumerate(ts)}

    def _listed(self, d: dict[str, Tensor]) -> list[Tensor]:
        dev = self.params[0].device if self.params else torch.device("cpu")
        return [d[f"{i:05d}"].to(dev).clone() for i in range(len(self.params))]

    def restore(self, tensors: dict[str, dict[str, Tensor]], state: dict[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`save`."""
        with torch.no_grad():
            for p, w in zip(self.params, self._listed(tensors["live"]), strict=True):
                p.copy_(w)
        self.ema = self._listed(tensors["ema_all"])
        self.best = self._listed(tensors["best_all"]) if "best_all" in tensors else None
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.start = int(state["step"])
        self.best_val = float(state["best_val"])
        self.bad_checks = int(state.get("bad_checks", 0))
        self.running = state.get("running")
        self.sums = dict(state.get("sums", {}))
        self.history = json.loads(state["history"])
        self.earlier_s = float(state.get("train_seconds", 0.0))

    def elapsed(self) -> float:
        """Training time, the segments before a resume included."""
        return self.earlier_s + time.perf_counter() - self._t0

    def summary(self, finished: bool) -> dict[str, Any]:
        return {
            "steps": self.step_done,
            "stopped_early": self.stopped_early,
            "best_val_loss": None if self.best is None else self.best_val,
            "train_seconds": round(self.elapsed(), 3),
            "finished": finished,
        }

    def save(self, step: int, finished: bool = False) -> None:
        """A resumable checkpoint (atomic; see :func:`dasbi.checkpoint.save_checkpoint`)."""
        if self.out is None:
            return
        tensors: dict[str, dict[str, Tensor]] = {
            "live": self._indexed(self.params),
            "ema_all": self._indexed(self.ema),
        }
        if self.best is not None:
            tensors["best_all"] = self._indexed(self.best)
        if self.model_tensors is not None:
            tensors["weights"] = self.model_tensors([p.detach() for p in self.params])
            tensors["ema"] = self.model_tensors(self.ema)
            if self.best is not None:
                tensors["best"] = self.model_tensors(self.best)
        train_state = {
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "step": step,
            "best_val": self.best_val,
            "bad_checks": self.bad_checks,
            "running": self.running,
            "sums": self.sums,
            "history": json.dumps(self.history),
            "train_seconds": self.elapsed(),
            **self.extra_state,
        }
        self.step_done = step
        save_checkpoint(
            self.out,
            tensors=tensors,
            config=self.config_text,
            train_state=train_state,
            meta=self.meta(self.summary(finished)),
        )
        (self.out / "history.json").write_text(json.dumps(self.history, indent=1))
        if self.on_save is not None and self.history:
            self.on_save(self.history)

    # -- the loop ----------------------------------------------------------------------
    @torch.no_grad()
    def _validate(self, fn: Callable[[torch.Generator], float]) -> float:
        raw = [p.detach().clone() for p in self.params]
        for p, e in zip(self.params, self.ema, strict=True):
            p.copy_(e)
        for m in self.modules:
            m.eval()
        value = float(fn(torch.Generator().manual_seed(step_seed(self.cfg.seed, 0, 3))))
        for p, r in zip(self.params, raw, strict=True):
            p.copy_(r)
        for m in self.modules:
            m.train()
        return value

    def run(
        self,
        step_fn: StepFn,
        validate: Callable[[torch.Generator], float] | None = None,
        *,
        progress: bool = True,
        eligible: Callable[[int], bool] = lambda done: True,
        before_step: Callable[[int], None] | None = None,
    ) -> None:
        """Train from the current step to ``total`` (or an early stop).

        Args:
            step_fn: (step, generator) → loss terms, the total under ``"loss"``.
            validate: generator → validation loss of the current (EMA) weights.
            eligible: Whether a validation at this step may become the best model (e.g.
                only once an alignment is fully on); ineligible checks do not count
                towards ``patience``.
            before_step: Called before each step (e.g. to copy encoders at a step).
        """
        c = self.cfg
        for m in self.modules:
            m.train()
        self._t0 = time.perf_counter()
        bar = progress_bar(
            total=self.total, initial=self.start, desc=self.desc, unit="step",
            disable=not progress,
        )  # fmt: skip
        step = self.start
        self.step_done = self.start
        with bar:
            for step in range(self.start, self.total):
                if before_step is not None:
                    before_step(step)
                gen = torch.Generator().manual_seed(step_seed(c.seed, step))
                terms = step_fn(step, gen)
                loss = terms["loss"]
                if not torch.isfinite(loss):
                    parts = {k: round(float(v), 4) for k, v in terms.items()}
                    raise DataError(
                        f"training loss became {float(loss)} at step {step} ({parts}); lower "
                        "--set lr=... or check the dataset for extreme values"
                    )
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, c.grad_clip)
                self.opt.step()
                self.sched.step()
                decay = min(c.ema_decay, (1 + step) / (10 + step))
                with torch.no_grad():
                    torch._foreach_lerp_(self.ema, self.params, 1 - decay)
                lv = float(loss.detach())
                self.running = lv if self.running is None else 0.98 * self.running + 0.02 * lv
                if len(terms) > 1:
                    for k, v in terms.items():
                        self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())
                        self.sums[f"n:{k}"] = self.sums.get(f"n:{k}", 0.0) + 1
                done = step + 1
                self.step_done = done
                if done % c.val_every == 0 or done == self.total:
                    rec: dict[str, Any] = {
                        "step": done,
                        "train_loss": self.running,
                        "lr": self.sched.get_last_lr()[0],
                        **{
                            k: v / self.sums[f"n:{k}"]
                            for k, v in self.sums.items()
                            if not k.startswith("n:") and k != "loss"
                        },
                        "val_loss": None,
                    }
                    self.sums = {}
                    if validate is not None:
                        val = self._validate(validate)
                        rec["val_loss"] = val
                        if eligible(done):
                            if val < self.best_val:
                                self.best_val, self.bad_checks = val, 0
                                self.best = [e.clone() for e in self.ema]
                            else:
                                self.bad_checks += 1
                    self.history.append(rec)
                    bar.set_postfix(
                        loss=f"{self.running:.4g}",
                        val=f"{rec['val_loss']:.4g}" if rec["val_loss"] is not None else "-",
                    )
                bar.update(1)
                if self.bad_checks >= c.patience:
                    self.stopped_early = True
                    break
                if done % c.checkpoint_every == 0 and done < self.total:
                    self.save(done)
        self.step_done = step + 1 if self.total > self.start else self.start

    def finish(self) -> list[Tensor]:
        """Load the model's weights (the best EMA, else the last EMA) into ``params``."""
        final = self.best if self.best is not None else self.ema
        with torch.no_grad():
            for p, w in zip(self.params, final, strict=True):
                p.copy_(w)
        for m in self.modules:
            m.eval()
        return final


def module_tensors(
    named: dict[str, torch.nn.Module], params: Sequence[Tensor]
) -> Callable[[list[Tensor]], dict[str, Tensor]]:
    """``model_tensors`` for :class:`Trainer`: the modules' state dicts (keys prefixed
    ``name.``, none for the name ``""``) with each trained parameter taken from the given
    copy (live, EMA or best) and the buffers as they are."""
    index = {id(p): i for i, p in enumerate(params)}

    def fn(values: list[Tensor]) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for k, m in named.items():
            for n, v in m.state_dict(keep_vars=True).items():
                i = index.get(id(v))
                out[f"{k}.{n}" if k else n] = (v if i is None else values[i]).detach().clone()
        return out

    return fn

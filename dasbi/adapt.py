r"""Domain adaptation: modality encoders + a Simformer over θ, aligned between sim and real.

`dasbi train --domain-adapt --real real.h5 [--pairs sim_pairs.h5 real_pairs.h5]`.

Model. The observables of each modality (the node attribute ``modality``: ``photometry``,
``astrometry``, …) go through one encoder (:mod:`encoders.modalities`; photometry carries
its filters' pivot wavelengths), which returns K context tokens and an embedding
:math:`z_m`. The Simformer models θ only and sees x solely through the context tokens, so
aligning the embeddings of real data with those of simulations carries the posterior over.

Batches mix simulated objects (θ known), real objects (θ unknown) and optional sim–real
pairs (the same objects in both domains, rows aligned). The loss is

.. math:: L = L_{score}(\text{sim}) + w(k)\,[\lambda_C L_C + \lambda_{OT} L_{OT}
          + \lambda_{RS} L_{RS}],

with the score loss of :mod:`dasbi.loss` on θ given the context tokens (per-example
condition masks over θ, and the context dropped in a fraction ``uncond_prob`` of examples
so the model also learns the prior), the contrastive loss over sim and real objects, OT
between the pooled sim and real embeddings, and the pair loss (direct, or keypoint-guided
OT with the pairs as keypoints); w(k) is 0 before ``start_step`` and ramps linearly to 1
over the following ``warmup_steps``. The OT and pair terms compare the pooled embeddings
(``level: pooled``) or the context tokens themselves (``level: tokens``, what the Simformer
reads; :func:`encoders.losses.flat_tokens`).

The encoders are shared between the domains by default; ``encoders: separate`` trains a
copy for real data, trained by the alignment terms only, and ``detach_sim`` stops alignment
gradients on the sim side. The copy is taken at ``start_step``: with ``start_step > 0`` the
real side starts from sim encoders already trained on the score loss and is fine-tuned on
the pairs and the unpaired real data while the sim side keeps training, as RoPE calibrates a
trained NPE's embedding network (``encoders: separate, detach_sim: true, level: tokens,
start_step: k`` is the benchmark's ``@rope`` mode).

References:
    Gloeckler, M. et al. (2024). All-in-one simulation-based inference. ICML.
    Wehenkel, A. et al. (2024). Addressing Misspecification in Simulation-based Inference
    through Data-driven Calibration (RoPE). arXiv:2405.08719.
    Gu, X. et al. (2022). Keypoint-Guided Optimal Transport. NeurIPS.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from encoders.losses import (
    ContrastiveLoss,
    KeypointOTLoss,
    OTLoss,
    PairLoss,
    flat_tokens,
    pooled_embedding,
)

from .adapted import (
    AdaptedPosterior,
    EncoderConfig,
    _check_observables,
    _inputs_for,
    _open,
    build_encoders,
    encode,
    modality_specs,
)
from .checkpoint import load_checkpoint, save_checkpoint
from .config import dumps, fingerprint, param, to_dict
from .dataset import Dataset
from .errors import CheckpointError, DataError, ResumeError
from .fileio import recover
from .inputs import ModelInputs
from .loss import DenoisingScoreLoss, training_state
from .network import Simformer
from .nodes import NodeSet
from .posterior import build_sde
from .progress import progress_bar
from .train import (
    TrainConfig,
    _Data,
    _fit_standardizer,
    _lr_lambda,
    _step_seed,
    _to_inputs,
    plot_loss_curves,
)
from .transforms import Standardizer

__all__ = [
    "AdaptedPosterior",
    "AlignConfig",
    "DomainAdaptConfig",
    "EncoderConfig",
    "train_domain_adapt",
]


@dataclass
class AlignConfig:
    """Alignment losses and their weights."""

    contrastive: float = param(0.1, ge=0.0, help="λ_C, weight of the contrastive loss")
    ot: float = param(0.1, ge=0.0, help="λ_OT, weight of the OT loss")
    pair: float = param(0.1, ge=0.0, help="λ_RS, weight of the pair loss")
    warmup_steps: int = param(1000, ge=0, help="steps over which the λ ramp up from 0")
    ot_method: Literal["emd", "sinkhorn", "gw", "fgw"] = param("sinkhorn", help="OT solver")
    ot_reg: float = param(0.05, gt=0.0, help="Sinkhorn regularisation (relative to mean cost)")
    pair_kind: Literal["cosine", "l2", "keypoint"] = param(
        "cosine", help="pair loss: direct (cosine, l2) or keypoint-guided OT"
    )
    temperature: float = param(0.07, gt=0.0, help="contrastive temperature")
    learn_temperature: bool = param(False, help="train the contrastive temperature")
    encoders: Literal["shared", "separate"] = param(
        "shared", help="one encoder per modality for both domains, or a copy for real data"
    )
    detach_sim: bool = param(False, help="alignment losses do not train the sim side")
    level: Literal["pooled", "tokens"] = param(
        "pooled",
        help="OT and pair terms compare the pooled embeddings or the context tokens that the "
        "Simformer reads",
    )
    start_step: int = param(
        0,
        ge=0,
        help="alignment starts here (then ramps over warmup_steps); with encoders: separate "
        "the real-side copy is initialised from the trained sim encoders at this step",
    )


@dataclass
class DomainAdaptConfig(TrainConfig):
    """`dasbi train --domain-adapt`: the training settings plus encoders and alignment."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    real_batch_size: int = param(256, ge=2, help="real objects per step")
    pair_batch_size: int = param(64, ge=1, help="sim-real pairs per step")
    uncond_prob: float = param(0.1, ge=0.0, lt=1.0, help="examples trained without context")


def train_domain_adapt(
    sim: str | os.PathLike | Dataset,
    real: str | os.PathLike | Dataset,
    cfg: DomainAdaptConfig | None = None,
    *,
    pairs: tuple[str | os.PathLike, str | os.PathLike] | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> tuple[AdaptedPosterior, list[dict[str, float]]]:
    """Train encoders and a Simformer over θ with the alignment losses (module docstring).

    Args:
        sim: Simulated dataset (θ and x).
        real: Real dataset with the same observable nodes (its θ, if any, is not used).
        cfg: Settings.
        pairs: Optional (sim, real) datasets whose rows are the same objects.
        out: Checkpoint folder (written every ``checkpoint_every`` steps).
        resume: Continue from the checkpoint in ``out`` (same settings and data); the
            result equals an uninterrupted run's.

    Returns:
        The trained model (the EMA weights with the best validation loss among the records
        after the alignment is fully on, ``start_step + warmup_steps``; the final EMA weights
        where there is none) and the history, with one record per
        ``val_every`` steps holding each loss term.
    """
    cfg = cfg or DomainAdaptConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(out) if out is not None else None
    if out is not None:
        recover(out)  # a killed run's temporary copies
    if out is not None and out.exists() and not (overwrite or resume):
        raise ResumeError(
            f"{out} already exists; pass --resume to continue training or --overwrite to "
            "replace it"
        )
    ds = _open(sim, "simulated data")
    ds_real = _open(real, "real data")
    _check_observables(ds.nodes, ds_real, "real data")
    pair_sets = None
    if pairs is not None:
        pair_sets = (_open(pairs[0], "pairs (sim)"), _open(pairs[1], "pairs (real)"))
        if pair_sets[0].num_rows != pair_sets[1].num_rows:
            raise DataError(
                f"pairs: the sim and real files must have the same rows, got "
                f"{pair_sets[0].num_rows} and {pair_sets[1].num_rows}"
            )
        for p_ds, what in zip(pair_sets, ("pairs (sim)", "pairs (real)"), strict=True):
            _check_observables(ds.nodes, p_ds, what)
    n_val = int(round(cfg.val_fraction * ds.num_rows))
    n_train = ds.num_rows - n_val
    if n_train < 2:
        raise DataError(f"need at least 2 training rows, the dataset has {ds.num_rows}")
    total = cfg.max_steps or int(np.clip(3 * n_train, 5_000, 100_000))
    run_fp = fingerprint(
        {
            "config": to_dict(cfg),
            "data": [
                d.attrs.get("fingerprint", "") or str(d.path)
                for d in (ds, ds_real, *(pair_sets or ()))
            ],
            "rows": [d.num_rows for d in (ds, ds_real, *(pair_sets or ()))],
        }
    )
    state: dict[str, Any] | None = None
    ck = None
    if resume and out is not None and out.exists():
        ck = load_checkpoint(out, train_state=True)
        if ck.meta.get("run_fingerprint") != run_fp:
            raise ResumeError(
                f"{out} was trained with another config or other data; pass --overwrite to "
                "start again, or resume with the original arguments"
            )
        state = ck.train_state
        if state is None:
            raise CheckpointError(f"{out} holds no training state to resume from")
    std, _, _ = _fit_standardizer(ds, n_train)
    diffuse = ds.nodes.diffuse
    theta = NodeSet(n for n in diffuse if n.kind == "parameter")
    p = len(theta)
    specs = modality_specs(
        ds.nodes, {n.modality: ds.group_attrs(n.modality) for n in ds.nodes.context}
    )
    _spectrum_scales(specs, ds, n_train)

    torch.manual_seed(cfg.seed)
    net = Simformer(p, torch.zeros(p, dtype=torch.bool), cfg.network, context_dim=cfg.encoder.dim)
    encoders = build_encoders(specs, cfg.encoder)
    real_enc = copy.deepcopy(encoders) if cfg.align.encoders == "separate" else None
    sde = build_sde(cfg.sde)
    t_std = Standardizer(list(theta), std.mean[:p], std.std[:p])
    meta = {
        "network": to_dict(cfg.network),
        "sde": to_dict(cfg.sde),
        "encoder": to_dict(cfg.encoder),
        "align": to_dict(cfg.align),
    }
    post = AdaptedPosterior(
        net, sde, t_std, theta, encoders, real_enc, std, ds.nodes, specs, cfg.sampler, meta
    )
    score = DenoisingScoreLoss(net, sde, cfg.sde.weighting)
    contrastive = ContrastiveLoss(cfg.align.temperature, cfg.align.learn_temperature)
    ot_loss = OTLoss(cfg.align.ot_method, cfg.align.ot_reg)
    pair_loss = PairLoss(cfg.align.pair_kind) if cfg.align.pair_kind != "keypoint" else None
    kpg = KeypointOTLoss() if cfg.align.pair_kind == "keypoint" else None
    params = [q for m in post.modules().values() for q in m.parameters()]
    params += list(contrastive.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, total))
    ema = [q.detach().clone() for q in params]

    # the sim side is streamed from disk when it is large (as in `dasbi train`); the real
    # set and the pairs are read into memory
    spectra = bool(ds.nodes.context)
    sim_data = _Data(ds, std, n_train, cfg, context=spectra)
    val_in = (
        _to_inputs(ds.read(n_train, n_train + min(n_val, cfg.val_rows)), ds, std, spectra)
        if n_val
        else None
    )
    real_all = _inputs_for(ds_real, ds.nodes, std)
    pair_all = (
        None
        if pair_sets is None
        else (_inputs_for(pair_sets[0], ds.nodes, std), _inputs_for(pair_sets[1], ds.nodes, std))
    )
    is_param = torch.ones(p, dtype=torch.bool)
    theta_idx = torch.arange(p)
    aligning = cfg.align.contrastive > 0 or cfg.align.ot > 0 or (cfg.align.pair > 0 and pair_sets)
    aligned_from = cfg.align.start_step + cfg.align.warmup_steps if aligning else -1

    def theta_part(inp: ModelInputs) -> ModelInputs:
        return ModelInputs(
            inp.values[:, theta_idx],
            inp.errors[:, theta_idx],
            inp.present[:, theta_idx],
            inp.limit[:, theta_idx],
            inp.limit_value[:, :p],
        )

    def score_loss(
        batch: ModelInputs, gen: torch.Generator
    ) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
        out = encode(encoders, specs, batch)
        ctx, ctx_ok = out[0], out[1]
        drop = torch.rand(len(batch), generator=gen) < cfg.uncond_prob
        th = theta_part(batch)
        st = training_state(th, is_param, cfg.masks, gen)
        return score(th, st, gen, None, ctx, ctx_ok & ~drop[:, None]).mean(), out

    def features(out: tuple[Tensor, Tensor, Tensor, Tensor], detach: bool) -> Tensor:
        """What the OT and pair terms compare: pooled embeddings or flattened tokens."""
        ctx, ctx_ok, z, present = out
        f = flat_tokens(ctx, ctx_ok) if cfg.align.level == "tokens" else None
        f = pooled_embedding(z, present) if f is None else f
        return f.detach() if detach else f

    def align_terms(
        sim_out: tuple[Tensor, Tensor, Tensor, Tensor], gen: torch.Generator
    ) -> dict[str, Tensor]:
        real_b = real_all.take(rows(len(real_all), cfg.real_batch_size, gen))
        real_out = encode(real_enc or encoders, specs, real_b)
        detach = cfg.align.detach_sim
        f_sim, f_real = features(sim_out, detach), features(real_out, False)
        terms: dict[str, Tensor] = {}
        if cfg.align.contrastive > 0:
            z_sim = sim_out[2].detach() if detach else sim_out[2]
            terms["contrastive"] = contrastive(
                torch.cat([z_sim, real_out[2]]), torch.cat([sim_out[3], real_out[3]])
            )
        if cfg.align.ot > 0:
            terms["ot"] = ot_loss(f_sim, f_real)
        if pair_all is not None and cfg.align.pair > 0:
            pi = rows(len(pair_all[0]), cfg.pair_batch_size, gen)
            ps = features(encode(encoders, specs, pair_all[0].take(pi)), detach)
            pr = features(encode(real_enc or encoders, specs, pair_all[1].take(pi)), False)
            if kpg is not None:
                keys = torch.arange(len(pi))
                terms["pair"] = kpg(torch.cat([ps, f_sim]), torch.cat([pr, f_real]), keys, keys)
            else:
                terms["pair"] = pair_loss(ps, pr)
        return terms

    def rows(n: int, size: int, gen: torch.Generator) -> Tensor:
        return torch.randint(0, n, (min(size, n),), generator=gen)

    history: list[dict[str, float]] = []
    best_val, best = math.inf, None
    sums: dict[str, float] = {}
    start = 0

    def as_dict(ts: list[Tensor]) -> dict[str, Tensor]:
        return {f"{i:05d}": t.detach().clone() for i, t in enumerate(ts)}

    def as_list(d: dict[str, Tensor]) -> list[Tensor]:
        return [d[f"{i:05d}"].clone() for i in range(len(params))]

    if state is not None and ck is not None:
        with torch.no_grad():
            for q, w in zip(params, as_list(ck.tensors["live"]), strict=True):
                q.copy_(w)
        ema = as_list(ck.tensors["ema_all"])
        best = as_list(ck.tensors["best_all"]) if "best_all" in ck.tensors else None
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = int(state["step"])
        best_val = float(state["best_val"])
        history = json.loads(state["history"])
        sums = dict(state["sums"])

    def save(step: int, final: bool = False) -> None:
        if out is None:
            return
        tensors = {"best": post.state_dict()} if final else {}
        tensors.update(live=as_dict(params), ema_all=as_dict(ema))
        if best is not None:
            tensors["best_all"] = as_dict(best)
        train_state = {
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step": step,
            "best_val": best_val,
            "history": json.dumps(history),
            "sums": sums,
        }
        summary = post.meta.get("training") if final else {"steps": step, "finished": False}
        save_checkpoint(
            out,
            tensors=tensors,
            config=dumps(cfg),
            train_state=train_state,
            meta={
                **post.model_meta(),
                "run_fingerprint": run_fp,
                "training": summary,
                "sim_dataset": str(ds.path),
                "real_dataset": str(ds_real.path),
            },
        )

    t0 = time.perf_counter()
    bar = progress_bar(
        total=total, initial=start, desc="train (DA)", unit="step", disable=not progress
    )
    with bar:
        for step in range(start, total):
            gen = torch.Generator().manual_seed(_step_seed(cfg.seed, step))
            if real_enc is not None and step == cfg.align.start_step > 0:
                _start_real_copy(params, ema, encoders, real_enc)
            batch = sim_data.batch(step)
            l_score, sim_out = score_loss(batch, gen)
            terms = {"score": l_score}
            if step >= cfg.align.start_step:
                terms.update(align_terms(sim_out, gen))
            ramp = _ramp(step, cfg.align.start_step, cfg.align.warmup_steps)
            weights = {
                "contrastive": cfg.align.contrastive,
                "ot": cfg.align.ot,
                "pair": cfg.align.pair,
            }
            loss = l_score + ramp * sum(weights[k] * v for k, v in terms.items() if k != "score")
            if not torch.isfinite(loss):
                raise DataError(
                    f"training loss became {float(loss)} at step {step} "
                    f"({ {k: float(v) for k, v in terms.items()} }); lower --set lr=..."
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(ema, params, 1 - decay)
            for k, v in {**terms, "total": loss}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
                sums[f"n:{k}"] = sums.get(f"n:{k}", 0.0) + 1
            done = step + 1
            if done % cfg.val_every == 0 or done == total:
                rec = {
                    "step": done,
                    **{k: v / sums[f"n:{k}"] for k, v in sums.items() if not k.startswith("n:")},
                }
                sums = {}
                if val_in is not None and len(val_in):
                    rec["val_loss"] = _validate(
                        params,
                        ema,
                        lambda g: score_loss(val_in, g)[0],
                        cfg.seed,
                    )
                    # the validation loss does not see the alignment: a snapshot taken
                    # before it is fully on would hold half-trained real-side encoders
                    if rec["val_loss"] < best_val and done > aligned_from:
                        best_val, best = rec["val_loss"], [e.clone() for e in ema]
                history.append(rec)
                bar.set_postfix(score=f"{rec['score']:.4g}", val=f"{rec.get('val_loss', 0):.4g}")
            bar.update(1)
            if done % cfg.checkpoint_every == 0 and done < total:
                save(done)
    final = best if best is not None else ema
    with torch.no_grad():
        for q, w in zip(params, final, strict=True):
            q.copy_(w)
    for m in post.modules().values():
        m.eval()
    post.meta["training"] = {
        "steps": total,
        "best_val_loss": None if best is None else best_val,
        "train_seconds": round(time.perf_counter() - t0, 3),
        "sim_rows": n_train,
        "real_rows": len(real_all),
        "pairs": 0 if pair_all is None else len(pair_all[0]),
        "finished": True,
    }
    if out is not None:
        save(total, final=True)
        (out / "history.json").write_text(json.dumps(history, indent=1))
        terms = ("score", "val_loss", "contrastive", "ot", "pair")
        plot_loss_curves(history, out / "loss.png", {k: k for k in terms}, "loss (|value|)")
    return post, history


def _spectrum_scales(specs: list[dict[str, Any]], ds: Dataset, n_train: int) -> None:
    """Set each spectrum spec's ``log_flux_ref``: the median over (up to 4096) training rows
    of log10 of each spectrum's median valid flux."""
    from .inputs import context_tensors

    todo = [sp for sp in specs if sp["kind"] == "spectrum"]
    if not todo:
        return
    ctx = context_tensors(ds.read(0, min(n_train, 4096)), ds.nodes)
    for sp in todo:
        flux, _, ok = ctx[sp["nodes"][0]]
        med = torch.nanmedian(torch.where(ok, flux.abs(), torch.nan), dim=1).values
        med = med[torch.isfinite(med) & (med > 0)]
        sp["log_flux_ref"] = float(torch.log10(med).median()) if len(med) else 0.0


def _ramp(step: int, start: int, warmup: int) -> float:
    """Weight of the alignment terms: 0 before ``start``, then linear to 1 over ``warmup``."""
    if step < start:
        return 0.0
    return 1.0 if warmup == 0 else min(1.0, (step - start) / warmup)


@torch.no_grad()
def _start_real_copy(
    params: list[Tensor], ema: list[Tensor], sim: torch.nn.Module, real: torch.nn.Module
) -> None:
    """Copy the sim encoders into the real-side encoders, live and EMA weights alike."""
    where = {id(q): i for i, q in enumerate(params)}
    for qs, qr in zip(sim.parameters(), real.parameters(), strict=True):
        qr.copy_(qs)
        ema[where[id(qr)]].copy_(ema[where[id(qs)]])


@torch.no_grad()
def _validate(params: list[Tensor], ema: list[Tensor], fn: Any, seed: int) -> float:
    raw = [q.detach().clone() for q in params]
    for q, e in zip(params, ema, strict=True):
        q.copy_(e)
    value = float(fn(torch.Generator().manual_seed(_step_seed(seed, 0, 3))))
    for q, r in zip(params, raw, strict=True):
        q.copy_(r)
    return value

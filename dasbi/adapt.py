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
import os
import warnings
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

from .checkpoint import load_checkpoint
from .config import dumps, fingerprint, param, to_dict
from .dataset import Dataset
from .encoding import (
    EncoderConfig,
    ModalityEncoders,
    build_encoders,
    check_observables,
    encode,
    inputs_for,
    modality_specs,
    open_dataset,
)
from .errors import CheckpointError, DataError, ResumeError
from .fileio import recover
from .inputs import ModelInputs
from .loss import DenoisingScoreLoss, training_state
from .network import Simformer
from .nodes import NodeSet
from .posterior import Posterior, build_sde
from .train import TrainConfig
from .trainer import (
    Trainer,
    TrainingData,
    fit_standardizer,
    module_tensors,
    plot_loss_curves,
    to_inputs,
)
from .transforms import Standardizer

AdaptedPosterior = Posterior  # the old name of a Posterior with modality encoders

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

    # all 0 by default: on real young stars every alignment recipe measured so far made the
    # posteriors worse than none (docs/benchmarks.md, bench yso-align and luhman2016)
    contrastive: float = param(0.0, ge=0.0, help="λ_C, weight of the contrastive loss")
    ot: float = param(0.0, ge=0.0, help="λ_OT, weight of the OT loss")
    pair: float = param(0.0, ge=0.0, help="λ_RS, weight of the pair loss")
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
) -> tuple[Posterior, list[dict[str, float]]]:
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
    ds = open_dataset(sim, "simulated data")
    ds_real = open_dataset(real, "real data")
    check_observables(ds.nodes, ds_real, "real data")
    pair_sets = None
    if pairs is not None:
        pair_sets = (open_dataset(pairs[0], "pairs (sim)"), open_dataset(pairs[1], "pairs (real)"))
        if pair_sets[0].num_rows != pair_sets[1].num_rows:
            raise DataError(
                f"pairs: the sim and real files must have the same rows, got "
                f"{pair_sets[0].num_rows} and {pair_sets[1].num_rows}"
            )
        for p_ds, what in zip(pair_sets, ("pairs (sim)", "pairs (real)"), strict=True):
            check_observables(ds.nodes, p_ds, what)
    if pair_sets is not None and cfg.align.pair == 0:
        warnings.warn(
            "pairs are given but align.pair is 0 (the default: pairs made real young-star "
            "posteriors worse in the cross-validated benchmark); set align.pair to use them",
            stacklevel=2,
        )
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
    std, _, _ = fit_standardizer(ds, n_train)
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
    modalities = ModalityEncoders(encoders, real_enc, std, ds.nodes, specs, cfg.encoder)
    post = Posterior(net, sde, t_std, theta, (), "dense", cfg.sampler, meta, modalities)
    score = DenoisingScoreLoss(net, sde, cfg.sde.weighting)
    contrastive = ContrastiveLoss(cfg.align.temperature, cfg.align.learn_temperature)
    ot_loss = OTLoss(cfg.align.ot_method, cfg.align.ot_reg)
    pair_loss = PairLoss(cfg.align.pair_kind) if cfg.align.pair_kind != "keypoint" else None
    kpg = KeypointOTLoss() if cfg.align.pair_kind == "keypoint" else None
    params = [q for m in post.modules().values() for q in m.parameters()]
    params += list(contrastive.parameters())

    # the sim side is streamed from disk when it is large (as in `dasbi train`); the real
    # set and the pairs are read into memory
    spectra = bool(ds.nodes.context)
    sim_data = TrainingData(
        ds, std, n_train, cfg.batch_size, cfg.seed, cfg.in_memory, context=spectra
    )
    val_in = (
        to_inputs(ds.read(n_train, n_train + min(n_val, cfg.val_rows)), ds, std, spectra)
        if n_val
        else None
    )
    real_all = inputs_for(ds_real, ds.nodes, std)
    pair_all = (
        None
        if pair_sets is None
        else (inputs_for(pair_sets[0], ds.nodes, std), inputs_for(pair_sets[1], ds.nodes, std))
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

    def rows(n: int, size: int, gen: torch.Generator) -> Tensor:
        return torch.randint(0, n, (min(size, n),), generator=gen)

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

    weights = {"contrastive": cfg.align.contrastive, "ot": cfg.align.ot, "pair": cfg.align.pair}

    def step_fn(step: int, gen: torch.Generator) -> dict[str, Tensor]:
        l_score, sim_out = score_loss(sim_data.batch(step), gen)
        terms = {"score": l_score}
        if step >= cfg.align.start_step:
            terms.update(align_terms(sim_out, gen))
        ramp = _ramp(step, cfg.align.start_step, cfg.align.warmup_steps)
        loss = l_score + ramp * sum(weights[k] * v for k, v in terms.items() if k != "score")
        return {"loss": loss, **terms}

    def checkpoint_meta(summary: dict[str, Any]) -> dict[str, Any]:
        return {
            **post.model_meta(),
            "run_fingerprint": run_fp,
            "training": post.meta.get("training") or summary,
            "sim_dataset": str(ds.path),
            "real_dataset": str(ds_real.path),
        }

    def plot(history: list[dict[str, Any]]) -> None:
        assert out is not None
        terms = ("score", "val_loss", "contrastive", "ot", "pair")
        plot_loss_curves(history, out / "loss.png", {k: k for k in terms}, "loss (|value|)")

    trainer = Trainer(
        params,
        cfg,
        total,
        modules=[*post.modules().values(), contrastive],
        out=out,
        meta=checkpoint_meta,
        model_tensors=module_tensors(post.modules(), params),
        config_text=dumps(cfg),
        on_save=plot,
        desc="train (DA)",
    )
    if state is not None and ck is not None:
        trainer.restore(ck.tensors, state)

    def before_step(step: int) -> None:
        if real_enc is not None and step == cfg.align.start_step > 0:
            _start_real_copy(trainer.params, trainer.ema, encoders, real_enc)

    trainer.run(
        step_fn,
        (lambda g: float(score_loss(val_in, g)[0]))
        if val_in is not None and len(val_in)
        else None,
        progress=progress,
        # the validation loss does not see the alignment: a snapshot taken before it is
        # fully on would hold half-trained real-side encoders
        eligible=lambda done: done > aligned_from,
        before_step=before_step,
    )
    post.meta["training"] = {
        **trainer.summary(finished=True),
        "sim_rows": n_train,
        "real_rows": len(real_all),
        "pairs": 0 if pair_all is None else len(pair_all[0]),
    }
    trainer.save(trainer.step_done, finished=True)
    trainer.finish()
    return post, trainer.history


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

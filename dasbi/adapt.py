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
OT with the pairs as keypoints); w(k) ramps linearly from 0 to 1 over ``warmup_steps``.
The encoders are shared between the domains by default; ``encoders: separate`` trains a
copy for real data (initialised from the sim encoders, trained by the alignment terms and,
through the pairs, RoPE-style), and ``detach_sim`` stops alignment gradients on the sim side.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from encoders.losses import (
    ContrastiveLoss,
    KeypointOTLoss,
    OTLoss,
    PairLoss,
    pooled_embedding,
)
from encoders.modalities import PhotometryEncoder, ScalarSetEncoder

from .checkpoint import load_checkpoint, save_checkpoint
from .config import dumps, from_dict, param, to_dict
from .dataset import Dataset
from .errors import CheckpointError, DataError, ResumeError
from .inputs import ModelInputs, model_inputs
from .loss import DenoisingScoreLoss, training_state
from .network import LATENT, Simformer
from .nodes import Node, NodeSet
from .posterior import Posterior, build_sde
from .progress import progress_bar
from .samplers import SamplerConfig
from .train import TrainConfig, _fit_standardizer, _lr_lambda, _step_seed, _to_inputs
from .transforms import Standardizer

__all__ = [
    "AdaptedPosterior",
    "AlignConfig",
    "DomainAdaptConfig",
    "EncoderConfig",
    "embedding_gap",
    "train_domain_adapt",
]


@dataclass
class EncoderConfig:
    """Size of each modality encoder."""

    dim: int = param(64, ge=8, le=1024, help="token width (also the embedding z_m)")
    depth: int = param(2, ge=0, le=16, help="transformer blocks over the modality's set")
    heads: int = param(4, ge=1, le=32, help="attention heads (must divide dim)")
    tokens: int = param(2, ge=1, le=64, help="context tokens per modality")


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


@dataclass
class DomainAdaptConfig(TrainConfig):
    """`dasbi train --domain-adapt`: the training settings plus encoders and alignment."""

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    real_batch_size: int = param(256, ge=2, help="real objects per step")
    pair_batch_size: int = param(64, ge=1, help="sim-real pairs per step")
    uncond_prob: float = param(0.1, ge=0.0, lt=1.0, help="examples trained without context")


# -- modalities ------------------------------------------------------------------------------
def modality_groups(nodes: NodeSet) -> dict[str, list[int]]:
    """Observable diffuse nodes grouped by modality: name → indices into ``nodes.diffuse``."""
    out: dict[str, list[int]] = {}
    for j, n in enumerate(nodes.diffuse):
        if n.kind == "observable":
            out.setdefault(n.modality, []).append(j)
    if not out:
        raise DataError("domain adaptation needs observable nodes; the dataset has none")
    return out


def _wavelengths(names: list[str]) -> list[float] | None:
    try:
        from simulators.bandpasses import pivot_wavelength
    except ImportError:  # pragma: no cover - simulators ship with dasbi
        return None
    try:
        return [pivot_wavelength(n) / 1e4 for n in names]
    except Exception:
        return None


def build_encoders(specs: list[dict[str, Any]], cfg: EncoderConfig) -> nn.ModuleDict:
    """One encoder per modality spec ``{name, kind, nodes, wavelengths_um}``."""
    kw = {"dim": cfg.dim, "depth": cfg.depth, "heads": cfg.heads, "num_tokens": cfg.tokens}
    out = nn.ModuleDict()
    for spec in specs:
        if spec["kind"] == "photometry":
            out[spec["name"]] = PhotometryEncoder(spec["nodes"], spec["wavelengths_um"], **kw)
        else:
            out[spec["name"]] = ScalarSetEncoder(spec["nodes"], **kw)
    return out


def modality_specs(nodes: NodeSet) -> list[dict[str, Any]]:
    diffuse = nodes.diffuse
    specs = []
    for name, idx in modality_groups(nodes).items():
        names = [diffuse[j].name for j in idx]
        lam = _wavelengths(names) if name == "photometry" else None
        specs.append(
            {
                "name": name,
                "kind": "photometry" if lam else "scalar",
                "nodes": names,
                "index": idx,
                "wavelengths_um": lam,
            }
        )
    return specs


def encode(
    encoders: nn.ModuleDict, specs: list[dict[str, Any]], inputs: ModelInputs
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Context tokens (B, M·K, d), their mask, embeddings z (B, M, d) and presence (B, M)."""
    toks, masks, zs, pres = [], [], [], []
    for spec in specs:
        idx = torch.as_tensor(spec["index"])
        out = encoders[spec["name"]](
            inputs.values[:, idx],
            inputs.errors[:, idx],
            inputs.present[:, idx] | inputs.limit[:, idx],
            inputs.limit[:, idx],
        )
        toks.append(out.tokens)
        masks.append(out.mask)
        zs.append(out.z)
        pres.append(out.present)
    return torch.cat(toks, 1), torch.cat(masks, 1), torch.stack(zs, 1), torch.stack(pres, 1)


# -- the model -------------------------------------------------------------------------------
class AdaptedPosterior(Posterior):
    """A Simformer over θ with modality encoders; samples p(θ | x) for sim or real data.

    Args:
        net, sde, standardizer, nodes, sampler, meta: As for :class:`Posterior`, with
            ``nodes`` the θ nodes only.
        encoders: Per-modality encoders (sim side).
        real_encoders: Encoders for real data (None: shared).
        x_standardizer: Standardisation of every diffuse node (θ first, then x).
        all_nodes: The dataset's nodes (θ and x).
        specs: The modality specs.
    """

    def __init__(
        self,
        net: Simformer,
        sde: Any,
        standardizer: Standardizer,
        nodes: NodeSet,
        encoders: nn.ModuleDict,
        real_encoders: nn.ModuleDict | None,
        x_standardizer: Standardizer,
        all_nodes: NodeSet,
        specs: list[dict[str, Any]],
        sampler: SamplerConfig | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(net, sde, standardizer, nodes, (), "dense", sampler, meta)
        self.encoders = encoders
        self.real_encoders = real_encoders
        self.x_standardizer = x_standardizer
        self.all_nodes = all_nodes
        self.specs = specs

    @property
    def observable_nodes(self) -> list[Node]:
        return [n for n in self.all_nodes.diffuse if n.kind == "observable"]

    def modules(self) -> dict[str, nn.Module]:
        out: dict[str, nn.Module] = {"net": self.net, "enc": self.encoders}
        if self.real_encoders is not None:
            out["real"] = self.real_encoders
        return out

    def state_dict(self) -> dict[str, Tensor]:
        return {
            f"{k}.{n}": v for k, m in self.modules().items() for n, v in m.state_dict().items()
        }

    def load_state_dict(self, sd: Mapping[str, Tensor]) -> None:
        for k, m in self.modules().items():
            m.load_state_dict({n[len(k) + 1 :]: v for n, v in sd.items() if n.startswith(k + ".")})

    @torch.no_grad()
    def sample(  # type: ignore[override]
        self,
        sample_shape: Any = (1000,),
        x: Any = None,
        *,
        observed: Any = None,
        errors: Any = None,
        upper_limits: Any = None,
        domain: Literal["real", "sim"] = "real",
        sampler: SamplerConfig | Mapping[str, Any] | str | None = None,
        steps: int | None = None,
        seed: int | None = None,
    ) -> Tensor:
        """Posterior samples (S, *batch, P) of θ given observables x (physical units).

        ``domain`` picks the encoders (they differ only with ``encoders: separate``).
        The other arguments are those of :meth:`Posterior.sample`.
        """
        s = self._sample_count(sample_shape)
        names = self.observable_names
        arrs = {}
        for key, data in (("x", x), ("observed", observed), ("errors", errors)):
            arrs[key] = _columns(data, names, key)
        lim = _columns(upper_limits, names, "upper_limits")
        vals = arrs["x"]
        if vals is None:
            raise DataError("pass the observations x")
        batch_shape = vals.shape[:-1]
        vals = vals.reshape(-1, len(names))
        b = len(vals)
        obs = np.isfinite(vals)
        if arrs["observed"] is not None:
            obs &= arrs["observed"].reshape(b, -1).astype(bool)
        errs = np.zeros_like(vals) if arrs["errors"] is None else arrs["errors"].reshape(b, -1)
        lim = np.zeros_like(obs) if lim is None else lim.reshape(b, -1).astype(bool) & obs
        p = len(self.parameter_names)
        full = np.full((b, p + len(names)), np.nan)
        full[:, p:] = np.where(obs, vals, np.nan)
        fe = np.zeros_like(full)
        fe[:, p:] = np.where(obs, errs, 0.0)
        fo = np.zeros(full.shape, bool)
        fo[:, p:] = obs
        fl = np.zeros(full.shape, bool)
        fl[:, p:] = lim
        inputs = model_inputs(full, fe, fo, fl, self.x_standardizer)
        enc = self.real_encoders if (domain == "real" and self.real_encoders) else self.encoders
        enc.eval()
        ctx, ctx_ok, _, _ = encode(enc, self.specs, inputs)
        cfg = self._resolve_sampler(sampler, steps)
        theta_inputs = ModelInputs(
            torch.zeros(b, p),
            torch.zeros(b, p),
            torch.zeros(b, p, dtype=torch.bool),
            torch.zeros(b, p, dtype=torch.bool),
            np.full((b, p), np.nan, np.float32),
        )
        state = np.full((b, p), LATENT, dtype=np.int64)
        gen = torch.Generator().manual_seed(
            int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, (1,)))
        )
        y = self._sample_model_space(
            s, theta_inputs, state, np.zeros((b, p), bool), cfg, gen, ctx, ctx_ok
        )
        phys = self.standardizer.inverse(y).astype(np.float32)
        return torch.from_numpy(phys.reshape(s, *batch_shape, p))

    # -- persistence ---------------------------------------------------------------------
    def model_meta(self) -> dict[str, Any]:
        return {
            "kind": "simformer-da",
            "nodes": json.loads(self.all_nodes.to_json()),
            "standardisation": self.x_standardizer.to_dict(),
            "modalities": [{k: v for k, v in sp.items()} for sp in self.specs],
            "separate_real_encoders": self.real_encoders is not None,
            **{k: v for k, v in self.meta.items() if k not in ("nodes",)},
            "sampler": to_dict(self.sampler),
        }

    def save(self, path: str | os.PathLike, config: str = "") -> Path:
        return save_checkpoint(
            path, tensors={"best": self.state_dict()}, config=config, meta=self.model_meta()
        )

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> AdaptedPosterior:  # type: ignore[override]
        from .network import NetworkConfig
        from .posterior import SDEConfig

        try:
            all_nodes = NodeSet(Node.from_dict(d) for d in meta["nodes"])
            net_cfg = from_dict(NetworkConfig, meta["network"], path="network")
            enc_cfg = from_dict(EncoderConfig, meta["encoder"], path="encoder")
            sde_cfg = from_dict(SDEConfig, meta["sde"], path="sde")
            sampler = from_dict(SamplerConfig, meta.get("sampler", {}), path="sampler")
            std = meta["standardisation"]
            specs = list(meta["modalities"])
        except KeyError as err:
            raise CheckpointError(f"checkpoint metadata lacks {err}") from None
        diffuse = all_nodes.diffuse
        x_std = Standardizer(diffuse, np.array(std["mean"]), np.array(std["std"]))
        theta = NodeSet(n for n in diffuse if n.kind == "parameter")
        p = len(theta)
        t_std = Standardizer(list(theta), x_std.mean[:p], x_std.std[:p])
        net = Simformer(p, torch.zeros(p, dtype=torch.bool), net_cfg, context_dim=enc_cfg.dim)
        encoders = build_encoders(specs, enc_cfg)
        real = copy.deepcopy(encoders) if meta.get("separate_real_encoders") else None
        extra = {
            k: meta[k] for k in ("network", "sde", "encoder", "align", "training") if k in meta
        }
        return cls(
            net,
            build_sde(sde_cfg),
            t_std,
            theta,
            encoders,
            real,
            x_std,
            all_nodes,
            specs,
            sampler,
            extra,
        )

    @classmethod
    def load(  # type: ignore[override]
        cls, path: str | os.PathLike, weights: str | None = None, device: str = "cpu"
    ) -> AdaptedPosterior:
        ck = load_checkpoint(path)
        if ck.meta.get("kind") != "simformer-da":
            raise CheckpointError(
                f"{str(path)!r} is not a domain-adapted model (dasbi train --domain-adapt)"
            )
        post = cls.from_meta(ck.meta)
        name = weights or next((w for w in ("best", "ema", "weights") if w in ck.tensors), None)
        if name is None or name not in ck.tensors:
            raise CheckpointError(f"{str(path)!r} holds no weights {name!r}")
        try:
            post.load_state_dict(ck.tensors[name])
        except RuntimeError as err:
            raise CheckpointError(
                f"weights in {str(path)!r} do not fit the recorded architecture: "
                f"{str(err).splitlines()[0]}"
            ) from None
        for m in post.modules().values():
            m.to(device).eval()
        return post


@torch.no_grad()
def embedding_gap(
    post: AdaptedPosterior,
    sim: str | os.PathLike | Dataset,
    real: str | os.PathLike | Dataset,
    rows: int = 1000,
) -> float:
    """Sim–real discrepancy of the pooled embeddings, scale-free.

    The exact OT cost (squared Euclidean) between the first ``rows`` objects of each
    dataset, divided by the mean squared distance between simulated objects: 0 when the
    domains are indistinguishable, order 1 or more when they are apart.
    """
    import ot

    ref = post.all_nodes
    ds_s, ds_r = _open(sim, "simulated data"), _open(real, "real data")
    zs = []
    for ds, enc in ((ds_s, post.encoders), (ds_r, post.real_encoders or post.encoders)):
        inp = _inputs_for(ds, ref, post.x_standardizer).take(slice(0, rows))
        enc.eval()
        _, _, z, present = encode(enc, post.specs, inp)
        zs.append(pooled_embedding(z, present).double())
    a = torch.full((len(zs[0]),), 1.0 / len(zs[0]), dtype=torch.float64)
    b = torch.full((len(zs[1]),), 1.0 / len(zs[1]), dtype=torch.float64)
    cost = float(ot.emd2(a, b, ot.dist(zs[0], zs[1])))
    spread = float(ot.dist(zs[0], zs[0]).mean())
    return cost / max(spread, 1e-12)


def _columns(data: Any, names: list[str], what: str) -> np.ndarray | None:
    """An array (..., D) or a mapping name → values as an array (..., D) (NaN: missing)."""
    if data is None:
        return None
    if isinstance(data, Mapping):
        unknown = set(data) - set(names)
        if unknown:
            raise DataError(
                f"{what}: unknown observables {sorted(unknown)}; the model has {names}"
            )
        arrs = {k: np.asarray(v, np.float64) for k, v in data.items()}
        shape = np.broadcast_shapes(*(a.shape for a in arrs.values()))
        fill = 0.0 if what != "x" else np.nan
        return np.stack(
            [np.broadcast_to(arrs.get(n, np.full(shape, fill)), shape) for n in names], -1
        )
    arr = np.asarray(data, np.float64)
    if arr.ndim == 0 or arr.shape[-1] != len(names):
        raise DataError(f"{what}: expected shape (..., {len(names)}) for {names}, got {arr.shape}")
    return arr


# -- training --------------------------------------------------------------------------------
def _open(path: str | os.PathLike | Dataset, what: str) -> Dataset:
    if isinstance(path, Dataset):
        return path
    try:
        return Dataset(path)
    except DataError as err:
        raise DataError(f"{what}: {err}") from None


def _check_observables(ref: NodeSet, other: Dataset, what: str) -> None:
    want = [(n.name, n.unit) for n in ref.diffuse if n.kind == "observable"]
    have = {(n.name, n.unit) for n in other.nodes.diffuse if n.kind == "observable"}
    missing = [n for n, _ in want if (n, dict(want)[n]) not in have]
    if missing:
        raise DataError(
            f"{what} {str(other.path)!r} lacks the simulated observables {missing} (or has "
            "them in other units); real data must carry the same observable nodes"
        )


def _inputs_for(ds: Dataset, ref: NodeSet, std: Standardizer) -> ModelInputs:
    """All rows of ``ds`` as model inputs in the diffuse-node order of ``ref``.

    Observables are matched by name; θ is left unobserved (real data's θ, where a file
    has it, is never used in training).
    """
    blocks = ds.read()
    n = ds.num_rows
    width = len(ref.diffuse)
    arr = {
        "values": np.full((n, width), np.nan),
        "errors": np.zeros((n, width)),
        "observed": np.zeros((n, width), bool),
        "upper_limit": np.zeros((n, width), bool),
    }
    where = {
        m.name: (group, j)
        for group in ds.nodes.groups
        for j, m in enumerate(ds.nodes.group(group))
        if m.kind == "observable" and m.role == "diffuse"
    }
    for i, node in enumerate(ref.diffuse):
        if node.kind != "observable":
            continue
        group, j = where[node.name]
        for key in arr:
            arr[key][:, i] = np.asarray(getattr(blocks[group], key))[:, j]
    return model_inputs(arr["values"], arr["errors"], arr["observed"], arr["upper_limit"], std)


def train_domain_adapt(
    sim: str | os.PathLike | Dataset,
    real: str | os.PathLike | Dataset,
    cfg: DomainAdaptConfig | None = None,
    *,
    pairs: tuple[str | os.PathLike, str | os.PathLike] | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[AdaptedPosterior, list[dict[str, float]]]:
    """Train encoders and a Simformer over θ with the alignment losses (module docstring).

    Args:
        sim: Simulated dataset (θ and x).
        real: Real dataset with the same observable nodes (its θ, if any, is not used).
        cfg: Settings.
        pairs: Optional (sim, real) datasets whose rows are the same objects.
        out: Checkpoint folder.

    Returns:
        The trained model (best validation weights) and the history, with one record per
        ``val_every`` steps holding each loss term.
    """
    cfg = cfg or DomainAdaptConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(out) if out is not None else None
    if out is not None and out.exists() and not overwrite:
        raise ResumeError(f"{out} already exists; pass --overwrite to replace it")
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
    std, _, _ = _fit_standardizer(ds, n_train)
    diffuse = ds.nodes.diffuse
    theta = NodeSet(n for n in diffuse if n.kind == "parameter")
    p = len(theta)
    specs = modality_specs(ds.nodes)

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

    sim_all = _to_inputs(ds.read(0, ds.num_rows), ds, std)
    real_all = _inputs_for(ds_real, ds.nodes, std)
    pair_all = (
        None
        if pair_sets is None
        else (_inputs_for(pair_sets[0], ds.nodes, std), _inputs_for(pair_sets[1], ds.nodes, std))
    )
    train_in, val_in = sim_all.take(slice(0, n_train)), sim_all.take(slice(n_train, None))
    is_param = torch.ones(p, dtype=torch.bool)
    theta_idx = torch.arange(p)

    def theta_part(inp: ModelInputs) -> ModelInputs:
        return ModelInputs(
            inp.values[:, theta_idx],
            inp.errors[:, theta_idx],
            inp.present[:, theta_idx],
            inp.limit[:, theta_idx],
            inp.limit_value[:, :p],
        )

    def score_loss(batch: ModelInputs, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        ctx, ctx_ok, z, present = encode(encoders, specs, batch)
        drop = torch.rand(len(batch), generator=gen) < cfg.uncond_prob
        ctx_ok = ctx_ok & ~drop[:, None]
        th = theta_part(batch)
        st = training_state(th, is_param, cfg.masks, gen)
        return score(th, st, gen, None, ctx, ctx_ok).mean(), z, present

    def rows(n: int, size: int, gen: torch.Generator) -> Tensor:
        return torch.randint(0, n, (min(size, n) if n < size else size,), generator=gen)

    history: list[dict[str, float]] = []
    best_val, best = math.inf, None
    t0 = time.perf_counter()
    bar = progress_bar(total=total, desc="train (DA)", unit="step", disable=not progress)
    sums: dict[str, float] = {}
    with bar:
        for step in range(total):
            gen = torch.Generator().manual_seed(_step_seed(cfg.seed, step))
            batch = train_in.take(rows(n_train, cfg.batch_size, gen))
            l_score, z_sim, pres_sim = score_loss(batch, gen)
            real_b = real_all.take(rows(len(real_all), cfg.real_batch_size, gen))
            _, _, z_real, pres_real = encode(real_enc or encoders, specs, real_b)
            if cfg.align.detach_sim:
                z_sim = z_sim.detach()
            pool_sim = pooled_embedding(z_sim, pres_sim)
            pool_real = pooled_embedding(z_real, pres_real)
            terms = {"score": l_score}
            if cfg.align.contrastive > 0:
                terms["contrastive"] = contrastive(
                    torch.cat([z_sim, z_real]), torch.cat([pres_sim, pres_real])
                )
            if cfg.align.ot > 0:
                terms["ot"] = ot_loss(pool_sim, pool_real)
            if pair_all is not None and cfg.align.pair > 0:
                pi = rows(len(pair_all[0]), cfg.pair_batch_size, gen)
                _, _, zp_s, pp_s = encode(encoders, specs, pair_all[0].take(pi))
                _, _, zp_r, pp_r = encode(real_enc or encoders, specs, pair_all[1].take(pi))
                if cfg.align.detach_sim:
                    zp_s = zp_s.detach()
                ps, pr = pooled_embedding(zp_s, pp_s), pooled_embedding(zp_r, pp_r)
                if kpg is not None:
                    keys = torch.arange(len(pi))
                    terms["pair"] = kpg(
                        torch.cat([ps, pool_sim]), torch.cat([pr, pool_real]), keys, keys
                    )
                else:
                    terms["pair"] = pair_loss(ps, pr)
            ramp = 1.0 if cfg.align.warmup_steps == 0 else min(1.0, step / cfg.align.warmup_steps)
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
            sums["n"] = sums.get("n", 0.0) + 1
            done = step + 1
            if done % cfg.val_every == 0 or done == total:
                rec = {"step": done, **{k: v / sums["n"] for k, v in sums.items() if k != "n"}}
                sums = {}
                if len(val_in):
                    rec["val_loss"] = _validate(
                        params,
                        ema,
                        lambda g: score_loss(
                            val_in.take(slice(0, min(len(val_in), cfg.val_rows))), g
                        )[0],
                        cfg.seed,
                    )
                    if rec["val_loss"] < best_val:
                        best_val, best = rec["val_loss"], [e.clone() for e in ema]
                history.append(rec)
                bar.set_postfix(score=f"{rec['score']:.4g}", val=f"{rec.get('val_loss', 0):.4g}")
            bar.update(1)
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
    }
    if out is not None:
        save_checkpoint(
            out,
            tensors={"best": post.state_dict()},
            config=dumps(cfg),
            meta={
                **post.model_meta(),
                "sim_dataset": str(ds.path),
                "real_dataset": str(ds_real.path),
            },
        )
        (out / "history.json").write_text(json.dumps(history, indent=1))
        _plot_terms(history, out / "loss.png")
    return post, history


@torch.no_grad()
def _validate(params: list[Tensor], ema: list[Tensor], fn: Any, seed: int) -> float:
    raw = [q.detach().clone() for q in params]
    for q, e in zip(params, ema, strict=True):
        q.copy_(e)
    value = float(fn(torch.Generator().manual_seed(_step_seed(seed, 0, 3))))
    for q, r in zip(params, raw, strict=True):
        q.copy_(r)
    return value


def _plot_terms(history: list[dict[str, float]], path: Path) -> None:
    """Each loss term against the step, as PNG."""
    import matplotlib
    from matplotlib.figure import Figure

    from .fileio import atomic_path

    if not history:
        return
    with matplotlib.rc_context({"text.usetex": False}):
        fig = Figure(figsize=(6.5, 3.8))
        ax = fig.subplots()
        steps = [h["step"] for h in history]
        for key in ("score", "val_loss", "contrastive", "ot", "pair"):
            if key in history[0]:
                ax.plot(
                    steps,
                    [abs(h[key]) + 1e-12 for h in history],
                    "o-" if key == "val_loss" else "-",
                    label=key,
                )
        ax.set_xlabel("step")
        ax.set_ylabel("loss (|value|)")
        ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)

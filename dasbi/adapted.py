"""The domain-adapted model: modality encoders in front of a Simformer over θ.

:class:`AdaptedPosterior` samples p(θ | x) from observables that per-modality encoders
(:mod:`encoders.modalities`) turn into context tokens; :func:`encode` is the one path from
model inputs to tokens and embeddings, used in training (:mod:`dasbi.adapt`) and at
inference alike. :func:`embedding_gap` measures how far apart simulated and real
embeddings are.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from encoders.losses import pooled_embedding
from encoders.modalities import PhotometryEncoder, ScalarSetEncoder, SpectrumEncoder

from .checkpoint import load_checkpoint, save_checkpoint
from .config import from_dict, param, to_dict
from .dataset import Dataset
from .errors import CheckpointError, DataError
from .inputs import ModelInputs, context_tensors, model_inputs
from .network import LATENT, Simformer
from .nodes import Node, NodeSet
from .posterior import Posterior, build_sde, config_text
from .samplers import SamplerConfig
from .transforms import Standardizer

__all__ = [
    "AdaptedPosterior",
    "EncoderConfig",
    "build_encoders",
    "check_observables",
    "embedding_gap",
    "encode",
    "inputs_for",
    "modality_specs",
    "open_dataset",
]


@dataclass
class EncoderConfig:
    """Size of each modality encoder."""

    dim: int = param(64, ge=8, le=1024, help="token width (also the embedding z_m)")
    depth: int = param(2, ge=0, le=16, help="transformer blocks over the modality's set")
    heads: int = param(4, ge=1, le=32, help="attention heads (must divide dim)")
    tokens: int = param(2, ge=1, le=64, help="context tokens per modality")
    patch: int = param(16, ge=1, le=512, help="pixels per patch of the spectrum encoders")


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


def _wavelengths(nodes: list[Node]) -> list[float] | None:
    """The bands' pivot wavelengths [µm] from the node metadata the simulator wrote."""
    lam = [n.wavelength_um for n in nodes]
    if any(v is None for v in lam):
        warnings.warn(
            "the photometry nodes carry no pivot wavelengths (node wavelength_um; datasets "
            "written before dasbi stored them have none): the encoder treats the bands as "
            "plain scalars; simulate again, or give the nodes wavelength_um",
            stacklevel=3,
        )
        return None
    return [float(v) for v in lam]  # type: ignore[arg-type]


def build_encoders(specs: list[dict[str, Any]], cfg: EncoderConfig) -> nn.ModuleDict:
    """One encoder per modality spec ``{name, kind, nodes, wavelengths_um}`` (spectra:
    ``wavelengths_aa`` and ``log_flux_ref``)."""
    kw = {"dim": cfg.dim, "depth": cfg.depth, "heads": cfg.heads, "num_tokens": cfg.tokens}
    out = nn.ModuleDict()
    for spec in specs:
        if spec["kind"] == "spectrum":
            out[spec["name"]] = SpectrumEncoder(
                spec["wavelengths_aa"],
                patch=cfg.patch,
                log_flux_ref=spec.get("log_flux_ref", 0.0),
                **kw,
            )
        elif spec["kind"] == "photometry":
            out[spec["name"]] = PhotometryEncoder(spec["nodes"], spec["wavelengths_um"], **kw)
        else:
            out[spec["name"]] = ScalarSetEncoder(spec["nodes"], **kw)
    return out


def modality_specs(
    nodes: NodeSet, group_attrs: Mapping[str, Mapping[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One spec per modality: the observable diffuse nodes grouped by modality, and each
    context (spectrum) node, whose pixel wavelengths come from ``group_attrs[modality]``
    (``wavelength_nm`` or ``wavelength_aa``, as `dasbi simulate` writes them)."""
    diffuse = nodes.diffuse
    specs = []
    for name, idx in modality_groups(nodes).items():
        names = [diffuse[j].name for j in idx]
        lam = _wavelengths([diffuse[j] for j in idx]) if name == "photometry" else None
        specs.append(
            {
                "name": name,
                "kind": "photometry" if lam else "scalar",
                "nodes": names,
                "index": idx,
                "wavelengths_um": lam,
            }
        )
    for node in nodes.context:
        if node.kind != "observable":
            continue
        attrs = dict((group_attrs or {}).get(node.modality, {}))
        if "wavelength_aa" in attrs:
            lam_aa = np.asarray(attrs["wavelength_aa"], np.float64)
        elif "wavelength_nm" in attrs:
            lam_aa = 10.0 * np.asarray(attrs["wavelength_nm"], np.float64)
        else:
            raise DataError(
                f"spectrum node {node.name!r}: the dataset gives no pixel wavelengths (group "
                f"attribute 'wavelength_nm' or 'wavelength_aa' of {node.modality!r}); write it "
                "with `dasbi simulate` or add the attribute"
            )
        if lam_aa.shape != (node.size,):
            raise DataError(
                f"spectrum node {node.name!r} has {node.size} pixels but {lam_aa.size} wavelengths"
            )
        name = node.modality if node.modality not in {sp["name"] for sp in specs} else node.name
        specs.append(
            {
                "name": name,
                "kind": "spectrum",
                "nodes": [node.name],
                "index": [],
                "wavelengths_aa": lam_aa.tolist(),
            }
        )
    return specs


def encode(
    encoders: nn.ModuleDict, specs: list[dict[str, Any]], inputs: ModelInputs
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Context tokens (B, M·K, d), their mask, embeddings z (B, M, d) and presence (B, M)."""
    toks, masks, zs, pres = [], [], [], []
    for spec in specs:
        enc = encoders[spec["name"]]
        if spec["kind"] == "spectrum":
            got = inputs.context.get(spec["nodes"][0])
            if got is None:  # no spectra in these inputs: the modality is absent
                zero = torch.zeros(len(inputs), enc.length)
                got = (zero, zero, torch.zeros(zero.shape, dtype=torch.bool))
            out = enc(*got)
        else:
            idx = torch.as_tensor(spec["index"])
            out = enc(
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
        spectra: Mapping[str, Any] | None = None,
        domain: Literal["real", "sim"] = "real",
        sampler: SamplerConfig | Mapping[str, Any] | str | None = None,
        steps: int | None = None,
        seed: int | None = None,
    ) -> Tensor:
        """Posterior samples (S, *batch, P) of θ given observables x (physical units).

        ``domain`` picks the encoders (they differ only with ``encoders: separate``).
        ``spectra`` maps a spectrum node (``xp_spectrum``, …) to a pair (fluxes, 1σ
        errors), each (*batch, L) in the dataset's units; NaN pixels are masked, and a
        spectrum not given is an absent modality. The other arguments are those of
        :meth:`Posterior.sample`.
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
        inputs.context = self._spectra(spectra, b)
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

    def sample_nodes(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        """Not available: an adapted model's observables enter through its encoders as
        context tokens, so they are not nodes the Simformer can sample (no likelihood)."""
        raise DataError(
            "sample_nodes is not available for a model trained with modality encoders "
            "(--domain-adapt): its observables are encoder context, not Simformer nodes, so "
            "only the posterior p(θ | x) is modelled; use sample()"
        )

    def log_prob(self, *args: Any, **kwargs: Any) -> Tensor:
        """Not available yet for models with modality encoders."""
        raise DataError(
            "log_prob is not available yet for a model trained with modality encoders "
            "(--domain-adapt); it works for models from `dasbi train` without them"
        )

    def _spectra(self, spectra: Mapping[str, Any] | None, b: int) -> dict[str, Any]:
        sizes = {n.name: n.size for n in self.all_nodes.context if n.kind == "observable"}
        out = {}
        for name, value in (spectra or {}).items():
            if name not in sizes:
                raise DataError(
                    f"spectra: unknown spectrum {name!r}; the model has {sorted(sizes) or 'none'}"
                )
            if not (isinstance(value, tuple) and len(value) == 2):
                raise DataError(
                    f"spectra[{name!r}]: pass a pair (fluxes, 1σ errors); the encoder reads "
                    "the errors"
                )
            raw, err = value
            flux = np.asarray(raw, np.float64)
            if flux.ndim == 0 or flux.shape[-1] != sizes[name] or flux.size != b * sizes[name]:
                raise DataError(
                    f"spectra[{name!r}]: expected {b} spectra of {sizes[name]} pixels (one per "
                    f"object of x), got shape {flux.shape}"
                )
            flux = flux.reshape(b, sizes[name])
            err = np.asarray(err, np.float64)
            if err.size != flux.size:
                raise DataError(f"spectra[{name!r}]: errors must have the fluxes' shape")
            err = err.reshape(flux.shape)
            if np.isinf(flux).any() or (np.isfinite(err) & (err < 0)).any():
                raise DataError(
                    f"spectra[{name!r}]: fluxes must be finite (NaN marks a masked pixel) and "
                    "errors non-negative"
                )
            ok = np.isfinite(flux) & np.isfinite(err) & (err > 0)
            out[name] = (
                torch.from_numpy(np.where(ok, flux, 0.0).astype(np.float32)),
                torch.from_numpy(np.where(ok, err, 0.0).astype(np.float32)),
                torch.from_numpy(ok),
            )
        return out

    # -- persistence ---------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, data: str | os.PathLike, domain: Literal["real", "sim"] = "sim") -> np.ndarray:
        """Pooled embeddings z_pool (N, d) of every row of a dataset, through the encoders
        of ``domain`` (the real-side copy where the model has one)."""
        from encoders.losses import pooled_embedding

        from .dataset import Dataset

        enc = self.real_encoders if domain == "real" and self.real_encoders else self.encoders
        with Dataset(data) as ds:
            check_observables(self.all_nodes, ds, "data")
            inp = inputs_for(ds, self.all_nodes, self.x_standardizer)
        enc.eval()
        _, _, z, present = encode(enc, self.specs, inp)
        return pooled_embedding(z, present).float().numpy()

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
            path,
            tensors={"best": self.state_dict()},
            config=config_text(config),
            meta=self.model_meta(),
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
    ds_s, ds_r = open_dataset(sim, "simulated data"), open_dataset(real, "real data")
    zs = []
    for ds, enc in ((ds_s, post.encoders), (ds_r, post.real_encoders or post.encoders)):
        inp = inputs_for(ds, ref, post.x_standardizer).take(slice(0, rows))
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


def open_dataset(path: str | os.PathLike | Dataset, what: str) -> Dataset:
    if isinstance(path, Dataset):
        return path
    try:
        return Dataset(path)
    except DataError as err:
        raise DataError(f"{what}: {err}") from None


def check_observables(ref: NodeSet, other: Dataset, what: str) -> None:
    want = [(n.name, n.unit) for n in ref.diffuse if n.kind == "observable"]
    have = {(n.name, n.unit) for n in other.nodes.diffuse if n.kind == "observable"}
    missing = [n for n, _ in want if (n, dict(want)[n]) not in have]
    if missing:
        raise DataError(
            f"{what} {str(other.path)!r} lacks the simulated observables {missing} (or has "
            "them in other units); real data must carry the same observable nodes"
        )
    names = {n for n, _ in want}
    extra = sorted(n.name for n in other.nodes.diffuse if n.kind == "observable")
    extra = [n for n in extra if n not in names]
    if extra:
        raise DataError(
            f"{what} {str(other.path)!r} has observables the simulations lack: {extra}; "
            "write it with `dasbi ingest --like <simulations.h5>` so that the nodes match"
        )


def inputs_for(ds: Dataset, ref: NodeSet, std: Standardizer) -> ModelInputs:
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
    out = model_inputs(arr["values"], arr["errors"], arr["observed"], arr["upper_limit"], std)
    wanted = {n.name: n.size for n in ref.context}
    got = context_tensors(blocks, ds.nodes)
    for name, (flux, _, _) in got.items():
        if name in wanted and flux.shape[1] != wanted[name]:
            raise DataError(
                f"{str(ds.path)!r}: spectrum {name!r} has {flux.shape[1]} pixels, the model "
                f"expects {wanted[name]}"
            )
    out.context = {k: v for k, v in got.items() if k in wanted}
    return out

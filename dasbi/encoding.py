"""Modality encoders in front of the Simformer: their configuration, the modality specs of a
dataset, the one path from model inputs to context tokens (:func:`encode`) and
:class:`ModalityEncoders`, the component a :class:`~dasbi.posterior.Posterior` owns when it
was trained with `dasbi train --domain-adapt`.

With encoders, the Simformer models θ only and sees the observables through the context
tokens of one encoder per modality (:mod:`encoders.modalities`; photometry carries its
bands' pivot wavelengths from the node metadata); spectra are context nodes.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from encoders.modalities import PhotometryEncoder, ScalarSetEncoder, SpectrumEncoder

from .config import from_dict, param, to_dict
from .dataset import Dataset
from .errors import CheckpointError, DataError
from .inputs import ModelInputs, context_tensors, model_inputs
from .nodes import Node, NodeSet
from .transforms import Standardizer

__all__ = [
    "EncoderConfig",
    "ModalityEncoders",
    "build_encoders",
    "check_observables",
    "encode",
    "inputs_for",
    "modality_groups",
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


class ModalityEncoders:
    """The encoders a model trained with `--domain-adapt` owns, and what they need.

    Args:
        encoders: One encoder per modality (the sim side).
        real_encoders: A copy for real data (``encoders: separate``), or None (shared).
        x_standardizer: Standardisation of every diffuse node of ``all_nodes`` (θ first).
        all_nodes: The dataset's nodes (θ and x, spectra as context nodes).
        specs: The modality specs (:func:`modality_specs`).
        config: The encoders' sizes.
    """

    def __init__(
        self,
        encoders: nn.ModuleDict,
        real_encoders: nn.ModuleDict | None,
        x_standardizer: Standardizer,
        all_nodes: NodeSet,
        specs: list[dict[str, Any]],
        config: EncoderConfig,
    ) -> None:
        self.encoders = encoders
        self.real_encoders = real_encoders
        self.x_standardizer = x_standardizer
        self.all_nodes = all_nodes
        self.specs = specs
        self.config = config

    @property
    def observable_nodes(self) -> list[Node]:
        return [n for n in self.all_nodes.diffuse if n.kind == "observable"]

    def modules(self) -> dict[str, nn.Module]:
        out: dict[str, nn.Module] = {"enc": self.encoders}
        if self.real_encoders is not None:
            out["real"] = self.real_encoders
        return out

    def side(self, domain: Literal["real", "sim"]) -> nn.ModuleDict:
        """The encoders of a domain (the real-side copy where there is one)."""
        if domain not in ("real", "sim"):
            raise DataError(f"domain must be 'real' or 'sim', got {domain!r}")
        return self.real_encoders if domain == "real" and self.real_encoders else self.encoders

    def context(
        self,
        x: Any,
        observed: Any,
        errors: Any,
        upper_limits: Any,
        spectra: Mapping[str, Any] | None,
        domain: Literal["real", "sim"],
    ) -> tuple[tuple[int, ...], Tensor, Tensor]:
        """The batch shape and the context tokens (B, K, d) and mask (B, K) of observations
        (arrays (..., D) in the order of the observable nodes, or name → values)."""
        names = [n.name for n in self.observable_nodes]
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
        p = len(self.all_nodes.diffuse) - len(names)
        full = np.full((b, p + len(names)), np.nan)
        full[:, p:] = np.where(obs, vals, np.nan)
        fe = np.zeros_like(full)
        fe[:, p:] = np.where(obs, errs, 0.0)
        fo = np.zeros(full.shape, bool)
        fo[:, p:] = obs
        fl = np.zeros(full.shape, bool)
        fl[:, p:] = lim
        inputs = model_inputs(full, fe, fo, fl, self.x_standardizer)
        inputs.context = self.spectra_inputs(spectra, b)
        enc = self.side(domain)
        enc.eval()
        with torch.no_grad():
            ctx, ctx_ok, _, _ = encode(enc, self.specs, inputs)
        return tuple(batch_shape), ctx, ctx_ok

    def spectra_inputs(self, spectra: Mapping[str, Any] | None, b: int) -> dict[str, Any]:
        """Given spectra {node: (fluxes, 1σ errors)} as context tensors for b objects."""
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

    @torch.no_grad()
    def embed(self, data: str | os.PathLike, domain: Literal["real", "sim"] = "sim") -> np.ndarray:
        """Pooled embeddings z_pool (N, d) of every row of a dataset."""
        from encoders.losses import pooled_embedding

        enc = self.side(domain)
        with Dataset(data) as ds:
            check_observables(self.all_nodes, ds, "data")
            inp = inputs_for(ds, self.all_nodes, self.x_standardizer)
        enc.eval()
        _, _, z, present = encode(enc, self.specs, inp)
        return pooled_embedding(z, present).float().numpy()

    def meta(self) -> dict[str, Any]:
        import json

        return {
            "nodes": json.loads(self.all_nodes.to_json()),
            "standardisation": self.x_standardizer.to_dict(),
            "modalities": [dict(sp) for sp in self.specs],
            "separate_real_encoders": self.real_encoders is not None,
            "encoder": to_dict(self.config),
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> ModalityEncoders:
        try:
            all_nodes = NodeSet(Node.from_dict(d) for d in meta["nodes"])
            cfg = from_dict(EncoderConfig, meta["encoder"], path="encoder")
            std = meta["standardisation"]
            specs = list(meta["modalities"])
        except KeyError as err:
            raise CheckpointError(f"checkpoint metadata lacks {err}") from None
        x_std = Standardizer(all_nodes.diffuse, np.array(std["mean"]), np.array(std["std"]))
        encoders = build_encoders(specs, cfg)
        real = copy.deepcopy(encoders) if meta.get("separate_real_encoders") else None
        return cls(encoders, real, x_std, all_nodes, specs, cfg)


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

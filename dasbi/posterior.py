"""The user-facing model: `Posterior.load(path).sample((S,), x=...)` and any other conditional.

A :class:`Posterior` bundles the trained network, the SDE, the per-node standardisation and
the node metadata. It works in physical units: inputs are standardised and samples are
transformed back, so users never see model space.

>>> post = Posterior.load("runs/model")                          # doctest: +SKIP
>>> theta = post.sample((1000,), x=x_obs)                        # (1000, P)
>>> theta = post.sample((500,), x=x_batch, errors=err_batch)     # (500, B, P)
>>> lik = post.sample_nodes((200,), given={"theta_1": 0.3, "theta_2": -0.1})  # p(x | θ)
>>> logp = post.log_prob(theta, x=x_obs)                           # log p(θ | x), (1000,)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from .checkpoint import load_checkpoint, save_checkpoint
from .config import from_dict, param, to_dict
from .errors import CheckpointError, DataError
from .inputs import ModelInputs, model_inputs
from .masks import GraphMasks
from .network import ABSENT, LATENT, LIMIT, OBSERVED, NetworkConfig, Simformer
from .nodes import Node, NodeSet
from .samplers import Interval, SamplerConfig, outside, sample_latents
from .sde import SDE, VESDE, VPSDE, FlowSDE
from .transforms import Standardizer

if TYPE_CHECKING:
    from .encoding import ModalityEncoders

__all__ = ["Posterior", "SDEConfig", "build_sde", "config_text"]


@dataclass
class SDEConfig:
    """The noise process and the loss weighting."""

    name: Literal["ve", "vp", "flow"] = param(
        "ve", help="variance exploding, variance preserving, or the flow-matching path"
    )
    sigma_min: float = param(1e-3, gt=0.0, help="VE: smallest noise level")
    sigma_max: float = param(15.0, gt=0.0, help="VE: largest noise level")
    beta_min: float = param(0.01, gt=0.0, help="VP: β at t = 0")
    beta_max: float = param(10.0, gt=0.0, help="VP: β at t = 1")
    t_min: float | None = param(
        None, gt=0.0, lt=1.0, help="smallest time (VE 1e-5, VP and flow 1e-3)"
    )
    t_max: float = param(0.999, gt=0.0, lt=1.0, help="flow: largest time (σ̃ = t/(1-t))")
    weighting: Literal["edm", "g2", "sigma2", "fm"] = param(
        "edm",
        help="loss weight: EDM (uniform on the preconditioned output), g(t)², σ_t², or fm "
        "(the flow-matching loss; use with name: flow)",
    )


def build_sde(cfg: SDEConfig) -> SDE:
    if cfg.name == "ve":
        return VESDE(cfg.sigma_min, cfg.sigma_max, 1e-5 if cfg.t_min is None else cfg.t_min)
    if cfg.name == "flow":
        return FlowSDE(1e-3 if cfg.t_min is None else cfg.t_min, cfg.t_max)
    return VPSDE(cfg.beta_min, cfg.beta_max, 1e-3 if cfg.t_min is None else cfg.t_min)


def _as_array(value: Any, node: Node) -> np.ndarray:
    """A value for ``node`` as a float array in the node's unit (Quantities are converted)."""
    if hasattr(value, "unit") and hasattr(value, "to_value"):
        import astropy.units as u

        try:
            return np.asarray(
                value.to_value(u.Unit(node.unit) if node.unit else u.dimensionless_unscaled),
                np.float64,
            )
        except u.UnitConversionError:
            raise DataError(
                f"node {node.name!r} is in {node.unit or 'dimensionless units'!r}; "
                f"got a quantity in {value.unit}"
            ) from None
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise DataError(
            f"node {node.name!r}: cannot read {type(value).__name__} as numbers"
        ) from None


def _flux_quantities(nodes: Mapping[str, Node], values: Any, errors: Any) -> tuple[Any, Any]:
    """Turn flux-density Quantities given for magnitude nodes into magnitudes (and flux
    errors into magnitude errors, σ_m = 2.5/ln 10 · σ_F/F) with the node's zero point."""
    if not isinstance(values, Mapping):
        return values, errors
    import astropy.units as u

    values = dict(values)
    errors = dict(errors) if isinstance(errors, Mapping) else errors
    for name, v in list(values.items()):
        node = nodes.get(name)
        if node is None or node.unit.strip().lower() != "mag" or not hasattr(v, "unit"):
            continue
        if getattr(v.unit, "physical_type", None) != "spectral flux density":
            continue
        if node.zero_point_jy is None:
            raise DataError(
                f"node {name!r}: this model's nodes carry no zero point (a dataset written by "
                "an older dasbi), so fluxes cannot become its magnitudes; pass magnitudes"
            )
        f = np.asarray(v.to_value(u.Jy), np.float64)
        if np.any(f[np.isfinite(f)] <= 0):
            raise DataError(
                f"node {name!r}: fluxes must be > 0 (a non-detection is an upper limit: "
                "pass its flux limit with upper_limits, or NaN for missing)"
            )
        values[name] = -2.5 * np.log10(f / node.zero_point_jy)
        if isinstance(errors, Mapping) and hasattr(errors.get(name), "unit"):
            e = errors[name]
            if getattr(e.unit, "physical_type", None) == "spectral flux density":
                errors[name] = 2.5 / np.log(10) * np.asarray(e.to_value(u.Jy)) / f
    return values, errors


def config_text(config: str) -> str:
    """What a saved model writes to ``config.yaml``: the training config given, or a note
    that none was (the settings the model needs to load are in ``meta.json`` either way)."""
    if config.strip():
        return config
    return (
        "# saved without a training config; the network, SDE and sampler settings this\n"
        "# model needs are in meta.json\n"
    )


class Posterior:
    """A trained Simformer with everything needed to sample in physical units.

    Args:
        net: The network.
        sde: Its noise process.
        standardizer: Per-node transforms and statistics.
        nodes: All nodes of the model (the diffuse ones are modelled).
        edges: Dependency graph as (parent, child) names.
        attention: ``dense``, ``undirected`` or ``directed``.
        sampler: Default sampler settings.
        meta: Extra metadata (SDE and network configs, training summary).
        modalities: The modality encoders of a model trained with `--domain-adapt`
            (:class:`~dasbi.encoding.ModalityEncoders`): then ``nodes`` are the θ nodes, the
            Simformer models θ only and the observables reach it as the encoders' context
            tokens. None (the default): every node is a Simformer token.
    """

    def __init__(
        self,
        net: Simformer,
        sde: SDE,
        standardizer: Standardizer,
        nodes: NodeSet,
        edges: Sequence[tuple[str, str]] = (),
        attention: str = "dense",
        sampler: SamplerConfig | None = None,
        meta: Mapping[str, Any] | None = None,
        modalities: ModalityEncoders | None = None,
    ) -> None:
        self.modalities = modalities
        self.net = net
        self.sde = sde
        self.standardizer = standardizer
        self.nodes = nodes
        self.diffuse = nodes.diffuse
        self.edges = [tuple(e) for e in edges]
        self.attention = attention
        self.sampler = sampler or SamplerConfig()
        self.meta = dict(meta or {})
        index = {n.name: i for i, n in enumerate(self.diffuse)}
        self.graph = GraphMasks(
            attention,
            len(self.diffuse),
            [(index[a], index[b]) for a, b in self.edges if a in index and b in index],
        )
        self.is_param = torch.tensor([n.kind == "parameter" for n in self.diffuse])

    # -- names ---------------------------------------------------------------------------
    @property
    def _by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.diffuse}

    @property
    def node_names(self) -> list[str]:
        return [n.name for n in self.diffuse]

    @property
    def parameter_names(self) -> list[str]:
        return [n.name for n in self.diffuse if n.kind == "parameter"]

    @property
    def observable_names(self) -> list[str]:
        return [n.name for n in self.observable_nodes]

    @property
    def observable_nodes(self) -> list[Node]:
        """The observables that :meth:`sample` takes as ``x``."""
        if self.modalities is not None:
            return self.modalities.observable_nodes
        return [n for n in self.diffuse if n.kind == "observable"]

    # -- the encoders of a domain-adapted model (None without) ---------------------------
    @property
    def encoders(self) -> Any:
        return None if self.modalities is None else self.modalities.encoders

    @property
    def real_encoders(self) -> Any:
        return None if self.modalities is None else self.modalities.real_encoders

    @property
    def x_standardizer(self) -> Standardizer | None:
        return None if self.modalities is None else self.modalities.x_standardizer

    @property
    def all_nodes(self) -> NodeSet:
        """Every node of the model's dataset (θ and x, also those behind encoders)."""
        return self.nodes if self.modalities is None else self.modalities.all_nodes

    @property
    def specs(self) -> list[dict[str, Any]]:
        return [] if self.modalities is None else self.modalities.specs

    def modules(self) -> dict[str, torch.nn.Module]:
        """The trained modules: the Simformer and any encoders."""
        extra = {} if self.modalities is None else self.modalities.modules()
        return {"net": self.net, **extra}

    def state_dict(self) -> dict[str, Tensor]:
        """Every module's weights, keyed ``module.name`` (the network alone: unprefixed)."""
        if self.modalities is None:
            return dict(self.net.state_dict())
        return {
            f"{k}.{n}": v for k, m in self.modules().items() for n, v in m.state_dict().items()
        }

    def load_state_dict(self, sd: Mapping[str, Tensor]) -> None:
        if self.modalities is None:
            sd = dict(sd)
            # checkpoints from before limit tokens: the (unused) limit vector is zero
            sd.setdefault("limit_emb", torch.zeros_like(self.net.limit_emb))
            self.net.load_state_dict(sd)
            return
        for k, m in self.modules().items():
            m.load_state_dict({n[len(k) + 1 :]: v for n, v in sd.items() if n.startswith(k + ".")})

    def embed(self, data: str | os.PathLike, domain: Literal["real", "sim"] = "sim") -> np.ndarray:
        """Pooled encoder embeddings (N, d) of a dataset's rows (models with encoders)."""
        if self.modalities is None:
            raise DataError(
                "embed needs modality encoders: this model was trained without them "
                "(dasbi train --domain-adapt trains them)"
            )
        return self.modalities.embed(data, domain)

    def _no_encoders(self, what: str) -> None:
        if self.modalities is not None:
            raise DataError(
                f"{what} is not available for a model trained with modality encoders "
                "(--domain-adapt): its observables are encoder context, not Simformer nodes, "
                "so only the posterior p(θ | x) is modelled; use sample() or log_prob()"
            )

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def _index(self, name: str) -> int:
        try:
            return self.node_names.index(name)
        except ValueError:
            raise DataError(
                f"unknown node {name!r}; the model's nodes are: {', '.join(self.node_names)}"
            ) from None

    # -- building queries ----------------------------------------------------------------
    def _named(self, data: Any, names: Sequence[str], what: str) -> dict[str, np.ndarray]:
        """Normalise an array (…, len(names)) or a mapping name → array into a mapping."""
        if data is None:
            return {}
        if isinstance(data, Mapping):
            return {k: _as_array(v, self.diffuse[self._index(k)]) for k, v in data.items()}
        if hasattr(data, "unit"):
            raise DataError(f"{what}: pass quantities as a mapping from node name to quantity")
        if isinstance(data, Tensor):
            data = data.detach().cpu().numpy()
        arr = np.asarray(data, dtype=np.float64)
        if arr.ndim == 0 or arr.shape[-1] != len(names):
            raise DataError(
                f"{what}: expected shape (..., {len(names)}) for nodes {list(names)}, got "
                f"{arr.shape}; or pass a mapping from node name to values"
            )
        return {n: arr[..., i] for i, n in enumerate(names)}

    def _observation(
        self, x: Any, observed: Any, errors: Any, upper_limits: Any
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Values, errors and limit flags by observable name from the arguments of
        :meth:`sample` (arrays or mappings; flux Quantities of magnitude nodes converted;
        entries ``observed`` marks False become NaN)."""
        names = self.observable_names
        x, errors = _flux_quantities(self._by_name, x, errors)
        given = self._named(x, names, "x")
        for name, mask in self._named(observed, names, "observed").items():
            given[name] = np.where(np.asarray(mask, bool), given.get(name, np.nan), np.nan)
        errs = self._named(errors, names, "errors")
        lims = {
            k: np.asarray(v, bool)
            for k, v in self._named(upper_limits, names, "upper_limits").items()
        }
        return given, errs, lims

    def _query(
        self,
        given: Mapping[str, np.ndarray],
        errors: Mapping[str, np.ndarray],
        limits: Mapping[str, np.ndarray],
        latent: Sequence[str],
        limit_tokens: bool = False,
    ) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Physical arrays (B, N): values, errors, state, limit mask.

        A given upper limit becomes a limit token (state :data:`LIMIT`) with
        ``limit_tokens``, and a latent node sampled with interval guidance otherwise (or
        when the node is also asked for as latent).
        """
        arrays = [np.asarray(v) for v in (*given.values(), *errors.values(), *limits.values())]
        try:
            batch_shape = np.broadcast_shapes(*(a.shape for a in arrays)) if arrays else ()
        except ValueError as err:
            raise DataError(f"inputs have incompatible batch shapes: {err}") from None
        b = int(np.prod(batch_shape)) if batch_shape else 1
        n = len(self.diffuse)
        values = np.full((b, n), np.nan)
        errs = np.zeros((b, n))
        state = np.full((b, n), ABSENT, dtype=np.int64)
        limit = np.zeros((b, n), bool)
        for name in latent:
            state[:, self._index(name)] = LATENT
        for name, v in given.items():
            j = self._index(name)
            v = np.broadcast_to(v, batch_shape).reshape(b)
            lim = np.broadcast_to(limits.get(name, False), batch_shape).reshape(b).astype(bool)
            if np.isinf(v).any():
                raise DataError(
                    f"node {name!r}: value is infinite at {int(np.isinf(v).sum())} "
                    "position(s); pass NaN for a missing value"
                )
            ok = np.isfinite(v)
            values[:, j] = v
            state[ok & ~lim, j] = OBSERVED
            limit[:, j] = lim & ok
            state[lim & ok, j] = LIMIT if limit_tokens and name not in latent else LATENT
        unknown = set(errors) - set(given)
        if unknown:
            raise DataError(f"errors given for nodes without values: {sorted(unknown)}")
        for name, e in errors.items():
            errs[:, self._index(name)] = np.broadcast_to(e, batch_shape).reshape(b)
        bad = (state == OBSERVED) & ~(np.isfinite(errs) & (errs >= 0))
        if bad.any():
            j = int(np.argwhere(bad)[0, 1])
            raise DataError(f"node {self.node_names[j]!r}: errors must be finite and >= 0")
        needs = self.meta.get("needs_errors", [])
        for j, name in enumerate(self.node_names):
            if name in needs and ((state[:, j] == OBSERVED) & (errs[:, j] <= 0)).any():
                raise DataError(
                    f"the model was trained with measurement uncertainties for {name!r}; pass "
                    f"errors={{'{name}': ...}} (or an errors array) with values > 0"
                )
        if not (state == LATENT).any(axis=1).all():
            raise DataError("nothing to sample: every node is observed or absent")
        return batch_shape, values, errs, state, limit

    def _intervals(self, inputs: ModelInputs, limit: np.ndarray) -> tuple[Tensor, Tensor]:
        """Model-space interval bounds (B, N) from the upper-limit flags."""
        lower = np.full(limit.shape, -np.inf)
        upper = np.full(limit.shape, np.inf)
        if limit.any():
            y = self.standardizer.forward(np.where(limit, inputs.limit_value, np.nan), limit)
            for j, node in enumerate(self.diffuse):
                rows = limit[:, j]
                if not rows.any():
                    continue
                # a magnitude limit is a faint limit: the true magnitude is larger
                if node.unit.strip().lower() in ("mag", "magnitude", "abmag", "vegamag"):
                    lower[rows, j] = y[rows, j]
                else:
                    upper[rows, j] = y[rows, j]
        return torch.from_numpy(lower).float(), torch.from_numpy(upper).float()

    # -- sampling ------------------------------------------------------------------------
    @torch.no_grad()
    def _sample_model_space(
        self,
        sample_shape: int,
        inputs: ModelInputs,
        state: np.ndarray,
        limit: np.ndarray,
        cfg: SamplerConfig,
        generator: torch.Generator,
        context: Tensor | None = None,
        context_valid: Tensor | None = None,
    ) -> np.ndarray:
        """Samples (S, B, N) in model space; observed entries are copied, absent are NaN.

        ``context`` (B, K, d) and ``context_valid`` (B, K) are encoder tokens (always
        observed), for models trained with modality encoders.
        """
        s = sample_shape
        b, n = state.shape
        dev = self.device
        lower, upper = self._intervals(inputs, limit)
        box_lo, box_hi = (t.to(dev)[None] for t in self._prior_box())
        box_active = bool(torch.isfinite(box_lo).any() or torch.isfinite(box_hi).any())
        out = np.empty((s, b, n), np.float32)
        per_chunk = max(1, cfg.max_rows // s)
        state_t = torch.from_numpy(state)
        self.net.eval()
        bf16 = cfg.precision == "bfloat16"
        for lo in range(0, b, per_chunk):
            hi = min(lo + per_chunk, b)
            st = state_t[lo:hi].to(dev)
            vals = inputs.values[lo:hi].to(dev)
            errs = inputs.errors[lo:hi].to(dev)
            graph = self.graph(st >= OBSERVED)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                ctx = None if context is None else context[lo:hi].to(dev)
                ctx_ok = None if context_valid is None else context_valid[lo:hi].to(dev)
                cache = self.net.encode(vals, errs, st, graph, ctx, ctx_ok)
                idx = cache.lat_index
                interval = Interval(
                    torch.gather(lower[lo:hi].to(dev), 1, idx).repeat_interleave(s, 0),
                    torch.gather(upper[lo:hi].to(dev), 1, idx).repeat_interleave(s, 0),
                )
                big = cache.expand(s, shared=True)
                lat = sample_latents(
                    lambda x, sig, big=big: self.net.denoise(big, x, sig).float(),
                    (big.lat_index.shape[0], idx.shape[1]),
                    self.sde,
                    cfg,
                    generator,
                    interval if interval.active else None,
                    dev,
                )
                if interval.active and cfg.hard_limits:
                    lat = self._enforce_limits(
                        lat, cache, big.lat_valid, s, interval, cfg, generator
                    )
                if cfg.prior_bounds and box_active:
                    box = Interval(
                        torch.gather(box_lo.expand(hi - lo, -1), 1, idx).repeat_interleave(s, 0),
                        torch.gather(box_hi.expand(hi - lo, -1), 1, idx).repeat_interleave(s, 0),
                    )
                    if box.active:
                        lat = self._enforce_box(
                            lat, cache, big.lat_valid, s, box, interval, cfg, generator
                        )
            full = vals.repeat_interleave(s, 0).clone()
            full.scatter_(
                1,
                big.lat_index,
                torch.where(big.lat_valid, lat, torch.gather(full, 1, big.lat_index)),
            )
            full = full.view(hi - lo, s, n).transpose(0, 1).cpu().numpy()
            full = np.where((state[lo:hi] == ABSENT)[None], np.nan, full)
            out[:, lo:hi] = full
        return out

    def _enforce_limits(
        self,
        lat: Tensor,
        cache: Any,
        valid: Tensor,
        s: int,
        interval: Interval,
        cfg: SamplerConfig,
        generator: torch.Generator,
    ) -> Tensor:
        """Redraw the rows (object × sample) that end outside their limits, then clip.

        Redrawing only the failed rows and keeping the first draw inside is rejection
        sampling from the guided sampler, so the rows follow its distribution truncated to
        the interval; the rows still outside after ``limit_redraws`` rounds are clipped.
        """
        lat = lat.clone()
        for _ in range(cfg.limit_redraws):
            rows = torch.nonzero(outside(lat, interval, valid))[:, 0]
            if not len(rows):
                return lat
            sub = cache.take_objects(rows // s)
            sub_interval = Interval(interval.lower[rows], interval.upper[rows])
            new = sample_latents(
                lambda x, sig, sub=sub: self.net.denoise(sub, x, sig).float(),
                (len(rows), lat.shape[1]),
                self.sde,
                cfg,
                generator,
                sub_interval,
                lat.device,
            )
            ok = ~outside(new, sub_interval, valid[rows])
            lat[rows[ok]] = new[ok]
        return torch.where(valid, lat.clamp(interval.lower, interval.upper), lat)

    def _prior_box(self) -> tuple[Tensor, Tensor]:
        """(N,) model-space bounds of the parameter nodes' declared [low, high] (the prior's
        support); ±inf where a node has none or its transform already keeps it inside."""
        n = len(self.diffuse)
        lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
        for j, node in enumerate(self.diffuse):
            if node.kind != "parameter":
                continue
            tr = self.standardizer.transforms[j]
            for bound, arr in ((node.low, lo), (node.high, hi)):
                if bound is None or not np.isfinite(bound):
                    continue
                if not tr.domain(np.array([float(bound)]), node)[0]:
                    continue  # log10 at 0, logit at its edges: the transform bounds it
                with np.errstate(all="ignore"):
                    y = tr.forward(np.array([float(bound)]), node)[0] - self.standardizer.mean[j]
                    y = y / self.standardizer.std[j]
                if np.isfinite(y):
                    arr[j] = y
        return torch.from_numpy(lo).float(), torch.from_numpy(hi).float()

    def _enforce_box(
        self,
        lat: Tensor,
        cache: Any,
        valid: Tensor,
        s: int,
        box: Interval,
        interval: Interval,
        cfg: SamplerConfig,
        generator: torch.Generator,
    ) -> Tensor:
        """Redraw the rows outside the parameters' prior bounds (as sbi rejects an NPE's
        leakage), so samples follow the model's posterior truncated to the prior's
        support; rows still outside after ``limit_redraws`` rounds are clipped."""
        lat = lat.clone()
        guided = interval if interval.active else None
        for _ in range(cfg.limit_redraws):
            rows = torch.nonzero(outside(lat, box, valid))[:, 0]
            if not len(rows):
                return lat
            sub = cache.take_objects(rows // s)
            sub_int = None if guided is None else Interval(guided.lower[rows], guided.upper[rows])
            new = sample_latents(
                lambda x, sig, sub=sub: self.net.denoise(sub, x, sig).float(),
                (len(rows), lat.shape[1]),
                self.sde,
                cfg,
                generator,
                sub_int,
                lat.device,
            )
            ok = ~outside(new, Interval(box.lower[rows], box.upper[rows]), valid[rows])
            if sub_int is not None and cfg.hard_limits:
                ok &= ~outside(new, sub_int, valid[rows])
            lat[rows[ok]] = new[ok]
        return torch.where(valid, lat.clamp(box.lower, box.upper), lat)

    def _resolve_sampler(
        self, sampler: SamplerConfig | Mapping[str, Any] | str | None, steps: int | None
    ) -> SamplerConfig:
        cfg = self.sampler
        if isinstance(sampler, str):
            cfg = dataclasses.replace(cfg, method=sampler)
        elif isinstance(sampler, Mapping):
            cfg = from_dict(SamplerConfig, {**to_dict(cfg), **sampler}, path="sampler")
        elif isinstance(sampler, SamplerConfig):
            cfg = sampler
        if steps is not None:
            cfg = dataclasses.replace(cfg, steps=int(steps))
        return from_dict(SamplerConfig, to_dict(cfg), path="sampler")

    def sample_nodes(
        self,
        sample_shape: Sequence[int] | int = (1000,),
        given: Mapping[str, Any] | None = None,
        *,
        errors: Mapping[str, Any] | None = None,
        upper_limits: Mapping[str, Any] | None = None,
        latent: Sequence[str] | None = None,
        sampler: SamplerConfig | Mapping[str, Any] | str | None = None,
        steps: int | None = None,
        seed: int | None = None,
    ) -> dict[str, Tensor]:
        """Sample any conditional: the ``latent`` nodes given the ``given`` ones.

        Nodes that are neither given nor latent are marginalised (removed from the model).

        Args:
            sample_shape: (S,) samples per object.
            given: Node name → value(s) in physical units; arrays broadcast to a batch shape.
                NaN means "not observed".
            errors: Node name → 1σ uncertainties of the given values.
            upper_limits: Node name → bool flags; a flagged given value is a limit (faint
                limit for magnitudes, upper bound otherwise): a limit token where the model
                was trained with limits (see ``SamplerConfig.limits``), else sampled with
                interval guidance; nodes also listed in ``latent`` always use guidance.
            latent: Nodes to sample (default: every node that is not given).
            sampler, steps, seed: Sampler settings and random seed.

        Returns:
            Node name → samples (S, *batch) in physical units, for the latent nodes.
        """
        self._no_encoders("sample_nodes")
        s = self._sample_count(sample_shape)
        given, errors = _flux_quantities(self._by_name, given or {}, errors or {})
        given = {k: _as_array(v, self.diffuse[self._index(k)]) for k, v in (given or {}).items()}
        errors = {k: _as_array(v, self.diffuse[self._index(k)]) for k, v in (errors or {}).items()}
        limits = {k: np.asarray(v, bool) for k, v in (upper_limits or {}).items()}
        if latent is None:
            latent = [n for n in self.node_names if n not in given]
        batch_shape, out = self._run(s, given, errors, limits, latent, sampler, steps, seed)
        return {
            name: torch.from_numpy(out[..., self._index(name)].reshape(s, *batch_shape))
            for name in latent
        }

    def sample(
        self,
        sample_shape: Sequence[int] | int = (1000,),
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
        """Posterior samples of θ given x, in physical units.

        Args:
            sample_shape: (S,).
            x: (*batch, D) in the order of :attr:`observable_names`, or a mapping from
                observable name to values (astropy Quantities are converted).
            observed: Optional bool mask like ``x``; default: the finite entries of x.
                Unobserved observables are marginalised.
            errors: 1σ uncertainties like ``x``.
            upper_limits: Bool flags like ``x``: the value is a limit, not a measurement.
            spectra: Models with encoders: spectrum node → (fluxes, 1σ errors), each
                (*batch, L) in the dataset's units (NaN pixels masked; a spectrum not given
                is an absent modality).
            domain: Models with encoders: which encoders read x (``real``: the real-side
                copy where the model has one).
            sampler, steps, seed: Sampler settings and random seed.

        Returns:
            (S, *batch, P) samples of :attr:`parameter_names`.
        """
        s = self._sample_count(sample_shape)
        if self.modalities is not None:
            return self._sample_encoded(
                s, x, observed, errors, upper_limits, spectra, domain, sampler, steps, seed
            )
        if spectra is not None:
            raise DataError(
                "spectra are read by modality encoders; this model has none (train with "
                "--domain-adapt on a dataset with spectra)"
            )
        given, errs, lims = self._observation(x, observed, errors, upper_limits)
        latent = self.parameter_names
        batch_shape, out = self._run(s, given, errs, lims, latent, sampler, steps, seed)
        idx = [self._index(p) for p in latent]
        return torch.from_numpy(out[..., idx].reshape(s, *batch_shape, len(idx)))

    @torch.no_grad()
    def _sample_encoded(
        self,
        s: int,
        x: Any,
        observed: Any,
        errors: Any,
        upper_limits: Any,
        spectra: Mapping[str, Any] | None,
        domain: Literal["real", "sim"],
        sampler: SamplerConfig | Mapping[str, Any] | str | None,
        steps: int | None,
        seed: int | None,
    ) -> Tensor:
        """θ given x through the modality encoders (the Simformer models θ only)."""
        assert self.modalities is not None
        batch_shape, ctx, ctx_ok = self.modalities.context(
            x, observed, errors, upper_limits, spectra, domain
        )
        b, p = ctx.shape[0], len(self.parameter_names)
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

    def log_prob(
        self,
        theta: Any,
        x: Any = None,
        *,
        observed: Any = None,
        errors: Any = None,
        upper_limits: Any = None,
        spectra: Mapping[str, Any] | None = None,
        domain: Literal["real", "sim"] = "real",
        steps: int = 64,
        exact_trace: bool | None = None,
        probes: int = 8,
        seed: int | None = 0,
        max_rows: int = 2048,
    ) -> Tensor:
        """log p(θ | x) of the model, in θ's physical units, through the probability-flow ODE.

        The density of the standardised latent values comes from integrating the ODE from
        σ_min to σ_max with the divergence of its drift (:func:`dasbi.samplers.ode_log_prob`:
        exact trace for up to 12 parameters, Hutchinson's estimator above, or as
        ``exact_trace`` says); the transforms' and the standardisation's Jacobians turn it
        into a density over θ. θ outside a transform's domain (e.g. beyond a bounded prior)
        gets −inf. The cost is about ``3 × steps`` network passes with gradients (× the
        number of parameters for the exact trace), so it is for evaluation, not for
        sampling.

        Args:
            theta: (*batch, P) or (S, *batch, P) in the order of :attr:`parameter_names`.
            x, observed, errors, upper_limits, spectra, domain: The observation, as for
                :meth:`sample` (upper limits need a model trained with limit tokens).
            steps: Heun steps of the ODE (error about 0.04 nats at 64 on a 3-D Gaussian).
            exact_trace: Exact divergence (default: P ≤ 12) or Hutchinson's.
            probes: Rademacher vectors of Hutchinson's estimator.
            seed: Seed of the probes.
            max_rows: Objects × θ values evaluated at once.

        Returns:
            (*batch) or (S, *batch) log densities (float64).
        """
        from .samplers import ode_log_prob

        ctx_all = ctx_ok_all = None
        if self.modalities is not None:
            batch_shape, ctx_all, ctx_ok_all = self.modalities.context(
                x, observed, errors, upper_limits, spectra, domain
            )
            nb_, np_ = ctx_all.shape[0], len(self.parameter_names)
            values = np.full((nb_, np_), np.nan)
            errs_a = np.zeros((nb_, np_))
            state = np.full((nb_, np_), LATENT, dtype=np.int64)
            limit = np.zeros((nb_, np_), bool)
            latent = self.parameter_names
        else:
            given, errs, lims = self._observation(x, observed, errors, upper_limits)
            if any(v.any() for v in lims.values()) and self.limit_mode != "tokens":
                raise DataError(
                    "log_prob with upper limits needs a model trained on upper limits (limit "
                    "tokens); this model handles limits only by sampling guidance"
                )
            latent = self.parameter_names
            batch_shape, values, errs_a, state, limit = self._query(
                given, errs, lims, latent, limit_tokens=True
            )
        th = np.asarray(theta.detach().cpu() if isinstance(theta, Tensor) else theta, float)
        p = len(latent)
        nb = len(batch_shape)
        if th.ndim == nb + 1:
            squeeze, th = True, th[None]
        elif th.ndim == nb + 2:
            squeeze = False
        else:
            raise DataError(
                f"theta must have shape (*batch, {p}) or (S, *batch, {p}) with batch "
                f"{batch_shape} (from x), got {th.shape}"
            )
        try:
            th = np.broadcast_to(th, (th.shape[0], *batch_shape, p))
        except ValueError:
            raise DataError(
                f"theta {th.shape} does not match x's batch {batch_shape} and {p} parameters"
            ) from None
        s = th.shape[0]
        b = values.shape[0]
        th = th.reshape(s, b, p)
        pidx = [self._index(q) for q in latent]
        # model-space θ and the log-Jacobian of physical → model space
        full = np.zeros((s, b, len(self.diffuse)))
        logjac = np.zeros((s, b))
        inside = np.ones((s, b), bool)
        for k, j in enumerate(pidx):
            node, tr = self.standardizer.nodes[j], self.standardizer.transforms[j]
            col = th[..., k]
            ok = np.isfinite(col) & tr.domain(col, node)
            inside &= ok
            safe = np.where(ok, col, np.nan)
            with np.errstate(invalid="ignore", divide="ignore"):
                y = (tr.forward(safe, node) - self.standardizer.mean[j]) / self.standardizer.std[j]
                logjac += np.log(np.abs(tr.derivative(safe, node))) - np.log(
                    self.standardizer.std[j]
                )
            full[..., j] = np.where(ok, y, 0.0)
        inputs = model_inputs(
            values, errs_a, (state >= OBSERVED) | limit, limit, self.standardizer
        )
        exact = p <= 12 if exact_trace is None else bool(exact_trace)
        gen = torch.Generator().manual_seed(int(seed) if seed is not None else 0)
        dev = self.device
        state_t = torch.from_numpy(state)
        s_min = self.sde.sigma_min
        s_max = min(self.sde.sigma_max, self.sampler.sigma_start)
        out = np.empty((b, s))
        per_chunk = max(1, int(max_rows) // s)
        self.net.eval()
        for lo in range(0, b, per_chunk):
            hi = min(lo + per_chunk, b)
            st = state_t[lo:hi].to(dev)
            with torch.no_grad():
                cache = self.net.encode(
                    inputs.values[lo:hi].to(dev),
                    inputs.errors[lo:hi].to(dev),
                    st,
                    self.graph(st >= OBSERVED),
                    None if ctx_all is None else ctx_all[lo:hi].to(dev),
                    None if ctx_ok_all is None else ctx_ok_all[lo:hi].to(dev),
                )
                big = cache.expand(s, shared=True)
            # rows object-major: (object, θ value)
            y_rows = torch.from_numpy(full[:, lo:hi].transpose(1, 0, 2).reshape(-1, full.shape[2]))
            y_lat = torch.gather(y_rows.float().to(dev), 1, big.lat_index)
            lp = ode_log_prob(
                lambda z, sig, big=big: self.net.denoise(big, z, sig).float(),
                y_lat,
                big.lat_valid,
                s_min,
                s_max,
                steps=steps,
                exact_trace=exact,
                probes=probes,
                generator=gen,
            )
            out[lo:hi] = lp.cpu().numpy().reshape(hi - lo, s)
        res = out.T + logjac
        res = np.where(inside, res, -np.inf).reshape(s, *batch_shape)
        t = torch.from_numpy(res)
        return t[0] if squeeze else t

    @staticmethod
    def _sample_count(sample_shape: Sequence[int] | int) -> int:
        shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
        if len(shape) != 1 or shape[0] < 1:
            raise ValueError(f"sample_shape must be (S,) with S >= 1, got {sample_shape}")
        return int(shape[0])

    def _run(
        self,
        s: int,
        given: Mapping[str, np.ndarray],
        errors: Mapping[str, np.ndarray],
        limits: Mapping[str, np.ndarray],
        latent: Sequence[str],
        sampler: SamplerConfig | Mapping[str, Any] | str | None,
        steps: int | None,
        seed: int | None,
    ) -> tuple[tuple[int, ...], np.ndarray]:
        cfg = self._resolve_sampler(sampler, steps)
        tokens = self._limit_tokens(cfg.limits)
        batch_shape, values, errs, state, limit = self._query(
            given, errors, limits, latent, tokens
        )
        inputs = model_inputs(values, errs, (state >= OBSERVED) | limit, limit, self.standardizer)
        gen = torch.Generator().manual_seed(
            int(seed) if seed is not None else int(torch.randint(0, 2**31 - 1, (1,)))
        )
        guided = limit & (state == LATENT)
        y = self._sample_model_space(s, inputs, state, guided, cfg, gen)
        phys = self.standardizer.inverse(np.nan_to_num(y)).astype(np.float32)
        phys = np.where(np.isnan(y), np.nan, phys)
        phys = np.where((state >= OBSERVED)[None], values[None], phys)
        return batch_shape, phys

    @property
    def limit_mode(self) -> str:
        """How the model was trained on upper limits: ``tokens`` or ``guidance`` (none seen)."""
        return str(self.meta.get("limits", "guidance"))

    def _limit_tokens(self, mode: str) -> bool:
        if mode == "tokens" and self.limit_mode != "tokens":
            raise DataError(
                "this model saw no upper limits in training, so it has no limit tokens; use "
                "sampler limits: guidance (or auto), or train on data with upper limits"
            )
        return mode == "tokens" or (mode == "auto" and self.limit_mode == "tokens")

    # -- persistence ---------------------------------------------------------------------
    def model_meta(self) -> dict[str, Any]:
        if self.modalities is not None:
            return {
                "kind": "simformer-da",
                **self.modalities.meta(),
                **{k: v for k, v in self.meta.items() if k not in ("nodes", "encoder")},
                "sampler": to_dict(self.sampler),
            }
        return {
            "kind": "simformer",
            "nodes": json.loads(self.nodes.to_json()),
            "edges": [list(e) for e in self.edges],
            "attention": self.attention,
            "standardisation": self.standardizer.to_dict(),
            **{k: v for k, v in self.meta.items() if k not in ("nodes", "edges")},
            "sampler": to_dict(self.sampler),
        }

    def save(self, path: str | os.PathLike, config: str = "") -> Path:
        """Write a checkpoint folder that :meth:`load` reads.

        ``config`` is the training config as YAML text (``dasbi.config.dumps``); without
        it ``config.yaml`` says that none was given (the network, SDE and sampler settings
        are in ``meta.json`` either way)."""
        return save_checkpoint(
            path,
            tensors={"best": self.state_dict()},
            config=config_text(config),
            meta=self.model_meta(),
        )

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Posterior:
        """An untrained model with the architecture recorded in ``meta``."""
        if meta.get("kind") == "simformer-da":
            return cls._from_meta_encoded(meta)
        try:
            nodes = NodeSet(Node.from_dict(d) for d in meta["nodes"])
            net_cfg = from_dict(NetworkConfig, meta["network"], path="network")
            sde_cfg = from_dict(SDEConfig, meta["sde"], path="sde")
            sampler = from_dict(SamplerConfig, meta.get("sampler", {}), path="sampler")
            std = meta["standardisation"]
        except KeyError as err:
            raise CheckpointError(f"checkpoint metadata lacks {err}") from None
        diffuse = nodes.diffuse
        if std.get("names") != [n.name for n in diffuse]:
            raise CheckpointError("checkpoint standardisation does not match its nodes")
        standardizer = Standardizer(diffuse, np.array(std["mean"]), np.array(std["std"]))
        net = Simformer(
            len(diffuse), torch.tensor([n.kind == "observable" for n in diffuse]), net_cfg
        )
        extra = {
            k: v
            for k, v in meta.items()
            if k in ("network", "sde", "needs_errors", "limits", "training")
        }
        return cls(
            net,
            build_sde(sde_cfg),
            standardizer,
            nodes,
            [tuple(e) for e in meta.get("edges", [])],
            meta.get("attention", "dense"),
            sampler,
            extra,
        )

    @classmethod
    def _from_meta_encoded(cls, meta: Mapping[str, Any]) -> Posterior:
        from .encoding import ModalityEncoders

        try:
            net_cfg = from_dict(NetworkConfig, meta["network"], path="network")
            sde_cfg = from_dict(SDEConfig, meta["sde"], path="sde")
            sampler = from_dict(SamplerConfig, meta.get("sampler", {}), path="sampler")
        except KeyError as err:
            raise CheckpointError(f"checkpoint metadata lacks {err}") from None
        mod = ModalityEncoders.from_meta(meta)
        x_std = mod.x_standardizer
        theta = NodeSet(n for n in mod.all_nodes.diffuse if n.kind == "parameter")
        p = len(theta)
        t_std = Standardizer(list(theta), x_std.mean[:p], x_std.std[:p])
        net = Simformer(p, torch.zeros(p, dtype=torch.bool), net_cfg, context_dim=mod.config.dim)
        extra = {
            k: meta[k] for k in ("network", "sde", "encoder", "align", "training") if k in meta
        }
        return cls(net, build_sde(sde_cfg), t_std, theta, (), "dense", sampler, extra, mod)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        weights: str | None = None,
        device: str | torch.device = "cpu",
    ) -> Posterior:
        """Load a checkpoint folder (``best`` weights if present, else ``ema``)."""
        ck = load_checkpoint(path)
        if ck.meta.get("kind") not in ("simformer", "simformer-da"):
            raise CheckpointError(f"{str(path)!r} does not hold a Simformer model")
        post = cls.from_meta(ck.meta)
        order = [weights] if weights else ["best", "ema", "weights"]
        for name in order:
            if name in ck.tensors:
                try:
                    post.load_state_dict(ck.tensors[name])
                except RuntimeError as err:
                    raise CheckpointError(
                        f"weights in {str(path)!r} do not fit the recorded architecture: "
                        f"{str(err).splitlines()[0]}"
                    ) from None
                break
        else:
            raise CheckpointError(
                f"{str(path)!r} has none of the weights {order}; it holds {sorted(ck.tensors)}"
            )
        for m in post.modules().values():
            m.to(device).eval()
        return post

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.net.parameters())
        return (
            f"Posterior(parameters={self.parameter_names}, observables="
            f"{self.observable_names}, attention={self.attention!r}, "
            f"network_params={params}, sde={type(self.sde).__name__})"
        )

r"""The Simformer network: node tokens, a masked transformer, and a preconditioned denoiser.

Tokens. Node i of an example becomes the sum of

* a value embedding ``Linear(1, d)`` of its (standardised) value,
* a learned node-id embedding (trainable, unlike the reference code, where it is frozen),
* a condition-state embedding (latent or observed),
* for censored observations (upper limits: a non-detection at a survey's depth), a learned
  "limit" vector; the token is observed and carries the limit as its value, so the network
  learns p(θ | x_obs, x_lim > a) directly from simulations with non-detections, without
  guidance at sampling time (its uncertainty embedding is left out: the limit is the datum),
* for observables, an embedding of the measurement uncertainty σ: Gaussian Fourier features
  of log σ through an MLP, or a learned "exact" vector when σ = 0,
* for latent nodes only, a Gaussian-Fourier embedding of the diffusion noise level, added
  at the input and again at every block.

Two streams. Observed tokens (plus optional context tokens from encoders) form stream O,
latent tokens form stream L. Stream O attends only to itself and never sees the noise level,
so its keys and values are computed once per object (:meth:`Simformer.encode`) and reused at
every solver step (:meth:`Simformer.denoise`). Stream L attends to O ∪ L. Training runs
exactly the same two calls, so training and inference share one code path. Attention goes
through :func:`torch.nn.functional.scaled_dot_product_attention` with boolean masks that
combine padding, missing nodes and the optional graph mask.

With ``NetworkConfig.kv_cache`` false the two streams are one transformer, as in the
reference code: observed tokens also attend to latent ones (within the graph mask) and get
the noise-level embedding in every block, so :meth:`Simformer.encode` only embeds them and
every :meth:`Simformer.denoise` call runs all tokens. Same code path at training and
inference, no cache.

Denoiser. With VE-equivalent noise level σ and unit data variance, the network output F is
preconditioned as in Karras et al. (2022): D(x; σ) = c_skip x + c_out F(c_in x, c_noise),
with c_in = 1/√(σ²+1), c_skip = 1/(σ²+1), c_out = σ/√(σ²+1), c_noise = ln(σ)/4.

References:
    Gloeckler, M. et al. (2024). All-in-one simulation-based inference. ICML.
    Karras, T. et al. (2022). Elucidating the Design Space of Diffusion-Based Generative
    Models. NeurIPS.
    Tancik, M. et al. (2020). Fourier Features Let Networks Learn High Frequency Functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import param

__all__ = [
    "ABSENT",
    "LATENT",
    "LIMIT",
    "OBSERVED",
    "Cache",
    "GaussianFourier",
    "NetworkConfig",
    "Simformer",
    "compact",
]

LATENT, OBSERVED, ABSENT, LIMIT = 0, 1, -1, 2


@dataclass
class NetworkConfig:
    """Size of the transformer."""

    dim: int = param(64, ge=8, le=2048, help="token width")
    depth: int = param(4, ge=1, le=48, help="transformer blocks")
    heads: int = param(4, ge=1, le=64, help="attention heads (must divide dim)")
    mlp_ratio: float = param(2.0, gt=0.0, le=16.0, help="MLP hidden width / dim")
    fourier_features: int = param(32, ge=2, le=1024, help="Gaussian Fourier features (even)")
    fourier_scale: float = param(1.0, gt=0.0, help="std of the Fourier frequencies")
    kv_cache: bool = param(
        True,
        help="observed tokens never attend to latent ones, so their keys and values are "
        "computed once per object (fast sampling); false: one joint transformer in which "
        "observed tokens also attend to latent ones and see the noise level, as in the "
        "reference Simformer (every solver step reruns the observed tokens)",
    )

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.fourier_features % 2:
            raise ValueError(f"fourier_features must be even, got {self.fourier_features}")


class GaussianFourier(nn.Module):
    """Random Fourier features [sin 2πWx, cos 2πWx] with fixed W ~ N(0, scale²).

    Shapes: (*,) → (*, features).
    """

    def __init__(self, features: int, scale: float) -> None:
        super().__init__()
        self.register_buffer("freq", torch.randn(features // 2) * scale)

    def forward(self, x: Tensor) -> Tensor:
        arg = 2 * math.pi * x[..., None] * self.freq
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


def compact(select: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of the True entries of each row, left-aligned and padded.

    Args:
        select: (B, N) bool.

    Returns:
        index (B, K) long and valid (B, K) bool, with K the largest count in the batch.
    """
    counts = select.sum(dim=1)
    k = int(counts.max()) if select.numel() else 0
    order = torch.argsort((~select).to(torch.int8), dim=1, stable=True)[:, :k]
    valid = torch.arange(k, device=select.device)[None, :] < counts[:, None]
    return order, valid


def _gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """x (B, N, *), index (B, K) → (B, K, *)."""
    shape = index.shape + x.shape[2:]
    idx = index.reshape(index.shape + (1,) * (x.dim() - 2)).expand(shape)
    return torch.gather(x, 1, idx)


def _sub_graph(graph: Tensor, rows: Tensor, cols: Tensor, ctx_rows: int, ctx_cols: int) -> Tensor:
    """graph (B, N, N) at node indices rows (B, Q) × cols (B, K), with ``ctx_rows`` rows and
    ``ctx_cols`` columns of True (context tokens, which attend and are attended freely)
    prepended: (B, ctx_rows + Q, ctx_cols + K)."""
    sub = torch.gather(
        _gather_rows(graph, rows), 2, cols[:, None, :].expand(-1, rows.shape[1], -1)
    )
    if ctx_cols:
        sub = F.pad(sub, (ctx_cols, 0), value=True)
    if ctx_rows:
        sub = F.pad(sub, (0, 0, ctx_rows, 0), value=True)
    return sub


def _attn_mask(
    valid_q: Tensor, valid_k: Tensor, graph: Tensor | None, diag_offset: int
) -> Tensor | None:
    """Boolean (B, 1, Q, K) mask; padded queries attend to themselves only (avoids NaN)."""
    if graph is None and bool(valid_k.all()):
        return None
    mask = valid_k[:, None, :].expand(-1, valid_q.shape[1], -1)
    if graph is not None:
        mask = mask & graph
    q = valid_q.shape[1]
    eye = torch.zeros(q, valid_k.shape[1], dtype=torch.bool, device=valid_q.device)
    eye[torch.arange(q), diag_offset + torch.arange(q)] = True
    mask = mask | (eye[None] & ~valid_q[:, :, None])
    return mask[:, None]


class Block(nn.Module):
    """Pre-LayerNorm transformer block shared by the observed and latent streams."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _mlp(dim, int(dim * mlp_ratio), dim)
        self.time = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, N, dh)
        return q, k, v

    def _finish(self, h: Tensor, out: Tensor) -> Tensor:
        b, _, n, _ = out.shape
        h = h + self.proj(out.transpose(1, 2).reshape(b, n, -1))
        return h + self.mlp(self.norm2(h))

    def observed(self, h: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Stream O: h (B, No, d) → (h', k, v) with k, v (B, H, No, dh)."""
        q, k, v = self._split(h)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self._finish(h, out), k, v

    def latent(
        self, h: Tensor, temb: Tensor, k_obs: Tensor, v_obs: Tensor, mask: Tensor | None
    ) -> Tensor:
        """Stream L: h (R, Nl, d), temb (R or 1, d), cached k/v (R, H, No, dh) → (R, Nl, d)."""
        h = h + self.time(temb)[:, None, :]
        q, k, v = self._split(h)
        k = torch.cat([k_obs, k], dim=2)
        v = torch.cat([v_obs, v], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self._finish(h, out)

    def joint(self, h: Tensor, temb: Tensor, mask: Tensor | None) -> Tensor:
        """Both streams in one: h (R, No + Nl, d), temb (R or 1, d) → (R, No + Nl, d)."""
        h = h + self.time(temb)[:, None, :]
        q, k, v = self._split(h)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self._finish(h, out)

    def latent_shared(
        self,
        h: Tensor,
        temb: Tensor,
        k_obs: Tensor,
        v_obs: Tensor,
        bias: tuple[Tensor, Tensor] | None,
        samples: int,
    ) -> Tensor:
        """Stream L for S samples per object, with the cached prefix kept per object.

        The same attention as :meth:`latent`, factorised: the scores against the observed
        keys k_obs (B, H, No, dh) are one matrix product per object for all its S samples,
        the scores among latent tokens are per sample, and the softmax over both parts is
        written out (shared maximum and normaliser) so that neither is concatenated or
        sliced. Queries, keys and values are laid out (B, H, S, Nl, dh) straight from the
        qkv projection, so the per-object products need no transposing copies.

        Args:
            h: (R, Nl, d) with R = B·S rows ordered object-major.
            temb: (R or 1, d) time embedding.
            k_obs, v_obs: (B, H, No, dh) cached keys and values of stream O.
            bias: Additive attention biases (0 or -inf) against the observed and the latent
                keys, (B, 1, 1, Nl, No) and (B, 1, 1, Nl, Nl), or None (all allowed).
            samples: S.
        """
        h = h + self.time(temb)[:, None, :]
        r, nl, d = h.shape
        b, hh, no, dh = k_obs.shape
        qkv = (
            self.qkv(self.norm1(h))
            .view(b, samples, nl, 3, hh, dh)
            .permute(3, 0, 4, 1, 2, 5)
            .contiguous()
        )  # (3, B, H, S, Nl, dh)
        q, k, v = qkv[0] * dh**-0.5, qkv[1], qkv[2]
        s_lat = q @ k.transpose(-1, -2)  # (B, H, S, Nl, Nl)
        if bias is not None:
            s_lat = s_lat + bias[1]
        m = s_lat.amax(dim=-1, keepdim=True)
        if no:
            s_obs = (q.view(b, hh, samples * nl, dh) @ k_obs.transpose(-1, -2)).view(
                b, hh, samples, nl, no
            )
            if bias is not None:
                s_obs = s_obs + bias[0]
            m = torch.maximum(m, s_obs.amax(dim=-1, keepdim=True))
        e_lat = (s_lat - m).exp_()
        out = e_lat @ v
        denom = e_lat.sum(dim=-1, keepdim=True)
        if no:
            e_obs = (s_obs - m).exp_()
            out = out + (e_obs.view(b, hh, samples * nl, no) @ v_obs).view(out.shape)
            denom = denom + e_obs.sum(dim=-1, keepdim=True)
        out = (out / denom).permute(0, 2, 3, 1, 4).reshape(r, nl, d)
        h = h + self.proj(out)
        return h + self.mlp(self.norm2(h))


@dataclass
class Cache:
    """What :meth:`Simformer.encode` computes once per object (B objects).

    Attributes:
        kv: Per block, keys and values of stream O, each (B, H, No, dh).
        lat_index: (B, Nl) node indices of the latent tokens (padded).
        lat_valid: (B, Nl) bool.
        lat_base: (B, Nl, d) the latent tokens' embedding without value and time.
        mask: (B, 1, Nl, No + Nl) attention mask of stream L, or None.
        samples: Rows per object after :meth:`expand`.
        shared: Whether the rows share the per-object prefix (:meth:`Block.latent_shared`).
        bias: With ``shared``, ``mask`` as additive biases against the observed and the
            latent keys, (B, 1, 1, Nl, No) and (B, 1, 1, Nl, Nl); None without a mask.
        obs_h: Without the key/value cache (``NetworkConfig.kv_cache`` false), the input
            tokens of stream O, (B, No, d), rerun with the latent tokens at every call of
            :meth:`Simformer.denoise`; ``kv`` is then empty and ``mask`` is the joint mask
            (B, 1, No + Nl, No + Nl).
    """

    kv: list[tuple[Tensor, Tensor]]
    lat_index: Tensor
    lat_valid: Tensor
    lat_base: Tensor
    mask: Tensor | None
    samples: int = 1
    shared: bool = False
    bias: tuple[Tensor, Tensor] | None = None
    obs_h: Tensor | None = None

    @property
    def num_objects(self) -> int:
        return self.lat_index.shape[0] // self.samples

    def take_objects(self, objects: Tensor) -> Cache:
        """One row per entry of ``objects`` (indices into this unexpanded cache), on the
        training path (keys and values repeated, not shared): for resampling a few rows."""
        if self.samples != 1:
            raise ValueError("take_objects needs an unexpanded cache")
        return Cache(
            kv=[(k[objects], v[objects]) for k, v in self.kv],
            lat_index=self.lat_index[objects],
            lat_valid=self.lat_valid[objects],
            lat_base=self.lat_base[objects],
            mask=None if self.mask is None else self.mask[objects],
            obs_h=None if self.obs_h is None else self.obs_h[objects],
        )

    def expand(self, samples: int, shared: bool = False) -> Cache:
        """Repeat every object ``samples`` times (rows ordered object-major).

        With ``shared``, the observed keys/values and the mask stay per object and the
        latent stream uses :meth:`Block.latent_shared` (sampling); otherwise they are
        repeated for :meth:`Block.latent` (training path). Without the key/value cache
        (``obs_h`` set) nothing can be shared and everything is repeated.
        """
        if self.samples != 1:
            raise ValueError("this cache is already expanded")
        shared = shared and self.obs_h is None

        def rep(x: Tensor) -> Tensor:
            return x if samples == 1 else x.repeat_interleave(samples, dim=0)

        bias = None
        if shared and self.mask is not None:
            no = self.kv[0][0].shape[2]
            full = torch.zeros(self.mask.shape, dtype=self.lat_base.dtype, device=self.mask.device)
            full = full.masked_fill_(~self.mask, float("-inf"))[:, :, None]
            bias = (full[..., :no].contiguous(), full[..., no:].contiguous())
        return Cache(
            kv=self.kv if shared else [(rep(k), rep(v)) for k, v in self.kv],
            lat_index=rep(self.lat_index),
            lat_valid=rep(self.lat_valid),
            lat_base=rep(self.lat_base),
            mask=None if self.mask is None else (self.mask if shared else rep(self.mask)),
            samples=samples,
            shared=shared,
            bias=bias,
            obs_h=None if self.obs_h is None else rep(self.obs_h),
        )


class Simformer(nn.Module):
    """Score/denoiser network over N diffuse nodes.

    Args:
        num_nodes: N.
        is_observable: (N,) bool, nodes that carry measurement uncertainties.
        cfg: Network size.
        context_dim: Width of encoder context tokens (0 for none).
    """

    def __init__(
        self, num_nodes: int, is_observable: Tensor, cfg: NetworkConfig, context_dim: int = 0
    ) -> None:
        super().__init__()
        d = cfg.dim
        self.cfg = cfg
        self.num_nodes = num_nodes
        self.register_buffer("is_observable", torch.as_tensor(is_observable, dtype=torch.bool))
        self.node_emb = nn.Embedding(num_nodes, d)
        nn.init.normal_(self.node_emb.weight, std=0.5)
        self.state_emb = nn.Embedding(2, d)
        self.value_emb = nn.Linear(1, d)
        self.err_features = GaussianFourier(cfg.fourier_features, cfg.fourier_scale)
        self.err_mlp = _mlp(cfg.fourier_features, d, d)
        self.exact_emb = nn.Parameter(torch.zeros(d))
        self.limit_emb = nn.Parameter(torch.zeros(d))
        self.time_features = GaussianFourier(cfg.fourier_features, cfg.fourier_scale)
        self.time_mlp = _mlp(cfg.fourier_features, d, d)
        self.context_proj = nn.Linear(context_dim, d) if context_dim else None
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.out_norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    # -- embeddings ----------------------------------------------------------------------
    def _static(
        self, node_index: Tensor, state: int, errors: Tensor, is_limit: Tensor | None = None
    ) -> Tensor:
        """Node-id + condition-state + uncertainty (or limit) embedding; (B, K) → (B, K, d)."""
        emb = self.node_emb(node_index) + self.state_emb.weight[state]
        obs_node = self.is_observable[node_index]
        has_err = errors > 0
        err = self.err_mlp(self.err_features(torch.log(errors.clamp_min(1e-6)) / 4))
        err = torch.where(has_err[..., None], err, self.exact_emb)
        if is_limit is not None:
            err = torch.where(is_limit[..., None], self.limit_emb, err)
        return emb + err * obs_node[..., None]

    def time_embedding(self, sigma: Tensor) -> Tensor:
        """(*,) noise levels → (*, d)."""
        return self.time_mlp(self.time_features(torch.log(sigma) / 4))

    # -- the two passes ------------------------------------------------------------------
    def encode(
        self,
        values: Tensor,
        errors: Tensor,
        state: Tensor,
        graph: Tensor | None = None,
        context: Tensor | None = None,
        context_valid: Tensor | None = None,
    ) -> Cache:
        """Stream O, once per object.

        Args:
            values: (B, N) standardised values (used for observed nodes only).
            errors: (B, N) measurement uncertainties in model space (0 = exact/unknown).
            state: (B, N) int: 1 observed, 2 observed limit, 0 latent, -1 absent.
            graph: Optional (B, N, N) bool graph mask (row attends to column).
            context: Optional (B, K, context_dim) encoder tokens (always observed).
            context_valid: (B, K) bool for ``context``.
        """
        obs_index, obs_valid = compact(state >= OBSERVED)
        lat_index, lat_valid = compact(state == LATENT)
        is_limit = torch.gather(state, 1, obs_index) == LIMIT
        h = self._static(obs_index, OBSERVED, torch.gather(errors, 1, obs_index), is_limit)
        h = h + self.value_emb(torch.gather(values, 1, obs_index)[..., None])
        n_ctx = 0
        if context is not None:
            if self.context_proj is None:
                raise ValueError("this network was built without context tokens")
            n_ctx = context.shape[1]
            h = torch.cat([self.context_proj(context), h], dim=1)
            if context_valid is None:
                context_valid = torch.ones(
                    context.shape[:2], dtype=torch.bool, device=values.device
                )
            obs_valid = torch.cat([context_valid, obs_valid], dim=1)
        lat_base = self._static(lat_index, LATENT, torch.gather(errors, 1, lat_index))
        both = torch.cat([obs_index, lat_index], dim=1)
        if not self.cfg.kv_cache:
            valid = torch.cat([obs_valid, lat_valid], dim=1)
            g = None if graph is None else _sub_graph(graph, both, both, n_ctx, n_ctx)
            return Cache(
                kv=[],
                lat_index=lat_index,
                lat_valid=lat_valid,
                lat_base=lat_base,
                mask=_attn_mask(valid, valid, g, 0),
                obs_h=h,
            )
        g_oo = g_lk = None
        if graph is not None:
            g_oo = _sub_graph(graph, obs_index, obs_index, n_ctx, n_ctx)
            g_lk = _sub_graph(graph, lat_index, both, 0, n_ctx)
        kv = []
        mask_oo = _attn_mask(obs_valid, obs_valid, g_oo, 0)
        for block in self.blocks:
            if h.shape[1]:
                h, k, v = block.observed(h, mask_oo)
            else:
                b, d = values.shape[0], self.cfg.dim
                k = v = values.new_zeros(b, self.cfg.heads, 0, d // self.cfg.heads)
            kv.append((k, v))
        keys_valid = torch.cat([obs_valid, lat_valid], dim=1)
        mask = _attn_mask(lat_valid, keys_valid, g_lk, obs_valid.shape[1])
        return Cache(kv=kv, lat_index=lat_index, lat_valid=lat_valid, lat_base=lat_base, mask=mask)

    def denoise(self, cache: Cache, x: Tensor, sigma: Tensor) -> Tensor:
        """Stream L at one noise level: the denoised estimate D(x; σ) of the latent nodes.

        Args:
            cache: From :meth:`encode`, expanded to R rows (R = objects × samples).
            x: (R, Nl) noisy latent values in VE-equivalent space (x_t / α_t).
            sigma: (R,) VE-equivalent noise levels.

        Returns:
            (R, Nl) denoised values; padded entries are returned unchanged.
        """
        s = sigma[:, None]
        c_in = 1.0 / torch.sqrt(s**2 + 1.0)
        c_skip = 1.0 / (s**2 + 1.0)
        c_out = s * c_in
        # samplers use one noise level for all rows: embed it once and broadcast
        shared = sigma.numel() > 1 and bool((sigma == sigma[0]).all())
        temb = self.time_embedding(sigma[:1] if shared else sigma)
        h = cache.lat_base + self.value_emb((c_in * x)[..., None]) + temb[:, None, :]
        if cache.obs_h is not None:
            n_obs = cache.obs_h.shape[1]
            h = torch.cat([cache.obs_h, h], dim=1)
            for block in self.blocks:
                h = block.joint(h, temb, cache.mask)
            h = h[:, n_obs:]
        else:
            for block, (k, v) in zip(self.blocks, cache.kv, strict=True):
                if cache.shared:
                    h = block.latent_shared(h, temb, k, v, cache.bias, cache.samples)
                else:
                    h = block.latent(h, temb, k, v, cache.mask)
        f = self.out(self.out_norm(h)).squeeze(-1)
        out = c_skip * x + c_out * f
        return torch.where(cache.lat_valid, out, x)

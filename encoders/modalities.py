r"""Modality encoders: survey data of one modality → K tokens, a mask and an embedding z_m.

Each encoder maps a batch of one modality to an :class:`EncoderOutput`: ``tokens``
(B, K, d) that a Simformer takes as context, their ``mask`` (B, K), the pooled embedding
``z`` (B, d) that the alignment losses compare (:mod:`encoders.losses`), and ``present``
(B,), whether the object has the modality at all.

* :class:`ScalarSetEncoder` — a set of scalar measurements (photometric bands, parallax,
  proper motions): one token per measured quantity, the sum of a value embedding, a learned
  quantity embedding, optional metadata features, an uncertainty embedding (Gaussian
  Fourier features of log σ) and a learned limit vector for upper limits (censored values,
  as the Simformer's limit tokens). Missing entries are removed from attention. A small
  transformer runs over the set, and K learned queries attend to it (pooling by
  multi-head attention, Lee et al. 2019) to give a fixed number of output tokens.
* :class:`PhotometryEncoder` — the same with filter metadata: log10 of each band's pivot
  wavelength and its Fourier features with periods of 2-8 dex, so bands of different
  surveys at similar wavelengths start out with similar embeddings.
* :class:`AstrometryEncoder` — the same for astrometric quantities.
* :class:`SpectrumEncoder` — a patch transformer for sampled spectra (Gaia XP-like,
  LAMOST/BOSS/APOGEE-like): each spectrum is divided by the median of its valid pixels;
  per pixel the normalised flux, log of the normalised error and the pixel mask; patches
  of ``patch`` pixels are embedded linearly, with Fourier features of log λ of the patch
  centre and the log median flux added; patches without a valid pixel are masked; a
  transformer and K learned queries follow.

Shapes are (B, ·) batches; leading dimensions are not free here (sets are per object).

References:
    Lee, J. et al. (2019). Set Transformer. ICML.
    Jaegle, A. et al. (2021). Perceiver. ICML.
    Dosovitskiy, A. et al. (2021). An Image is Worth 16x16 Words (patch embeddings). ICLR.
    Parker, L. et al. (2024). AstroCLIP. MNRAS 531, 4990.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AstrometryEncoder",
    "EncoderOutput",
    "PhotometryEncoder",
    "ScalarSetEncoder",
    "SpectrumEncoder",
]


@dataclass
class EncoderOutput:
    """What an encoder returns for B objects.

    Attributes:
        tokens: (B, K, d) context tokens.
        mask: (B, K) bool, valid tokens (all False where the modality is absent).
        z: (B, d) pooled embedding for the alignment losses.
        present: (B,) bool, the object has at least one valid value of this modality.
    """

    tokens: Tensor
    mask: Tensor
    z: Tensor
    present: Tensor


def _fourier(x: Tensor, freq: Tensor) -> Tensor:
    arg = 2 * math.pi * x[..., None] * freq
    return torch.cat([arg.sin(), arg.cos()], dim=-1)


class _Block(nn.Module):
    """Pre-LayerNorm self-attention block with a key mask."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        """h (B, N, d), mask (B, N) → (B, N, d); a row without valid keys attends to itself."""
        b, n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, n, 3, self.heads, d // self.heads).unbind(2)
        keys = mask[:, None, None, :] | torch.eye(n, dtype=torch.bool, device=h.device)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=keys
        )
        h = h + self.proj(out.transpose(1, 2).reshape(b, n, d))
        return h + self.mlp(self.norm2(h))


class _QueryPool(nn.Module):
    """K learned queries attending to a masked set: (B, N, d) → (B, K, d)."""

    def __init__(self, dim: int, heads: int, num_tokens: int) -> None:
        super().__init__()
        self.heads = heads
        self.queries = nn.Parameter(torch.randn(num_tokens, dim) / math.sqrt(dim))
        self.norm = nn.LayerNorm(dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.q = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.out_norm = nn.LayerNorm(dim)

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        b, n, d = h.shape
        k_tokens = self.queries.shape[0]
        dh = d // self.heads
        k, v = self.kv(self.norm(h)).view(b, n, 2, self.heads, dh).unbind(2)
        q = self.q(self.queries).view(1, k_tokens, self.heads, dh).expand(b, -1, -1, -1)
        # objects without any valid entry attend uniformly to the (zero-valued) padding
        keys = (mask | ~mask.any(dim=1, keepdim=True))[:, None, None, :]
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=keys
        )
        return self.out_norm(self.queries + self.proj(out.transpose(1, 2).reshape(b, -1, d)))


class _SetHead(nn.Module):
    """Transformer over tokens, query pooling to K tokens, and the pooled embedding z."""

    def __init__(self, dim: int, depth: int, heads: int, num_tokens: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        if num_tokens < 1 or depth < 0:
            raise ValueError(f"need num_tokens >= 1 and depth >= 0, got {num_tokens}, {depth}")
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(depth))
        self.pool = _QueryPool(dim, heads, num_tokens)
        self.z = nn.Linear(dim, dim)

    def forward(self, h: Tensor, mask: Tensor) -> EncoderOutput:
        for block in self.blocks:
            h = block(h, mask)
        tokens = self.pool(h, mask)
        present = mask.any(dim=1)
        out_mask = present[:, None].expand(-1, tokens.shape[1])
        return EncoderOutput(tokens, out_mask, self.z(tokens.mean(dim=1)), present)


class ScalarSetEncoder(nn.Module):
    """Encoder for a set of scalar measurements (see the module docstring).

    Args:
        names: The quantities, in the order of the input columns (Q of them).
        metadata: Optional (Q, F) features per quantity (e.g. filter wavelengths).
        dim, depth, heads: Token width, transformer blocks and heads.
        num_tokens: K output tokens.
        fourier_features: Features of the uncertainty embedding (even).

    >>> enc = ScalarSetEncoder(["a", "b", "c"], dim=16, heads=2, num_tokens=2)
    >>> out = enc(torch.zeros(4, 3), torch.full((4, 3), 0.1), torch.ones(4, 3, dtype=torch.bool))
    >>> out.tokens.shape, out.z.shape
    (torch.Size([4, 2, 16]), torch.Size([4, 16]))
    """

    def __init__(
        self,
        names: Sequence[str],
        metadata: Tensor | None = None,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        num_tokens: int = 2,
        fourier_features: int = 16,
    ) -> None:
        super().__init__()
        self.names = list(names)
        q = len(self.names)
        if q == 0:
            raise ValueError("an encoder needs at least one quantity")
        if metadata is not None and (metadata.dim() != 2 or metadata.shape[0] != q):
            raise ValueError(
                f"metadata must be (Q, F) with Q = {q} quantities, got {tuple(metadata.shape)}"
            )
        self.dim = dim
        self.quantity = nn.Embedding(q, dim)
        nn.init.normal_(self.quantity.weight, std=0.5)
        self.value = nn.Linear(1, dim)
        self.register_buffer("err_freq", torch.randn(fourier_features // 2))
        self.err = nn.Sequential(nn.Linear(fourier_features, dim), nn.GELU(), nn.Linear(dim, dim))
        self.exact = nn.Parameter(torch.zeros(dim))
        self.limit = nn.Parameter(torch.zeros(dim))
        self.meta: nn.Linear | None = None
        if metadata is not None:
            self.register_buffer("metadata", metadata.float())
            self.meta = nn.Linear(metadata.shape[1], dim)
        self.head = _SetHead(dim, depth, heads, num_tokens)

    def forward(
        self,
        values: Tensor,
        errors: Tensor,
        observed: Tensor,
        limit: Tensor | None = None,
    ) -> EncoderOutput:
        """Encode (B, Q) values, 1σ errors (0 = exact), observed flags and limit flags.

        ``values`` should be standardised (order unity); unobserved entries are ignored
        whatever they hold.
        """
        q = len(self.names)
        if values.dim() != 2 or values.shape[1] != q:
            raise ValueError(
                f"expected values (B, {q}) for quantities {self.names}, got {tuple(values.shape)}"
            )
        observed = observed.bool()
        limit = torch.zeros_like(observed) if limit is None else limit.bool() & observed
        v = torch.where(observed, values, torch.zeros_like(values))
        e = torch.where(observed & torch.isfinite(errors), errors, torch.zeros_like(errors))
        h = self.value(v[..., None]) + self.quantity.weight
        if self.meta is not None:
            h = h + self.meta(self.metadata)
        err = self.err(_fourier(torch.log(e.clamp_min(1e-6)) / 4, self.err_freq))
        err = torch.where((e > 0)[..., None], err, self.exact)
        h = h + torch.where(limit[..., None], self.limit, err)
        return self.head(h, observed)


class PhotometryEncoder(ScalarSetEncoder):
    """Per-band tokens with filter metadata (Fourier features of log10 pivot wavelength).

    Args:
        bands: Band names (the model's photometric nodes).
        wavelengths_um: Pivot wavelength of each band [µm].
        **kwargs: Passed to :class:`ScalarSetEncoder`.
    """

    def __init__(
        self, bands: Sequence[str], wavelengths_um: Sequence[float], **kwargs: int
    ) -> None:
        lam = torch.as_tensor(list(wavelengths_um), dtype=torch.float64)
        if lam.shape != (len(bands),) or not bool((lam > 0).all()):
            raise ValueError(
                f"need one positive wavelength [µm] per band; got {len(lam)} for "
                f"{len(bands)} bands"
            )
        # periods of 8, 4 and 2 dex: smooth over 0.3-30 µm, so no two distant bands alias
        freq = torch.tensor([0.125, 0.25, 0.5], dtype=torch.float64)
        meta = torch.cat([torch.log10(lam)[:, None], _fourier(torch.log10(lam), freq)], -1)
        super().__init__(bands, meta.float(), **kwargs)
        self.wavelengths_um = lam.tolist()


class AstrometryEncoder(ScalarSetEncoder):
    """Tokens for astrometric quantities (parallax, proper motions)."""


class SpectrumEncoder(nn.Module):
    """Patch-transformer encoder for sampled spectra (see the module docstring).

    Args:
        wavelengths_aa: (L,) pixel wavelengths [Å].
        patch: Pixels per patch (L is padded to a multiple).
        dim, depth, heads, num_tokens: As for :class:`ScalarSetEncoder`.
        log_flux_ref: Typical log10 median flux of the training spectra, subtracted before
            the flux-scale embedding (spectra in W m⁻² nm⁻¹ sit near -17).

    >>> enc = SpectrumEncoder(torch.linspace(3300, 10200, 120), patch=8, dim=16, heads=2)
    >>> out = enc(torch.ones(3, 120), torch.full((3, 120), 0.01))
    >>> out.tokens.shape
    torch.Size([3, 2, 16])
    """

    def __init__(
        self,
        wavelengths_aa: Tensor | Sequence[float],
        patch: int = 16,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        num_tokens: int = 2,
        log_flux_ref: float = 0.0,
    ) -> None:
        super().__init__()
        if not math.isfinite(log_flux_ref):
            raise ValueError(f"log_flux_ref must be finite, got {log_flux_ref}")
        self.log_flux_ref = float(log_flux_ref)
        lam = torch.as_tensor(wavelengths_aa, dtype=torch.float64).flatten()
        if len(lam) < 2 or not bool((lam > 0).all()) or not bool((torch.diff(lam) > 0).all()):
            raise ValueError("wavelengths_aa must be positive and strictly increasing")
        if patch < 1:
            raise ValueError(f"patch must be >= 1, got {patch}")
        self.length = len(lam)
        self.patch = patch
        self.num_patches = -(-self.length // patch)
        pad = self.num_patches * patch - self.length
        centres = F.pad(lam, (0, pad), value=float(lam[-1])).view(-1, patch).mean(1)
        freq = torch.arange(1, 9, dtype=torch.float64) * 2.0
        x = (torch.log10(centres) - math.log10(float(lam[0]))) / max(
            1e-9, math.log10(float(lam[-1]) / float(lam[0]))
        )
        self.register_buffer("position", _fourier(x, freq).float())
        self.pos = nn.Linear(self.position.shape[1], dim)
        self.embed = nn.Linear(3 * patch, dim)
        self.scale = nn.Linear(1, dim)
        self.head = _SetHead(dim, depth, heads, num_tokens)

    def forward(self, flux: Tensor, errors: Tensor, mask: Tensor | None = None) -> EncoderOutput:
        """Encode (B, L) fluxes with 1σ errors; ``mask`` (B, L) marks valid pixels
        (default: finite flux and error, error > 0)."""
        if flux.dim() != 2 or flux.shape[1] != self.length or errors.shape != flux.shape:
            raise ValueError(
                f"expected flux and errors (B, {self.length}), got {tuple(flux.shape)} and "
                f"{tuple(errors.shape)}"
            )
        valid = torch.isfinite(flux) & torch.isfinite(errors) & (errors > 0)
        if mask is not None:
            valid &= mask.bool()
        f = torch.where(valid, flux, torch.nan)
        med = torch.nanmedian(f, dim=1).values
        med = torch.where(torch.isfinite(med) & (med.abs() > 0), med.abs(), torch.ones_like(med))
        norm = torch.where(valid, flux / med[:, None], torch.zeros_like(flux))
        lerr = torch.where(valid, torch.log(errors.clamp_min(1e-30) / med[:, None]), 0.0)
        feats = torch.stack([norm, lerr / 10, valid.float()], dim=-1)  # (B, L, 3)
        pad = self.num_patches * self.patch - self.length
        feats = F.pad(feats, (0, 0, 0, pad))
        b = flux.shape[0]
        feats = feats.view(b, self.num_patches, 3 * self.patch)
        patch_valid = F.pad(valid, (0, pad)).view(b, self.num_patches, self.patch).any(-1)
        h = (
            self.embed(feats)
            + self.pos(self.position)
            + self.scale(torch.log10(med)[:, None, None] - self.log_flux_ref)
        )
        return self.head(h, patch_valid)

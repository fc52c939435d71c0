r"""Alignment losses between simulated and real embeddings: contrastive, OT and pair terms.

Every loss is a small :class:`torch.nn.Module` over embeddings, so gradients reach the
encoders that produced them.

* :class:`ContrastiveLoss` (L_C): InfoNCE between each modality's embedding
  :math:`z^m_i` and the pooled embedding :math:`z^{pool}_i` (the mean over the modalities
  present) of the same object, against the other objects of the batch as negatives,
  symmetrised, with cosine similarities over a temperature τ (fixed or learned, as
  AstroCLIP's logit scale):

  .. math:: \mathcal L_C = -\frac1{|M|}\sum_m \frac1{N_m}\sum_i
            \log\frac{\exp(\cos(z^m_i, z^{pool}_i)/\tau)}
                     {\sum_j \exp(\cos(z^m_i, z^{pool}_j)/\tau)}.

* :class:`OTLoss` (L_OT): optimal transport between the simulated and the real batch with
  POT's torch backend (uniform weights, squared Euclidean cost): exact EMD (``ot.emd2``),
  the debiased Sinkhorn divergence :math:`S = W_\varepsilon(a,b) - \frac12 W_\varepsilon
  (a,a) - \frac12 W_\varepsilon(b,b)` (``ot.sinkhorn2`` in the log domain; zero for
  identical batches), Gromov–Wasserstein on the intra-domain distance matrices
  (``ot.gromov.gromov_wasserstein2``) and fused GW (``ot.gromov.fused_gromov_wasserstein2``).
* :class:`PairLoss` (L_RS): the sim and real members of known pairs pulled together,
  as ``log1p(mean(1 - cos))`` (the AstroSimformer form) or the mean squared distance.
* :class:`KeypointOTLoss`: keypoint-guided OT (Gu et al. 2022): the pairs are keypoints;
  every point gets a relation vector, the softmax (temperature 0.1) of its negative
  normalised distances to the keypoints of its domain; the guiding cost is the
  Jensen–Shannon divergence between relation vectors (optionally mixed with the normalised
  ordinary cost), and a mask lets each keypoint go only to its partner (a large finite penalty:
  ``ot.emd`` with inf returns a zero plan without complaint).

References:
    Oord, A. van den, Li, Y. & Vinyals, O. (2018). Representation Learning with
    Contrastive Predictive Coding. arXiv:1807.03748.
    Parker, L. et al. (2024). AstroCLIP. MNRAS 531, 4990.
    Flamary, R. et al. (2021). POT: Python Optimal Transport. JMLR 22, 1.
    Feydy, J. et al. (2019). Interpolating between Optimal Transport and MMD using
    Sinkhorn Divergences. AISTATS.
    Mémoli, F. (2011). Gromov–Wasserstein distances and the metric approach to object
    matching. Found. Comput. Math. 11, 417.
    Gu, X. et al. (2022). Keypoint-Guided Optimal Transport with Applications in
    Heterogeneous Domain Adaptation. NeurIPS.
    Wehenkel, A. et al. (2024). Addressing Misspecification in Simulation-based Inference
    through Data-driven Calibration (RoPE). arXiv:2405.08719.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ContrastiveLoss",
    "KeypointOTLoss",
    "OTLoss",
    "PairLoss",
    "flat_tokens",
    "pooled_embedding",
]

_PENALTY = 1e6  # finite "forbidden" cost (inf makes ot.emd return a zero plan)


def pooled_embedding(z: Tensor, present: Tensor) -> Tensor:
    """Mean over the modalities present: z (B, M, d), present (B, M) → (B, d).

    Objects without any modality get a zero vector.
    """
    w = present.to(z.dtype)[..., None]
    return (z * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


def flat_tokens(tokens: Tensor, mask: Tensor) -> Tensor:
    """Context tokens (B, T, d) with their mask (B, T) as one vector per object (B, T·d).

    Invalid tokens are zeroed and the vector is divided by √(T·d), so squared distances are
    mean squared differences per token element: the tokens a Simformer reads, in the form
    the OT and pair losses take.
    """
    if tokens.dim() != 3 or mask.shape != tokens.shape[:2]:
        raise ValueError(
            f"expected tokens (B, T, d) and mask (B, T), got {tuple(tokens.shape)} and "
            f"{tuple(mask.shape)}"
        )
    b, t, d = tokens.shape
    return (tokens * mask[..., None].to(tokens.dtype)).reshape(b, t * d) / math.sqrt(t * d)


class ContrastiveLoss(nn.Module):
    """InfoNCE between each modality embedding and the pooled embedding of the same object.

    Args:
        temperature: τ of the cosine similarities (AstroCLIP's fixed logit scale 15.5 is
            τ ≈ 0.065).
        learn_temperature: Make log τ a trainable parameter (CLIP).
    """

    def __init__(self, temperature: float = 0.07, learn_temperature: bool = False) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        log_t = torch.tensor(math.log(temperature))
        if learn_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    @property
    def temperature(self) -> float:
        return float(self.log_temperature.detach().exp())

    def forward(self, z: Tensor, present: Tensor) -> Tensor:
        """Loss for modality embeddings z (B, M, d) with ``present`` (B, M) bool.

        A modality contributes when at least two objects have it; the result is the mean
        over the contributing modalities (0 if none).
        """
        if z.dim() != 3 or present.shape != z.shape[:2]:
            raise ValueError(
                f"expected z (B, M, d) and present (B, M), got {tuple(z.shape)} and "
                f"{tuple(present.shape)}"
            )
        pool = F.normalize(pooled_embedding(z, present), dim=-1)
        zn = F.normalize(z, dim=-1)
        scale = (-self.log_temperature).exp()
        terms = []
        for m in range(z.shape[1]):
            rows = present[:, m]
            if int(rows.sum()) < 2:
                continue
            logits = zn[rows, m] @ pool[rows].T * scale  # (Nm, Nm)
            target = torch.arange(logits.shape[0], device=z.device)
            terms.append(
                0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
            )
        if not terms:
            return z.sum() * 0.0
        return torch.stack(terms).mean()


def _uniform(n: int, like: Tensor) -> Tensor:
    return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)


class OTLoss(nn.Module):
    """Optimal-transport distance between simulated and real embedding batches (POT).

    Args:
        method: ``emd`` (exact), ``sinkhorn`` (debiased Sinkhorn divergence, log domain),
            ``gw`` (Gromov–Wasserstein) or ``fgw`` (fused GW).
        reg: Sinkhorn's entropic regularisation, relative to the mean cost of the batch.
        alpha: fgw's weight of the structure (GW) term; 1 - alpha weights the feature cost.
        num_iter: Iteration cap of the Sinkhorn and GW solvers.
    """

    def __init__(
        self,
        method: Literal["emd", "sinkhorn", "gw", "fgw"] = "sinkhorn",
        reg: float = 0.05,
        alpha: float = 0.5,
        num_iter: int = 200,
    ) -> None:
        super().__init__()
        if method not in ("emd", "sinkhorn", "gw", "fgw"):
            raise ValueError(
                f"unknown OT method {method!r}; valid: 'emd', 'sinkhorn', 'gw', 'fgw'"
            )
        if not reg > 0 or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"need reg > 0 and 0 <= alpha <= 1, got reg={reg}, alpha={alpha}")
        self.method, self.reg, self.alpha, self.num_iter = method, reg, alpha, num_iter

    def forward(self, z_sim: Tensor, z_real: Tensor) -> Tensor:
        """OT loss between z_sim (n, d) and z_real (m, d); differentiable in both."""
        import ot

        if z_sim.dim() != 2 or z_real.dim() != 2 or z_sim.shape[1] != z_real.shape[1]:
            raise ValueError(
                f"expected z_sim (n, d) and z_real (m, d), got {tuple(z_sim.shape)} and "
                f"{tuple(z_real.shape)}"
            )
        a, b = _uniform(len(z_sim), z_sim), _uniform(len(z_real), z_real)
        if self.method == "emd":
            return ot.emd2(a, b, ot.dist(z_sim, z_real))
        if self.method == "sinkhorn":
            m_ab = ot.dist(z_sim, z_real)
            eps = self.reg * float(m_ab.detach().mean().clamp_min(1e-12))

            def w(x: Tensor, y: Tensor, p: Tensor, q: Tensor) -> Tensor:
                return ot.sinkhorn2(
                    p, q, ot.dist(x, y), eps, method="sinkhorn_log", numItermax=self.num_iter
                )

            return (
                w(z_sim, z_real, a, b)
                - 0.5 * w(z_sim, z_sim, a, a)
                - 0.5 * w(z_real, z_real, b, b)
            )
        c1, c2 = ot.dist(z_sim, z_sim), ot.dist(z_real, z_real)
        if self.method == "gw":
            return ot.gromov.gromov_wasserstein2(c1, c2, a, b, max_iter=self.num_iter)
        return ot.gromov.fused_gromov_wasserstein2(
            ot.dist(z_sim, z_real), c1, c2, a, b, alpha=self.alpha, max_iter=self.num_iter
        )


class PairLoss(nn.Module):
    """Pull the simulated and real members of known pairs together.

    Args:
        kind: ``cosine`` for log1p(mean(1 - cos(z_sim, z_real))), ``l2`` for the mean
            squared distance.
    """

    def __init__(self, kind: Literal["cosine", "l2"] = "cosine") -> None:
        super().__init__()
        if kind not in ("cosine", "l2"):
            raise ValueError(f"unknown pair loss {kind!r}; valid: 'cosine', 'l2'")
        self.kind = kind

    def forward(self, z_sim: Tensor, z_real: Tensor) -> Tensor:
        """z_sim, z_real (P, d): row i of each is the same object."""
        if z_sim.shape != z_real.shape or z_sim.dim() != 2:
            raise ValueError(
                f"pairs need z_sim and z_real of the same shape (P, d), got "
                f"{tuple(z_sim.shape)} and {tuple(z_real.shape)}"
            )
        if len(z_sim) == 0:
            return z_sim.sum() * 0.0
        if self.kind == "cosine":
            return torch.log1p((1 - F.cosine_similarity(z_sim, z_real, dim=-1)).mean())
        return ((z_sim - z_real) ** 2).sum(-1).mean()


def _relation(z: Tensor, keys: Tensor, temperature: float) -> Tensor:
    """Softmax over keypoints of the negative normalised distances: (n, d), (k, d) → (n, k)."""
    d = torch.cdist(z, keys)
    d = d / d.detach().max().clamp_min(1e-12)
    return torch.softmax(-d / temperature, dim=-1)


def _js(p: Tensor, q: Tensor) -> Tensor:
    """Jensen–Shannon divergence between every row of p (n, k) and of q (m, k) → (n, m)."""
    p, q = p[:, None, :], q[None, :, :]
    mid = 0.5 * (p + q)

    def kl(x: Tensor, y: Tensor) -> Tensor:
        return (x * (x.clamp_min(1e-12).log() - y.clamp_min(1e-12).log())).sum(-1)

    return 0.5 * kl(p, mid) + 0.5 * kl(q, mid)


class KeypointOTLoss(nn.Module):
    """Keypoint-guided exact OT (Gu et al. 2022) between a sim and a real batch.

    Args:
        temperature: Of the relation vectors (0.1 in the paper).
        mix: Weight of the guiding (JS) cost; 1 - mix weights the normalised feature cost.
            The default 1 is the paper's KPG-RL model; on a 3-cluster toy whose clusters
            swap places between the domains, mix 0.5 sent 80% of the mass to the right
            cluster and mix ≥ 0.8 all of it (tests/test_losses.py).
    """

    def __init__(self, temperature: float = 0.1, mix: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0 or not 0.0 <= mix <= 1.0:
            raise ValueError(f"need temperature > 0 and 0 <= mix <= 1, got {temperature}, {mix}")
        self.temperature, self.mix = temperature, mix

    def plan_and_cost(
        self, z_sim: Tensor, z_real: Tensor, keys_sim: Tensor, keys_real: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The cost matrix (n, m) with the keypoint mask, and the optimal plan (n, m)."""
        import ot

        if keys_sim.shape != keys_real.shape or keys_sim.dim() != 1 or not len(keys_sim):
            raise ValueError("keypoints: give equally long, non-empty index vectors (K,)")
        m_feat = ot.dist(z_sim, z_real)
        m_feat = m_feat / m_feat.detach().max().clamp_min(1e-12)
        guide = _js(
            _relation(z_sim, z_sim[keys_sim], self.temperature),
            _relation(z_real, z_real[keys_real], self.temperature),
        )
        cost = (1 - self.mix) * m_feat + self.mix * guide
        forbid = torch.zeros_like(cost, dtype=torch.bool)
        forbid[keys_sim, :] = True
        forbid[:, keys_real] = True
        forbid[keys_sim, keys_real] = False
        cost = torch.where(forbid, torch.full_like(cost, _PENALTY), cost)
        a, b = _uniform(len(z_sim), z_sim), _uniform(len(z_real), z_real)
        plan = ot.emd(a.detach(), b.detach(), cost.detach())
        return cost, plan

    def forward(
        self, z_sim: Tensor, z_real: Tensor, keys_sim: Tensor, keys_real: Tensor
    ) -> Tensor:
        """Transport cost ⟨P, M_feat⟩ under the keypoint-guided plan P (n, m).

        ``keys_sim[k]`` and ``keys_real[k]`` index the two members of pair k. The plan is
        held fixed (envelope theorem), so gradients flow through the feature cost.
        """
        import ot

        cost, plan = self.plan_and_cost(z_sim, z_real, keys_sim, keys_real)
        return (plan * ot.dist(z_sim, z_real)).sum()

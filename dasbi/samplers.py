r"""Samplers for the latent nodes, batched over rows (objects × samples).

All samplers take a denoiser ``D(x̃, σ̃)`` in VE-equivalent space (see :mod:`dasbi.sde`);
the score of :math:`x_t` is :math:`(\alpha_t D(x_t/\alpha_t, \tilde\sigma_t) - x_t)/
(\alpha_t\tilde\sigma_t)^2`.

* ``heun``: Heun's second-order method on the probability-flow ODE
  :math:`\mathrm d\tilde x/\mathrm d\tilde\sigma = (\tilde x - D)/\tilde\sigma`, on the
  Karras et al. (2022) noise grid (ρ = 7), with a final Euler step to σ = 0. The start
  x ~ N(0, σ_max² + 1) is shifted by the mean that the denoiser predicts at σ_max, since the
  deterministic ODE cannot forget an offset of the initial distribution. ``steps`` noise
  levels cost 2·steps network evaluations.
* ``dpm2m``: DPM-Solver++(2M) (Lu et al. 2022), the multistep second-order solver of the
  same ODE in data-prediction form, on a grid uniform in log σ (log-SNR; on an exact
  Gaussian denoiser it leaves half the error of the ρ = 7 grid at 15 steps). With
  h = log(σ_i/σ_{i+1}) and r = h_{i-1}/h_i, :math:`\hat D = (1 + \frac1{2r})D_i -
  \frac1{2r}D_{i-1}` and :math:`\tilde x_{i+1} = \frac{\sigma_{i+1}}{\sigma_i}\tilde x_i +
  (1 - \frac{\sigma_{i+1}}{\sigma_i})\hat D`. One network evaluation per noise level
  (plus one for the mean shift), so 15 steps cost 16 evaluations against Heun's 49 for
  25 levels.
* ``dpm2m_sde``: the second-order multistep solver of the reverse SDE in data-prediction
  form (SDE-DPM-Solver++(2M), Lu et al. 2022) on the same grid as ``dpm2m``. With D held
  fixed over a step, :math:`\tilde x_{i+1} = q^2 \tilde x_i + (1-q^2) D_i +
  \sigma_{i+1}\sqrt{1-q^2}\,z` (q = σ_{i+1}/σ_i = e^{-h}) is the exact solution of the
  reverse SDE; the second-order term integrates D linear in λ = -log σ exactly, adding
  :math:`(h - \frac{1-q^2}{2})\frac{D_i - D_{i-1}}{h_{i-1}}`. Like ``euler_maruyama``
  its injected noise corrects part of the score's error on the way down, at ``dpm2m``'s
  cost of one network evaluation per noise level.
* ``euler_maruyama``: the reverse SDE :math:`\mathrm dx = [f x - g^2 \nabla\log p_t]
  \mathrm dt + g\,\mathrm d\bar W` on a uniform t grid, ending with a Tweedie denoising step.
* ``pc``: the same predictor plus Langevin corrector steps (Song et al. 2021) of size
  2 (snr σ_t)², i.e. the snr rule with the score norm replaced by its Gaussian value.

Interval guidance. For latent nodes with constraints a ≤ x ≤ b (upper limits of fluxes,
lower limits of magnitudes), the score gets :math:`\nabla_x \sum_i \log\mathrm{sigmoid}
(s(\hat x_{0,i} - a_i)) + \log\mathrm{sigmoid}(s(b_i - \hat x_{0,i}))`, where
:math:`\hat x_0 = D(x)` is Tweedie's estimate and :math:`s = \gamma/(\tilde\sigma^2 + b)`
sharpens as the noise vanishes (Gloeckler et al. 2024, appendix). Gradients go through D.

References:
    Karras, T. et al. (2022). Elucidating the Design Space of Diffusion-Based Generative
    Models. NeurIPS.
    Lu, C. et al. (2022). DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
    Probabilistic Models. arXiv:2211.01095.
    Song, Y. et al. (2021). Score-Based Generative Modeling through SDEs. ICLR.
    Gloeckler, M. et al. (2024). All-in-one simulation-based inference. ICML.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import param
from .sde import SDE

__all__ = [
    "Interval",
    "SamplerConfig",
    "karras_sigmas",
    "ode_log_prob",
    "outside",
    "sample_latents",
]

Denoiser = Callable[[Tensor, Tensor], Tensor]


@dataclass
class SamplerConfig:
    """How posterior samples are drawn."""

    method: Literal["heun", "dpm2m", "dpm2m_sde", "euler_maruyama", "pc"] = param(
        "heun", help="sampler"
    )
    steps: int = param(
        25,
        ge=2,
        le=10_000,
        help="noise levels (heun, dpm2m, dpm2m_sde) or time steps (euler_maruyama, pc)",
    )
    rho: float = param(7.0, gt=0.0, help="Karras grid exponent (heun)")
    sigma_start: float = param(
        80.0,
        gt=0.0,
        help="largest noise level of the σ grid, if below the SDE's (heun, dpm2m, dpm2m_sde)",
    )
    sigma_knee: float = param(
        3.0,
        ge=0.0,
        help="dpm2m, dpm2m_sde: one step from the largest noise level down to this one, "
        "then steps uniform in log σ down to the smallest; in units of the standardised "
        "data scale, so keep it at or above 1 (a posterior is rarely wider than the "
        "prior); 0 spreads all steps uniformly in log σ from the top",
    )
    sigma_end: float | None = param(
        None,
        gt=0.0,
        help="smallest noise level of the σ grid before the final denoising step "
        "(heun, dpm2m, dpm2m_sde; default: the SDE's σ_min); 0.01-0.02 makes 8-12 dpm2m "
        "levels more accurate on sbibm two_moons but narrows posteriors whose "
        "standardised width is near it",
    )
    corrector_steps: int = param(1, ge=0, le=100, help="Langevin steps per level (pc)")
    snr: float = param(0.1, gt=0.0, help="corrector signal-to-noise ratio (pc)")
    guidance_scale: float = param(1.0, ge=0.0, help="strength γ of interval guidance")
    guidance_bias: float = param(0.01, gt=0.0, help="b in s = γ / (σ² + b)")
    hard_limits: bool = param(
        True,
        help="make guided samples respect their limits exactly: rows that end outside are "
        "redrawn (rejection, so the result is the guided distribution truncated to the "
        "interval), and those still outside after limit_redraws rounds are clipped",
    )
    limit_redraws: int = param(
        4, ge=0, le=100, help="redraw rounds for hard_limits and prior_bounds"
    )
    prior_bounds: bool = param(
        True,
        help="keep samples inside the parameters' declared [low, high] (a bounded prior's "
        "support): rows outside are redrawn (rejection, as sbi does for NPE) and clipped "
        "after limit_redraws rounds",
    )
    max_rows: int = param(4096, ge=1, help="objects × samples evaluated at once")
    precision: Literal["float32", "bfloat16"] = param(
        "float32",
        help="network arithmetic while sampling: bfloat16 autocasts the transformer's "
        "matrix products (the solver state stays float32); faster on CPUs with AVX-512 BF16 "
        "or AMX and on GPUs",
    )
    limits: Literal["auto", "tokens", "guidance"] = param(
        "auto",
        help="upper limits as limit tokens (models trained on limits) or by interval "
        "guidance; auto picks tokens where the model has them",
    )


@dataclass
class Interval:
    """Per-entry constraints lower ≤ x ≤ upper in model space, each (R, Nl); ±inf if none."""

    lower: Tensor
    upper: Tensor

    @property
    def active(self) -> bool:
        return bool(torch.isfinite(self.lower).any() or torch.isfinite(self.upper).any())


def outside(x: Tensor, interval: Interval, valid: Tensor | None = None) -> Tensor:
    """(R,) rows with any (valid) entry below its lower or above its upper limit."""
    bad = (x < interval.lower) | (x > interval.upper)
    if valid is not None:
        bad &= valid
    return bad.any(1)


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float) -> Tensor:
    """Decreasing noise levels σ_0 = σ_max … σ_{n-1} = σ_min, then 0 (length steps + 1)."""
    i = torch.arange(steps, dtype=torch.float64) / max(steps - 1, 1)
    inv = sigma_max ** (1 / rho) + i * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    return torch.cat([inv**rho, torch.zeros(1, dtype=torch.float64)])


def dpm_sigmas(sigma_min: float, sigma_max: float, steps: int, knee: float) -> list[float]:
    """Noise levels of the DPM-Solver++ grid (length steps + 1, ending in 0).

    Uniform in log σ (log-SNR), as Lu et al. recommend, but with the part above ``knee``
    taken in one step: while σ is well above the spread of the data, the denoiser is nearly
    constant in x and the data-prediction update is almost exact there, so steps spent
    above it are wasted. The one long step shrinks unit-variance data by a few per cent
    (3 % from σ = 15 to a knee at 3, mostly undone by the later steps), so the knee must stay
    above the spread of the posterior. With a thin two-moons-like posterior and an exact
    denoiser, 10 steps with the knee at 3 blur it less than 10 log-uniform ones
    (tests/test_samplers.py); on the trained sbibm two_moons model, 12 steps with the knee
    at 3 give rf-C2ST 0.628 against 0.642 for 12 log-uniform ones. ``knee`` = 0, or a knee
    outside (σ_min, σ_max), gives the plain log-uniform grid.
    """
    if steps < 3 or not sigma_min < knee < sigma_max:
        grid = np.geomspace(sigma_max, sigma_min, steps)
    else:
        grid = np.concatenate([[sigma_max], np.geomspace(knee, sigma_min, steps - 1)])
    return [float(v) for v in grid] + [0.0]


def _guidance_grad(
    denoise: Denoiser, x: Tensor, sigma: Tensor, interval: Interval, cfg: SamplerConfig
) -> tuple[Tensor, Tensor]:
    """D(x) and ∇_x of the soft interval log-likelihood at Tweedie's estimate."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        d = denoise(x, sigma)
        s = cfg.guidance_scale / (sigma[:, None] ** 2 + cfg.guidance_bias)
        lo = torch.where(torch.isfinite(interval.lower), interval.lower, d.detach() - 1e3)
        hi = torch.where(torch.isfinite(interval.upper), interval.upper, d.detach() + 1e3)
        logp = F.logsigmoid(s * (d - lo)) + F.logsigmoid(s * (hi - d))
        mask = torch.isfinite(interval.lower) | torch.isfinite(interval.upper)
        (grad,) = torch.autograd.grad((logp * mask).sum(), x)
    return d.detach(), grad


def _is_guided(interval: Interval | None, cfg: SamplerConfig) -> bool:
    return interval is not None and interval.active and cfg.guidance_scale != 0


def _denoise_guided(
    denoise: Denoiser, x: Tensor, sigma: Tensor, interval: Interval | None, cfg: SamplerConfig
) -> tuple[Tensor, Tensor | None]:
    if not _is_guided(interval, cfg):
        return denoise(x, sigma), None
    return _guidance_grad(denoise, x, sigma, interval, cfg)


@torch.no_grad()
def sample_latents(
    denoise: Denoiser,
    shape: tuple[int, int],
    sde: SDE,
    cfg: SamplerConfig,
    generator: torch.Generator,
    interval: Interval | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Draw latent values (R, Nl) in standardised model space.

    Args:
        denoise: D(x̃ (R, Nl), σ̃ (R,)) → (R, Nl).
        shape: (R, Nl).
        sde: The noise process the denoiser was trained with.
        cfg: Sampler settings.
        generator: Random source (CPU).
        interval: Optional constraints for guidance.
    """
    r, _ = shape

    def randn() -> Tensor:
        return torch.randn(shape, generator=generator).to(device)

    if cfg.method in ("heun", "dpm2m", "dpm2m_sde"):
        # starting above σ ≈ 80 only spends steps where x̃ is pure noise (Karras et al.)
        s_max = min(sde.sigma_max, cfg.sigma_start)
        s_min = sde.sigma_min if cfg.sigma_end is None else cfg.sigma_end
        if not s_min < s_max:
            raise ValueError(
                f"sampler sigma_end ({s_min:g}) must be below the largest noise level "
                f"({s_max:g}: the smaller of sigma_start and the SDE's sigma_max)"
            )
        if cfg.method != "heun":
            sigmas = dpm_sigmas(s_min, s_max, cfg.steps, cfg.sigma_knee)
        else:
            sigmas = karras_sigmas(s_min, s_max, cfg.steps, cfg.rho).tolist()
        s0 = sigmas[0]
        x = randn() * (s0**2 + 1.0) ** 0.5
        # The marginal at σ_max is ≈ N(m, σ_max² + v), not N(0, ·): the deterministic ODE
        # would carry the offset m·√v/σ_max to the end. Shift by the mean estimated from one
        # denoiser call, m ≈ D(x; σ_max) - x/(σ_max² + 1) (exact for unit-variance data).
        d0 = denoise(x, torch.full((r,), s0, device=device))
        shift = d0 - x / (s0**2 + 1.0)
        x = x + shift
        # D at the shifted x, for the first step, without another network call: at σ_max
        # the denoiser is linear in x with slope 1/(σ_max² + 1) to within v/σ_max² (exact
        # for unit-variance data). Guided steps need the gradient, so they call it again.
        first = None if _is_guided(interval, cfg) else d0 + shift / (s0**2 + 1.0)
        if cfg.method != "heun":
            noise = randn if cfg.method == "dpm2m_sde" else None
            return _dpm_solver_2m(denoise, x, sigmas, interval, cfg, first, noise)

        def slope(x: Tensor, s: float) -> Tensor:
            sig = torch.full((r,), s, device=device)
            d, grad = _denoise_guided(denoise, x, sig, interval, cfg)
            out = (x - d) / s
            if grad is not None:
                out = out - s * grad  # dx/dσ = -σ (score + guidance)
            return out

        for i, (s_cur, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
            d_cur = (x - first) / s_cur if i == 0 and first is not None else slope(x, s_cur)
            x_next = x + (s_next - s_cur) * d_cur
            if s_next > 0:
                x_next = x + (s_next - s_cur) * 0.5 * (d_cur + slope(x_next, s_next))
            x = x_next
        return x

    # reverse-time SDE in x_t space on a uniform grid t_max → t_min
    ts = torch.linspace(sde.t_max, sde.t_min, cfg.steps + 1, dtype=torch.float64).tolist()
    x = randn() * sde.prior_std()

    def score(x: Tensor, t: float) -> tuple[Tensor, Tensor]:
        tt = torch.tensor(t, dtype=torch.float64)
        alpha, sig = float(sde.alpha(tt)), float(sde.sigma(tt))
        sig_r = torch.full((r,), sig, device=device)
        d, grad = _denoise_guided(denoise, x / alpha, sig_r, interval, cfg)
        std2 = (alpha * sig) ** 2
        sc = (alpha * d - x) / std2
        if grad is not None:
            sc = sc + grad / alpha
        return sc, d

    for t_cur, t_next in zip(ts[:-1], ts[1:], strict=True):
        dt = t_cur - t_next
        tt = torch.tensor(t_cur, dtype=torch.float64)
        f, g2 = float(sde.drift_coef(tt)), float(sde.g2(tt))
        sc, _ = score(x, t_cur)
        x = x - (f * x - g2 * sc) * dt + (g2 * dt) ** 0.5 * randn()
        if cfg.method == "pc":
            tn = torch.tensor(t_next, dtype=torch.float64)
            # Langevin step size 2 (snr σ_t)²: the snr rule of Song et al. with the score norm
            # replaced by its Gaussian expectation √d/σ_t (stable in low dimensions)
            eps = 2 * (cfg.snr * float(sde.std(tn))) ** 2
            for _ in range(cfg.corrector_steps):
                sc, _ = score(x, t_next)
                x = x + eps * sc + (2 * eps) ** 0.5 * randn()
    _, d = score(x, ts[-1])
    return d


def _dpm_solver_2m(
    denoise: Denoiser,
    x: Tensor,
    sigmas: list[float],
    interval: Interval | None,
    cfg: SamplerConfig,
    first: Tensor | None = None,
    randn: Callable[[], Tensor] | None = None,
) -> Tensor:
    """DPM-Solver++(2M) in data-prediction form (VE: α = 1, λ = -log σ): the ODE solver, or
    with ``randn`` (a source of standard normal noise) its reverse-SDE form.

    ``first``, if given, is D(x; σ_0), so the first step needs no network call.
    """
    r = x.shape[0]
    d_prev: Tensor | None = None
    h_prev = 0.0
    for i, (s_cur, s_next) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
        if i == 0 and first is not None:
            d, grad = first, None
        else:
            sig = torch.full((r,), s_cur, device=x.device)
            d, grad = _denoise_guided(denoise, x, sig, interval, cfg)
        if grad is not None:
            d = d + s_cur**2 * grad  # the guided score, written as a denoiser
        if s_next == 0:
            return d
        h = math.log(s_cur / s_next)
        if randn is None:
            ratio = s_next / s_cur
            d_hat = d
            if d_prev is not None:
                c = h / (2 * h_prev)  # 1 / (2r)
                d_hat = (1 + c) * d - c * d_prev
            x = ratio * x + (1 - ratio) * d_hat
        else:
            keep = (s_next / s_cur) ** 2  # e^{-2h}
            x = keep * x + (1 - keep) * d + s_next * (1 - keep) ** 0.5 * randn()
            if d_prev is not None:
                # ∫ 2 e^{-2(h-u)} u du over [0, h] times the slope of D in λ
                x = x + (h - 0.5 * (1 - keep)) / h_prev * (d - d_prev)
        d_prev, h_prev = d, h
    return x


def _divergence(
    denoise: Denoiser,
    x: Tensor,
    sigma: Tensor,
    valid: Tensor,
    probes: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """D(x; σ) and tr ∂D/∂x over the valid entries (R,): exact (one backward pass per
    entry) or, with ``probes`` (K, R, Nl), Hutchinson's estimator E[εᵀ ∂D/∂x ε]."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        d = denoise(x, sigma)
        tr = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        if probes is None:
            for j in range(x.shape[1]):
                (g,) = torch.autograd.grad(d[:, j].sum(), x, retain_graph=True)
                tr += torch.where(valid[:, j], g[:, j], 0.0).double()
        else:
            for k in range(probes.shape[0]):
                eps = probes[k] * valid
                (g,) = torch.autograd.grad((d * eps).sum(), x, retain_graph=True)
                tr += (g * eps).sum(1).double() / probes.shape[0]
    return d.detach(), tr


def ode_log_prob(
    denoise: Denoiser,
    y: Tensor,
    valid: Tensor,
    sigma_min: float,
    sigma_max: float,
    steps: int = 64,
    rho: float = 7.0,
    exact_trace: bool = True,
    probes: int = 4,
    generator: torch.Generator | None = None,
) -> Tensor:
    """log p(y) (R,) of latent values y (R, Nl) under the probability-flow ODE of a denoiser.

    The ODE dy/dσ = (y − D(y; σ))/σ carries p_σmin to p_σmax, and along it
    d log p_σ(y(σ))/dσ = −(n − tr ∂D/∂y)/σ (n valid entries); so
    log p_σmin(y) = log p_σmax(y(σmax)) + ∫ (n − tr ∂D/∂y)/σ dσ (Song et al. 2021, §D.2;
    Karras et al. 2022's σ parameterisation). The end density is N(m, σmax² + 1) per entry,
    m from one denoiser call as in :func:`sample_latents`. Heun steps on a Karras grid from
    σ_min up to σ_max: second order (the error falls 4× per doubling of ``steps``), and far
    from the data y grows linearly in σ, which Heun follows exactly. The trace is exact (one
    backward pass per entry) or Hutchinson's with ``probes`` Rademacher vectors (fixed
    along the path). Padded (invalid) entries add nothing.
    """
    grid = karras_sigmas(sigma_min, sigma_max, steps + 1, rho)[:-1].flip(0).tolist()
    r = y.shape[0]
    dev = y.device
    valid = valid.to(torch.bool)
    n = valid.sum(1).double()
    vf = valid.to(y.dtype)
    eps = None
    if not exact_trace:
        u = torch.randint(0, 2, (probes, *y.shape), generator=generator)
        eps = (2.0 * u - 1.0).to(y.dtype).to(dev)

    def rate(x: Tensor, s: float) -> tuple[Tensor, Tensor]:
        """dy/dσ and its divergence (n − tr ∂D/∂y)/σ."""
        sig = torch.full((r,), s, device=dev, dtype=y.dtype)
        d, tr = _divergence(denoise, x, sig, valid, eps)
        return (x - d) / s * vf, (n - tr) / s

    x = y.detach()
    logdet = torch.zeros(r, dtype=torch.float64, device=dev)
    f_cur, div_cur = rate(x, grid[0])
    for s_cur, s_next in zip(grid[:-1], grid[1:], strict=True):
        h = s_next - s_cur
        f_pred, div_pred = rate(x + h * f_cur, s_next)
        x = x + h * 0.5 * (f_cur + f_pred)
        logdet += h * 0.5 * (div_cur + div_pred)
        f_cur, div_cur = rate(x, s_next)
    s_top = grid[-1]
    var = s_top**2 + 1.0
    with torch.no_grad():
        d_top = denoise(x, torch.full((r,), s_top, device=dev, dtype=y.dtype))
    m = (d_top - x / var) * var / s_top**2  # the marginal's mean (exact for unit variance)
    z2 = (((x - m) ** 2) * vf).sum(1).double()
    log_end = -0.5 * z2 / var - 0.5 * n * math.log(2 * math.pi * var)
    return log_end + logdet

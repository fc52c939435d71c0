r"""Noise processes (SDEs) over the standardised latent nodes.

Both SDEs are written as :math:`x_t = \alpha_t x_0 + \alpha_t \tilde\sigma_t \varepsilon`, with
:math:`\tilde\sigma_t` the *VE-equivalent* noise level (the noise of :math:`x_t/\alpha_t`).
The denoiser always sees :math:`\tilde x = x_t / \alpha_t` at level :math:`\tilde\sigma`, so a
single network and a single set of ODE samplers serve both SDEs.

* VE (Song et al. 2021): :math:`\alpha = 1`, :math:`\sigma_t = \sigma_{min}
  (\sigma_{max}/\sigma_{min})^t`, drift 0, :math:`g^2 = 2\sigma_t^2\ln(\sigma_{max}/\sigma_{min})`.
* VP: :math:`\beta(t) = \beta_{min} + t(\beta_{max}-\beta_{min})`,
  :math:`\log\alpha_t = -\tfrac12(\beta_{min} t + \tfrac12(\beta_{max}-\beta_{min})t^2)`,
  :math:`f(x, t) = -\tfrac12\beta(t)x`, :math:`g^2 = \beta(t)`.
* Flow matching (:class:`FlowSDE`): :math:`x_t = (1-t)x_0 + t\varepsilon`, trained with the
  flow-matching loss (``weighting="fm"``).

References:
    Song, Y. et al. (2021). Score-Based Generative Modeling through Stochastic Differential
    Equations. ICLR.
    Karras, T. et al. (2022). Elucidating the Design Space of Diffusion-Based Generative
    Models. NeurIPS.
    Lipman, Y. et al. (2023). Flow Matching for Generative Modeling. ICLR.
    Liu, X. et al. (2023). Flow Straight and Fast: Learning to Generate and Transfer Data
    with Rectified Flow. ICLR.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor

__all__ = ["SDE", "FlowSDE", "VESDE", "VPSDE", "make_sde"]


class SDE(abc.ABC):
    """A linear SDE dx = f(t) x dt + g(t) dW on t ∈ [t_min, 1]."""

    t_min: float
    t_max: float = 1.0

    @abc.abstractmethod
    def alpha(self, t: Tensor) -> Tensor:
        """Mean scale α_t, shape of ``t``."""

    @abc.abstractmethod
    def sigma(self, t: Tensor) -> Tensor:
        """VE-equivalent noise level σ̃_t (noise std of x_t / α_t)."""

    @abc.abstractmethod
    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        """Inverse of :meth:`sigma`."""

    @abc.abstractmethod
    def drift_coef(self, t: Tensor) -> Tensor:
        """f(t) in the drift f(t) x."""

    @abc.abstractmethod
    def g2(self, t: Tensor) -> Tensor:
        """Squared diffusion g(t)²."""

    def std(self, t: Tensor) -> Tensor:
        """Marginal noise std of x_t, α_t σ̃_t."""
        return self.alpha(t) * self.sigma(t)

    @property
    def sigma_min(self) -> float:
        return float(self.sigma(torch.tensor(self.t_min, dtype=torch.float64)))

    @property
    def sigma_max(self) -> float:
        return float(self.sigma(torch.tensor(self.t_max, dtype=torch.float64)))

    def prior_std(self) -> float:
        """Std of x_T for standardised data (the initial latent noise of samplers)."""
        t = torch.tensor(self.t_max, dtype=torch.float64)
        return float(torch.sqrt(self.std(t) ** 2 + self.alpha(t) ** 2))

    def loss_weight(self, t: Tensor, weighting: str) -> Tensor:
        r"""Weight λ(t) of ||D - x_0||² equivalent to the score-matching weighting.

        ``g2`` gives :math:`g^2 \|s_\theta - \nabla\log p_t\|^2 = g^2/(\alpha^2\tilde\sigma^4)
        \|D - x_0\|^2` and ``sigma2`` gives the σ_t²-weighted ("ε") loss :math:`\|D-x_0\|^2
        /\tilde\sigma^2`. For VE both are identical up to a constant; we divide g2 by its
        constant :math:`2\ln(\sigma_{max}/\sigma_{min})` so VE losses are O(1). ``edm`` is
        Karras et al.'s :math:`(\tilde\sigma^2+1)/\tilde\sigma^2`, a uniform weight on the
        preconditioned network output, which puts more weight on high noise levels. ``fm``
        is :math:`(1+\tilde\sigma)^2/\tilde\sigma^2`, the flow-matching velocity loss on the
        path of :class:`FlowSDE`.
        """
        s = self.sigma(t)
        if weighting == "sigma2":
            return 1.0 / s**2
        if weighting == "edm":
            return (s**2 + 1.0) / s**2
        if weighting == "g2":
            return self.g2(t) / (self.alpha(t) ** 2 * s**4) / self._g2_scale()
        if weighting == "fm":
            return (1.0 + s) ** 2 / s**2
        raise ValueError(
            f"unknown loss weighting {weighting!r}; valid: 'g2', 'sigma2', 'edm', 'fm'"
        )

    def _g2_scale(self) -> float:
        return 1.0


class VESDE(SDE):
    """Variance-exploding SDE with geometric noise levels."""

    def __init__(
        self, sigma_min: float = 1e-3, sigma_max: float = 15.0, t_min: float = 1e-5
    ) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.smin, self.smax, self.t_min = float(sigma_min), float(sigma_max), float(t_min)
        self._log_ratio = math.log(self.smax / self.smin)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return self.smin * torch.exp(t * self._log_ratio)

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        return torch.log(sigma / self.smin) / self._log_ratio

    def drift_coef(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def g2(self, t: Tensor) -> Tensor:
        return 2.0 * self.sigma(t) ** 2 * self._log_ratio

    def _g2_scale(self) -> float:
        return 2.0 * self._log_ratio


class VPSDE(SDE):
    """Variance-preserving SDE with a linear β schedule."""

    def __init__(
        self, beta_min: float = 0.01, beta_max: float = 10.0, t_min: float = 1e-3
    ) -> None:
        if not 0 < beta_min < beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got {beta_min}, {beta_max}")
        self.bmin, self.bmax, self.t_min = float(beta_min), float(beta_max), float(t_min)

    def _log_alpha(self, t: Tensor) -> Tensor:
        return -0.5 * (self.bmin * t + 0.5 * (self.bmax - self.bmin) * t**2)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self._log_alpha(t))

    def sigma(self, t: Tensor) -> Tensor:
        # sqrt(1 - α²)/α = sqrt(exp(-2 log α) - 1)
        return torch.sqrt(torch.expm1(-2.0 * self._log_alpha(t)))

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        # solve ½(β_max-β_min) t² + β_min t - log(1 + σ²) = 0
        c = torch.log1p(sigma**2)
        a = 0.5 * (self.bmax - self.bmin)
        return (-self.bmin + torch.sqrt(self.bmin**2 + 4 * a * c)) / (2 * a)

    def drift_coef(self, t: Tensor) -> Tensor:
        return -0.5 * (self.bmin + t * (self.bmax - self.bmin))

    def g2(self, t: Tensor) -> Tensor:
        return self.bmin + t * (self.bmax - self.bmin)


class FlowSDE(SDE):
    r"""The linear interpolation path of flow matching, :math:`x_t = (1-t)x_0 + t\varepsilon`.

    :math:`\alpha_t = 1-t` and :math:`\tilde\sigma_t = t/(1-t)`; as an SDE the drift is
    :math:`f = -1/(1-t)` and :math:`g^2 = 2t/(1-t)`. With ``weighting="fm"`` the loss
    :math:`\|D - x_0\|^2 (1+\tilde\sigma)^2/\tilde\sigma^2 = \|D-x_0\|^2/t^2` is the
    conditional flow-matching loss :math:`\|v_\theta - (\varepsilon - x_0)\|^2` of Lipman et
    al. (2023) and Liu et al. (2023, rectified flow), with :math:`v_\theta = (x_t - \alpha_t
    D)/t` written through the same denoiser, and t ~ U(t_min, t_max) as in those papers.
    The probability-flow ODE samplers are the same as for the other paths.
    """

    def __init__(self, t_min: float = 1e-3, t_max: float = 0.999) -> None:
        if not 0 < t_min < t_max < 1:
            raise ValueError(f"need 0 < t_min < t_max < 1, got {t_min}, {t_max}")
        self.t_min, self.t_max = float(t_min), float(t_max)

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - t

    def sigma(self, t: Tensor) -> Tensor:
        return t / (1.0 - t)

    def t_of_sigma(self, sigma: Tensor) -> Tensor:
        return sigma / (1.0 + sigma)

    def drift_coef(self, t: Tensor) -> Tensor:
        return -1.0 / (1.0 - t)

    def g2(self, t: Tensor) -> Tensor:
        return 2.0 * t / (1.0 - t)


def make_sde(name: str, **kwargs: float) -> SDE:
    """Build ``"ve"``, ``"vp"`` or ``"flow"`` with its keyword parameters."""
    if name == "ve":
        return VESDE(**kwargs)
    if name == "vp":
        return VPSDE(**kwargs)
    if name == "flow":
        return FlowSDE(**kwargs)
    raise ValueError(f"unknown SDE {name!r}; valid SDEs are: 've', 'vp', 'flow'")

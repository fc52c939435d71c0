"""Toy simulators from the sbibm benchmark: two moons, linear Gaussian and SLCP.

They follow sbibm (Lueckmann et al. 2021) exactly, so that reference posteriors shipped with
sbibm apply. Each has an optional ``missing_prob``: every observable entry is independently
marked unobserved with that probability (to exercise missing-data handling).

References:
    Lueckmann, J.-M. et al. (2021). Benchmarking Simulation-Based Inference. AISTATS.
    Greenberg, D. et al. (2019). Automatic Posterior Transformation (two moons). ICML.
    Papamakarios, G. et al. (2019). Sequential Neural Likelihood (SLCP). AISTATS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .base import ObsBlock, Simulator

__all__ = [
    "GaussianLinear",
    "GaussianLinearConfig",
    "SLCP",
    "SLCPConfig",
    "TwoMoons",
    "TwoMoonsConfig",
]


def _rangefield(default: float, lo: float, hi: float, help: str) -> Any:  # noqa: A002
    return field(default=default, metadata={"ge": lo, "le": hi, "help": help})


def _theta_transform_field() -> Any:
    return field(
        default="identity",
        metadata={
            "help": "how the model sees θ: identity, or logit on the prior box (smooth "
            "instead of truncated posteriors at the prior's edges); samples are always "
            "returned in θ's own units"
        },
    )


def _box_parameters(dim: int, bound: float, transform: str) -> list[dict[str, Any]]:
    """θ nodes theta_1 … theta_dim with the uniform prior box [-bound, bound]."""
    return [
        dict(
            name=f"theta_{i + 1}",
            kind="parameter",
            modality="theta",
            low=-bound,
            high=bound,
            transform=transform,
        )
        for i in range(dim)
    ]


def _box_prior(dim: int, bound: float) -> Any:
    """U(-bound, bound)^dim as a torch distribution (what sbi's BoxUniform is)."""
    import torch

    lo, hi = -bound * torch.ones(dim), bound * torch.ones(dim)
    return torch.distributions.Independent(torch.distributions.Uniform(lo, hi), 1)


def _check_theta(theta: np.ndarray, dim: int, name: str) -> np.ndarray:
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim != 2 or theta.shape[1] != dim:
        raise ValueError(f"{name}: theta must have shape (N, {dim}), got {theta.shape}")
    if not np.all(np.isfinite(theta)):
        raise ValueError(f"{name}: theta contains NaN or inf")
    return theta


def _missing(block: ObsBlock, prob: float, rng: np.random.Generator) -> ObsBlock:
    if prob <= 0:
        return block
    return block.apply_missing(rng.random(block.values.shape) < prob)


@dataclass
class TwoMoonsConfig:
    """Options of :class:`TwoMoons`."""

    missing_prob: float = _rangefield(0.0, 0.0, 0.95, "probability that an x entry is missing")
    theta_transform: Literal["identity", "logit"] = _theta_transform_field()


class TwoMoons(Simulator):
    """sbibm two moons: θ ~ U(-1, 1)², x ∈ R² on two crescent-shaped moons.

    a ~ U(-π/2, π/2), r ~ N(0.1, 0.01²), p = (r cos a + 0.25, r sin a),
    x = p + (-|θ1 + θ2| / √2, (-θ1 + θ2) / √2).
    """

    name = "two_moons"
    config_class = TwoMoonsConfig

    def nodes(self) -> list[dict[str, Any]]:
        theta = _box_parameters(2, 1.0, self.config.theta_transform)
        x = [dict(name=f"x_{i + 1}", kind="observable", modality="x") for i in range(2)]
        return theta + x

    def edges(self) -> list[tuple[str, str]]:
        # x1 and x2 are dependent given θ (they lie on a ring), as in the reference's mask
        return [(f"theta_{i}", f"x_{j}") for i in (1, 2) for j in (1, 2)] + [("x_1", "x_2")]

    def prior(self) -> Any:
        return _box_prior(2, 1.0)

    def sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=(n, 2))

    def simulate(self, theta: np.ndarray, rng: np.random.Generator) -> dict[str, ObsBlock]:
        theta = _check_theta(theta, 2, self.name)
        n = theta.shape[0]
        a = rng.uniform(-np.pi / 2, np.pi / 2, size=n)
        r = rng.normal(0.1, 0.01, size=n)
        p = np.stack([r * np.cos(a) + 0.25, r * np.sin(a)], axis=1)
        shift = np.stack(
            [
                -np.abs(theta[:, 0] + theta[:, 1]) / np.sqrt(2),
                (-theta[:, 0] + theta[:, 1]) / np.sqrt(2),
            ],
            axis=1,
        )
        block = ObsBlock.exact(p + shift)
        return {"x": _missing(block, self.config.missing_prob, rng)}


@dataclass
class GaussianLinearConfig:
    """Options of :class:`GaussianLinear` (sbibm defaults: dim 10, both variances 0.1)."""

    dim: int = field(default=10, metadata={"ge": 1, "le": 1000, "help": "dimension of θ and x"})
    prior_var: float = field(default=0.1, metadata={"gt": 0.0, "help": "prior variance"})
    noise_var: float = field(default=0.1, metadata={"gt": 0.0, "help": "likelihood variance"})
    missing_prob: float = _rangefield(0.0, 0.0, 0.95, "probability that an x entry is missing")
    detection_threshold: float | None = field(
        default=None,
        metadata={
            "help": "x entries below it are censored: reported as upper limits at the "
            "threshold (x < threshold), like non-detections at a survey's depth"
        },
    )


class GaussianLinear(Simulator):
    """sbibm gaussian_linear: θ ~ N(0, σ_p² I), x | θ ~ N(θ, σ_n² I).

    The posterior is Gaussian with covariance (1/σ_p² + 1/σ_n²)⁻¹ I and mean
    Σ x / σ_n², see :meth:`posterior_mean_cov`. Errors are reported as σ_n. With a
    ``detection_threshold`` a, entries x_i < a are reported as upper limits at a; the
    posterior of such a θ_i is ∝ N(θ_i; 0, σ_p²) Φ((a - θ_i)/σ_n)
    (:meth:`censored_posterior_moments`).
    """

    name = "gaussian_linear"
    config_class = GaussianLinearConfig

    def nodes(self) -> list[dict[str, Any]]:
        d = self.config.dim
        theta = [dict(name=f"theta_{i + 1}", kind="parameter", modality="theta") for i in range(d)]
        x = [dict(name=f"x_{i + 1}", kind="observable", modality="x") for i in range(d)]
        return theta + x

    def edges(self) -> list[tuple[str, str]]:
        return [(f"theta_{i + 1}", f"x_{i + 1}") for i in range(self.config.dim)]

    def prior(self) -> Any:
        import torch

        d = self.config.dim
        return torch.distributions.MultivariateNormal(
            torch.zeros(d), self.config.prior_var * torch.eye(d)
        )

    def sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(0.0, np.sqrt(self.config.prior_var), size=(n, self.config.dim))

    def simulate(self, theta: np.ndarray, rng: np.random.Generator) -> dict[str, ObsBlock]:
        theta = _check_theta(theta, self.config.dim, self.name)
        sd = np.sqrt(self.config.noise_var)
        x = theta + rng.normal(0.0, sd, size=theta.shape)
        limit = np.zeros(x.shape, bool)
        if self.config.detection_threshold is not None:
            limit = x < self.config.detection_threshold
            x = np.where(limit, self.config.detection_threshold, x)
        block = ObsBlock(x, sd, True, limit)
        return {"x": _missing(block, self.config.missing_prob, rng)}

    def censored_posterior_moments(self, threshold: float) -> tuple[float, float]:
        """Mean and standard deviation of θ_i given only x_i < ``threshold``."""
        from scipy.stats import norm

        sp, sn = np.sqrt(self.config.prior_var), np.sqrt(self.config.noise_var)
        grid = np.linspace(-8 * sp, 8 * sp, 20001)
        w = norm.pdf(grid, 0.0, sp) * norm.cdf((threshold - grid) / sn)
        w /= w.sum()
        mean = float(np.sum(w * grid))
        return mean, float(np.sqrt(np.sum(w * (grid - mean) ** 2)))

    def posterior_mean_cov(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Analytic posterior mean (…, D) and covariance (D, D) for fully observed x."""
        prec = 1.0 / self.config.prior_var + 1.0 / self.config.noise_var
        mean = np.asarray(x, np.float64) / self.config.noise_var / prec
        return mean, np.eye(self.config.dim) / prec

    def reference_posterior(
        self, x: np.ndarray, n: int, rng: np.random.Generator
    ) -> np.ndarray | None:
        """``n`` exact posterior draws (n, D) given one x (D,); NaN entries are missing
        (their θ_i keep the prior). Censored data have no reference here (None)."""
        if self.config.detection_threshold is not None:
            return None
        x = np.asarray(x, np.float64)
        seen = np.isfinite(x)
        mean, cov = self.posterior_mean_cov(np.where(seen, x, 0.0))
        sd = np.where(seen, np.sqrt(np.diag(cov)), np.sqrt(self.config.prior_var))
        return np.where(seen, mean, 0.0) + sd * rng.standard_normal((n, self.config.dim))


@dataclass
class SLCPConfig:
    """Options of :class:`SLCP`."""

    missing_prob: float = _rangefield(0.0, 0.0, 0.95, "probability that an x entry is missing")
    theta_transform: Literal["identity", "logit"] = _theta_transform_field()


class SLCP(Simulator):
    """sbibm slcp: θ ~ U(-3, 3)⁵, four i.i.d. 2-D Gaussian draws with θ-dependent covariance.

    m = (θ1, θ2), s1 = θ3², s2 = θ4², ρ = tanh θ5,
    Σ = [[s1², ρ s1 s2], [ρ s1 s2, s2²]], x = (x¹, …, x⁴), xᵏ ~ N(m, Σ).
    """

    name = "slcp"
    config_class = SLCPConfig

    def nodes(self) -> list[dict[str, Any]]:
        theta = _box_parameters(5, 3.0, self.config.theta_transform)
        x = [dict(name=f"x_{i + 1}", kind="observable", modality="x") for i in range(8)]
        return theta + x

    def edges(self) -> list[tuple[str, str]]:
        """Every θ_i → every x_j, and x¹ → x² within each draw (they share ρ), as in the
        block-triangular mask of the Simformer reference; the four draws are i.i.d. given θ."""
        theta_x = [(f"theta_{i + 1}", f"x_{j + 1}") for i in range(5) for j in range(8)]
        within = [(f"x_{2 * k + 1}", f"x_{2 * k + 2}") for k in range(4)]
        return theta_x + within

    def prior(self) -> Any:
        return _box_prior(5, 3.0)

    def sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-3.0, 3.0, size=(n, 5))

    def simulate(self, theta: np.ndarray, rng: np.random.Generator) -> dict[str, ObsBlock]:
        theta = _check_theta(theta, 5, self.name)
        n = theta.shape[0]
        s1, s2, rho = theta[:, 2] ** 2, theta[:, 3] ** 2, np.tanh(theta[:, 4])
        z = rng.standard_normal((n, 4, 2))
        # Cholesky factor of Σ: [[s1, 0], [ρ s2, s2 √(1-ρ²)]]
        x1 = theta[:, None, 0] + s1[:, None] * z[..., 0]
        x2 = theta[:, None, 1] + s2[:, None] * (
            rho[:, None] * z[..., 0] + np.sqrt(1 - rho[:, None] ** 2) * z[..., 1]
        )
        x = np.stack([x1, x2], axis=-1).reshape(n, 8)
        block = ObsBlock.exact(x)
        return {"x": _missing(block, self.config.missing_prob, rng)}

"""Samplers against an exact denoiser: data ~ N(μ, s²) per dimension gives
D(x, σ) = (s² x + σ² μ) / (s² + σ²), so every sampler must return N(μ, s²)."""

from __future__ import annotations

import math

import pytest
import torch

from dasbi.samplers import Interval, SamplerConfig, karras_sigmas, sample_latents
from dasbi.sde import VESDE, VPSDE, FlowSDE

MU = torch.tensor([0.5, -1.0, 2.0])
S = torch.tensor([1.0, 0.3, 0.05])


def exact_denoiser(x, sigma):
    s2 = S**2
    sig2 = sigma[:, None] ** 2
    return (s2 * x + sig2 * MU) / (s2 + sig2)


CASES = [
    ("heun", 25, VESDE()),
    ("heun", 25, VPSDE()),
    ("dpm2m", 15, VESDE()),
    ("dpm2m", 15, VPSDE()),
    ("heun", 25, FlowSDE()),
    ("dpm2m", 15, FlowSDE()),
    ("euler_maruyama", 400, FlowSDE()),
    ("euler_maruyama", 400, VESDE()),
    ("euler_maruyama", 400, VPSDE()),
    ("pc", 200, VESDE()),
    ("dpm2m_sde", 40, VESDE()),
    ("dpm2m_sde", 40, VPSDE()),
    ("dpm2m_sde", 40, FlowSDE()),
]


@pytest.mark.parametrize(
    ("method", "steps", "sde"), CASES, ids=[f"{m}-{type(s).__name__}" for m, _, s in CASES]
)
def test_samplers_recover_gaussian(method, steps, sde):
    gen = torch.Generator().manual_seed(0)
    cfg = SamplerConfig(method=method, steps=steps)
    x = sample_latents(exact_denoiser, (20000, 3), sde, cfg, gen)
    torch.testing.assert_close(x.mean(0), MU, atol=0.03, rtol=0)
    torch.testing.assert_close(x.std(0), S, rtol=0.06, atol=0.003)


def test_heun_is_deterministic_given_the_seed():
    cfg = SamplerConfig(method="heun", steps=10)
    a = sample_latents(exact_denoiser, (100, 3), VESDE(), cfg, torch.Generator().manual_seed(5))
    b = sample_latents(exact_denoiser, (100, 3), VESDE(), cfg, torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("method", ["heun", "dpm2m", "dpm2m_sde"])
def test_interval_guidance_moves_mass_inside_the_interval(method):
    gen = torch.Generator().manual_seed(1)
    n = 4000
    lower = torch.full((n, 3), -torch.inf)
    upper = torch.full((n, 3), torch.inf)
    upper[:, 0] = 0.0  # μ = 0.5, s = 1: P(x < 0) = 0.31 without guidance
    cfg = SamplerConfig(method=method, steps=30, guidance_scale=1.0)
    plain = sample_latents(exact_denoiser, (n, 3), VESDE(), cfg, gen)
    guided = sample_latents(exact_denoiser, (n, 3), VESDE(), cfg, gen, Interval(lower, upper))
    assert (plain[:, 0] < 0).float().mean() == pytest.approx(0.31, abs=0.03)
    assert (guided[:, 0] < 0.05).float().mean() > 0.9
    # unconstrained dimensions keep their distribution
    torch.testing.assert_close(guided[:, 1].mean(), MU[1], atol=0.03, rtol=0)


def test_karras_grid():
    s = karras_sigmas(1e-3, 15.0, 10, 7.0)
    assert len(s) == 11 and s[-1] == 0
    assert float(s[0]) == pytest.approx(15.0) and float(s[-2]) == pytest.approx(1e-3)
    assert torch.all(torch.diff(s) < 0)


def test_dpm2m_converges_faster_than_first_order():
    """On the exact Gaussian denoiser the 2M update beats its first-order (DDIM) version."""
    from dasbi import samplers

    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(20000, 3, generator=gen) * 81.0
    sig = karras_sigmas(0.001, 80.0, 8, 7.0).tolist()
    cfg = SamplerConfig()
    two = samplers._dpm_solver_2m(exact_denoiser, x0.clone(), sig, None, cfg)
    # first order: the same loop with D_hat = D
    x = x0.clone()
    for a, b in zip(sig[:-1], sig[1:], strict=True):
        d = exact_denoiser(x, torch.full((len(x),), a))
        x = d if b == 0 else (b / a) * x + (1 - b / a) * d
    assert (two.std(0) - S).abs().max() < (x.std(0) - S).abs().max()


def test_dpm2m_sde_is_second_order():
    """The 2M term cuts the error of the first-order (ancestral) step, and the error of the
    2M-SDE falls faster than 1/steps on the exact Gaussian denoiser."""
    from dasbi import samplers
    from dasbi.samplers import dpm_sigmas

    def std_error(steps, second_order):
        sig = dpm_sigmas(1e-3, 80.0, steps, 3.0)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(100_000, 3, generator=gen) * 80.0 + MU

        def randn():
            return torch.randn(100_000, 3, generator=gen)

        if second_order:
            x = samplers._dpm_solver_2m(exact_denoiser, x, sig, None, SamplerConfig(), None, randn)
        else:
            for a, b in zip(sig[:-1], sig[1:], strict=True):
                d = exact_denoiser(x, torch.full((len(x),), a))
                if b == 0:
                    x = d
                    break
                keep = (b / a) ** 2
                x = keep * x + (1 - keep) * d + b * (1 - keep) ** 0.5 * randn()
        return float((x.std(0) / S - 1).abs().max())

    # measured (2e5 draws): 2M 0.045 and 0.005, first order 0.157 and 0.070 (25, 60 steps)
    assert std_error(25, True) < 0.5 * std_error(25, False)
    assert std_error(60, True) < 0.35 * std_error(25, True)  # 1/steps would give 0.42
    assert std_error(60, False) > 0.3 * std_error(25, False)


def test_dpm_grid_takes_the_top_in_one_step():
    from dasbi.samplers import dpm_sigmas

    s = dpm_sigmas(1e-3, 15.0, 12, 3.0)
    assert len(s) == 13 and s[-1] == 0.0
    assert s[0] == pytest.approx(15.0) and s[1] == pytest.approx(3.0)
    assert s[-2] == pytest.approx(1e-3)
    logs = torch.tensor(s[1:-1], dtype=torch.float64).log()
    torch.testing.assert_close(torch.diff(logs), torch.diff(logs).mean().expand(10))
    plain = dpm_sigmas(1e-3, 15.0, 12, 0.0)  # knee 0: log-uniform from the top
    torch.testing.assert_close(
        torch.tensor(plain[:-1], dtype=torch.float64),
        torch.logspace(math.log10(15.0), -3, 12, dtype=torch.float64),
    )
    assert dpm_sigmas(1e-3, 2.0, 12, 3.0) == dpm_sigmas(1e-3, 2.0, 12, 0.0)  # knee above top


def _crescents():
    """Two thin crescents (width 0.017, radius 0.17), like a two_moons posterior in
    standardised units, as a Gaussian mixture with its exact denoiser."""
    ang = torch.linspace(0, math.pi, 64)
    arc = torch.stack([ang.cos(), ang.sin()], 1) * 0.17
    off = torch.tensor([0.5, 0.3])
    mu, s0 = torch.cat([arc + off, -arc - off]), 0.017

    def denoise(x, sigma):
        v = s0**2 + sigma[:, None] ** 2
        w = torch.softmax(-((x[:, None] - mu) ** 2).sum(-1) / (2 * v), 1)
        return (w[..., None] * (mu + (s0**2 / v)[..., None] * (x[:, None] - mu))).sum(1)

    def blur(x):  # mean squared distance to the ridge / s0²: about 1 for exact samples
        return float(((x[:, None] - mu) ** 2).sum(-1).min(1).values.mean() / s0**2)

    return denoise, blur


def test_knee_grid_resolves_a_thin_posterior_in_fewer_steps():
    denoise, blur = _crescents()

    def draw(steps, knee):
        cfg = SamplerConfig(method="dpm2m", steps=steps, sigma_knee=knee)
        return blur(sample_latents(denoise, (3000, 2), VESDE(), cfg, torch.Generator()))

    many = draw(25, 0.0)
    assert many < 1.15
    # measured: knee 3 → 1.24, log-uniform → 1.35 (10 steps); 2.4 against 2.9 (8 steps)
    assert draw(10, 3.0) < draw(10, 0.0) - 0.06
    assert draw(8, 3.0) < draw(8, 0.0) - 0.2


@pytest.mark.parametrize(("method", "calls"), [("dpm2m", 12), ("dpm2m_sde", 12), ("heun", 23)])
def test_first_step_reuses_the_mean_shift_call(method, calls):
    n = [0]

    def counted(x, sigma):
        n[0] += 1
        return exact_denoiser(x, sigma)

    cfg = SamplerConfig(method=method, steps=12)
    sample_latents(counted, (100, 3), VESDE(), cfg, torch.Generator().manual_seed(0))
    assert n[0] == calls
    # with interval guidance the first step needs the gradient, so it calls the network
    n[0] = 0
    up = torch.full((100, 3), torch.inf)
    up[:, 0] = 0.0
    interval = Interval(torch.full((100, 3), -torch.inf), up)
    sample_latents(counted, (100, 3), VESDE(), cfg, torch.Generator().manual_seed(0), interval)
    assert n[0] == calls + 1


def test_sigma_end_must_be_below_the_top():
    cfg = SamplerConfig(method="dpm2m", steps=5, sigma_end=20.0)
    with pytest.raises(ValueError, match="sigma_end"):
        sample_latents(exact_denoiser, (10, 3), VESDE(), cfg, torch.Generator())

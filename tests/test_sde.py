from __future__ import annotations

import math

import pytest
import torch

from dasbi.sde import VESDE, VPSDE, make_sde

SDES = [VESDE(1e-3, 15.0), VPSDE(0.01, 10.0)]


@pytest.mark.parametrize("sde", SDES, ids=["ve", "vp"])
def test_sigma_inverse_round_trip(sde):
    t = torch.linspace(sde.t_min, 1.0, 50, dtype=torch.float64)
    torch.testing.assert_close(sde.t_of_sigma(sde.sigma(t)), t)
    assert torch.all(torch.diff(sde.sigma(t)) > 0)


@pytest.mark.parametrize("sde", SDES, ids=["ve", "vp"])
def test_g2_matches_variance_growth(sde):
    """For dx = f x dt + g dW: d Var/dt = 2 f Var + g², with Var = std² + α² (unit data)."""
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6

    def var(tt):
        return sde.std(tt) ** 2 + sde.alpha(tt) ** 2

    dvar = (var(t + h) - var(t - h)) / (2 * h)
    torch.testing.assert_close(
        dvar, 2 * sde.drift_coef(t) * var(t) + sde.g2(t), rtol=1e-5, atol=1e-6
    )


def test_vp_is_variance_preserving_and_ve_weight_constant():
    vp, ve = VPSDE(), VESDE()
    t = torch.linspace(1e-3, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(vp.std(t) ** 2 + vp.alpha(t) ** 2, torch.ones_like(t))
    w = ve.loss_weight(t, "g2") * ve.sigma(t) ** 2
    torch.testing.assert_close(w, torch.ones_like(t))
    assert ve.prior_std() == pytest.approx(math.sqrt(15.0**2 + 1))
    assert vp.prior_std() == pytest.approx(1.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown SDE 'x'"):
        make_sde("x")
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VESDE(2.0, 1.0)
    with pytest.raises(ValueError, match="unknown loss weighting"):
        VESDE().loss_weight(torch.tensor([0.5]), "nope")

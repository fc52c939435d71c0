"""Upper limits as limit tokens: a model trained on censored simulations recovers the
analytic censored posterior p(θ | x < a) ∝ N(θ; 0, σ_p²) Φ((a - θ)/σ_n), without guidance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dasbi.config import from_dict
from dasbi.errors import DataError
from dasbi.inputs import model_inputs
from dasbi.loss import training_state
from dasbi.masks import ConditionMaskConfig
from dasbi.network import ABSENT, LATENT, LIMIT, OBSERVED
from dasbi.nodes import Node
from dasbi.posterior import Posterior
from dasbi.simulate import SimulateConfig, run_simulate
from dasbi.train import TrainConfig, train
from dasbi.transforms import Standardizer
from simulators.toy import GaussianLinear, GaussianLinearConfig

A = -0.2  # detection threshold: x < A is reported as an upper limit at A
SIGMA = np.sqrt(0.1)


@pytest.fixture(scope="module")
def censored(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    sims = {"name": "gaussian_linear", "dim": 2, "detection_threshold": A}
    data = run_simulate(
        from_dict(SimulateConfig, {"num": 6000, "seed": 3, "simulator": sims}),
        root / "gl.h5",
        progress=False,
    )
    cfg = from_dict(
        TrainConfig,
        {
            "network": {"dim": 32, "depth": 2, "heads": 2},
            "batch_size": 256,
            "warmup_steps": 50,
            "val_every": 200,
            "lr": 2e-3,
            "max_steps": 1200,
        },
    )
    train(data, cfg, out=root / "model", progress=False)
    return root / "model"


def test_censored_simulator_reports_limits_at_the_threshold():
    sim = GaussianLinear(GaussianLinearConfig(dim=2, detection_threshold=A))
    rng = np.random.default_rng(0)
    x = sim.simulate(sim.sample_prior(5000, rng), rng)["x"]
    frac = x.upper_limit.mean()
    assert 0.25 < frac < 0.42  # P(x < -0.2) with x ~ N(0, 0.2) is 0.33
    assert np.all(x.values[x.upper_limit] == A) and np.all(x.values[~x.upper_limit] >= A)
    mean, sd = sim.censored_posterior_moments(A)
    assert mean < -0.1 and 0.2 < sd < SIGMA  # pulled below the threshold, narrower than prior


def test_training_states_condition_on_limits_and_never_target_them():
    values = np.array([[0.1, 0.2, -0.2, 0.3]] * 2000)
    observed = np.ones_like(values, bool)
    limit = np.zeros_like(values, bool)
    limit[:, 2] = True
    nodes = [Node(n, "parameter", "theta") for n in ("t1", "t2")]
    nodes += [Node(n, "observable", "x") for n in ("x1", "x2")]
    std = Standardizer(nodes, np.zeros(4), np.full(4, 0.5))
    inputs = model_inputs(values, np.full_like(values, 0.3), observed, limit, std)
    assert torch.all(inputs.values[:, 2] != 0)  # the standardised limit is the token's value
    is_param = torch.tensor([True, True, False, False])
    st = training_state(inputs, is_param, ConditionMaskConfig(), torch.Generator().manual_seed(0))
    assert set(st[:, 2].unique().tolist()) <= {LIMIT, ABSENT}  # never LATENT, never OBSERVED
    assert (st[:, 2] == LIMIT).float().mean() > 0.3
    assert (st[:, 3] == OBSERVED).any() and (st[:, 3] == LATENT).any()


def test_limit_tokens_recover_the_censored_posterior(censored):
    post = Posterior.load(censored)
    assert post.limit_mode == "tokens"
    sim = GaussianLinear(GaussianLinearConfig(dim=2))
    mean2, sd2 = sim.censored_posterior_moments(A)
    # x_1 measured, x_2 only an upper limit at A
    x = {"x_1": np.array([0.3]), "x_2": np.array([A])}
    errors = {"x_1": np.array([SIGMA]), "x_2": np.array([SIGMA])}
    limits = {"x_2": np.array([True])}
    th = post.sample((4000,), x=x, errors=errors, upper_limits=limits, seed=0)[:, 0].numpy()
    m1, c1 = sim.posterior_mean_cov(np.array([0.3, 0.0]))
    assert th[:, 0].mean() == pytest.approx(m1[0], abs=0.05)
    assert th[:, 0].std() == pytest.approx(np.sqrt(c1[0, 0]), rel=0.25)
    assert th[:, 1].mean() == pytest.approx(mean2, abs=0.06)
    assert th[:, 1].std() == pytest.approx(sd2, rel=0.25)
    # a detection at the same value says something else: θ_2 near A/2, not below it
    det = post.sample((2000,), x=x, errors=errors, seed=0)[:, 0].numpy()
    assert det[:, 1].mean() == pytest.approx(A / 2, abs=0.05)
    assert abs(det[:, 1].mean() - th[:, 1].mean()) > 0.1


def test_limit_modes_are_selectable(censored):
    post = Posterior.load(censored)
    x = {"x_1": np.array([0.3]), "x_2": np.array([A])}
    errors = {"x_1": np.array([SIGMA]), "x_2": np.array([SIGMA])}
    limits = {"x_2": np.array([True])}
    guided = post.sample(
        (500,), x=x, errors=errors, upper_limits=limits, seed=0, sampler={"limits": "guidance"}
    )
    assert torch.isfinite(guided).all()
    # bfloat16 network arithmetic gives the same posterior to well within its width
    fp32 = post.sample((4000,), x=x, errors=errors, upper_limits=limits, seed=1)
    bf16 = post.sample(
        (4000,), x=x, errors=errors, upper_limits=limits, seed=1, sampler={"precision": "bfloat16"}
    )
    torch.testing.assert_close(bf16.mean(0), fp32.mean(0), atol=0.02, rtol=0)
    torch.testing.assert_close(bf16.std(0), fp32.std(0), atol=0.02, rtol=0)
    # a censored node asked for as latent is sampled (with guidance) instead of conditioned on
    s = post.sample_nodes(
        (500,), given=x, errors=errors, upper_limits=limits, latent=["theta_2", "x_2"], seed=0
    )
    assert s["x_2"].shape == (500, 1) and torch.isfinite(s["x_2"]).all()


def test_limit_tokens_need_a_model_trained_on_limits(tmp_path):
    data = run_simulate(
        from_dict(
            SimulateConfig,
            {"num": 300, "seed": 0, "simulator": {"name": "gaussian_linear", "dim": 2}},
        ),
        tmp_path / "gl.h5",
        progress=False,
    )
    cfg = from_dict(TrainConfig, {"network": {"dim": 16, "depth": 1, "heads": 2}, "max_steps": 5})
    post = train(data, cfg, progress=False).posterior
    assert post.limit_mode == "guidance"
    with pytest.raises(DataError, match="no upper limits in training"):
        post.sample(
            (10,),
            x=np.array([0.1, 0.2]),
            errors=np.full(2, SIGMA),
            upper_limits=np.array([False, True]),
            sampler={"limits": "tokens"},
        )

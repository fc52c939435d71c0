"""Slow: C2ST of dasbi posteriors against the analytic linear-Gaussian posterior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dasbi.config import from_dict
from dasbi.simulate import SimulateConfig, run_simulate
from dasbi.train import TrainConfig, train

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def test_c2st_against_analytic_posterior(tmp_path):
    from sbi.utils.metrics import c2st

    from simulators import GaussianLinear

    dim = 3
    data = run_simulate(
        from_dict(
            SimulateConfig, {"num": 10_000, "simulator": {"name": "gaussian_linear", "dim": dim}}
        ),
        tmp_path / "gl.h5",
        progress=False,
    )
    cfg = from_dict(TrainConfig, {"max_steps": 6000, "batch_size": 256, "network": {"heads": 2}})
    post = train(data, cfg, progress=False).posterior
    sim = GaussianLinear({"dim": dim})
    rng = np.random.default_rng(0)
    scores = []
    for _ in range(3):
        theta = sim.sample_prior(1, rng)
        x = sim.simulate(theta, rng)["x"].values
        mean, cov = sim.posterior_mean_cov(x[0])
        ref = rng.multivariate_normal(mean, cov, size=4000)
        s = post.sample((4000,), x=x, errors=np.full((1, dim), np.sqrt(0.1)), seed=1)[:, 0]
        scores.append(float(c2st(torch.as_tensor(ref, dtype=torch.float32), s)))
    assert np.mean(scores) < 0.6, scores

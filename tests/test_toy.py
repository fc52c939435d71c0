from __future__ import annotations

import numpy as np
import pytest

from simulators import SIMULATORS, GaussianLinear, TwoMoons, get_simulator


@pytest.mark.parametrize("name", sorted(SIMULATORS))
def test_shapes_and_nodes(name, rng):
    sim = get_simulator(name)()
    out = sim(64, rng)
    nodes = sim.nodes()
    params = [n for n in nodes if n["kind"] == "parameter"]
    assert out.theta.shape == (64, len(params))
    width = sum(b.values.shape[1] for b in out.x.values())
    assert width == len(nodes) - len(params)
    for block in out.x.values():
        assert np.isfinite(block.values).all()
    names = {n["name"] for n in nodes}
    assert all(a in names and b in names for a, b in sim.edges())


@pytest.mark.parametrize("name", sorted(SIMULATORS))
def test_missing_prob_masks_entries(name, rng):
    sim = get_simulator(name)({"missing_prob": 0.5})
    block = next(iter(sim(2000, rng).x.values()))
    frac = 1 - block.observed.mean()
    assert frac == pytest.approx(0.5, abs=0.03)
    assert np.isnan(block.values[~block.observed]).all()


def test_two_moons_geometry(rng):
    sim = TwoMoons()
    theta = np.zeros((5000, 2))
    x = sim.simulate(theta, rng)["x"].values
    r = np.hypot(x[:, 0] - 0.25, x[:, 1])
    assert r.mean() == pytest.approx(0.1, abs=0.002)
    assert r.std() == pytest.approx(0.01, abs=0.002)
    assert (x[:, 0] >= 0.25 - 0.05).all()


def test_gaussian_linear_analytic_posterior(rng):
    sim = GaussianLinear({"dim": 3})
    mean, cov = sim.posterior_mean_cov(np.ones(3))
    np.testing.assert_allclose(mean, 0.5)
    np.testing.assert_allclose(cov, np.eye(3) * 0.05)


def test_bad_theta_is_rejected(rng):
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        TwoMoons().simulate(np.zeros((3, 3)), rng)
    with pytest.raises(ValueError, match="NaN or inf"):
        TwoMoons().simulate(np.full((3, 2), np.nan), rng)


def _dependence(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |correlation| between a or |a - median a| and b or |b - median b|: catches
    the linear dependence of slcp and the ring-shaped one of two_moons."""
    fa = [a, np.abs(a - np.median(a))]
    fb = [b, np.abs(b - np.median(b))]
    return max(abs(np.corrcoef(u, v)[0, 1]) for u in fa for v in fb)


@pytest.mark.parametrize("name", ["slcp", "gaussian_linear", "two_moons"])
def test_declared_graph_matches_conditional_dependence(name, rng):
    """Given θ, two observables are dependent exactly when the DAG links them.

    The graph masks (undirected, directed) block attention between nodes the DAG leaves
    unconnected, so a missing edge (between the two coordinates of an slcp draw, which share
    the correlation tanh θ5, or between x1 and x2 of two_moons, which lie on a ring) would
    make the masked model wrong.
    """
    sim = get_simulator(name)()
    x_names = [n["name"] for n in sim.nodes() if n["kind"] == "observable"]
    theta = sim.sample_prior(1, rng)
    if name == "slcp":
        theta[0, 2:] = [1.2, 1.1, 1.5]  # unit-ish scales, ρ = tanh 1.5 ≈ 0.9
    x = sim.simulate(np.repeat(theta, 20_000, axis=0), rng)["x"].values
    linked = np.zeros((len(x_names),) * 2, bool)
    for p, c in sim.edges():
        if p in x_names and c in x_names:
            i, j = x_names.index(p), x_names.index(c)
            linked[i, j] = linked[j, i] = True
    for i in range(len(x_names)):
        for j in range(i + 1, len(x_names)):
            dep = _dependence(x[:, i], x[:, j])
            if linked[i, j]:
                assert dep > 0.3, (x_names[i], x_names[j], dep)
            else:
                assert dep < 0.05, (x_names[i], x_names[j], dep)


@pytest.mark.parametrize("name,low,high", [("two_moons", -1.0, 1.0), ("slcp", -3.0, 3.0)])
def test_theta_transform_logit_keeps_the_task(name, low, high, rng):
    """``theta_transform: logit`` changes only how the model sees θ (nodes), not the
    simulations: the same seed gives the same θ and x."""
    plain, logit = get_simulator(name)(), get_simulator(name)({"theta_transform": "logit"})
    assert all(n.get("transform", "identity") == "identity" for n in plain.nodes())
    params = [n for n in logit.nodes() if n["kind"] == "parameter"]
    assert params and all(n["transform"] == "logit" for n in params)
    assert all((n["low"], n["high"]) == (low, high) for n in params)
    a = plain(50, np.random.default_rng(3))
    b = logit(50, np.random.default_rng(3))
    np.testing.assert_array_equal(a.theta, b.theta)
    np.testing.assert_array_equal(a.x["x"].values, b.x["x"].values)
    from dasbi.simulate import resolve_simulator

    with pytest.raises(ValueError, match="theta_transform: expected one of 'identity', 'logit'"):
        resolve_simulator({"name": name, "theta_transform": "probit"})

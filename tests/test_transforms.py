from __future__ import annotations

import numpy as np
import pytest

from dasbi.errors import DataError
from dasbi.nodes import Node
from dasbi.transforms import TRANSFORMS, Standardizer

NODES = [
    Node("a", "parameter", "theta", transform="identity"),
    Node("b", "parameter", "theta", transform="log10"),
    Node("c", "observable", "x", transform="log"),
    Node("d", "observable", "x", transform="logit", low=0.0, high=2.0),
]


def sample(rng, n=4000):
    return np.stack(
        [
            rng.normal(3, 2, n),
            10 ** rng.normal(3, 0.5, n),
            np.exp(rng.normal(0, 1, n)),
            rng.uniform(0.01, 1.99, n),
        ],
        axis=1,
    )


def test_fit_forward_inverse(rng):
    x = sample(rng)
    obs = np.ones_like(x, bool)
    std = Standardizer.fit(NODES, [(x[:2000], obs[:2000]), (x[2000:], obs[2000:])])
    y = std.forward(x)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(y.std(0, ddof=1), 1, rtol=1e-9)
    np.testing.assert_allclose(std.inverse(y), x, rtol=1e-9)


@pytest.mark.parametrize("j", range(4))
def test_error_propagation_matches_finite_differences(rng, j):
    x = sample(rng, 50)
    std = Standardizer(NODES, np.zeros(4), np.full(4, 2.0))
    sigma = 1e-6 * np.abs(x)
    e = std.forward_errors(x, sigma, np.ones_like(x, bool))
    dy = std.forward(x + sigma) - std.forward(x)
    np.testing.assert_allclose(e[:, j], np.abs(dy[:, j]), rtol=1e-4)


def test_unobserved_entries_and_domain_errors():
    std = Standardizer(NODES, np.zeros(4), np.ones(4))
    x = np.array([[1.0, np.nan, 2.0, 1.0]])
    y = std.forward(x)
    assert y[0, 1] == 0 and np.isfinite(y).all()
    with pytest.raises(DataError, match="node 'b' .* needs values > 0"):
        std.forward(np.array([[1.0, -5.0, 1.0, 1.0]]))
    with pytest.raises(DataError, match="strictly inside"):
        std.forward(np.array([[1.0, 5.0, 1.0, 2.0]]))
    with pytest.raises(DataError, match="never observed"):
        Standardizer.fit(NODES, [(np.ones((3, 4)), np.zeros((3, 4), bool))])
    with pytest.raises(DataError, match="unknown transform"):
        Standardizer([Node("z", "parameter", "theta", transform="sqrt")], [0.0], [1.0])
    assert set(TRANSFORMS) == {"identity", "log10", "log", "logit"}

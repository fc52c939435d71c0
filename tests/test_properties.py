"""Property-based tests (hypothesis): transform and standardisation round trips, the
magnitude/flux conversions, condition and attention masks, and hard limits of interval
guidance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dasbi.masks import ConditionMaskConfig, GraphMasks, sample_condition_masks
from dasbi.nodes import Node
from dasbi.transforms import TRANSFORMS, Standardizer, get_transform

FAST = settings(max_examples=60, deadline=None)
ERR = math.sqrt(0.1)  # the linear Gaussian task's noise

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
positive = st.floats(1e-30, 1e30, allow_nan=False, allow_infinity=False)


# -- transforms --------------------------------------------------------------------------
@FAST
@given(arrays(np.float64, st.integers(1, 50), elements=positive))
def test_log_transforms_round_trip(x):
    node = Node("a", "parameter", "theta", transform="log10")
    for name in ("log10", "log"):
        t = get_transform(name)
        assert t.domain(x, node).all()
        y = t.forward(x, node)
        np.testing.assert_allclose(t.inverse(y, node), x, rtol=1e-12)
        # the derivative is that of the forward map (finite differences in log space)
        h = 1e-6 * x
        fd = (t.forward(x + h, node) - t.forward(x - h, node)) / (2 * h)
        np.testing.assert_allclose(t.derivative(x, node), fd, rtol=1e-5)


@FAST
@given(
    st.floats(-1e3, 1e3),
    st.floats(1e-3, 1e3),
    arrays(np.float64, st.integers(1, 50), elements=st.floats(1e-6, 1 - 1e-6)),
)
def test_logit_round_trips_inside_the_bounds(low, width, u):
    node = Node("a", "parameter", "theta", transform="logit", low=low, high=low + width)
    x = low + u * width
    t = get_transform("logit")
    assume(t.domain(x, node).all())  # rounding can land a value on a bound
    back = t.inverse(t.forward(x, node), node)
    np.testing.assert_allclose(back, x, rtol=1e-9, atol=1e-9 * width)
    assert not t.domain(np.array([low, low + width]), node).any()


@FAST
@given(
    st.lists(st.sampled_from(["identity", "log10", "log"]), min_size=1, max_size=6),
    st.integers(2, 40),
    st.integers(0, 2**31 - 1),
)
def test_standardizer_round_trip_and_fit(transforms, n_rows, seed):
    rng = np.random.default_rng(seed)
    nodes = [Node(f"n{i}", "observable", "x", transform=t) for i, t in enumerate(transforms)]
    scale = 10 ** rng.uniform(-3, 3, len(nodes))
    values = np.where(
        [t == "identity" for t in transforms],
        rng.normal(0, 1, (n_rows, len(nodes))) * scale,
        np.exp(rng.normal(0, 2, (n_rows, len(nodes)))) * scale,
    )
    observed = rng.random((n_rows, len(nodes))) < 0.8
    observed[:2] = True  # at least two values per node
    std = Standardizer.fit(nodes, [(values, observed)])
    y = std.forward(values, observed)
    assert (y[~observed] == 0).all()  # unobserved entries are 0 in model space
    np.testing.assert_allclose(std.inverse(y)[observed], values[observed], rtol=1e-9)
    # fitted on these rows, the observed standardised values have mean 0 and unit (sample) std
    for j in range(len(nodes)):
        col = y[observed[:, j], j]
        assert abs(col.mean()) < 1e-6 * max(1.0, np.abs(col).max())
        if col.std() > 1e-3:
            assert col.std(ddof=1) == pytest.approx(1.0, rel=1e-6)


@FAST
@given(arrays(np.float64, st.integers(1, 20), elements=finite), st.sampled_from(list(TRANSFORMS)))
def test_values_outside_a_domain_are_refused(x, name):
    node = Node("a", "parameter", "theta", transform=name, low=-1.0, high=1.0)
    t = get_transform(name)
    inside = t.domain(x, node)
    with np.errstate(all="ignore"):
        y = t.forward(x, node)
    assert np.isfinite(y[inside]).all()


# -- magnitudes and fluxes ---------------------------------------------------------------
@FAST
@given(arrays(np.float64, st.integers(1, 30), elements=st.floats(-10, 40)))
def test_ab_magnitudes_and_fluxes_round_trip(mag):
    import astropy.units as u

    from simulators.units import ab_mag_to_fnu

    fnu = ab_mag_to_fnu(mag)  # erg/s/cm²/Hz
    back = (fnu * u.erg / u.s / u.cm**2 / u.Hz).to(u.ABmag).value
    np.testing.assert_allclose(back, mag, atol=1e-9)


@FAST
@given(
    arrays(np.float64, st.integers(1, 30), elements=st.floats(1e3, 1e6)),
    arrays(np.float64, st.integers(1, 30), elements=st.floats(1e-20, 1e-5)),
)
def test_flambda_fnu_round_trip(wave, flam):
    from simulators.units import flam_to_fnu, fnu_to_flam

    n = min(len(wave), len(flam))
    wave, flam = wave[:n], flam[:n]
    np.testing.assert_allclose(fnu_to_flam(flam_to_fnu(flam, wave), wave), flam, rtol=1e-12)


@FAST
@given(
    arrays(np.float64, st.integers(1, 30), elements=st.floats(1e-4, 1e6)),
    st.floats(0.01, 0.5),
)
def test_catalogue_fluxes_become_vega_magnitudes_and_errors(flux_mjy, rel_err):
    """map_catalogue: mJy → m = -2.5 log10(F / F0), σ_m = 1.0857 σ_F / F."""
    from astropy.table import Table

    from dasbi.catalogue import ColumnMap, ColumnSpec, map_catalogue
    from simulators.bandpasses import vega_zero_point_jy

    n = len(flux_mjy)
    t = Table({"id": np.arange(n), "f": flux_mjy, "e": flux_mjy * rel_err})
    cmap = ColumnMap({"2mass_J": ColumnSpec("f", "e", unit="mJy")}, id="id")
    node = Node("2mass_J", "observable", "phot", unit="mag")
    m = map_catalogue(t, cmap, [node])
    zp = vega_zero_point_jy("2mass_J")
    expect = -2.5 * np.log10(flux_mjy * 1e-3 / zp)
    keep = (expect > -5) & (expect < 35)
    np.testing.assert_allclose(m.values["2mass_J"], expect[keep], rtol=1e-10)
    np.testing.assert_allclose(m.errors["2mass_J"], 1.0857 * rel_err, rtol=1e-10)
    # and back: 10^(-0.4 m) F0 is the flux
    np.testing.assert_allclose(
        10 ** (-0.4 * m.values["2mass_J"]) * zp * 1e3, flux_mjy[keep], rtol=1e-9
    )


# -- condition and attention masks -------------------------------------------------------
@st.composite
def mask_problem(draw):
    n = draw(st.integers(2, 8))
    b = draw(st.integers(1, 64))
    is_param = torch.tensor(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    present = torch.tensor(
        draw(st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=b, max_size=b))
    )
    weights = draw(st.lists(st.floats(0, 1), min_size=4, max_size=4))
    assume(sum(weights) > 0)
    return present, is_param, weights, draw(st.integers(0, 2**31 - 1))


@FAST
@given(mask_problem())
def test_condition_masks_never_observe_absent_nodes_nor_everything(problem):
    present, is_param, w, seed = problem
    cfg = ConditionMaskConfig(joint=w[0], posterior=w[1], likelihood=w[2], bernoulli=w[3])
    m = sample_condition_masks(present, is_param, cfg, torch.Generator().manual_seed(seed))
    assert m.shape == present.shape and m.dtype == torch.bool
    assert not (m & ~present).any()
    # a row with every present node observed would teach nothing: never drawn
    has = present.any(1)
    assert not ((m == present).all(1) & has).any()


@st.composite
def dag(draw):
    n = draw(st.integers(2, 7))
    order = draw(st.permutations(list(range(n))))
    pairs = [(order[i], order[j]) for i in range(n) for j in range(i + 1, n)]
    edges = draw(st.lists(st.sampled_from(pairs), min_size=1, max_size=len(pairs), unique=True))
    return n, edges


@FAST
@given(dag(), st.sampled_from(["undirected", "directed"]), st.integers(0, 2**31 - 1))
def test_graph_masks_keep_self_attention_and_the_dag(problem, kind, seed):
    n, edges = problem
    masks = GraphMasks(kind, n, edges)
    gen = torch.Generator().manual_seed(seed)
    observed = torch.rand(16, n, generator=gen) < 0.5
    m = masks(observed)
    assert m.shape == (16, n, n) and m.dtype == torch.bool
    assert torch.diagonal(m, dim1=1, dim2=2).all()  # every node sees itself
    for p, c in edges:
        assert m[:, c, p].all()  # a child always attends to its parent
    if kind == "undirected":
        assert (m == m.transpose(1, 2)).all()


def test_graph_masks_refuse_cycles():
    with pytest.raises(ValueError, match="cycle"):
        GraphMasks("directed", 3, [(0, 1), (1, 2), (2, 0)])


@FAST
@given(
    arrays(np.bool_, st.tuples(st.integers(1, 6), st.integers(1, 8))),
    st.integers(0, 2**31 - 1),
)
def test_token_compaction_and_attention_masks(select, seed):
    """compact() keeps exactly the selected nodes, in order; the attention mask never lets a
    real query see a padded key, and never widens the graph."""
    from dasbi.network import _attn_mask, compact

    sel = torch.from_numpy(select)
    index, valid = compact(sel)
    for row in range(sel.shape[0]):
        want = torch.nonzero(sel[row])[:, 0]
        assert torch.equal(index[row][valid[row]], want)
        assert int(valid[row].sum()) == len(want) and not valid[row, len(want) :].any()
    k = index.shape[1]
    if k == 0:
        return
    gen = torch.Generator().manual_seed(seed)
    graph = torch.rand(sel.shape[0], k, k, generator=gen) < 0.6
    graph |= torch.eye(k, dtype=torch.bool)
    mask = _attn_mask(valid, valid, graph, 0)[:, 0]
    real = valid[:, :, None]
    assert not (mask & real & ~valid[:, None, :]).any()  # no padded keys
    assert not (mask & real & ~graph).any()  # within the graph
    assert mask.any(-1).all()  # every query attends to something (no NaN rows)


# -- interval guidance: hard limits ------------------------------------------------------
@pytest.fixture(scope="module")
def small_posterior(tmp_path_factory):
    from dasbi.config import from_dict
    from dasbi.posterior import Posterior
    from dasbi.simulate import SimulateConfig, run_simulate
    from dasbi.train import TrainConfig, train

    root = tmp_path_factory.mktemp("props")
    sims = {"name": "gaussian_linear", "dim": 2}
    data = run_simulate(
        from_dict(SimulateConfig, {"num": 2000, "seed": 2, "simulator": sims}),
        root / "gl.h5",
        progress=False,
    )
    cfg = from_dict(
        TrainConfig,
        {
            "network": {"dim": 32, "depth": 2, "heads": 2},
            "batch_size": 256,
            "warmup_steps": 20,
            "val_every": 100,
            "lr": 2e-3,
            "max_steps": 300,
        },
    )
    train(data, cfg, out=root / "m", progress=False)
    return Posterior.load(root / "m")


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.floats(-1.0, 1.0),
    st.floats(-1.0, 1.0),
    st.sampled_from(["heun", "dpm2m", "euler_maruyama"]),
    st.integers(0, 1000),
)
def test_guided_samples_respect_hard_limits(small_posterior, limit, x1, method, seed):
    """x_2 < limit (an upper limit, sampled as a latent with guidance) holds for every
    sample, whatever the limit, the other observation and the solver."""
    out = small_posterior.sample_nodes(
        (64,),
        {"x_1": np.array([x1, 0.0]), "x_2": np.array([limit, limit - 0.5])},
        errors={"x_1": ERR, "x_2": ERR},
        upper_limits={"x_2": np.array([True, True])},
        latent=["theta_1", "theta_2", "x_2"],
        sampler={"method": method},
        steps=12,
        seed=seed,
    )
    x2 = out["x_2"].numpy()
    assert x2.shape == (64, 2) and np.isfinite(x2).all()
    assert (x2[:, 0] <= limit + 1e-6).all() and (x2[:, 1] <= limit - 0.5 + 1e-6).all()
    assert np.isfinite(out["theta_1"].numpy()).all()


def test_without_hard_limits_soft_guidance_can_cross(small_posterior):
    """The redraw step is what makes the limit hard: the soft guidance alone lets some
    samples across a limit far in the tail (so the property above is not vacuous)."""
    common = dict(
        errors={"x_1": ERR, "x_2": ERR},
        upper_limits={"x_2": np.array([True])},
        latent=["theta_1", "theta_2", "x_2"],
        steps=12,
        seed=0,
    )
    given_ = {"x_1": np.array([0.8]), "x_2": np.array([-1.0])}
    soft = small_posterior.sample_nodes(
        (2000,), given_, sampler={"method": "heun", "hard_limits": False}, **common
    )["x_2"].numpy()
    hard = small_posterior.sample_nodes((2000,), given_, sampler={"method": "heun"}, **common)[
        "x_2"
    ].numpy()
    assert (soft > -1.0).mean() > 0.0
    assert (hard <= -1.0 + 1e-6).all()
    assert math.isfinite(float(np.median(hard)))

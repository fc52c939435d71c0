"""The Simformer network: shapes, gradients, masking, and exactness of the cached two streams
and of the joint (uncached) transformer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dasbi.masks import GraphMasks
from dasbi.network import LATENT, OBSERVED, NetworkConfig, Simformer

N = 6
IS_OBS = torch.tensor([False, False, True, True, True, True])


def make_net(**kw) -> Simformer:
    torch.manual_seed(0)
    net = Simformer(N, IS_OBS, NetworkConfig(dim=32, depth=2, heads=4, **kw))
    # the output layer starts at zero; perturb it so that outputs depend on the inputs
    torch.nn.init.normal_(net.out.weight, std=0.5)
    return net


def inputs(b=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(b, N, generator=g)
    errors = torch.rand(b, N, generator=g) * IS_OBS
    errors[0, 2] = 0.0  # an exact observable
    state = torch.full((b, N), LATENT)
    state[:, 2:] = OBSERVED
    state[1, 3] = -1  # a missing observable
    state[2, :] = LATENT  # joint
    if b > 3:
        state[3, 0] = OBSERVED  # a mixed conditional
    return values, errors, state


def run(net, values, errors, state, x=None, sigma=None, graph=None):
    cache = net.encode(values, errors, state, graph)
    if x is None:
        x = torch.gather(values, 1, cache.lat_index)
    if sigma is None:
        sigma = torch.full((values.shape[0],), 0.7)
    return cache, net.denoise(cache, x, sigma)


def test_shapes_finite_and_gradients_reach_every_embedding():
    net = make_net()
    values, errors, state = inputs()
    cache, d = run(net, values, errors, state)
    assert d.shape == cache.lat_index.shape and torch.isfinite(d).all()
    d.sum().backward()
    for name in (
        "node_emb.weight",
        "state_emb.weight",
        "value_emb.weight",
        "exact_emb",
        "err_mlp.0.weight",
        "time_mlp.0.weight",
        "blocks.0.qkv.weight",
    ):
        grad = dict(net.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert net.node_emb.weight.requires_grad  # learned, not frozen


@pytest.mark.parametrize("kv_cache", [True, False])
def test_missing_and_latent_values_do_not_leak(kv_cache):
    net = make_net(kv_cache=kv_cache)
    values, errors, state = inputs()
    _, d0 = run(net, values, errors, state)
    v2 = values.clone()
    v2[1, 3] = 100.0  # the missing node of example 1
    cache, d1 = run(net, v2, errors, state)
    valid = cache.lat_valid
    torch.testing.assert_close(d0[valid], d1[valid])
    # latent nodes enter only through x, never through `values`
    v3 = values.clone()
    v3[state == LATENT] += 5.0
    x = torch.gather(values, 1, cache.lat_index)
    _, d3 = run(net, v3, errors, state, x=x)
    torch.testing.assert_close(d0[valid], d3[valid])
    # an observed value does change the latent outputs
    v4 = values.clone()
    v4[0, 4] += 1.0
    _, d4 = run(net, v4, errors, state)
    assert not torch.allclose(d0[0], d4[0])
    torch.testing.assert_close(d0[1:], d4[1:])


def test_undirected_graph_mask_blocks_information():
    # chain 0 -> 2 -> 3 and 1 -> 4 -> 5: node 0's Markov blanket is {2}
    graph = GraphMasks("undirected", N, [(0, 2), (2, 3), (1, 4), (4, 5)])
    net = make_net()
    values, errors, _ = inputs(b=4)
    state = torch.full((4, N), LATENT)
    state[:, 3:] = OBSERVED
    g = graph(state == OBSERVED)
    _, d0 = run(net, values, errors, state, graph=g)
    v = values.clone()
    v[:, 5] += 3.0  # not in the blanket of 0 or 2 (only of 4)
    _, d1 = run(net, v, errors, state, graph=g)
    cache = net.encode(values, errors, state, g)
    lat_nodes = cache.lat_index[0].tolist()
    assert lat_nodes == [0, 1, 2]
    # after 2 blocks, information travels two hops: 5 -> 4 -> 1, but never into 0's chain
    torch.testing.assert_close(d0[:, 0], d1[:, 0])
    torch.testing.assert_close(d0[:, 2], d1[:, 2])
    assert not torch.allclose(d0[:, 1], d1[:, 1])


def reference_forward(net, values, errors, state, x, sigma, graph=None, joint=False):
    """A plain full-sequence masked transformer over all N tokens, written independently.

    Two streams (``joint`` False): observed tokens attend to observed ones only and never see
    the noise level. Joint: every present token attends to every present token (within the
    graph), and every token gets the time embedding in each block.
    """
    b = values.shape[0]
    latent = state == LATENT
    observed = state == OBSERVED
    present = latent | observed
    idx = torch.arange(N).expand(b, N)
    full_x = values.clone()
    full_x[latent] = 0
    x_full = torch.zeros(b, N)
    lat_pos = [torch.nonzero(latent[i]).flatten() for i in range(b)]
    for i in range(b):
        x_full[i, lat_pos[i]] = x[i, : len(lat_pos[i])]
    s = sigma[:, None]
    c_in = 1 / torch.sqrt(s**2 + 1)
    temb = net.time_embedding(sigma)
    emb = net.node_emb(idx) + net.state_emb(observed.long())
    err = net.err_mlp(net.err_features(torch.log(errors.clamp_min(1e-6)) / 4))
    err = torch.where((errors > 0)[..., None], err, net.exact_emb)
    emb = emb + err * IS_OBS[None, :, None]
    val = torch.where(latent, c_in * x_full, values)
    h = emb + net.value_emb(val[..., None]) + temb[:, None] * latent[..., None]
    # attention: query i attends key j if both present, and (i latent or j observed)
    allow = present[:, :, None] & present[:, None, :]
    if not joint:
        allow &= latent[:, :, None] | observed[:, None, :]
    if graph is not None:
        allow &= graph
    allow |= torch.eye(N, dtype=torch.bool)  # absent queries: anything finite
    for blk in net.blocks:
        h = h + blk.time(temb)[:, None] * (latent[..., None] | joint)
        q, k, v = blk._split(h)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allow[:, None])
        h = blk._finish(h, out)
    f = net.out(net.out_norm(h)).squeeze(-1)
    d = (1 / (s**2 + 1)) * x_full + s * c_in * f
    return [d[i, lat_pos[i]] for i in range(b)]


@pytest.mark.parametrize("kv_cache", [True, False])
@pytest.mark.parametrize("use_graph", [False, True])
def test_two_stream_cache_equals_full_masked_transformer(use_graph, kv_cache):
    net = make_net(kv_cache=kv_cache)
    values, errors, state = inputs(b=6, seed=3)
    state[4] = torch.tensor([LATENT, -1, OBSERVED, -1, LATENT, OBSERVED])
    g = None
    if use_graph:
        gm = GraphMasks("directed", N, [(0, 2), (1, 3), (0, 4), (1, 5), (4, 5)])
        g = gm(state == OBSERVED)
    cache = net.encode(values, errors, state, g)
    x = torch.randn(cache.lat_index.shape)
    sigma = torch.tensor([0.01, 0.5, 2.0, 9.0, 1.0, 3.0])
    d = net.denoise(cache, x, sigma)
    ref = reference_forward(net, values, errors, state, x, sigma, g, joint=not kv_cache)
    other = reference_forward(net, values, errors, state, x, sigma, g, joint=kv_cache)
    assert any(not torch.allclose(a, b) for a, b in zip(ref, other, strict=True) if len(a))
    for i in range(6):
        n_lat = len(ref[i])
        torch.testing.assert_close(d[i, :n_lat], ref[i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kv_cache", [True, False])
def test_cache_expand_matches_repeated_inputs(kv_cache):
    net = make_net(kv_cache=kv_cache)
    values, errors, state = inputs(b=3)
    cache = net.encode(values, errors, state).expand(4)
    rep = net.encode(
        values.repeat_interleave(4, 0),
        errors.repeat_interleave(4, 0),
        state.repeat_interleave(4, 0),
    )
    x = torch.randn(12, cache.lat_index.shape[1])
    sigma = torch.rand(12) + 0.1
    torch.testing.assert_close(net.denoise(cache, x, sigma), net.denoise(rep, x, sigma))


def test_preconditioning_limits():
    """At tiny σ the denoiser is ≈ identity; with a zero output layer it is c_skip x."""
    torch.manual_seed(0)
    net = Simformer(N, IS_OBS, NetworkConfig(dim=16, depth=1, heads=2))
    values, errors, state = inputs()
    cache = net.encode(values, errors, state)
    x = torch.randn(cache.lat_index.shape)
    sig = torch.full((5,), 2.0)
    d = net.denoise(cache, x, sig)
    expected = torch.where(cache.lat_valid, x / (1 + 4.0), x)
    torch.testing.assert_close(d, expected)
    with torch.no_grad():
        tiny = net.denoise(cache, x, torch.full((5,), 1e-4))
    assert math.isclose(float(tiny[0, 0]), float(x[0, 0]), rel_tol=1e-6)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        NetworkConfig(dim=30, heads=4)


@pytest.mark.parametrize("kv_cache", [True, False])
@pytest.mark.parametrize("use_graph", [False, True])
def test_shared_prefix_attention_and_shared_noise_level_match_the_plain_path(use_graph, kv_cache):
    net = make_net(kv_cache=kv_cache)
    values, errors, state = inputs(b=4)
    g = None
    if use_graph:
        g = GraphMasks("undirected", N, [(0, 2), (1, 3), (0, 4), (1, 5)])(state == OBSERVED)
    cache = net.encode(values, errors, state, g)
    plain = cache.expand(3)
    shared = cache.expand(3, shared=True)
    x = torch.randn(12, cache.lat_index.shape[1])
    sigma = torch.full((12,), 0.8)
    a = net.denoise(plain, x, sigma)
    b = net.denoise(shared, x, sigma)
    d = net.denoise(plain, x, sigma + torch.linspace(0, 1e-7, 12))  # per-row time path
    valid = plain.lat_valid
    torch.testing.assert_close(a[valid], b[valid], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a, d, rtol=1e-5, atol=1e-6)
    b.sum().backward()  # differentiable (guidance)
    with pytest.raises(ValueError, match="already expanded"):
        shared.expand(2)


def test_joint_transformer_lets_observed_tokens_see_the_latent_ones():
    """Without the key/value cache a latent value reaches another latent node's output
    through an observed token (two blocks: latent → observed → latent); with the cache the
    same path is blocked, so only the direct graph edges carry it."""
    # nodes 0 and 1 latent, 2 observed, the rest absent; 1 attends to itself and to 2, 2 to
    # 0 (its parent), 0 to 2: no path from 0 to 1 except through the observed token
    allow = torch.eye(N, dtype=torch.bool)
    allow[1, 2] = allow[2, 0] = allow[0, 2] = True
    values, errors, _ = inputs(b=4)
    values, errors = values[:2], errors[:2]
    state = torch.full((2, N), -1)
    state[:, :2] = LATENT
    state[:, 2] = OBSERVED
    g = allow.expand(2, -1, -1)
    for kv_cache, moves in ((True, False), (False, True)):
        net = make_net(kv_cache=kv_cache)
        cache = net.encode(values, errors, state, g)
        x = torch.randn(2, 2)
        sigma = torch.full((2,), 0.5)
        d0 = net.denoise(cache, x, sigma)
        x2 = x.clone()
        x2[:, 0] += 2.0
        d1 = net.denoise(cache, x2, sigma)
        assert (not torch.allclose(d0[:, 1], d1[:, 1])) is moves, kv_cache


@pytest.mark.parametrize("kv_cache", [True, False])
def test_take_objects_equals_encoding_those_objects(kv_cache):
    net = make_net(kv_cache=kv_cache)
    values, errors, state = inputs(b=5)
    objects = torch.tensor([3, 0, 3])
    sub = net.encode(values, errors, state).take_objects(objects)
    direct = net.encode(values[objects], errors[objects], state[objects])
    x = torch.randn(3, sub.lat_index.shape[1])  # padded to the widest of all 5 objects
    sigma = torch.tensor([0.3, 1.0, 4.0])
    k = direct.lat_index.shape[1]
    assert torch.equal(sub.lat_valid[:, :k], direct.lat_valid) and not sub.lat_valid[:, k:].any()
    a = net.denoise(sub, x, sigma)[:, :k]
    b = net.denoise(direct, x[:, :k], sigma)
    torch.testing.assert_close(a[direct.lat_valid], b[direct.lat_valid])

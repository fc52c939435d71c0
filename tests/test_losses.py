"""Alignment losses on hand-made cases: zero for identical batches, decreasing as embeddings
align, gradients reaching the inputs, and keypoint-guided OT matching what exact OT cannot."""

from __future__ import annotations

import pytest
import torch

from encoders.losses import (
    ContrastiveLoss,
    KeypointOTLoss,
    OTLoss,
    PairLoss,
    flat_tokens,
    pooled_embedding,
)

METHODS = ["emd", "sinkhorn", "gw", "fgw"]


def test_pooled_embedding_is_the_mean_over_present_modalities():
    z = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [100.0, 100.0]]])
    present = torch.tensor([[True, True, False]])
    torch.testing.assert_close(pooled_embedding(z, present), torch.tensor([[2.0, 1.0]]))
    assert torch.all(pooled_embedding(z, torch.zeros(1, 3, dtype=torch.bool)) == 0)


def test_flat_tokens_zero_invalid_tokens_and_give_mean_squared_differences():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, 4, generator=gen), torch.randn(5, 3, 4, generator=gen)
    mask = torch.ones(5, 3, dtype=torch.bool)
    fa, fb = flat_tokens(a, mask), flat_tokens(b, mask)
    assert fa.shape == (5, 12)
    torch.testing.assert_close(((fa - fb) ** 2).sum(-1), ((a - b) ** 2).mean((1, 2)))
    mask[0, 1] = False
    f = flat_tokens(a + 100.0, mask)  # what an invalid token holds never shows
    assert torch.all(f[0, 4:8] == 0) and torch.all(f[1] != 0)
    with pytest.raises(ValueError, match="tokens"):
        flat_tokens(a, mask[:, :2])


def test_contrastive_loss_decreases_as_modalities_align():
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(64, 1, 16, generator=gen)
    noise = torch.randn(64, 3, 16, generator=gen)
    present = torch.ones(64, 3, dtype=torch.bool)
    present[::4, 2] = False  # a modality missing for some objects
    loss = ContrastiveLoss(temperature=0.1)
    values = [float(loss(base + s * noise, present)) for s in (3.0, 1.0, 0.3, 0.0)]
    assert values == sorted(values, reverse=True)
    assert values[0] - values[-1] > 1.0
    # too few objects with a modality: no term, zero loss with a gradient path
    z = torch.randn(1, 2, 4, requires_grad=True)
    out = loss(z, torch.ones(1, 2, dtype=torch.bool))
    out.backward()
    assert float(out.detach()) == 0.0


def test_learned_temperature_is_a_parameter():
    loss = ContrastiveLoss(temperature=0.2, learn_temperature=True)
    assert loss.temperature == pytest.approx(0.2)
    assert [n for n, _ in loss.named_parameters()] == ["log_temperature"]
    z = torch.randn(8, 2, 4)
    loss(z, torch.ones(8, 2, dtype=torch.bool)).backward()
    assert loss.log_temperature.grad is not None
    with pytest.raises(ValueError, match="temperature"):
        ContrastiveLoss(temperature=0.0)
    with pytest.raises(ValueError, match=r"\(B, M, d\)"):
        ContrastiveLoss()(torch.randn(4, 3), torch.ones(4, 3, dtype=torch.bool))


@pytest.mark.parametrize("method", METHODS)
def test_ot_is_zero_for_identical_batches_and_grows_with_a_shift(method):
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(48, 4, generator=gen, dtype=torch.float64)
    loss = OTLoss(method)
    assert abs(float(loss(z, z.clone()))) < 1e-6
    if method in ("emd", "sinkhorn", "fgw"):  # GW is blind to a rigid shift
        shifted = [float(loss(z, z + s)) for s in (0.5, 1.0, 2.0)]
        assert 0 < shifted[0] < shifted[1] < shifted[2]
    else:
        assert float(loss(z, z * 2.0)) > 0.1  # but not to a change of scale


def test_exact_ot_of_a_translation_is_the_squared_shift():
    z = torch.randn(32, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    shift = torch.tensor([0.3, -0.4, 1.2], dtype=torch.float64)
    assert float(OTLoss("emd")(z, z + shift)) == pytest.approx(float(shift @ shift), rel=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_ot_gradients_reach_both_embeddings(method):
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(24, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = (torch.randn(20, 3, generator=gen, dtype=torch.float64) + 1.0).requires_grad_(True)
    OTLoss(method)(a, b).backward()
    for t in (a, b):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    if method == "emd":  # the envelope-theorem gradient against finite differences
        a2 = a.detach().clone().requires_grad_(True)
        torch.autograd.gradcheck(lambda x: OTLoss("emd")(x, b.detach()), (a2,), eps=1e-6)


def test_ot_bad_inputs():
    with pytest.raises(ValueError, match="unknown OT method"):
        OTLoss("wasserstein")
    with pytest.raises(ValueError, match="z_real"):
        OTLoss()(torch.randn(4, 3), torch.randn(4, 2))


@pytest.mark.parametrize("kind", ["cosine", "l2"])
def test_pair_loss(kind):
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(16, 8, generator=gen)
    loss = PairLoss(kind)
    assert float(loss(z, z)) == pytest.approx(0.0, abs=1e-6)
    far = torch.randn(16, 8, generator=gen)
    values = [float(loss(z, (1 - s) * z + s * far)) for s in (1.0, 0.5, 0.1)]
    assert values == sorted(values, reverse=True) and values[-1] > 0
    x = far.clone().requires_grad_(True)
    loss(z, x).backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="same shape"):
        loss(z, z[:3])


def _clusters(centres, n, gen):
    return torch.cat([c + 0.3 * torch.randn(n, 2, generator=gen) for c in centres])


def test_keypoint_guided_ot_matches_clusters_that_exact_ot_confuses():
    """Three clusters whose positions are permuted between the domains: one known pair per
    cluster lets keypoint-guided OT send each cluster to its partner."""
    gen = torch.Generator().manual_seed(5)
    n = 30
    centres = [torch.tensor([0.0, 0.0]), torch.tensor([5.0, 0.0]), torch.tensor([2.5, 4.0])]
    sim = _clusters(centres, n, gen)
    real = _clusters([centres[1], centres[2], centres[0]], n, gen)  # cluster k moved
    label = torch.arange(3).repeat_interleave(n)
    keys = torch.tensor([0, n, 2 * n])  # one pair per cluster: sim i ↔ real i
    loss = KeypointOTLoss()
    _, plan = loss.plan_and_cost(sim, real, keys, keys)
    correct_kpg = float(plan[label[:, None] == label[None, :]].sum())
    import ot

    exact = ot.emd(
        torch.full((3 * n,), 1 / (3 * n)), torch.full((3 * n,), 1 / (3 * n)), ot.dist(sim, real)
    )
    correct_exact = float(exact[label[:, None] == label[None, :]].sum())
    assert correct_kpg > 0.9 and correct_exact < 0.1
    assert torch.allclose(plan[keys, keys], torch.full((3,), 1 / (3 * n)), atol=1e-9)
    z = sim.clone().requires_grad_(True)
    loss(z, real, keys, keys).backward()
    assert z.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="keypoints"):
        loss(sim, real, keys, keys[:2])

from __future__ import annotations

import pytest
import torch

from dasbi.masks import (
    ConditionMaskConfig,
    GraphMasks,
    sample_condition_masks,
    sample_dropped_nodes,
)

IS_PARAM = torch.tensor([True, True, False, False, False])


def test_masks_are_drawn_per_example_with_the_configured_mix():
    gen = torch.Generator().manual_seed(0)
    present = torch.ones(20000, 5, dtype=torch.bool)
    cfg = ConditionMaskConfig(
        joint=0.25, posterior=0.25, likelihood=0.25, bernoulli=0.25, bernoulli_p=[0.5]
    )
    m = sample_condition_masks(present, IS_PARAM, cfg, gen)
    post = (m == ~IS_PARAM).all(1).float().mean()
    lik = (m == IS_PARAM).all(1).float().mean()
    joint = (~m).all(1).float().mean()
    # Bernoulli(0.5) masks also hit these patterns with probability 1/32 each
    assert post == pytest.approx(0.25 + 0.25 / 32, abs=0.015)
    assert lik == pytest.approx(0.25 + 0.25 / 32, abs=0.015)
    assert joint == pytest.approx(0.25 + 2 * 0.25 / 32, abs=0.015)
    assert len({tuple(r.tolist()) for r in m[:200]}) > 5  # not one mask per batch
    assert not m.all(1).any()  # all-observed masks are reset


def test_absent_nodes_are_never_observed_and_drop_keeps_one():
    gen = torch.Generator().manual_seed(1)
    present = torch.rand(5000, 5, generator=gen) > 0.4
    present[:, 0] = True
    cfg = ConditionMaskConfig(drop_prob=1.0, drop_max=1.0)
    kept = sample_dropped_nodes(present, IS_PARAM, cfg, gen)
    assert not (kept & ~present).any()
    assert kept.any(1).all()
    assert (kept.sum(1) < present.sum(1)).float().mean() > 0.3
    m = sample_condition_masks(kept, IS_PARAM, cfg, gen)
    assert not (m & ~kept).any()
    no_params = sample_dropped_nodes(
        present,
        IS_PARAM,
        ConditionMaskConfig(drop_prob=1.0, drop_max=1.0, drop_parameters=False),
        gen,
    )
    assert torch.equal(no_params[:, :2], present[:, :2])


def test_config_validation():
    with pytest.raises(ValueError, match="must not all be zero"):
        ConditionMaskConfig(joint=0, posterior=0, likelihood=0, bernoulli=0)
    with pytest.raises(ValueError, match="bernoulli_p"):
        ConditionMaskConfig(bernoulli_p=[1.5])


def test_moral_graph_of_a_v_structure():
    # 0 -> 2 <- 1, 2 -> 3: moralising marries 0 and 1
    g = GraphMasks("undirected", 4, [(0, 2), (1, 2), (2, 3)])
    m = g(torch.zeros(1, 4, dtype=torch.bool))[0]
    assert m[0, 1] and m[1, 0] and m[0, 2] and m[2, 3] and m.diagonal().all()
    assert not m[0, 3] and not m[1, 3]
    assert torch.equal(m, m.T)


def test_directed_mask_follows_conditioning():
    g = GraphMasks("directed", 4, [(0, 2), (1, 2), (2, 3)])
    joint = g(torch.zeros(1, 4, dtype=torch.bool))[0]
    assert joint[2, 0] and joint[3, 2] and not joint[0, 2] and not joint[0, 1]
    observed = torch.tensor([[False, False, False, True]])
    post = g(observed)[0]
    # ancestors 0, 1, 2 of the observed node 3 attend to it and to each other
    for a in (0, 1, 2):
        assert post[a, 3]
        for b in (0, 1, 2):
            assert post[a, b]


def test_graph_errors():
    with pytest.raises(ValueError, match="cycle"):
        GraphMasks("undirected", 3, [(0, 1), (1, 2), (2, 0)])
    with pytest.raises(ValueError, match="declares no edges"):
        GraphMasks("undirected", 3, [])
    with pytest.raises(ValueError, match="unknown attention mask"):
        GraphMasks("sparse", 3, [(0, 1)])
    assert GraphMasks("dense", 3)(torch.zeros(2, 3, dtype=torch.bool)) is None

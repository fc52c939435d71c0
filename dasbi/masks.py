r"""Condition masks (which nodes are observed) and attention masks (who attends to whom).

Condition masks are drawn **per example** from a mixture of

* ``joint``: nothing observed, learn p(θ, x);
* ``posterior``: all x observed, learn p(θ | x);
* ``likelihood``: all θ observed, learn p(x | θ);
* ``bernoulli``: each node observed with probability p, for each p in ``bernoulli_p``.

A mask with every present node observed is reset to all-latent (nothing would be learned).
Absent nodes (missing data, or removed for marginalisation) are never observed or latent.

Attention masks are boolean (B, N, N) with ``A[b, i, j] = True`` when node i attends to j:

* ``dense``: every node attends to every node;
* ``undirected``: the moral graph of the simulator's DAG plus self-loops (Markov blankets);
* ``directed``: children attend to parents; conditioning on a node makes its latent
  ancestors attend to it and to each other (the "faithful" update of the reference code).

On top of every graph mask, two rules hold at training and at inference alike: observed
(conditioned) nodes never attend to latent ones, which lets the sampler compute their keys
and values once per object (unless the network is built with ``kv_cache: false``, which
keeps the graph's edges from observed to latent nodes, as the reference code does); and
absent nodes are removed.

References:
    Gloeckler, M. et al. (2024). All-in-one simulation-based inference. ICML.
    Webb, S. et al. (2018). Faithful Inversion of Generative Models for Effective
    Amortized Inference. NeurIPS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .config import param

__all__ = [
    "ConditionMaskConfig",
    "GraphMasks",
    "sample_condition_masks",
    "sample_dropped_nodes",
]


@dataclass
class ConditionMaskConfig:
    """Mixture weights of the per-example condition masks, and node-removal augmentation."""

    joint: float = param(0.2, ge=0.0, help="weight of the joint (all latent) mask")
    posterior: float = param(0.2, ge=0.0, help="weight of the posterior mask (x observed)")
    likelihood: float = param(0.2, ge=0.0, help="weight of the likelihood mask (θ observed)")
    bernoulli: float = param(0.4, ge=0.0, help="total weight of random Bernoulli masks")
    bernoulli_p: list[float] = param(
        default_factory=lambda: [0.3, 0.7], help="observation probabilities of the Bernoulli masks"
    )
    drop_prob: float = param(
        0.3, ge=0.0, le=1.0, help="fraction of examples in which nodes are removed"
    )
    drop_max: float = param(
        0.5, ge=0.0, le=1.0, help="max fraction of nodes removed in such an example"
    )
    drop_parameters: bool = param(True, help="also remove θ nodes (learn marginals)")

    def __post_init__(self) -> None:
        if self.joint + self.posterior + self.likelihood + self.bernoulli <= 0:
            raise ValueError("condition mask weights must not all be zero")
        for p in self.bernoulli_p:
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"bernoulli_p entries must lie in [0, 1], got {p}")


def sample_condition_masks(
    present: Tensor, is_param: Tensor, cfg: ConditionMaskConfig, generator: torch.Generator
) -> Tensor:
    """Draw one condition mask per example.

    Args:
        present: (B, N) bool, nodes that exist in the example (not missing, not removed).
        is_param: (N,) bool, True for θ nodes.
        cfg: Mixture weights.
        generator: Source of randomness.

    Returns:
        (B, N) bool, True where the node is observed (conditioned on).
    """
    b, n = present.shape
    weights = [cfg.joint, cfg.posterior, cfg.likelihood]
    ps = list(cfg.bernoulli_p) or [0.5]
    weights += [cfg.bernoulli / len(ps)] * len(ps)
    probs = torch.tensor(weights, dtype=torch.float64)
    kind = torch.multinomial(probs / probs.sum(), b, replacement=True, generator=generator)
    is_param = is_param.to(present.device)
    masks = torch.zeros(b, n, dtype=torch.bool)
    masks[kind == 1] = ~is_param  # posterior: x observed
    masks[kind == 2] = is_param  # likelihood: θ observed
    u = torch.rand(b, n, generator=generator)
    for i, p in enumerate(ps):
        rows = kind == 3 + i
        masks[rows] = u[rows] < p
    masks &= present
    all_observed = (masks == present).all(dim=1)
    masks[all_observed] = False
    return masks


def sample_dropped_nodes(
    present: Tensor, is_param: Tensor, cfg: ConditionMaskConfig, generator: torch.Generator
) -> Tensor:
    """Randomly remove nodes (marginalisation / missing-data augmentation).

    In a fraction ``drop_prob`` of examples, each removable node is removed with a
    probability drawn from U(0, drop_max). At least one node always stays.

    Returns:
        (B, N) bool, the nodes still present.
    """
    b, n = present.shape
    if cfg.drop_prob <= 0 or cfg.drop_max <= 0:
        return present
    rows = torch.rand(b, 1, generator=generator) < cfg.drop_prob
    rate = torch.rand(b, 1, generator=generator) * cfg.drop_max
    drop = rows & (torch.rand(b, n, generator=generator) < rate)
    if not cfg.drop_parameters:
        drop &= ~is_param
    out = present & ~drop
    empty = ~out.any(dim=1)
    out[empty] = present[empty]
    return out


def _transitive_closure(adj: Tensor) -> Tensor:
    """reach[i, j] = True if there is a directed path i → … → j (length ≥ 1)."""
    reach = adj.clone()
    for _ in range(adj.shape[0]):
        new = reach | (reach.float() @ adj.float() > 0)
        if torch.equal(new, reach):
            break
        reach = new
    return reach


@dataclass
class GraphMasks:
    """Attention masks derived from a DAG over the diffuse nodes.

    Args:
        kind: ``dense``, ``undirected`` or ``directed``.
        num_nodes: N.
        edges: (parent, child) index pairs.
    """

    kind: str
    num_nodes: int
    edges: Sequence[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in ("dense", "undirected", "directed"):
            raise ValueError(
                f"unknown attention mask {self.kind!r}; valid: 'dense', 'undirected', 'directed'"
            )
        n = self.num_nodes
        if self.kind != "dense" and not self.edges:
            raise ValueError(
                f"attention mask {self.kind!r} needs the simulator's dependency graph, but the "
                "dataset declares no edges; use 'dense'"
            )
        dag = torch.zeros(n, n, dtype=torch.bool)  # dag[p, c]: edge p → c
        for p, c in self.edges:
            if p == c:
                raise ValueError(f"graph has a self-loop on node {p}")
            dag[p, c] = True
        self.dag = dag
        reach = _transitive_closure(dag)
        if torch.diagonal(reach).any():
            raise ValueError("the dependency graph has a cycle; it must be a DAG")
        eye = torch.eye(n, dtype=torch.bool)
        # anc[a, i]: a is an ancestor of i
        self.anc = reach
        coparents = (dag.float() @ dag.T.float()) > 0
        self.moral = dag | dag.T | coparents | eye
        self.generative = dag.T | eye  # row = child attends to its parents

    def __call__(self, observed: Tensor) -> Tensor | None:
        """(B, N, N) graph mask for condition masks ``observed`` (B, N); None for dense."""
        if self.kind == "dense":
            return None
        b = observed.shape[0]
        if self.kind == "undirected":
            return self.moral.expand(b, -1, -1)
        latent = ~observed
        anc = self.anc.to(observed.device)
        # latent ancestors a of a conditioned node i attend to i ...
        m = self.generative.to(observed.device).expand(b, -1, -1).clone()
        m |= anc[None] & latent[:, :, None] & observed[:, None, :]
        # ... and to each other (explaining away)
        shared = torch.einsum("ai,bi,ni->nab", anc.float(), anc.float(), observed.float()) > 0
        m |= shared & latent[:, :, None] & latent[:, None, :]
        return m

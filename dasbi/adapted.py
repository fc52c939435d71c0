"""Domain-adapted models: the embedding gap between simulated and real data, and the names
that earlier versions exported from here.

A model trained with `dasbi train --domain-adapt` is a :class:`~dasbi.posterior.Posterior`
that owns its modality encoders (:class:`~dasbi.encoding.ModalityEncoders`);
``AdaptedPosterior`` is the same class under its old name. The encoders, their
configuration and :func:`~dasbi.encoding.encode` live in :mod:`dasbi.encoding`.
"""

from __future__ import annotations

import os

import torch

from encoders.losses import pooled_embedding

from .dataset import Dataset
from .encoding import (
    EncoderConfig,
    ModalityEncoders,
    build_encoders,
    check_observables,
    encode,
    inputs_for,
    modality_groups,
    modality_specs,
    open_dataset,
)
from .posterior import Posterior

#: the old name of a Posterior with modality encoders
AdaptedPosterior = Posterior

__all__ = [
    "AdaptedPosterior",
    "EncoderConfig",
    "ModalityEncoders",
    "build_encoders",
    "check_observables",
    "embedding_gap",
    "encode",
    "inputs_for",
    "modality_groups",
    "modality_specs",
    "open_dataset",
]


@torch.no_grad()
def embedding_gap(
    post: Posterior,
    sim: str | os.PathLike | Dataset,
    real: str | os.PathLike | Dataset,
    rows: int = 1000,
) -> float:
    """Sim–real discrepancy of the pooled embeddings, scale-free.

    The exact OT cost (squared Euclidean) between the first ``rows`` objects of each
    dataset, divided by the mean squared distance between simulated objects: 0 when the
    domains are indistinguishable, order 1 or more when they are apart.
    """
    import ot

    ref = post.all_nodes
    ds_s, ds_r = open_dataset(sim, "simulated data"), open_dataset(real, "real data")
    zs = []
    for ds, enc in ((ds_s, post.encoders), (ds_r, post.real_encoders or post.encoders)):
        inp = inputs_for(ds, ref, post.x_standardizer).take(slice(0, rows))
        enc.eval()
        _, _, z, present = encode(enc, post.specs, inp)
        zs.append(pooled_embedding(z, present).double())
    a = torch.full((len(zs[0]),), 1.0 / len(zs[0]), dtype=torch.float64)
    b = torch.full((len(zs[1]),), 1.0 / len(zs[1]), dtype=torch.float64)
    cost = float(ot.emd2(a, b, ot.dist(zs[0], zs[1])))
    spread = float(ot.dist(zs[0], zs[0]).mean())
    return cost / max(spread, 1e-12)

"""Turning dataset rows or user observations into model inputs: one path for both.

Training batches (from :class:`~dasbi.dataset.Dataset`) and inference queries (from
:meth:`~dasbi.posterior.Posterior.sample`) both pass through :func:`model_inputs`, so
missingness, upper limits and uncertainty encoding cannot differ between the two.

Conventions (see also :mod:`simulators.base`):

* a node is *present* when its value is observed and is not an upper limit;
* an upper limit is a censored value: its (standardised) limit sits in ``values`` and the
  model sees it as a *limit token* (:data:`dasbi.network.LIMIT`) wherever the node is
  conditioned on, in training and at inference alike; it is never a latent target, since
  the true value is unknown;
* uncertainties are mapped to model space by the node's transform (first order).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .dataset import Block
from .errors import DataError
from .nodes import NodeSet
from .transforms import Standardizer

__all__ = ["ModelInputs", "context_tensors", "diffuse_arrays", "model_inputs"]


@dataclass
class ModelInputs:
    """Diffuse nodes of a batch in model space.

    Attributes:
        values: (B, N) float32 standardised values (the limit for upper limits), 0 where
            not observed.
        errors: (B, N) float32 uncertainties in model space, 0 where unknown or exact.
        present: (B, N) bool, observed values that are not limits.
        limit: (B, N) bool, upper limits (value stored in ``limit_value``).
        limit_value: (B, N) float32 physical limit values (NaN elsewhere).
        context: Context (vector) nodes by name, each (flux, errors, valid) of shape (B, L):
            spectra for the modality encoders of `dasbi train --domain-adapt`.
    """

    values: Tensor
    errors: Tensor
    present: Tensor
    limit: Tensor
    limit_value: np.ndarray
    context: dict[str, tuple[Tensor, Tensor, Tensor]] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.values.shape[0]

    def take(self, index: slice | Tensor) -> ModelInputs:
        idx = index if isinstance(index, slice) else index.cpu().numpy()
        return ModelInputs(
            self.values[index],
            self.errors[index],
            self.present[index],
            self.limit[index],
            self.limit_value[idx],
            {k: (f[index], e[index], m[index]) for k, (f, e, m) in self.context.items()},
        )


def diffuse_arrays(
    blocks: Mapping[str, Block], nodes: NodeSet
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Concatenate the diffuse groups of a batch in node order.

    Returns values, errors, observed and upper_limit, each (B, N_diffuse).
    """
    cols: dict[str, list[np.ndarray]] = {
        "values": [],
        "errors": [],
        "observed": [],
        "upper_limit": [],
    }
    for group in nodes.groups:
        if nodes.group(group)[0].role != "diffuse":
            continue
        if group not in blocks:
            raise DataError(f"batch lacks the group {group!r}; groups: {sorted(blocks)}")
        for key in cols:
            cols[key].append(np.asarray(getattr(blocks[group], key)))
    return tuple(np.concatenate(cols[k], axis=1) for k in cols)  # type: ignore[return-value]


def model_inputs(
    values: np.ndarray,
    errors: np.ndarray,
    observed: np.ndarray,
    upper_limit: np.ndarray,
    standardizer: Standardizer,
) -> ModelInputs:
    """Standardise physical arrays (B, N) of the diffuse nodes into :class:`ModelInputs`."""
    values = np.asarray(values, np.float64)
    errors = np.asarray(errors, np.float64)
    observed = np.asarray(observed, bool)
    upper_limit = np.asarray(upper_limit, bool) & observed
    present = observed & ~upper_limit
    bad = present & ~np.isfinite(values)
    if bad.any():
        j = int(np.argwhere(bad)[0, 1])
        raise DataError(
            f"node {standardizer.nodes[j].name!r} is marked observed but its value is NaN or "
            "inf; mark it unobserved instead"
        )
    bad = present & ~(np.isfinite(errors) & (errors >= 0))
    if bad.any():
        j = int(np.argwhere(bad)[0, 1])
        raise DataError(
            f"node {standardizer.nodes[j].name!r} has an uncertainty that is negative, NaN or "
            "inf; uncertainties must be finite and >= 0"
        )
    y = standardizer.forward(values, present | upper_limit)
    # limits keep their uncertainty (the survey's error at the limit) for the error embedding
    has_err = observed & np.isfinite(errors) & np.isfinite(values)
    e = standardizer.forward_errors(values, np.where(has_err, np.abs(errors), 0.0), has_err)
    limit_value = np.where(upper_limit, values, np.nan).astype(np.float32)
    return ModelInputs(
        values=torch.from_numpy(y.astype(np.float32)),
        errors=torch.from_numpy(e.astype(np.float32)),
        present=torch.from_numpy(present),
        limit=torch.from_numpy(upper_limit),
        limit_value=limit_value,
    )


def context_tensors(
    blocks: Mapping[str, Block], nodes: NodeSet
) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """The context (vector) nodes of ``blocks`` as (flux, errors, valid) tensors (B, L).

    A pixel is valid where it is observed and its flux and error are finite; invalid pixels
    hold 0 (the spectrum encoders mask them).
    """
    out = {}
    for node in nodes.context:
        if node.modality not in blocks:
            continue
        b = blocks[node.modality]
        flux = np.asarray(b.values, np.float32)
        err = np.asarray(b.errors, np.float32)
        ok = np.asarray(b.observed, bool) & np.isfinite(flux) & np.isfinite(err)
        out[node.name] = (
            torch.from_numpy(np.where(ok, flux, 0.0).astype(np.float32)),
            torch.from_numpy(np.where(ok, err, 0.0).astype(np.float32)),
            torch.from_numpy(ok),
        )
    return out

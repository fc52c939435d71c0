r"""Transforms from physical units into model space, and per-node standardisation.

Each diffuse node has a monotone transform :math:`T` (``identity``, ``log10``, ``log`` or
``logit`` on the node's [low, high] support) followed by a z-score,

.. math:: y = \frac{T(x) - \mu}{s}, \qquad \sigma_y = \frac{|T'(x)|\,\sigma_x}{s},

where the statistics :math:`\mu, s` are estimated on the observed training values.
Uncertainties propagate to first order, as above. All functions work on numpy arrays of
shape (*, N) where N is the number of diffuse nodes, in node order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .nodes import Node

__all__ = ["TRANSFORMS", "Standardizer", "Transform", "get_transform"]


@dataclass(frozen=True)
class Transform:
    """A monotone increasing map with its inverse and derivative."""

    name: str
    forward: Callable[[np.ndarray, Node], np.ndarray]
    inverse: Callable[[np.ndarray, Node], np.ndarray]
    derivative: Callable[[np.ndarray, Node], np.ndarray]
    domain: Callable[[np.ndarray, Node], np.ndarray]
    domain_text: str


def _bounds(node: Node) -> tuple[float, float]:
    if node.low is None or node.high is None or not node.high > node.low:
        raise DataError(f"node {node.name!r}: the logit transform needs finite low < high")
    return float(node.low), float(node.high)


def _logit_fwd(x: np.ndarray, node: Node) -> np.ndarray:
    lo, hi = _bounds(node)
    u = (x - lo) / (hi - lo)
    return np.log(u) - np.log1p(-u)


def _logit_inv(y: np.ndarray, node: Node) -> np.ndarray:
    lo, hi = _bounds(node)
    return lo + (hi - lo) / (1.0 + np.exp(-y))


def _logit_der(x: np.ndarray, node: Node) -> np.ndarray:
    lo, hi = _bounds(node)
    return (hi - lo) / ((x - lo) * (hi - x))


def _logit_dom(x: np.ndarray, node: Node) -> np.ndarray:
    lo, hi = _bounds(node)
    return (x > lo) & (x < hi)


TRANSFORMS: dict[str, Transform] = {
    "identity": Transform(
        "identity",
        lambda x, n: x,
        lambda y, n: y,
        lambda x, n: np.ones_like(x),
        lambda x, n: np.ones(np.shape(x), bool),
        "any real value",
    ),
    "log10": Transform(
        "log10",
        lambda x, n: np.log10(x),
        lambda y, n: 10.0**y,
        lambda x, n: 1.0 / (x * math.log(10.0)),
        lambda x, n: x > 0,
        "values > 0",
    ),
    "log": Transform(
        "log",
        lambda x, n: np.log(x),
        lambda y, n: np.exp(y),
        lambda x, n: 1.0 / x,
        lambda x, n: x > 0,
        "values > 0",
    ),
    "logit": Transform(
        "logit",
        _logit_fwd,
        _logit_inv,
        _logit_der,
        _logit_dom,
        "values strictly inside (low, high)",
    ),
}


def get_transform(name: str) -> Transform:
    try:
        return TRANSFORMS[name]
    except KeyError:
        raise DataError(
            f"unknown transform {name!r}; valid transforms are: {', '.join(TRANSFORMS)}"
        ) from None


class Standardizer:
    """Transform + z-score for the diffuse nodes, in node order.

    Args:
        nodes: The diffuse nodes.
        mean, std: (N,) statistics in transformed space.
    """

    def __init__(self, nodes: Sequence[Node], mean: np.ndarray, std: np.ndarray) -> None:
        self.nodes = list(nodes)
        self.transforms = [get_transform(n.transform) for n in self.nodes]
        self.mean = np.asarray(mean, np.float64)
        self.std = np.asarray(std, np.float64)
        if self.mean.shape != (len(self.nodes),) or self.std.shape != (len(self.nodes),):
            raise DataError(
                f"standardisation statistics must have shape ({len(self.nodes)},), got "
                f"{self.mean.shape} and {self.std.shape}"
            )
        if not (np.all(np.isfinite(self.mean)) and np.all(self.std > 0)):
            raise DataError("standardisation statistics must be finite with std > 0")

    # -- fitting -----------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        nodes: Sequence[Node],
        batches: Iterable[tuple[np.ndarray, np.ndarray]],
        min_std: float = 1e-6,
    ) -> Standardizer:
        """Estimate mean and std of T(x) from (values, observed) batches of shape (B, N).

        Uses Chan's parallel update of the first two moments (numerically stable, streaming).
        """
        nodes = list(nodes)
        transforms = [get_transform(n.transform) for n in nodes]
        n_tot = np.zeros(len(nodes))
        mean = np.zeros(len(nodes))
        m2 = np.zeros(len(nodes))
        for values, observed in batches:
            y = cls._forward_raw(nodes, transforms, values, observed)
            for j in range(len(nodes)):
                col = y[observed[:, j], j]
                if col.size == 0:
                    continue
                nb, mb = col.size, col.mean()
                m2b = ((col - mb) ** 2).sum()
                delta = mb - mean[j]
                tot = n_tot[j] + nb
                mean[j] += delta * nb / tot
                m2[j] += m2b + delta**2 * n_tot[j] * nb / tot
                n_tot[j] = tot
        empty = [n.name for n, c in zip(nodes, n_tot, strict=True) if c == 0]
        if empty:
            raise DataError(f"nodes {empty} are never observed in the training data")
        std = np.sqrt(m2 / np.maximum(n_tot - 1, 1))
        return cls(nodes, mean, np.maximum(std, min_std))

    @staticmethod
    def _forward_raw(
        nodes: Sequence[Node],
        transforms: Sequence[Transform],
        values: np.ndarray,
        observed: np.ndarray,
    ) -> np.ndarray:
        values = np.asarray(values, np.float64)
        out = np.zeros_like(values)
        for j, (node, tr) in enumerate(zip(nodes, transforms, strict=True)):
            col = values[..., j]
            obs = observed[..., j]
            ok = tr.domain(np.where(obs, col, np.nan), node) | ~obs
            if not np.all(ok):
                bad = np.asarray(col)[~ok].ravel()[:3]
                raise DataError(
                    f"node {node.name!r} (transform {tr.name!r}) needs {tr.domain_text}; "
                    f"got {bad.tolist()}"
                )
            safe = np.where(obs, col, _safe_point(tr, node))
            out[..., j] = tr.forward(safe, node)
        return out

    # -- mapping -----------------------------------------------------------------------
    def forward(self, values: np.ndarray, observed: np.ndarray | None = None) -> np.ndarray:
        """Physical (*, N) → standardised model space; unobserved entries become 0."""
        values = np.asarray(values, np.float64)
        if observed is None:
            observed = np.isfinite(values)
        y = self._forward_raw(self.nodes, self.transforms, values, observed)
        return np.where(observed, (y - self.mean) / self.std, 0.0)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Standardised model space (*, N) → physical units."""
        y = np.asarray(y, np.float64) * self.std + self.mean
        out = np.empty_like(y)
        for j, (node, tr) in enumerate(zip(self.nodes, self.transforms, strict=True)):
            out[..., j] = tr.inverse(y[..., j], node)
        return out

    def forward_errors(
        self, values: np.ndarray, errors: np.ndarray, observed: np.ndarray
    ) -> np.ndarray:
        """1σ uncertainties (*, N) in model space, |T'(x)| σ / s; 0 where unobserved."""
        values = np.asarray(values, np.float64)
        errors = np.asarray(errors, np.float64)
        out = np.zeros_like(values)
        for j, (node, tr) in enumerate(zip(self.nodes, self.transforms, strict=True)):
            obs = observed[..., j]
            safe = np.where(obs, values[..., j], _safe_point(tr, node))
            out[..., j] = np.where(obs, np.abs(tr.derivative(safe, node)) * errors[..., j], 0.0)
        return out / self.std

    def subset(self, index: Sequence[int]) -> Standardizer:
        index = list(index)
        return Standardizer([self.nodes[i] for i in index], self.mean[index], self.std[index])

    def to_dict(self) -> dict[str, list[float]]:
        return {
            "names": [n.name for n in self.nodes],
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }


def _safe_point(tr: Transform, node: Node) -> float:
    """A value inside the transform's domain, used in place of unobserved entries."""
    if tr.name == "logit":
        lo, hi = _bounds(node)
        return 0.5 * (lo + hi)
    return 1.0

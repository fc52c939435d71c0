"""The simulator interface: prior over θ, forward model θ → x, node and graph declarations.

A simulator declares its nodes as plain dictionaries (name, kind, modality, unit, transform,
role, size, low, high), so that ``simulators`` never depends on ``dasbi``; the dataset file
is the contract between the two. Observations come in :class:`ObsBlock` objects, one per
modality, carrying values, per-value 1σ uncertainties, observed masks and upper-limit flags.

Conventions:
    * ``observed[i, j]`` is True when entry j of object i carries information, either a
      measurement or a limit; unobserved entries hold NaN in ``values``.
    * ``upper_limit[i, j]`` is True when the value is a limit (faintest detectable
      magnitude, or flux upper bound), not a measurement. Limits are always observed.
    * ``errors`` are 1σ uncertainties in the node's unit, 0 for exact values.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = ["ObsBlock", "SimOutput", "Simulator", "observation_columns"]


@dataclass
class ObsBlock:
    """Observations of one modality for N objects.

    Attributes:
        values: (N, D) float32; NaN where not observed.
        errors: (N, D) float32 1σ uncertainties (0 = exact).
        observed: (N, D) bool.
        upper_limit: (N, D) bool; True where ``values`` is an upper limit.
    """

    values: np.ndarray
    errors: np.ndarray
    observed: np.ndarray
    upper_limit: np.ndarray

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim != 2:
            raise ValueError(f"values must have shape (N, D), got {self.values.shape}")
        shape = self.values.shape
        self.errors = np.broadcast_to(np.asarray(self.errors, np.float32), shape).copy()
        self.observed = np.broadcast_to(np.asarray(self.observed, bool), shape).copy()
        self.upper_limit = np.broadcast_to(np.asarray(self.upper_limit, bool), shape).copy()

    @classmethod
    def exact(cls, values: np.ndarray) -> ObsBlock:
        """Fully observed values without uncertainty (e.g. θ of a simulation)."""
        values = np.asarray(values, np.float32)
        return cls(values, 0.0, True, False)

    def __len__(self) -> int:
        return self.values.shape[0]

    def take(self, rows: np.ndarray) -> ObsBlock:
        """The block of the selected ``rows`` (an index or a boolean mask)."""
        return ObsBlock(
            self.values[rows], self.errors[rows], self.observed[rows], self.upper_limit[rows]
        )

    def apply_missing(self, missing: np.ndarray) -> ObsBlock:
        """Mark entries where ``missing`` (N, D) is True as unobserved (value NaN)."""
        observed = self.observed & ~missing
        values = np.where(observed, self.values, np.nan).astype(np.float32)
        return ObsBlock(values, self.errors, observed, self.upper_limit & observed)


@dataclass
class SimOutput:
    """θ and observations for a batch of simulated objects."""

    theta: np.ndarray
    x: dict[str, ObsBlock]

    def __len__(self) -> int:
        return self.theta.shape[0]


class Simulator(abc.ABC):
    """Base class of all simulators.

    Subclasses set ``name`` and ``config_class`` (a dataclass of their options), declare
    ``nodes()``, implement ``simulate`` and give the prior, as ``prior()`` (a torch
    distribution, which sbi baselines can use too) or as ``sample_prior``.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any | None = None) -> None:
        if config is None:
            config = self.config_class()
        elif isinstance(config, Mapping):
            config = self.config_class(**config)
        if not isinstance(config, self.config_class):
            raise TypeError(
                f"{type(self).__name__} expects a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config

    @abc.abstractmethod
    def nodes(self) -> list[dict[str, Any]]:
        """Node declarations, parameters first (see the module docstring)."""

    def edges(self) -> list[tuple[str, str]]:
        """Directed dependency graph as (parent, child) node-name pairs; [] if unknown."""
        return []

    def group_attrs(self) -> dict[str, dict[str, Any]]:
        """Extra per-group attributes to store (e.g. a spectrum's wavelength grid)."""
        return {}

    def prior(self) -> Any:
        """θ's prior as a ``torch.distributions.Distribution`` with event shape (P,), in the
        order of the parameter nodes, or None.

        Write a prior here once: the default :meth:`sample_prior` draws from it, and
        baselines that need a distribution object (sbi's NPE and NPSE in
        `dasbi bench sbibm`) use the same one.
        """
        return None

    def sample_prior(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw θ of shape (n, P) from the prior: by default from :meth:`prior`, with torch's
        generator seeded from ``rng`` (so a seeded run repeats)."""
        dist = self.prior()
        if dist is None:
            raise NotImplementedError(
                f"{type(self).__name__} defines neither prior() nor sample_prior(); define "
                "prior() returning a torch distribution over θ"
            )
        import torch

        seed = int(rng.integers(0, 2**62))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            theta = dist.sample((n,))
        return theta.detach().cpu().double().numpy().reshape(n, -1)

    @abc.abstractmethod
    def simulate(self, theta: np.ndarray, rng: np.random.Generator) -> dict[str, ObsBlock]:
        """Simulate observations for θ of shape (N, P)."""

    def __call__(self, n: int, rng: np.random.Generator) -> SimOutput:
        theta = self.sample_prior(n, rng).astype(np.float32)
        return SimOutput(theta=theta, x=self.simulate(theta, rng))

    @property
    def parameter_names(self) -> list[str]:
        return [n["name"] for n in self.nodes() if n["kind"] == "parameter"]


def observation_columns(table: Any, obs: dict[str, ObsBlock], bands: list[str]) -> None:
    """Add a catalogue's observed columns to an astropy ``table``: ``<band>``,
    ``<band>_error`` and ``<band>_upper_limit`` from the ``photometry`` block, and
    ``parallax``, ``parallax_error`` from ``astrometry`` where there is one."""
    ph = obs["photometry"]
    for j, band in enumerate(bands):
        table[band] = ph.values[:, j]
        table[f"{band}_error"] = ph.errors[:, j]
        table[f"{band}_upper_limit"] = ph.upper_limit[:, j]
    if "astrometry" in obs:
        table["parallax"] = obs["astrometry"].values[:, 0]
        table["parallax_error"] = obs["astrometry"].errors[:, 0]

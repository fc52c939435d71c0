"""Nodes: the variables of the joint model p(θ, x) and their metadata.

Every variable is a node with a name, a kind (``parameter`` for θ, ``observable`` for x), a
modality (``theta``, ``photometry``, ``astrometry``, ``xp_spectrum``, …), a unit, a transform
into model space (for example ``log10``) and a role:

* ``diffuse``: a scalar that the diffusion model generates (θ, photometry, parallax);
* ``context``: a vector (a spectrum) that an encoder turns into tokens the model is always
  conditioned on; its ``size`` is the vector length.

Nodes are grouped by modality. The parameter group is called ``theta``; observable groups
are stored under ``x/<modality>`` in datasets. Within a diffuse group each node is one column.
A context group holds exactly one node whose value is a vector.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .errors import DataError

__all__ = ["Node", "NodeSet", "THETA"]

THETA = "theta"
Kind = Literal["parameter", "observable"]
Role = Literal["diffuse", "context"]
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-\[\]]*$")


@dataclass(frozen=True)
class Node:
    """Metadata of one variable.

    Attributes:
        name: Unique name, e.g. ``"teff"`` or ``"2mass_J"``.
        kind: ``"parameter"`` (θ) or ``"observable"`` (x).
        modality: Group name; ``"theta"`` for parameters.
        unit: Physical unit as an astropy-parsable string ("" for dimensionless).
        transform: Name of the transform into model space (``identity``, ``log10``, …).
        role: ``"diffuse"`` (scalar token) or ``"context"`` (vector for an encoder).
        size: Number of values (1 for diffuse nodes).
        low, high: Optional physical bounds (the prior support for parameters).
        zero_point_jy: For a magnitude node, F_ν [Jy] of magnitude 0 (written by the
            simulator), so that fluxes convert to its magnitudes without the simulators.
        wavelength_um: For a photometric band, its pivot wavelength [µm] (written by the
            simulator; the photometry encoder places the band with it).
    """

    name: str
    kind: Kind
    modality: str
    unit: str = ""
    transform: str = "identity"
    role: Role = "diffuse"
    size: int = 1
    low: float | None = None
    high: float | None = None
    zero_point_jy: float | None = None
    wavelength_um: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise DataError(
                f"node name {self.name!r} is invalid: use letters, digits, '_', '-', '.'"
            )
        if self.kind not in ("parameter", "observable"):
            raise DataError(
                f"node {self.name!r}: kind must be 'parameter' or 'observable', got {self.kind!r}"
            )
        if self.role not in ("diffuse", "context"):
            raise DataError(
                f"node {self.name!r}: role must be 'diffuse' or 'context', got {self.role!r}"
            )
        if self.kind == "parameter" and self.modality != THETA:
            raise DataError(f"parameter node {self.name!r} must have modality 'theta'")
        if self.kind == "observable" and self.modality == THETA:
            raise DataError(f"observable node {self.name!r} cannot use the modality 'theta'")
        if self.role == "diffuse" and self.size != 1:
            raise DataError(f"diffuse node {self.name!r} must have size 1, got {self.size}")
        if self.size < 1:
            raise DataError(f"node {self.name!r}: size must be >= 1, got {self.size}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Node:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise DataError(
                f"node metadata has unknown fields {sorted(unknown)}; valid: {sorted(known)}"
            )
        return cls(**dict(data))


class NodeSet(Sequence[Node]):
    """An ordered collection of nodes with lookups by name and by group.

    Order: parameters first, then observable groups in the order they were declared.
    """

    def __init__(self, nodes: Iterable[Node]) -> None:
        self._nodes = list(nodes)
        names = [n.name for n in self._nodes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"duplicate node names: {dupes}")
        self._index = {n.name: i for i, n in enumerate(self._nodes)}
        for group in self.groups:
            members = self.group(group)
            roles = {n.role for n in members}
            if len(roles) > 1:
                raise DataError(f"group {group!r} mixes diffuse and context nodes")
            if "context" in roles and len(members) != 1:
                raise DataError(f"context group {group!r} must hold exactly one node")

    def __getitem__(self, i: int) -> Node:  # type: ignore[override]
        return self._nodes[i]

    def __len__(self) -> int:
        return len(self._nodes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeSet) and self._nodes == other._nodes

    def __repr__(self) -> str:
        return f"NodeSet({[n.name for n in self._nodes]})"

    @property
    def names(self) -> list[str]:
        return [n.name for n in self._nodes]

    def index(self, name: str) -> int:  # type: ignore[override]
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(
                f"unknown node {name!r}; known nodes: {', '.join(self.names)}"
            ) from None

    def by_name(self, name: str) -> Node:
        return self._nodes[self.index(name)]

    @property
    def groups(self) -> list[str]:
        """Group names in order (``theta`` first if present)."""
        seen: list[str] = []
        for n in self._nodes:
            if n.modality not in seen:
                seen.append(n.modality)
        return seen

    def group(self, modality: str) -> list[Node]:
        return [n for n in self._nodes if n.modality == modality]

    def group_width(self, modality: str) -> int:
        """Number of columns of a group's arrays (nodes for diffuse, size for context)."""
        members = self.group(modality)
        if not members:
            raise KeyError(f"unknown group {modality!r}; groups: {', '.join(self.groups)}")
        return members[0].size if members[0].role == "context" else len(members)

    @property
    def parameters(self) -> list[Node]:
        return [n for n in self._nodes if n.kind == "parameter"]

    @property
    def diffuse(self) -> list[Node]:
        """Scalar nodes in token order: parameters, then diffuse observables."""
        return [n for n in self._nodes if n.role == "diffuse"]

    @property
    def context(self) -> list[Node]:
        return [n for n in self._nodes if n.role == "context"]

    def to_json(self) -> str:
        return json.dumps([n.to_dict() for n in self._nodes])

    @classmethod
    def from_json(cls, text: str) -> NodeSet:
        try:
            items = json.loads(text)
        except (json.JSONDecodeError, TypeError) as err:
            raise DataError(f"node metadata is not valid JSON: {err}") from None
        if not isinstance(items, list):
            raise DataError("node metadata must be a JSON list of node records")
        return cls(Node.from_dict(item) for item in items)

    def check_edges(self, edges: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
        """Validate (parent, child) name pairs of a dependency graph."""
        out = []
        for edge in edges:
            if len(edge) != 2:
                raise DataError(f"a graph edge must be a (parent, child) pair, got {edge!r}")
            a, b = edge
            for name in (a, b):
                if name not in self._index:
                    raise DataError(
                        f"graph edge {a!r} -> {b!r} names unknown node {name!r}; "
                        f"known nodes: {', '.join(self.names)}"
                    )
            out.append((str(a), str(b)))
        return out

"""Name → simulator class registry (errors list the valid names)."""

from __future__ import annotations

from .base import Simulator
from .toy import SLCP, GaussianLinear, TwoMoons

__all__ = ["SIMULATORS", "get_simulator", "register"]

SIMULATORS: dict[str, type[Simulator]] = {}


def register(cls: type[Simulator]) -> type[Simulator]:
    """Class decorator adding a simulator to the registry under ``cls.name``."""
    if cls.name in SIMULATORS and SIMULATORS[cls.name] is not cls:
        raise ValueError(f"a simulator named {cls.name!r} is already registered")
    SIMULATORS[cls.name] = cls
    return cls


for _cls in (TwoMoons, GaussianLinear, SLCP):
    register(_cls)


def names() -> list[str]:
    """All registered simulator names."""
    _lazy()
    return sorted(SIMULATORS)


def _lazy() -> None:
    """Register the astronomical simulators (they import heavier packages)."""
    if "field_stars" not in SIMULATORS:
        from .clusters import YoungClusterSimulator
        from .stars import FieldStars
        from .yso import YSOSimulator

        register(FieldStars)
        register(YSOSimulator)
        register(YoungClusterSimulator)


def get_simulator(name: str) -> type[Simulator]:
    """The simulator class registered as ``name``."""
    _lazy()
    try:
        return SIMULATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown simulator {name!r}; valid simulators are: {', '.join(names())}"
        ) from None

"""Name → simulator class registry (errors list the valid names)."""

from __future__ import annotations

from typing import Any

from .base import Simulator
from .toy import SLCP, GaussianLinear, TwoMoons

__all__ = ["ENTRY_POINT_GROUP", "SIMULATORS", "get_simulator", "names", "register"]

SIMULATORS: dict[str, type[Simulator]] = {}


def register(cls: type[Simulator]) -> type[Simulator]:
    """Class decorator adding a simulator to the registry under ``cls.name``.

    Registering the same class again, or a class of the same module and name (a notebook
    that re-runs a cell, ``importlib.reload``), replaces the entry; another class under a
    taken name is an error.
    """
    _check_class(cls, getattr(cls, "__qualname__", repr(cls)))
    old = SIMULATORS.get(cls.name)
    if old is not None and old is not cls and _qualified(old) != _qualified(cls):
        raise ValueError(
            f"a simulator named {cls.name!r} is already registered ({_qualified(old)}); "
            f"rename {_qualified(cls)} or use it as simulator.name: {_qualified(cls)}"
        )
    SIMULATORS[cls.name] = cls
    return cls


def _qualified(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _check_class(cls: Any, where: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Simulator)):
        raise ValueError(f"{where} is not a subclass of simulators.Simulator")
    for attr in ("name", "config_class"):
        if not hasattr(cls, attr):
            raise ValueError(f"{where} has no class attribute {attr!r} (see simulators.base)")


for _cls in (TwoMoons, GaussianLinear, SLCP):
    register(_cls)


ENTRY_POINT_GROUP = "dasbi.simulators"


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def names() -> list[str]:
    """All registered simulator names, with those of installed plug-ins."""
    _lazy()
    return sorted(set(SIMULATORS) | set(_entry_points()))


def _lazy() -> None:
    """Register the astronomical simulators (they import heavier packages)."""
    if "field_stars" not in SIMULATORS:
        from .clusters import YoungClusterSimulator
        from .galaxia import GalaxiaStars
        from .stars import FieldStars
        from .yso import YSOSimulator

        register(FieldStars)
        register(GalaxiaStars)
        register(YSOSimulator)
        register(YoungClusterSimulator)


def _import_class(spec: str) -> type[Simulator]:
    """``package.module:Class``; the current folder is searched last, as ``python -m`` does."""
    import importlib
    import sys

    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"simulator {spec!r}: give package.module:Class")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module.split(".")[0] or "" in sys.path:
            raise ValueError(f"simulator {spec!r}: cannot import {module!r} ({err})") from None
        sys.path.append("")  # the current folder, as for `python -m`
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as err2:
            raise ValueError(
                f"simulator {spec!r}: cannot import {module!r} ({err2}); put it on PYTHONPATH "
                "or in the current folder"
            ) from None
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"simulator {spec!r}: {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    _check_class(obj, spec)
    return obj


def get_simulator(name: str) -> type[Simulator]:
    """The simulator class for ``name``: a registered name, an installed plug-in (entry
    point group ``dasbi.simulators``) or ``package.module:Class``."""
    if ":" in name:
        return _import_class(name)
    _lazy()
    if name in SIMULATORS:
        return SIMULATORS[name]
    eps = _entry_points()
    if name in eps:
        cls = eps[name].load()
        _check_class(cls, f"entry point {name!r} ({eps[name].value})")
        return cls
    raise ValueError(
        f"unknown simulator {name!r}; valid simulators are: {', '.join(names())}. A simulator "
        "of your own: simulator.name: package.module:Class, or an entry point in the group "
        f"{ENTRY_POINT_GROUP!r} (docs/simulators.md)"
    )

"""Typed configuration: dataclasses validated from YAML and ``--set key=value`` overrides.

A config is a (nested) dataclass. Its defaults are the embedded defaults; a YAML file only
overrides them, and ``--set a.b=value`` overrides the file. Validation happens once, when
the config is built, and reports problems by their dotted path:

* an unknown key names the key and lists the valid ones (with a "did you mean" hint);
* a wrong type names the field, the expected type and what was given;
* an out-of-range value names the field and the allowed range.

Ranges and help texts live in the dataclass field metadata, written with :func:`param`:

>>> from dataclasses import dataclass
>>> @dataclass
... class Optim:
...     lr: float = param(1e-3, gt=0.0, help="learning rate")
>>> from_dict(Optim, {"lr": 0.01}).lr
0.01
>>> from_dict(Optim, {"lr": -1})
Traceback (most recent call last):
...
dasbi.errors.ConfigError: lr: must be > 0.0, got -1

The module only depends on the standard library and PyYAML, so that any dataclass (including
the simulators' own config classes, which never import dasbi) can be validated with it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError

__all__ = [
    "apply_overrides",
    "dumps",
    "fingerprint",
    "from_dict",
    "load_config",
    "merge",
    "param",
    "check_device",
    "presets",
    "read_yaml",
    "resolve_config",
    "save_config",
    "to_dict",
    "valid_keys",
]

T = TypeVar("T")
_MISSING = dataclasses.MISSING


def param(
    default: Any = _MISSING,
    *,
    default_factory: Any = _MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    help: str = "",  # noqa: A002 - mirrors argparse
) -> Any:
    """A dataclass field with an optional numeric range and a help text.

    Args:
        default: The default value.
        default_factory: A factory for mutable defaults (lists, dicts).
        ge, gt, le, lt: Inclusive / exclusive bounds checked on validation.
        help: One-line description, shown by ``dasbi info --config``.
    """
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "help": help}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def valid_keys(cls: type) -> list[str]:
    """Names of the fields of a config dataclass, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _where(path: str) -> str:
    return path if path else "<top level>"


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in get_args(tp) if a is not Ellipsis)
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def _fail(path: str, msg: str) -> typing.NoReturn:
    raise ConfigError(f"{_where(path)}: {msg}")


def _coerce_number(value: Any, tp: type, path: str) -> Any:
    """Accept ints for floats and numeric strings such as '1e4' (YAML reads them as str)."""
    if isinstance(value, bool):
        _fail(path, f"expected {tp.__name__}, got bool {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            _fail(path, f"expected {tp.__name__}, got string {value!r}")
    if tp is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        _fail(path, f"expected an integer, got {value!r}")
    if isinstance(value, int | float):
        value = float(value)
        if math.isnan(value):
            _fail(path, "expected a number, got NaN")
        if math.isinf(value):
            _fail(path, f"expected a finite number, got {value!r}")
        return value
    _fail(path, f"expected {tp.__name__}, got {type(value).__name__} {value!r}")


def _check_range(value: Any, meta: Mapping[str, Any], path: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    checks = (
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    )
    for key, ok, sym in checks:
        bound = meta.get(key)
        if bound is not None and not ok(value, bound):
            _fail(path, f"must be {sym} {bound}, got {value!r}")


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Validate ``value`` against the annotation ``tp`` and return the converted value."""
    if tp is Any or tp is object:
        return value
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            _fail(path, f"expected one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            _fail(path, f"expected {_type_name(tp)}, got null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, path)
            except ConfigError as err:
                errors.append(str(err))
        _fail(path, f"expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, value, path)
    if origin in (list, Sequence, tuple):
        if isinstance(value, str | bytes) or not isinstance(value, Sequence):
            _fail(path, f"expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                _fail(path, f"expected a list of {len(args)} items, got {len(value)}")
            return tuple(
                _convert(v, a, _join(path, i))
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, _join(path, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            _fail(path, f"expected a mapping, got {type(value).__name__} {value!r}")
        key_tp, val_tp = get_args(tp) or (Any, Any)
        return {
            _convert(k, key_tp, path): _convert(v, val_tp, _join(path, str(k)))
            for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "yes", "no"}:
            return value.lower() in {"true", "yes"}
        _fail(path, f"expected true or false, got {value!r}")
    if tp in (int, float):
        return _coerce_number(value, tp, path)
    if tp is str:
        if isinstance(value, str):
            return value
        _fail(path, f"expected a string, got {type(value).__name__} {value!r}")
    if tp is Path:
        if isinstance(value, str | os.PathLike):
            return Path(value)
        _fail(path, f"expected a path, got {type(value).__name__} {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    _fail(path, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def from_dict(cls: type[T], data: Mapping[str, Any] | None, path: str = "") -> T:
    """Build and validate the dataclass ``cls`` from a (possibly partial) mapping.

    Missing keys take their defaults; a mapping given for an option whose default is a
    mapping merges into that default (recursively). Unknown keys, wrong types and
    out-of-range values raise :class:`~dasbi.errors.ConfigError` naming the dotted path of
    the field.
    """
    if data is None:
        data = {}
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = to_dict(data)
    if not isinstance(data, Mapping):
        _fail(path, f"expected a mapping of {cls.__name__} keys, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            names = list(fields)
            hint = difflib.get_close_matches(str(key), names, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            _fail(
                _join(path, str(key)),
                f"unknown key {key!r}{extra}; valid keys are: {', '.join(names)}",
            )
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        fpath = _join(path, name)
        if name in data:
            given = data[name]
            if isinstance(given, Mapping) and field.default_factory is not _MISSING:
                # a mapping-valued option merges into its default mapping, so that
                # `--set real.library_path=X` sets one key instead of dropping the others
                base = field.default_factory()
                if isinstance(base, dict) and base:
                    given = merge(base, given)
            value = _convert(given, hints[name], fpath)
        elif field.default is not _MISSING:
            value = field.default
        elif field.default_factory is not _MISSING:
            value = field.default_factory()
        else:
            _fail(fpath, "is required but missing")
        _check_range(value, field.metadata, fpath)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:
        if isinstance(err, ConfigError):
            raise
        _fail(path, str(err))


def to_dict(obj: Any) -> Any:
    """Plain YAML/JSON-serialisable representation of a config (paths become strings)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def preset_dirs(command: str) -> list[Path]:
    """Folders holding the named configs (presets) of a command, in search order:
    ``./configs/<command>`` and the package's ``simulators/configs/<command>``."""
    import importlib.util

    dirs = [Path.cwd() / "configs" / command]
    spec = importlib.util.find_spec("simulators")
    if spec is not None and spec.submodule_search_locations:
        dirs += [Path(p) / "configs" / command for p in spec.submodule_search_locations]
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def presets(command: str) -> list[str]:
    """Names of the presets of a command (``dasbi simulate --config field_stars``)."""
    return sorted({p.stem for d in preset_dirs(command) for p in d.glob("*.yaml")})


def resolve_config(name_or_path: str | os.PathLike, command: str) -> Path:
    """A config file by path, or a preset by name (with or without ``.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    text = str(name_or_path)
    if "/" not in text and os.sep not in text:
        stem = path.stem if path.suffix in (".yaml", ".yml") else text
        for d in preset_dirs(command):
            cand = d / f"{stem}.yaml"
            if cand.is_file():
                return cand
    else:
        raise ConfigError(f"config file {text!r} does not exist")
    known = presets(command)
    raise ConfigError(
        f"config {text!r} is neither a file nor a preset of `dasbi {command}`; presets: "
        f"{', '.join(known) if known else '(none)'}"
    )


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping with ``yaml.safe_load`` and report problems clearly."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of keys, got {type(data).__name__}"
        )
    return data


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {key!r} is not a mapping, cannot set a sub-key")
        node = child
    node[keys[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings to a nested dict; values are parsed as YAML scalars."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. train.lr=1e-3), got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"--set has an empty key in {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_path(data, key, value)
    return data


def merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    cls: type[T],
    file: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    updates: Mapping[str, Any] | None = None,
) -> T:
    """Defaults ← YAML ``file`` ← ``--set`` ``overrides`` ← explicit ``updates`` (CLI flags)."""
    data: dict[str, Any] = read_yaml(file) if file is not None else {}
    data = apply_overrides(data, overrides)
    if updates:
        data = merge(data, updates)
    return from_dict(cls, data)


def save_config(config: Any, path: str | os.PathLike) -> Path:
    """Write the fully resolved config as YAML, atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    os.replace(tmp, path)
    return path


def dumps(config: Any) -> str:
    """The resolved config as a YAML string (stored in HDF5 and checkpoint provenance)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def fingerprint(obj: Any) -> str:
    """A stable hash of a config (used to decide whether a run can resume)."""
    import hashlib

    blob = json.dumps(to_dict(obj), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def check_device(device: str) -> None:
    """Raise a clear ConfigError for a device this machine does not have."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"device {device!r} is not a torch device (cpu, cuda, cuda:1, mps)"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: no CUDA GPU is available here; use cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: MPS is not available here; use cpu")

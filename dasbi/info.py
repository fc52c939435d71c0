"""`dasbi info`: versions, machine, registries, config schemas, and file descriptions."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .config import to_dict
from .errors import DasbiError, DataError
from .provenance import machine_info, package_versions

__all__ = ["config_schema", "describe_path", "describe_system"]


def _config_class(command: str) -> type:
    if command == "simulate":
        from .simulate import SimulateConfig

        return SimulateConfig
    if command == "train":
        from .train import TrainConfig

        return TrainConfig
    if command == "infer":
        from .infer import InferConfig

        return InferConfig
    from .evaluate import EvaluateConfig

    return EvaluateConfig


def config_schema(cls: type, prefix: str = "") -> list[dict[str, Any]]:
    """Flat list of config keys with type, default, range and help."""
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        )
        if dataclasses.is_dataclass(default):
            rows += config_schema(type(default), prefix=key + ".")
            continue
        bounds = {
            k: f.metadata[k] for k in ("ge", "gt", "le", "lt") if f.metadata.get(k) is not None
        }
        rows.append(
            {
                "key": key,
                "type": str(f.type),
                "default": to_dict(default),
                **({"range": bounds} if bounds else {}),
                "help": f.metadata.get("help", ""),
            }
        )
    return rows


def describe_system(schema: str | None = None) -> dict[str, Any] | list[dict[str, Any]]:
    if schema:
        return config_schema(_config_class(schema))
    from simulators.bandpasses import FILTERS
    from simulators.registry import names as simulator_names
    from simulators.surveys import available_surveys, survey_dirs
    from simulators.yso import MODEL_SETS

    from .bench import BENCHMARKS
    from .config import presets

    return {
        "versions": package_versions(),
        "machine": machine_info(),
        "simulators": simulator_names(),
        "benchmarks": sorted(BENCHMARKS),
        "filters": sorted(FILTERS),
        "surveys": available_surveys(),
        "simulate_presets": presets("simulate"),
        "yso_model_sets": list(MODEL_SETS),
        "survey_folders": [str(d) for d in survey_dirs()],
    }


def describe_path(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise DataError(f"{str(path)!r} does not exist")
    if path.is_dir():
        from .checkpoint import read_meta

        meta = read_meta(path)
        return {"checkpoint": str(path), **{k: v for k, v in meta.items() if k != "files"}}
    from .dataset import Dataset

    try:
        with Dataset(path) as ds:
            attrs = ds.attrs
            return {
                "dataset": str(path),
                "rows": ds.num_rows,
                "schema_version": attrs.get("schema_version"),
                "groups": {g: ds.nodes.group_width(g) for g in ds.groups},
                "nodes": [n.to_dict() for n in ds.nodes],
                "seed": attrs.get("seed"),
                "config": ds.config,
            }
    except DasbiError:
        raise

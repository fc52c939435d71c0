"""Benchmarks: `dasbi bench <name>` writes one JSON file (machine, versions, settings, results).

Benchmarks are not tests. Each compares dasbi against a baseline measured in the same run,
so ratios are meaningful even on a loaded machine.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import apply_overrides, read_yaml
from ..errors import ConfigError, NotAvailableError
from ..fileio import atomic_path
from ..provenance import machine_info, package_versions

__all__ = [
    "BENCHMARKS",
    "append_record",
    "load_records",
    "register_bench",
    "run_bench",
    "settings_stamp",
]

# fn(quick, options, progress) -> (settings, results) or (settings, results, extra)
BenchFn = Callable[..., tuple[Any, ...]]
BENCHMARKS: dict[str, BenchFn | str] = {
    # name -> function, or the module that defines it (imported on first use)
    "sbibm": "dasbi.bench.sbibm",
    "simulate": "dasbi.bench.simulate",
    "sampling": "dasbi.bench.sampling",
    "infer": "dasbi.bench.infer",
    "domain-adapt": "dasbi.bench.domain_adapt",
    "luhman2016": "dasbi.bench.luhman",
    "memory": "dasbi.bench.memory",
    "photospheres": "dasbi.bench.photospheres",
    "yso-real": "dasbi.bench.yso_real",
    "yso-align": "dasbi.bench.yso_align",
    "xp-real": "dasbi.bench.xp_real",
}


def register_bench(name: str) -> Callable[[BenchFn], BenchFn]:
    """Decorator registering ``fn(quick, options, progress) -> (settings, results[, extra])``.

    ``extra`` is a dict merged into the JSON; a ``summary_table`` entry (markdown) is also
    written next to the JSON as ``<name>.md``, and ``figures`` (name → PNG bytes) as
    ``<name>_<figure>.png`` (the JSON lists the file names).
    """

    def deco(fn: BenchFn) -> BenchFn:
        BENCHMARKS[name] = fn
        return fn

    return deco


def _resolve(name: str) -> BenchFn:
    if name not in BENCHMARKS:
        raise ConfigError(
            f"unknown benchmark {name!r}; valid benchmarks are: {', '.join(sorted(BENCHMARKS))}"
        )
    entry = BENCHMARKS[name]
    if isinstance(entry, str):
        import importlib

        try:
            importlib.import_module(entry)
        except ModuleNotFoundError as err:
            if err.name == entry:
                raise NotAvailableError(
                    f"benchmark {name!r} is not implemented in this version of dasbi yet"
                ) from None
            raise
        entry = BENCHMARKS[name]
        if isinstance(entry, str):
            raise NotAvailableError(f"benchmark {name!r} did not register itself")
    return entry


def settings_stamp(cfg: Any, exclude: Sequence[str] = ()) -> str:
    """A 16-character hash of a bench config's settings, less those in ``exclude`` (the
    lists of variants or sets, the partial file, threads): what an interrupted run's partial
    records must share with a rerun to be reused."""
    import hashlib

    from ..config import to_dict

    keep = {k: v for k, v in to_dict(cfg).items() if k not in set(exclude)}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def load_records(
    path: str | os.PathLike | None, stamp: str, key: str | tuple[str, ...]
) -> dict[Any, dict]:
    """The records of an earlier, interrupted run in the JSON-lines file ``path`` whose
    ``settings_stamp`` is ``stamp``, by their ``key`` field (or the tuple of the ``key``
    fields; lines cut short by a crash are skipped); the stamp is removed from the records."""
    done: dict[Any, dict] = {}
    if not path or not Path(path).exists():
        return done
    with open(path) as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.pop("settings_stamp", None) == stamp:
                done[tuple(rec[k] for k in key) if isinstance(key, tuple) else rec[key]] = rec
    return done


def append_record(path: str | os.PathLike | None, rec: dict[str, Any], stamp: str) -> None:
    """Append ``rec`` with its ``settings_stamp`` to the JSON-lines file ``path`` (if any)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(json.dumps({**rec, "settings_stamp": stamp}) + "\n")


def run_bench(
    name: str,
    *,
    out: str | os.PathLike | None = None,
    quick: bool = False,
    config: str | None = None,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> Path:
    """Run benchmark ``name`` and write its JSON; returns the path."""
    fn = _resolve(name)
    options = read_yaml(config) if config else {}
    options = apply_overrides(options, overrides)
    path = Path(out) if out else Path("runs/bench") / f"{name}.json"
    t0 = time.perf_counter()
    out = fn(quick=quick, options=options, progress=progress)
    settings, results = out[0], out[1]
    extra = dict(out[2]) if len(out) > 2 else {}
    figures = extra.pop("figures", {})
    path.parent.mkdir(parents=True, exist_ok=True)
    written = {}
    for key, png in figures.items():
        fig_path = path.with_name(f"{path.stem}_{key}.png")
        with atomic_path(fig_path) as tmp:
            tmp.write_bytes(png)
        written[key] = fig_path.name
    if written:
        extra["figures"] = written
    record = {
        "bench": name,
        "machine": machine_info(),
        "versions": package_versions(),
        "settings": {"quick": quick, **settings},
        "results": results,
        **extra,
        "wall_s": round(time.perf_counter() - t0, 3),
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str))
    if "summary_table" in extra:
        with atomic_path(path.with_suffix(".md")) as tmp:
            tmp.write_text(extra["summary_table"] + "\n")
    return path

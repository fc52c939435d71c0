"""`dasbi simulate`: prior → θ → simulator → x, written as a chunked, resumable dataset.

Chunk ``i`` is generated with the random generator seeded by ``(seed, i)``, so the output
does not depend on the number of workers, on the order in which chunks finish, or on whether
the run was interrupted and resumed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .config import dumps, fingerprint, from_dict, param, save_config, to_dict
from .dataset import Block, DatasetWriter
from .errors import ConfigError, DataError
from .nodes import THETA, Node, NodeSet
from .progress import progress_bar
from .provenance import package_versions
from .raybackend import ray_imap

__all__ = [
    "SimulateConfig",
    "build_simulator",
    "resolve_simulator",
    "run_simulate",
    "simulator_nodes",
]


DEFAULT_SIMULATOR = "two_moons"


@dataclass
class SimulateConfig:
    """Settings of `dasbi simulate` (YAML files in ``configs/simulate/`` override them)."""

    simulator: dict[str, Any] = param(
        default_factory=lambda: {"name": DEFAULT_SIMULATOR},
        help="simulator name plus its own options, e.g. {name: gaussian_linear, dim: 10}",
    )
    num: int = param(10_000, ge=1, help="number of simulations")
    chunk_size: int = param(1_000, ge=1, help="rows per chunk (unit of resume and parallelism)")
    seed: int = param(0, ge=0, help="random seed")
    workers: int = param(1, ge=1, le=1024, help="processes (local) or Ray tasks in flight")
    backend: Literal["local", "ray"] = param("local", help="local processes or Ray")
    ray_address: str | None = param(None, help="Ray cluster address (default: local Ray)")


def resolve_simulator(options: dict[str, Any]) -> dict[str, Any]:
    """Validate ``{name: ..., **options}`` against the simulator's config class.

    Returns the options with every default filled in (for the resolved config).
    """
    from simulators import get_simulator

    if not isinstance(options, dict):
        raise ConfigError("simulator: expected a mapping such as {name: two_moons, ...}")
    options = {"name": DEFAULT_SIMULATOR, **options}
    rest = {k: v for k, v in options.items() if k != "name"}
    try:
        cls = get_simulator(str(options["name"]))
    except ValueError as err:
        raise ConfigError(f"simulator.name: {err}") from None
    cfg = from_dict(cls.config_class, rest, path="simulator")
    # a module:Class simulator keeps its import path, so workers and later commands find it
    name = str(options["name"]) if ":" in str(options["name"]) else cls.name
    return {"name": name, **to_dict(cfg)}


def build_simulator(options: dict[str, Any]) -> Any:
    """Instantiate the simulator described by a (resolved or partial) options mapping."""
    from simulators import get_simulator

    resolved = resolve_simulator(options)
    cls = get_simulator(resolved.pop("name"))
    cfg = from_dict(cls.config_class, resolved, path="simulator")
    try:
        return cls(cfg)
    except FileNotFoundError as err:  # a grid, map or survey file named in the config
        raise ConfigError(f"simulator: {err}") from None
    except ValueError as err:  # a file that exists but cannot be used
        raise DataError(f"simulator {cls.name}: {err}") from None


def simulator_nodes(sim: Any) -> NodeSet:
    """The model nodes a simulator declares."""
    return NodeSet(Node.from_dict(d) for d in sim.nodes())


_CACHE: dict[str, Any] = {}


def _cached_simulator(options: dict[str, Any]) -> Any:
    """One simulator instance per process and option set (loading grids is slow)."""
    key = json.dumps(options, sort_keys=True, default=str)
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = build_simulator(options)
    return _CACHE[key]


def _simulate_chunk(options: dict[str, Any], seed: int, index: int, n: int) -> dict[str, Block]:
    """Simulate the rows of chunk ``index`` (top-level so process pools can pickle it)."""
    sim = _cached_simulator(options)
    rng = np.random.default_rng([seed, index])
    out = sim(n, rng)
    blocks = {THETA: Block.exact(out.theta)}
    blocks.update({k: Block.coerce(v) for k, v in out.x.items()})
    return blocks


def _die_with_parent(parent: int) -> None:
    """Pool initializer: a worker gets SIGKILL when `dasbi simulate` dies (Linux), so a
    killed run leaves no orphaned workers behind; elsewhere it exits if already orphaned."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def _pool_imap(
    pool: ProcessPoolExecutor, fn: Any, jobs: Iterator[tuple[int, tuple[Any, ...]]], workers: int
) -> Iterator[tuple[int, Any]]:
    """Yield ``(key, fn(*args))`` as jobs finish, with at most ``2 × workers`` in flight.

    Results are handed over one at a time, so memory holds a few chunks rather than every
    finished chunk of the run (submitting all jobs at once kept 50 × 200 MB in memory).
    """
    in_flight: dict[Any, int] = {}
    exhausted = False
    while True:
        while not exhausted and len(in_flight) < 2 * workers:
            job = next(jobs, None)
            if job is None:
                exhausted = True
                break
            in_flight[pool.submit(fn, *job[1])] = job[0]
        if not in_flight:
            return
        done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
        for fut in done:
            yield in_flight.pop(fut), fut.result()


def run_simulate(
    cfg: SimulateConfig,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Run the simulations of ``cfg`` into the dataset ``out`` (resuming if possible).

    Returns the path of the finished file. The resolved config is saved next to it as
    ``<out stem>.config.yaml`` and inside its attributes.
    """
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file path such as {out / 'sims.h5'}")
    if out.suffix not in (".h5", ".hdf5"):
        raise ConfigError(f"--out must end in .h5 or .hdf5 (an HDF5 dataset), got {out.name}")
    cfg = dataclasses.replace(cfg, simulator=resolve_simulator(cfg.simulator))
    sim = _cached_simulator(cfg.simulator)
    nodes = simulator_nodes(sim)
    # workers and backend do not change the result, so they are not part of the fingerprint
    fp = fingerprint(
        {k: v for k, v in to_dict(cfg).items() if k not in ("workers", "backend", "ray_address")}
    )
    writer = DatasetWriter(
        out,
        nodes,
        cfg.num,
        cfg.chunk_size,
        attrs={
            "config": dumps(cfg),
            "seed": cfg.seed,
            "versions": package_versions(),
            "simulator": sim.name,
        },
        group_attrs=sim.group_attrs(),
        edges=sim.edges(),
        fingerprint=fp,
        overwrite=overwrite,
    )
    save_config(cfg, out.with_name(out.stem + ".config.yaml"))
    if writer.already_complete:
        return out
    pending = writer.pending()
    bar = progress_bar(
        total=cfg.num,
        initial=cfg.num - sum(np.diff(writer.chunk_range(i))[0] for i in pending),
        desc=f"simulate {sim.name}",
        unit="sim",
        disable=not progress,
    )
    jobs = [(i, *writer.chunk_range(i)) for i in pending]
    with bar:
        if cfg.backend == "ray":
            ray_jobs = [
                (index, (cfg.simulator, cfg.seed, index, stop - start))
                for index, start, stop in jobs
            ]
            for index, blocks in ray_imap(
                _simulate_chunk, ray_jobs, workers=cfg.workers, address=cfg.ray_address
            ):
                writer.write_chunk(index, blocks)
                bar.update(len(blocks[THETA]))
        elif cfg.workers == 1:
            for index, start, stop in jobs:
                writer.write_chunk(
                    index, _simulate_chunk(cfg.simulator, cfg.seed, index, stop - start)
                )
                bar.update(stop - start)
        else:
            with ProcessPoolExecutor(
                cfg.workers, initializer=_die_with_parent, initargs=(os.getpid(),)
            ) as pool:
                jobs_args = (
                    (index, (cfg.simulator, cfg.seed, index, stop - start))
                    for index, start, stop in jobs
                )
                for index, blocks in _pool_imap(pool, _simulate_chunk, jobs_args, cfg.workers):
                    writer.write_chunk(index, blocks)
                    bar.update(len(blocks[THETA]))
                    del blocks
    return writer.finalize()

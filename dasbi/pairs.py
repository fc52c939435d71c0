"""Labelled sim-real pairs: a simulated twin for every real object with known parameters.

RoPE-style calibration (Wehenkel et al. 2024) needs pairs: the same object seen by the real
instrument and by the simulator. For real stars with spectroscopic labels (T_eff, A_V, …),
:func:`twin_theta` draws the *other* parameters from the prior given the labelled ones and
:func:`make_pairs` simulates the twins and writes both sides as datasets whose rows are the
same objects, the ``--pairs SIM REAL`` of ``dasbi train --domain-adapt``.

Conditioning a joint prior (for example T_eff and radius from an isochrone) on some of its
parameters has no closed form in general, so :func:`twin_theta` draws ``pool`` × N prior
samples and gives each object the draw nearest to its labels (in units of the prior's
spread, log10 for positive parameters), then sets the labelled parameters to the labels
exactly. With independent priors this is exact; with joint priors it is a nearest-neighbour
approximation whose resolution grows with ``pool``.

A twin's observables are masked where its real partner has none, so both sides of a pair
carry the same information.

References:
    Wehenkel, A., Gamella, J. L., Sener, O., Behrmann, J., Sapiro, G., Cuturi, M. &
    Jacobsen, J.-H. (2024). Addressing Misspecification in Simulation-based Inference through
    Data-driven Calibration. arXiv:2405.08719.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = ["make_pairs", "pairs_from_catalogue", "twin_theta"]


def twin_theta(
    sim: Any, labels: dict[str, np.ndarray], rng: np.random.Generator, pool: int = 50
) -> np.ndarray:
    """(N, P) parameters whose labelled entries equal ``labels`` and whose others come from
    the simulator's prior given them (see the module docstring).

    Args:
        sim: A simulator (``theta_names``, ``sample_prior``).
        labels: Parameter name → (N,) values; NaN is not allowed (drop such objects).
        rng: Random generator.
        pool: Prior draws per object for the conditioning.
    """
    names = list(sim.theta_names)
    unknown = [k for k in labels if k not in names]
    if unknown:
        raise ConfigError(f"labels {unknown} are not parameters of the simulator; it has {names}")
    if not labels:
        raise ConfigError("twin_theta needs at least one labelled parameter")
    cols = [names.index(k) for k in labels]
    lab = np.stack([np.asarray(v, np.float64) for v in labels.values()], axis=1)
    if not np.all(np.isfinite(lab)):
        raise ConfigError("labels contain NaN or inf: keep only objects with every label")
    n = len(lab)
    draws = sim.sample_prior(max(pool * n, 1000), rng).astype(np.float64)
    sub = draws[:, cols]
    pos = np.all(sub > 0, axis=0) & np.all(lab > 0, axis=0)
    f_sub = np.where(pos, np.log10(np.where(pos, sub, 1.0)), sub)
    f_lab = np.where(pos, np.log10(np.where(pos, lab, 1.0)), lab)
    scale = np.std(f_sub, axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    out = np.empty((n, len(names)))
    used = np.zeros(len(draws), bool)
    for i in range(n):  # nearest unused draw, so that twins do not share nuisances
        d = np.sum(((f_sub - f_lab[i]) / scale) ** 2, axis=1)
        d[used] = np.inf
        k = int(np.argmin(d))
        used[k] = True
        out[i] = draws[k]
    out[:, cols] = lab
    return out


def make_pairs(
    simulator: dict[str, Any],
    real: str | os.PathLike[str],
    labels: dict[str, np.ndarray],
    out_sim: str | os.PathLike[str],
    out_real: str | os.PathLike[str],
    *,
    rows: np.ndarray | None = None,
    seed: int = 0,
    pool: int = 50,
) -> tuple[Path, Path]:
    """Write the pair datasets for the labelled objects of a real dataset.

    Args:
        simulator: The simulator options (``{name: yso, ...}``) of the training set.
        real: A real dataset (``dasbi ingest``) holding the labelled objects.
        labels: Parameter name → (N,) labels of the objects ``rows`` of ``real``.
        out_sim, out_real: Where to write the simulated twins and the real objects.
        rows: Rows of ``real`` that the labels belong to (default: all, in order).
        seed: Random seed of the twins' nuisance parameters and noise.
        pool: See :func:`twin_theta`.

    Returns:
        The two paths, rows aligned.
    """
    from .dataset import Block, Dataset, DatasetWriter
    from .nodes import THETA, NodeSet
    from .simulate import build_simulator, simulator_nodes

    sim = build_simulator(simulator)
    with Dataset(real) as ds:
        blocks = ds.read()
        real_nodes = ds.nodes
    n_real = len(next(iter(blocks.values())).values)
    rows = np.arange(n_real) if rows is None else np.asarray(rows, int)
    for k, v in labels.items():
        if len(v) != len(rows):
            raise ConfigError(f"labels[{k!r}] has {len(v)} values for {len(rows)} rows")
    rng = np.random.default_rng(seed)
    theta = twin_theta(sim, labels, rng, pool)
    x = sim.simulate(theta.astype(np.float32), rng)
    nodes = simulator_nodes(sim)
    twin_blocks = {THETA: Block.exact(theta.astype(np.float32))}
    for key, obs in x.items():
        if key not in blocks:
            raise ConfigError(
                f"the real dataset has no {key!r} observables; ingest it with the "
                "simulation as --like"
            )
        seen = np.asarray(blocks[key].observed)[rows]
        twin_blocks[key] = Block.coerce(obs.apply_missing(~seen))
    real_blocks = {
        key: Block(
            np.asarray(b.values)[rows],
            np.asarray(b.errors)[rows],
            np.asarray(b.observed)[rows],
            np.asarray(b.upper_limit)[rows],
        )
        for key, b in blocks.items()
        if key != THETA
    }
    obs_nodes = NodeSet(nd for nd in real_nodes if nd.kind == "observable")
    p_sim = DatasetWriter.write(Path(out_sim), nodes, twin_blocks)
    p_real = DatasetWriter.write(Path(out_real), obs_nodes, real_blocks)
    return p_sim, p_real


def pairs_from_catalogue(
    catalogue: str | os.PathLike[str],
    survey: str | os.PathLike[str],
    like: str | os.PathLike[str],
    labels: dict[str, str],
    out_sim: str | os.PathLike[str],
    out_real: str | os.PathLike[str],
    *,
    seed: int = 0,
    pool: int = 50,
) -> tuple[Path, Path, int]:
    """`dasbi pairs`: a labelled catalogue → pair datasets for ``--pairs``.

    Args:
        catalogue, survey: The catalogue and its column map (as for ``dasbi ingest``).
        like: The simulated training dataset; its simulator options make the twins.
        labels: Parameter name → catalogue column holding its label (same unit).
        out_sim, out_real: Output datasets.

    Returns:
        The two paths and the number of pairs (objects with every label finite).
    """
    import tempfile

    import h5py
    import yaml

    from .catalogue import catalogue_ids, catalogue_to_dataset, load_column_map, read_catalogue
    from .dataset import Dataset

    with Dataset(like) as ds:
        cfg = yaml.safe_load(ds.config or "{}") or {}
    simulator = cfg.get("simulator")
    if not isinstance(simulator, dict):
        raise ConfigError(f"{like} records no simulator options: make it with dasbi simulate")
    cmap = load_column_map(survey)
    table = read_catalogue(catalogue)
    missing = [c for c in labels.values() if c not in table.colnames]
    if missing:
        raise ConfigError(f"label columns {missing} are not in {catalogue}")
    ids = catalogue_ids(table, cmap) if cmap.id else np.arange(len(table)).astype(str)
    ids = np.char.decode(ids, "utf-8") if ids.dtype.kind == "S" else ids.astype(str)
    lab_all = {}
    for name, col in labels.items():
        c = table[col]
        if c.dtype.kind not in "fiub":
            raise ConfigError(f"label column {col!r} is not numeric (dtype {c.dtype})")
        lab_all[name] = np.ma.asarray(c).astype(np.float64).filled(np.nan)
    with tempfile.TemporaryDirectory() as tmp:
        real, _ = catalogue_to_dataset(catalogue, survey, like, Path(tmp) / "real.h5")
        with h5py.File(real) as f:
            kept = f["source_id"][:]
        kept = np.char.decode(kept, "utf-8") if kept.dtype.kind == "S" else kept.astype(str)
        index = {k: i for i, k in enumerate(ids)}
        src = np.array([index[k] for k in kept])
        ok = np.all([np.isfinite(v[src]) for v in lab_all.values()], axis=0)
        if not ok.any():
            raise ConfigError("no ingested object has every label: nothing to pair")
        rows = np.nonzero(ok)[0]
        lab = {k: v[src][rows] for k, v in lab_all.items()}
        p_sim, p_real = make_pairs(
            simulator, real, lab, out_sim, out_real, rows=rows, seed=seed, pool=pool
        )
    return p_sim, p_real, int(len(rows))

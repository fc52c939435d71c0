"""`dasbi bench memory`: peak RSS of simulate, train and infer on data larger than memory.

Each command runs in its own process, and its peak resident set size comes from
``os.wait4`` (the kernel's ``ru_maxrss`` of that child and its pool workers). Steps:

1. ``dasbi simulate`` writes ``rows`` rows of the linear Gaussian task with ``dim``
   parameters and ``dim`` observables (2 workers).
2. ``dasbi train`` trains on it for ``train_steps`` steps; the rows are streamed from disk
   (``in_memory: false``, which dasbi picks by itself above 2 GiB of model inputs).
3. A FITS catalogue of ``catalogue_rows`` rows (ids plus two mapped observables) is written,
   with duplicate ids planted far apart, and ``dasbi infer`` runs on it until
   ``infer_chunks`` chunks are done (then it is interrupted: the duplicate-id pass has
   covered every row by then, and memory per chunk is constant).
4. Gaia XP (``xp_sources`` > 0): an archive CSV of ``xp_sources`` sources (the three
   sources of GaiaXPy's ``XP_CONTINUOUS_RAW_colour_eq_dr3int6.csv`` test file under new ids)
   is read and sampled as ``dasbi infer`` does (:class:`~dasbi.catalogue.xp.SampledXP`
   into an HDF5 store, then every source looked up in chunks of ``infer_chunk_size``),
   against the whole-file path it replaced (``read_xp`` then ``sample_xp``), each in its
   own process.

The baseline in the same run is the size of the data itself: the model inputs the rows
would take in memory (14 B per node and row) and the files on disk. A bounded run has a
peak RSS far below both and that does not grow with ``rows`` (compare --quick with the
full run).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..config import from_dict, param
from . import register_bench


@dataclass
class MemoryBenchConfig:
    """Settings of the memory benchmark."""

    rows: int = param(50_000_000, ge=1000, help="rows of the simulated dataset")
    dim: int = param(10, ge=1, help="parameters (and observables) per row")
    chunk_size: int = param(1_000_000, ge=100, help="simulate chunk size")
    train_steps: int = param(3000, ge=1, help="training steps (streamed)")
    catalogue_rows: int = param(50_000_000, ge=100, help="rows of the infer catalogue")
    infer_chunks: int = param(4, ge=1, help="infer chunks to run before stopping")
    infer_chunk_size: int = param(5000, ge=1, help="infer chunk size")
    num_samples: int = param(20, ge=1, help="posterior samples per object")
    folder: str | None = param(None, help="work folder (default: a temporary folder)")
    steps: list[str] = param(
        default_factory=lambda: ["pipeline", "xp"],
        help="steps to run: pipeline (simulate, train and infer: 1-3), xp (4)",
    )
    xp_sources: int = param(
        20_000,
        ge=0,
        help="sources of the XP step's archive CSV (41 kB each on disk; 0 skips the step; "
        "needs real/gaia_xp/gaiaxpy_tests from the data folder)",
    )

    def __post_init__(self) -> None:
        bad = [s for s in self.steps if s not in ("pipeline", "xp")]
        if bad:
            raise ValueError(f"unknown steps {bad}; known: ['pipeline', 'xp']")


def _peak(cmd: list[str], stop: Any = None, poll: float = 0.5) -> dict[str, Any]:
    """Run ``cmd``; returns seconds and the peak RSS (MB) of that process (with its pool
    workers), from ``os.wait4``. ``stop()`` returning True interrupts it with SIGINT."""
    env = {**os.environ, "DASBI_PROGRESS": "0"}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        stopped = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if stop is not None and not stopped and stop():
                proc.send_signal(signal.SIGINT)
                stopped = True
            time.sleep(poll)
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        if code != 0 and not (stopped and code == 130):
            err.seek(0)
            tail = err.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(cmd[2:4])} failed (exit {code}): {tail}")
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "stopped_early": stopped,
    }


def _catalogue(path: Path, n: int) -> None:
    """A FITS table of n rows: source_id, two observables and their errors, written in
    blocks (memory ∝ block) with three planted duplicate ids."""
    from astropy.io import fits

    rng = np.random.default_rng(0)
    cols = [
        fits.Column("source_id", "12A"),
        fits.Column("a", "E"),
        fits.Column("b", "E"),
        fits.Column("e_a", "E"),
        fits.Column("e_b", "E"),
    ]
    hdu = fits.BinTableHDU.from_columns(cols, nrows=0)
    hdu.header["NAXIS2"] = n
    block = 1_000_000
    with open(path, "wb") as f:
        f.write(fits.PrimaryHDU().header.tostring().encode())
        f.write(hdu.header.tostring().encode())
        rec = np.dtype([("source_id", "S12"), *((c, ">f4") for c in ("a", "b", "e_a", "e_b"))])
        for a in range(0, n, block):
            m = min(block, n - a)
            r = np.zeros(m, rec)
            r["source_id"] = np.char.add(b"G", np.arange(a, a + m).astype("S11"))
            r["a"], r["b"] = rng.normal(0, 1, m), rng.normal(0, 1, m)
            r["e_a"] = r["e_b"] = 0.3
            for row, dup in ((n // 2, b"G1"), (n - 1, b"G1")):
                if a <= row < a + m:
                    r["source_id"][row - a] = dup
            f.write(r.tobytes())
        pad = (-f.tell()) % 2880
        f.write(b"\0" * pad)


def _simulate_train_infer(cfg: MemoryBenchConfig, root: Path, py: list[str]) -> list[dict]:
    """Steps 1-3 (module docstring)."""
    results: list[dict[str, Any]] = []
    data = root / "sims.h5"
    r = _peak(
        [*py, "simulate", "--simulator", "gaussian_linear", "--num", str(cfg.rows)]
        + ["--set", f"simulator.dim={cfg.dim}", "--chunk-size", str(cfg.chunk_size)]
        + ["--workers", "2", "--seed", "1", "--out", str(data), "--quiet"]
    )
    nodes = 2 * cfg.dim
    sizes = {
        "rows": cfg.rows,
        "nodes": nodes,
        "file_mb": round(data.stat().st_size / 2**20, 1),
        "in_memory_inputs_mb": round(cfg.rows * nodes * 14 / 2**20, 1),
    }
    results.append({"command": "dasbi simulate", **sizes, **r})
    train = [*py, "train", "--data", str(data), "--out", str(root / "model")]
    train += ["--max-steps", str(cfg.train_steps), "--quiet", "--set", "in_memory=false"]
    for kv in ("network.dim=32", "network.depth=2", "network.heads=2", "batch_size=256"):
        train += ["--set", kv]
    train += ["--set", f"val_every={max(1, cfg.train_steps // 6)}"]
    results.append({"command": "dasbi train (streamed)", **sizes, **_peak(train)})
    cat = root / "cat.fits"
    _catalogue(cat, cfg.catalogue_rows)
    smap = root / "map.yaml"
    smap.write_text(
        "name: bench\ncatalogue:\n  id: source_id\n  columns:\n"
        "    x_1: {value: a, error: e_a}\n    x_2: {value: b, error: e_b}\n"
    )
    out = root / "post.h5"
    parts = root / "post.h5.parts"

    def enough() -> bool:
        return parts.is_dir() and len(list(parts.glob("chunk_*.npz"))) >= cfg.infer_chunks

    infer = [*py, "infer", "--model", str(root / "model"), "--catalogue", str(cat)]
    infer += ["--survey", str(smap), "--out", str(out), "--quiet"]
    infer += ["--num-samples", str(cfg.num_samples)]
    infer += ["--set", f"chunk_size={cfg.infer_chunk_size}", "--set", "sampler_steps=10"]
    r = _peak(infer, stop=enough)
    if parts.is_dir():
        done = len(list(parts.glob("chunk_*.npz")))
    elif out.exists():  # it finished between two polls (a small catalogue)
        with h5py.File(out, "r") as f:
            done = -(-int(f.attrs["n_input"]) // cfg.infer_chunk_size)
    else:
        done = 0
    results.append(
        {
            "command": "dasbi infer",
            "rows": cfg.catalogue_rows,
            "file_mb": round(cat.stat().st_size / 2**20, 1),
            "chunks_done": done,
            "rows_done": min(cfg.catalogue_rows, done * cfg.infer_chunk_size),
            **r,
        }
    )
    return results


XP_TESTS = "real/gaia_xp/gaiaxpy_tests"


def _xp_file(path: Path, n: int) -> None:
    """An archive CSV of ``n`` XP sources: GaiaXPy's three colour-equation test sources
    under new ids, written in blocks."""
    import pandas as pd

    from simulators.data import find_data

    src = find_data(f"{XP_TESTS}/xp_continuous/XP_CONTINUOUS_RAW_colour_eq_dr3int6.csv")
    base = pd.read_csv(src, dtype={"source_id": str})
    block = 3000
    for a in range(0, n, block):
        m = min(block, n - a)
        rows = base.iloc[np.arange(m) % len(base)].copy()
        rows["source_id"] = [str(10**15 + i) for i in range(a, a + m)]
        rows.to_csv(path, mode="a" if a else "w", header=not a, index=False)


#: the XP step's child processes: ``dasbi infer``'s path (store, lookups in chunks) and the
#: whole-file path it replaced
_XP_STREAMED = """
import sys, numpy as np
from dasbi.catalogue.xp import SampledXP
path, store, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
sp = SampledXP.load(path, "xp_spectrum", store=store)
ids = sp.source_id.copy()
for a in range(0, len(ids), chunk):
    flux, err = sp.rows(ids[a:a + chunk])
    assert np.isfinite(flux).any(axis=1).all()
"""
_XP_WHOLE = """
import sys
from dasbi.catalogue.xp import read_xp, sample_xp
sample_xp(read_xp(sys.argv[1]), quiet=True)
"""


@register_bench("memory")
def bench_memory(
    quick: bool, options: dict[str, Any], progress: bool
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    if quick:
        small = {"rows": 200_000, "chunk_size": 50_000, "train_steps": 50}
        small |= {"catalogue_rows": 200_000, "infer_chunks": 2, "xp_sources": 300}
        options = {**small, **options}
    cfg = from_dict(MemoryBenchConfig, options)
    py = [sys.executable, "-m", "dasbi.cli"]
    results = []
    with tempfile.TemporaryDirectory(dir=cfg.folder, prefix="dasbi-memory-") as tmp:
        root = Path(tmp)
        if "pipeline" in cfg.steps:
            results += _simulate_train_infer(cfg, root, py)
        if "xp" in cfg.steps and cfg.xp_sources:
            xp = root / "xp.csv"
            _xp_file(xp, cfg.xp_sources)
            size = {"rows": cfg.xp_sources, "file_mb": round(xp.stat().st_size / 2**20, 1)}
            # the sampled spectra that the whole-file path holds: flux and error, float32
            held = {"in_memory_inputs_mb": round(cfg.xp_sources * 343 * 8 / 2**20, 1)}
            streamed = [sys.executable, "-c", _XP_STREAMED, str(xp), str(root / "xp.h5")]
            streamed.append(str(cfg.infer_chunk_size))
            results.append({"command": "XP spectra, streamed (infer)", **size, **held})
            results[-1].update(_peak(streamed))
            results.append({"command": "XP spectra, whole file", **size, **held})
            results[-1].update(_peak([sys.executable, "-c", _XP_WHOLE, str(xp)]))
    lines = [
        "| command | rows | data on disk (MB) | data in memory (MB) | peak RSS (MB) | s |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['command']} | {r['rows']:.3g} | {r['file_mb']} | "
            f"{r.get('in_memory_inputs_mb', '—')} | {r['peak_rss_mb']} | {r['seconds']} |"
        )
    return {**vars(cfg)}, results, {"summary_table": "\n".join(lines)}

"""Crash-resume at random points: `dasbi simulate`, `train`, `infer` and `ingest` are killed
with SIGKILL at random times (in startup, mid-run, while writing checkpoints, parts or the
final file), then rerun with the same arguments. After every kill the output is either
absent or complete; the finished output equals an uninterrupted run's (byte for byte for
datasets, bit for bit for weights and posterior summaries), and no temporary file is left.

``DASBI_CRASH_POINTS`` sets the kills per command (3 in CI); the ``slow`` variant uses 12.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from astropy.table import Table

KILLS = int(os.environ.get("DASBI_CRASH_POINTS", "3"))
ENV = {**os.environ, "DASBI_PROGRESS": "0"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "dasbi.cli", *args, "--quiet"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(cmd: list[str], timeout: float = 600) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr
    return time.perf_counter() - t0


def crash_and_resume(cmd, duration, kills, rng, check_partial) -> list[float]:
    """Start ``cmd``, SIGKILL it at a random time in (0.3 s, duration), check what is on
    disk, repeat ``kills`` times, then run it to completion. Returns the kill times."""
    times = []
    for _ in range(kills):
        t_kill = float(rng.uniform(0.3, max(0.6, duration)))
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            proc.wait(timeout=t_kill)
            finished = True
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            finished = False
        if finished:
            assert proc.returncode in (0, 2), proc.stderr.read().decode()
        times.append(t_kill)
        _assert_no_orphans(cmd[cmd.index("--out") + 1])
        check_partial()
    _run(cmd)
    return times


def _assert_no_orphans(marker: str, wait: float = 3.0) -> None:
    """No process (e.g. a pool worker of the killed run) still has ``marker`` in its
    command line."""

    def alive() -> list[str]:
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker in cmd and state != "Z":
                found.append(proc.name)
        return found

    if not Path("/proc").is_dir():
        return
    deadline = time.time() + wait
    while alive() and time.time() < deadline:
        time.sleep(0.05)
    assert not alive(), f"processes of the killed run are still running: {alive()}"


def _no_temporaries(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if ".tmp" in p.name or ".old-" in p.name]
    assert not left, left


def _report(name: str, times: list[float]) -> None:
    """Append the kill times to $DASBI_CRASH_REPORT (JSON lines), if set."""
    path = os.environ.get("DASBI_CRASH_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"command": name, "kills": len(times), "at_s": times}) + "\n")


def _check_dataset(path: Path):
    def check() -> None:
        if path.exists():  # complete whenever it exists
            from dasbi.dataset import Dataset

            with Dataset(path) as ds:
                ds.read(0, ds.num_rows)

    return check


# -- simulate -----------------------------------------------------------------------------
def _simulate_crashes(tmp_path, kills, workers):
    tmp_path.mkdir(parents=True, exist_ok=True)
    args = ["simulate", "--simulator", "gaussian_linear", "--num", "300000"]
    args += ["--chunk-size", "10000", "--seed", "5", "--workers", str(workers)]
    ref = tmp_path / "ref.h5"
    duration = _run(_cli(*args, "--out", str(ref)))
    out = tmp_path / "run" / "sims.h5"
    times = crash_and_resume(
        _cli(*args, "--out", str(out)),
        duration,
        kills,
        np.random.default_rng(kills * 10 + workers),
        _check_dataset(out),
    )
    assert _sha(out) == _sha(ref)
    assert not (out.parent / "sims.h5.parts").exists()
    _no_temporaries(out.parent)
    _report(f"simulate (workers={workers})", times)


@pytest.mark.parametrize("workers", [1, 2])
def test_simulate_survives_random_kills(tmp_path, workers):
    _simulate_crashes(tmp_path, KILLS, workers)


# -- train ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gl(tmp_path_factory):
    from dasbi.config import from_dict
    from dasbi.simulate import SimulateConfig, run_simulate

    root = tmp_path_factory.mktemp("crash")
    cfg = {"num": 3000, "seed": 2, "simulator": {"name": "gaussian_linear", "dim": 2}}
    return run_simulate(from_dict(SimulateConfig, cfg), root / "gl.h5", progress=False)


def _train_crashes(tmp_path, gl, kills):
    tmp_path.mkdir(parents=True, exist_ok=True)
    from dasbi.checkpoint import load_checkpoint

    settings = {
        "network": {"dim": 16, "depth": 1, "heads": 2},
        "batch_size": 128,
        "max_steps": 400,
        "warmup_steps": 20,
        "checkpoint_every": 40,
        "val_every": 40,
    }
    conf = tmp_path / "train.yaml"
    conf.write_text(yaml.safe_dump(settings))
    base = ["train", "--data", str(gl), "--config", str(conf)]
    ref = tmp_path / "ref"
    duration = _run(_cli(*base, "--out", str(ref)))
    out = tmp_path / "run" / "model"

    def check() -> None:
        if out.exists():  # a complete checkpoint whenever the folder exists
            load_checkpoint(out, train_state=True)

    times = crash_and_resume(
        _cli(*base, "--out", str(out), "--resume"),
        duration,
        kills,
        np.random.default_rng(kills),
        check,
    )
    a, b = load_checkpoint(out).tensors, load_checkpoint(ref).tensors
    for name in ("weights", "ema", "best"):
        for k in b[name]:
            torch.testing.assert_close(a[name][k], b[name][k], rtol=0, atol=0)
    h_a = [(h["step"], h["train_loss"]) for h in json.loads((out / "history.json").read_text())]
    h_b = [(h["step"], h["train_loss"]) for h in json.loads((ref / "history.json").read_text())]
    assert h_a == h_b
    _no_temporaries(out.parent)
    _report("train", times)


def test_train_survives_random_kills(tmp_path, gl):
    _train_crashes(tmp_path, gl, KILLS)


# -- infer and ingest -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_and_catalogue(tmp_path_factory, gl):
    from dasbi.config import from_dict
    from dasbi.train import TrainConfig, train

    root = tmp_path_factory.mktemp("crash_infer")
    cfg = {"network": {"dim": 16, "depth": 1, "heads": 2}, "max_steps": 60, "val_every": 30}
    train(gl, from_dict(TrainConfig, cfg), out=root / "model", progress=False)
    n = 400
    rng = np.random.default_rng(0)
    t = Table()
    t["name"] = [f"o{i:04d}" for i in range(n)]
    t["a"], t["b"] = rng.normal(0, 0.5, n), rng.normal(0, 0.5, n)
    t["e_a"] = t["e_b"] = np.full(n, 0.3)
    t["a"][::37] = np.nan
    t.write(root / "cat.fits")
    (root / "map.yaml").write_text(
        "name: m\ncatalogue:\n  id: name\n  columns:\n"
        "    x_1: {value: a, error: e_a}\n    x_2: {value: b, error: e_b}\n"
    )
    return root / "model", root / "cat.fits", root / "map.yaml"


def _infer_crashes(tmp_path, model_and_catalogue, kills):
    tmp_path.mkdir(parents=True, exist_ok=True)
    from dasbi.infer import read_posteriors

    model, cat, smap = model_and_catalogue
    args = ["infer", "--model", str(model), "--catalogue", str(cat), "--survey", str(smap)]
    args += ["--num-samples", "200", "--set", "chunk_size=20", "--set", "seed=4"]
    ref = tmp_path / "ref.h5"
    duration = _run(_cli(*args, "--out", str(ref)))
    out = tmp_path / "run" / "post.h5"

    def check() -> None:
        if out.exists():
            s, attrs = read_posteriors(out)
            assert attrs["n_input"] == 400 and len(s) == 400

    times = crash_and_resume(
        _cli(*args, "--out", str(out)), duration, kills, np.random.default_rng(kills + 1), check
    )
    s_ref, _ = read_posteriors(ref)
    s_out, _ = read_posteriors(out)
    for c in s_ref.colnames:
        np.testing.assert_array_equal(np.asarray(s_out[c]), np.asarray(s_ref[c]), err_msg=c)
    assert (out.with_suffix(".fits")).read_bytes() == ref.with_suffix(".fits").read_bytes()
    rej = tmp_path / "run" / "post.rejected.ecsv"
    assert rej.read_text() == (tmp_path / "ref.rejected.ecsv").read_text()
    assert not (tmp_path / "run" / "post.h5.parts").exists()
    _no_temporaries(out.parent)
    _report("infer", times)


def test_infer_survives_random_kills(tmp_path, model_and_catalogue):
    _infer_crashes(tmp_path, model_and_catalogue, KILLS)


def test_ingest_survives_random_kills(tmp_path, model_and_catalogue, gl):
    _, cat, smap = model_and_catalogue
    args = ["ingest", "--catalogue", str(cat), "--survey", str(smap), "--like", str(gl)]
    ref = tmp_path / "ref.h5"
    duration = _run(_cli(*args, "--out", str(ref)))
    out = tmp_path / "run" / "real.h5"
    # a finished run refuses to overwrite: the rerun after the last kill is then a no-op
    # error, which crash_and_resume accepts (exit status 2) before the final check below
    rng = np.random.default_rng(7)
    for _ in range(KILLS):
        proc = subprocess.Popen(_cli(*args, "--out", str(out)), env=ENV)
        try:
            proc.wait(timeout=float(rng.uniform(0.3, duration)))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        _check_dataset(out)()
    if not out.exists():
        _run(_cli(*args, "--out", str(out)))
    from dasbi.dataset import Dataset

    with Dataset(out) as a, Dataset(ref) as b:
        for g in b.groups:
            for f in ("values", "errors", "observed", "upper_limit"):
                np.testing.assert_array_equal(
                    getattr(a.read()[g], f), getattr(b.read()[g], f), err_msg=f
                )
    _no_temporaries(out.parent)


@pytest.mark.slow
def test_many_random_kills(tmp_path, gl, model_and_catalogue):
    """The figures of the note: 12 kills per command."""
    for workers in (1, 2):
        _simulate_crashes(tmp_path / f"sim{workers}", 12, workers)
    _train_crashes(tmp_path / "train", gl, 12)
    _infer_crashes(tmp_path / "infer", model_and_catalogue, 12)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_recover_removes_nested_temporaries_of_dead_writers(tmp_path):
    """An atomic write into an atomic write's temporary file (ingest → DatasetWriter),
    killed before either rename, leaves ``..real.h5.tmp-P.tmp-P``; recover removes it with
    the plain ``.real.h5.tmp-P``, and keeps a live process's and another file's temporaries."""
    from dasbi.fileio import recover

    dead, live = _dead_pid(), os.getpid()
    names = {
        f".real.h5.tmp-{dead}": False,
        f"..real.h5.tmp-{dead}.tmp-{dead}": False,
        f"..real.h5.tmp-{live}.tmp-{live}": True,
        f".other.h5.tmp-{dead}": True,
        "real.h5": True,
    }
    for name in names:
        (tmp_path / name).write_text("x")
    recover(tmp_path / "real.h5")
    assert {n: (tmp_path / n).exists() for n in names} == names

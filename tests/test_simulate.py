"""`dasbi simulate`: determinism, parallel equality, resolved config, and a real crash-resume."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from dasbi.config import from_dict
from dasbi.dataset import Dataset
from dasbi.errors import ConfigError, ResumeError
from dasbi.simulate import SimulateConfig, run_simulate


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cfg(**kw) -> SimulateConfig:
    return from_dict(SimulateConfig, kw)


def test_simulate_writes_resolved_config_and_data(tmp_path):
    out = run_simulate(
        cfg(num=250, chunk_size=100, simulator={"name": "gaussian_linear", "dim": 3}),
        tmp_path / "s.h5",
        progress=False,
    )
    resolved = yaml.safe_load((tmp_path / "s.config.yaml").read_text())
    assert resolved["simulator"] == {
        "name": "gaussian_linear",
        "dim": 3,
        "prior_var": 0.1,
        "noise_var": 0.1,
        "missing_prob": 0.0,
        "detection_threshold": None,
    }
    with Dataset(out) as ds:
        assert ds.num_rows == 250
        assert ds.nodes.names == [f"theta_{i}" for i in (1, 2, 3)] + [f"x_{i}" for i in (1, 2, 3)]
        data = ds.read()
        assert yaml.safe_load(ds.config)["num"] == 250
        assert ds.attrs["seed"] == 0 and "torch" in ds.attrs["versions"]
    theta, x = data["theta"].values, data["x"].values
    # x - θ ~ N(0, 0.1): check the noise level and the reported errors
    assert np.std(x - theta) == pytest.approx(np.sqrt(0.1), rel=0.1)
    np.testing.assert_allclose(data["x"].errors, np.sqrt(0.1), rtol=1e-6)


def test_parallel_and_serial_runs_are_identical(tmp_path):
    base = dict(num=900, chunk_size=200, seed=5, simulator={"name": "slcp", "missing_prob": 0.2})
    a = run_simulate(cfg(**base), tmp_path / "a.h5", progress=False)
    b = run_simulate(cfg(**base, workers=2), tmp_path / "b.h5", progress=False)
    with Dataset(a) as da, Dataset(b) as db:
        for group, block in da.read().items():
            other = db.read()[group]
            for name in ("values", "errors", "observed", "upper_limit"):
                np.testing.assert_array_equal(getattr(block, name), getattr(other, name))
    c = run_simulate(cfg(**{**base, "seed": 6}), tmp_path / "c.h5", progress=False)
    assert sha(a) != sha(c)


def test_ray_local_backend_equals_the_local_backend(tmp_path):
    """`--backend ray` (a local Ray instance) writes the same data as the serial run."""
    ray = pytest.importorskip("ray", reason="Ray is the 'distributed' extra")
    base = dict(num=600, chunk_size=100, seed=3, simulator={"name": "two_moons"})
    a = run_simulate(cfg(**base), tmp_path / "a.h5", progress=False)
    try:
        b = run_simulate(cfg(**base, backend="ray", workers=2), tmp_path / "b.h5", progress=False)
    finally:
        ray.shutdown()
    with Dataset(a) as da, Dataset(b) as db:
        ra, rb = da.read(), db.read()
        assert set(ra) == set(rb)
        for group, block in ra.items():
            for name in ("values", "errors", "observed", "upper_limit"):
                np.testing.assert_array_equal(getattr(block, name), getattr(rb[group], name))


def test_rerun_is_noop_but_other_arguments_are_refused(tmp_path):
    out = run_simulate(cfg(num=100), tmp_path / "s.h5", progress=False)
    mtime = out.stat().st_mtime_ns
    run_simulate(cfg(num=100), out, progress=False)
    assert out.stat().st_mtime_ns == mtime
    with pytest.raises(ResumeError, match="--overwrite"):
        run_simulate(cfg(num=101), out, progress=False)
    run_simulate(cfg(num=101), out, overwrite=True, progress=False)
    with Dataset(out) as ds:
        assert ds.num_rows == 101


def test_simulator_options_are_validated():
    with pytest.raises(ConfigError, match=r"simulator\.dim: must be >= 1"):
        run_simulate(cfg(simulator={"name": "gaussian_linear", "dim": 0}), "unused.h5")
    with pytest.raises(ConfigError, match="valid simulators are"):
        run_simulate(cfg(simulator={"name": "nope"}), "unused.h5")


def test_kill_and_resume_gives_identical_file(tmp_path):
    """SIGKILL `dasbi simulate` mid-run, rerun it, and compare with an uninterrupted run."""
    args = [
        "simulate",
        "--simulator",
        "gaussian_linear",
        "--num",
        "600000",
        "--chunk-size",
        "10000",
        "--seed",
        "11",
        "--quiet",
    ]
    env = {**os.environ, "DASBI_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "dasbi.cli", *args]
    ref = tmp_path / "ref.h5"
    subprocess.run([*cmd, "--out", str(ref)], check=True, env=env, timeout=300)

    out = tmp_path / "run.h5"
    parts = tmp_path / "run.h5.parts"
    proc = subprocess.Popen([*cmd, "--out", str(out)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if parts.exists() and len(list(parts.glob("chunk_*.h5"))) >= 8:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = len(list(parts.glob("chunk_*.h5")))
    assert not out.exists(), "the killed run must not leave a final file"
    assert 0 < done_before < 60

    subprocess.run([*cmd, "--out", str(out)], check=True, env=env, timeout=300)
    assert not parts.exists()
    assert sha(out) == sha(ref)


def test_dasbi_simulate_yso_missing_config(cli, tmp_path):
    """The 50%-missing YSO config: limits at the survey depths, half the values dropped."""
    import h5py

    out = tmp_path / "yso.h5"
    res = cli(
        "simulate",
        "--config",
        "configs/simulate/yso_missing.yaml",
        "--set",
        "num=600",
        "--set",
        "chunk_size=300",
        "--set",
        "simulator.library=planck",
        "--out",
        str(out),
        cwd=Path(__file__).resolve().parents[1],
    )
    assert res.returncode == 0, res.stderr
    with h5py.File(out) as f:
        assert f["theta/values"].shape[0] == 600
        obs = f["x/photometry/observed"][:]
        assert 0.3 < obs.mean() < 0.52
        assert f["x/photometry/upper_limit"][:].any()
    nodes = [n.name for n in Dataset(out).nodes if n.kind == "parameter"]
    assert nodes[0] == "star.radius" and nodes[-2:] == ["distance", "av"]

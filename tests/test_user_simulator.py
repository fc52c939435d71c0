"""A user's own simulator: the docs example, run from a folder of its own through the CLI;
`package.module:Class` names, entry-point plug-ins and re-registration."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import simulators
from simulators import ObsBlock, Simulator
from simulators.registry import get_simulator, register

DOC = Path(__file__).resolve().parents[1] / "docs" / "simulators.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/simulators.md lost its example"
    return blocks[0]


def test_docs_example_trains_and_samples_from_its_own_folder(tmp_path):
    (tmp_path / "gaussian_mixture.py").write_text(_example())
    assert len(_example().strip().splitlines()) <= 40
    name = "gaussian_mixture:GaussianMixture"

    def dasbi(*args):
        return subprocess.run(
            [sys.executable, "-m", "dasbi.cli", *args, "--quiet"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )

    r = dasbi("simulate", "--set", f"simulator.name={name}", "--num", "600", "--out", "gm.h5")
    assert r.returncode == 0, r.stderr
    r = dasbi(
        "train",
        "--data",
        "gm.h5",
        "--out",
        "gm_model",
        "--set",
        "max_steps=20",
        "--set",
        "batch_size=64",
        "--set",
        "network.dim=16",
        "--set",
        "network.depth=1",
    )
    assert r.returncode == 0, r.stderr
    code = (
        "import numpy as np; from dasbi import Posterior; "
        "p = Posterior.load('gm_model'); "
        "z = p.sample((50,), x=np.array([1.0, -2.0]), steps=4, seed=0).numpy(); "
        "print(z.shape, p.parameter_names)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "(50, 2)" in r.stdout and "theta_1" in r.stdout
    # the dataset keeps the import path, so another command resolves the same class
    import h5py

    with h5py.File(tmp_path / "gm.h5") as f:
        blob = " ".join(str(v) for v in f.attrs.values())
    assert name in blob
    r = dasbi("simulate", "--set", "simulator.name=gaussian_mixture:Nope", "--out", "x.h5")
    assert r.returncode == 2 and "has no attribute 'Nope'" in r.stderr
    r = dasbi("simulate", "--set", "simulator.name=no_such_module:X", "--out", "x.h5")
    assert r.returncode == 2 and "cannot import 'no_such_module'" in r.stderr


def test_unknown_names_say_how_to_bring_a_simulator():
    with pytest.raises(ValueError, match=r"package\.module:Class.*dasbi\.simulators"):
        get_simulator("gaussian_mixture")
    with pytest.raises(ValueError, match="not a subclass of simulators.Simulator"):
        get_simulator("numpy:ndarray")


def _make(name: str) -> type:
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        pass

    class Tiny(Simulator):
        config_class = Cfg

        def nodes(self):
            return [
                dict(name="a", kind="parameter", modality="theta"),
                dict(name="x", kind="observable", modality="x"),
            ]

        def sample_prior(self, n, rng):
            return rng.normal(size=(n, 1))

        def simulate(self, theta, rng):
            return {"x": ObsBlock.exact(np.asarray(theta))}

    Tiny.name = name
    return Tiny


def test_reregistering_a_class_replaces_it_and_a_clash_is_an_error():
    first = register(_make("tiny_test_sim"))
    again = register(_make("tiny_test_sim"))  # a notebook cell run twice: same module:qualname
    assert get_simulator("tiny_test_sim") is again and again is not first
    other = _make("tiny_test_sim")
    other.__qualname__ = "Elsewhere"
    with pytest.raises(ValueError, match="already registered"):
        register(other)
    del simulators.SIMULATORS["tiny_test_sim"]


def test_entry_point_plugins_are_found_by_name(tmp_path, monkeypatch):
    """An installed package's entry point in the group dasbi.simulators (a dist-info folder
    on sys.path is what pip writes)."""
    pkg = tmp_path / "plug_sims.py"
    pkg.write_text(_example())
    info = tmp_path / "plug_sims-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plug-sims\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[dasbi.simulators]\nmy_mixture = plug_sims:GaussianMixture\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from simulators.registry import names

    assert "my_mixture" in names()
    cls = get_simulator("my_mixture")
    assert cls.__name__ == "GaussianMixture"
    out = cls()(100, np.random.default_rng(0))
    assert out.theta.shape == (100, 2) and out.x["x"].values.shape == (100, 2)


def test_sbibm_bench_runs_a_user_task_with_one_prior(tmp_path, monkeypatch, sbibm_installed):
    """The docs' gaussian_mixture (sbibm's task) through `dasbi bench sbibm`: the simulator
    comes from the plug-in path, its prior() serves dasbi and sbi's NPE alike, and the
    reference posterior is sbibm's."""
    from dasbi.bench.sbibm import bench_sbibm, simulator_prior

    (tmp_path / "gm_task.py").write_text(_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    prior = simulator_prior("gm_task:GaussianMixture")
    assert prior.event_shape == (2,) and float(prior.log_prob(torch.zeros(2))) == pytest.approx(
        -2 * np.log(20.0)
    )
    settings, results, extra = bench_sbibm(
        True,
        {
            "tasks": ["gaussian_mixture"],
            "task_simulators": {"gaussian_mixture": "gm_task:GaussianMixture"},
            "methods": ["dasbi", "npe"],
            "observations": [1],
            "num_samples": 300,
            "samplers": ["dpm2m-8"],
            "sbi_max_epochs": 3,
            "train": {
                "max_steps": 60,
                "batch_size": 128,
                "val_every": 30,
                "network": {"dim": 16, "depth": 1, "heads": 2},
            },
        },
        False,
    )
    methods = {r["method"] for r in results}
    assert {"npe"} <= methods and any(m.startswith("dasbi") for m in methods)
    assert all(0.4 <= r["c2st_rf"] <= 1.0 for r in results)
    with pytest.raises(Exception, match="tasks with reference posteriors: .*gaussian_mixture"):
        bench_sbibm(True, {"tasks": ["no_such_task"], "methods": ["dasbi"]}, False)

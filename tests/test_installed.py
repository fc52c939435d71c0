"""dasbi installed from its wheel works outside the repository: shipped configs by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout, installed (without dependencies) into a folder
    that is the only place `dasbi`, `simulators` and `encoders` come from."""
    base = tmp_path_factory.mktemp("wheel")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(base / "whl"), str(ROOT)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.fail(f"pip wheel failed: {r.stderr[-2000:]}")
    (wheel,) = (base / "whl").glob("dasbi-*.whl")
    target = base / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
        + [str(wheel)],
        check=True,
    )
    work = base / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("DASBI_SURVEYS", None)
    return target, work, env


def _dasbi(installed, *args):
    target, work, env = installed
    return subprocess.run(
        [sys.executable, "-m", "dasbi.cli", *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )


def test_installed_package_ships_surveys_and_simulate_presets(installed):
    target, work, env = installed
    r = _dasbi(installed, "info")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert {"gaia_dr3", "2mass", "allwise", "spitzer_c2d", "esplin2022_cra"} <= set(
        info["surveys"]
    )
    assert {"field_stars", "yso_cluster", "two_moons"} <= set(info["simulate_presets"])
    assert all(str(target) in d for d in info["survey_folders"])
    code = "import simulators; print(simulators.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=env, text=True, capture_output=True, check=True
    ).stdout
    assert out.startswith(str(target))


def test_presets_by_name_run_from_another_folder(installed):
    r = _dasbi(installed, "simulate", "--config", "two_moons", "--num", "50", "--out", "tm.h5")
    assert r.returncode == 0, r.stderr
    assert (installed[1] / "tm.h5").is_file()
    r = _dasbi(installed, "simulate", "--config", "no_such_preset", "--out", "x.h5")
    assert r.returncode == 2
    assert "neither a file nor a preset" in r.stderr and "field_stars" in r.stderr


def test_installed_data_registry_names_the_fetch_command(installed, tmp_path):
    """Outside the repository (no shared data folder next to it) the registry ships with
    the wheel and a missing grid's error names the `dasbi data fetch` command."""
    target, work, env = installed
    env = {**env, "DASBI_CACHE": str(tmp_path / "cache")}
    env.pop("DASBI_DATA", None)
    r = subprocess.run(
        [sys.executable, "-m", "dasbi.cli", "data", "path", "real/yso/BHAC15_iso.ukidss"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "dasbi data fetch real/yso/BHAC15_iso.ukidss" in r.stderr
    r = _dasbi(installed, "data", "list")
    assert r.returncode == 0 and "atmospheres/ck04models" in r.stdout

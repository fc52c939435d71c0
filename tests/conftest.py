"""Shared fixtures: seeded generators, the shared data folder, and CLI helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DASBI_DATA", ROOT.parent / "shared" / "data"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data; skipped where absent, but a failure under CI=true."""
    if not SHARED_DATA.is_dir():
        if IN_CI:
            pytest.fail(f"shared data folder {SHARED_DATA} is missing under CI")
        pytest.skip(f"shared data folder {SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture
def sbibm_installed() -> None:
    """sbibm's reference posterior files; skipped where absent, but a failure under CI=true
    (the README's test command installs it with --no-deps)."""
    import importlib.util

    if importlib.util.find_spec("sbibm") is None:
        if IN_CI:
            pytest.fail("sbibm is missing under CI: pip install --no-deps sbibm==1.1.0")
        pytest.skip("needs sbibm's reference posteriors: pip install --no-deps sbibm==1.1.0")


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the `dasbi` CLI in a subprocess (the installed entry point's module)."""
    env = {**os.environ, "DASBI_PROGRESS": "0"}
    return subprocess.run(
        [sys.executable, "-m", "dasbi.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture
def cli():
    return run_cli

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


def _absent(what: str) -> None:
    """Skip a test whose input is absent, but fail it under CI=true."""
    if IN_CI:
        pytest.fail(f"{what} (under CI this is a failure, not a skip)")
    pytest.skip(what)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data; skipped where absent, but a failure under CI=true."""
    if not SHARED_DATA.is_dir():
        _absent(f"shared data folder {SHARED_DATA} is missing")
    return SHARED_DATA


@pytest.fixture
def sbibm_installed() -> None:
    """sbibm's reference posterior files, found the way ``dasbi bench sbibm`` finds them;
    skipped where absent, but a failure under CI=true (the README's test command installs
    sbibm with --no-deps)."""
    from dasbi.bench.sbibm import _sbibm_root
    from dasbi.errors import NotAvailableError

    try:
        _sbibm_root()
    except NotAvailableError as err:
        _absent(str(err))


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

"""The README's Python example runs (with fewer training steps) and its commands are real."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_example_runs(tmp_path, monkeypatch):
    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    code = code.replace("max_steps=2000", "max_steps=30").replace("num=5000", "num=300")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert namespace["theta"].shape == (1000, 2)
    assert set(namespace["lik"]) == {"x_1", "x_2"}
    assert np.isfinite(namespace["theta"].numpy()).all()


def test_setup_commands():
    text = README.read_text()
    block = re.search(r"## Set up\n\n```bash\n(.*?)```", text, re.S).group(1)
    commands = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2
    assert all(c.startswith("pip install torch==2.13.0 && ") for c in commands)
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1] in ci

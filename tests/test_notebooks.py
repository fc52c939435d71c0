"""The notebooks run top to bottom with their small settings (DASBI_NOTEBOOK_SMALL=1), and
are stored without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks_and_they_match_their_sources():
    import importlib.util

    assert len(NOTEBOOKS) == 4
    spec = importlib.util.spec_from_file_location("build", NOTEBOOKS[0].parent / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    sources = (build.NB1, build.NB2, build.NB3, build.NB4)
    for nb_path, cells in zip(NOTEBOOKS, sources, strict=True):
        nb = nbformat.read(nb_path, as_version=4)
        assert [c.source for c in nb.cells] == [src for _, src in cells], nb_path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_is_stripped(path, tmp_path, monkeypatch, shared_data):
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "strip the outputs"
    monkeypatch.setenv("DASBI_NOTEBOOK_SMALL", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the notebooks draw inline
    root = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    images = [
        o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 2  # the notebooks are about looking at things

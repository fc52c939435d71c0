"""The notebooks are stored executed at their full settings, with their outputs (so a reader
sees results without running anything), or without outputs; and they run top to bottom with
their small settings (DASBI_NOTEBOOK_SMALL=1)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks_and_they_match_their_sources():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build", NOTEBOOKS[0].parent / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert [p.name for p in NOTEBOOKS] == sorted(build.NOTEBOOKS)
    for nb_path in NOTEBOOKS:
        cells = build.NOTEBOOKS[nb_path.name]
        nb = nbformat.read(nb_path, as_version=4)
        assert [c.source for c in nb.cells] == [src for _, src in cells], nb_path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_stored_notebook_shows_its_full_results_or_nothing(path):
    """A notebook is stored either executed at its full settings (`python notebooks/build.py
    --execute NAME`): every code cell ran, in order, without an error, the figures are
    there and small enough that the repository stays lean; or with no outputs at all,
    never with the outputs of a small or partial run."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if nb.metadata.get("dasbi", {}).get("executed") != "full settings":
        assert all(not c.outputs and c.execution_count is None for c in code), (
            f"{path.name}: strip the outputs, or run `python notebooks/build.py --execute "
            f"{path.name}`"
        )
        return
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2
    assert path.stat().st_size < 1_500_000


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_with_small_settings(path, tmp_path, monkeypatch, shared_data):
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # run from scratch, not on top of the stored outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
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

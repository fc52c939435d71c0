"""Safe loading: no unpickling of untrusted files, YAML through safe_load, no shell, and no
file names from data that escape their folder."""

from __future__ import annotations

import ast
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dasbi", "simulators", "encoders")


def _sources() -> list[Path]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 30
    return files


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _kw(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else kw.value
    return None


FORBIDDEN = {
    "pickle.load": "unpickles a file",
    "pickle.loads": "unpickles bytes",
    "cloudpickle.load": "unpickles a file",
    "dill.load": "unpickles a file",
    "marshal.loads": "loads code objects",
    "shelve.open": "unpickles on read",
    "yaml.load": "use yaml.safe_load",
    "yaml.unsafe_load": "use yaml.safe_load",
    "yaml.full_load": "use yaml.safe_load",
    "pd.read_pickle": "unpickles a file",
    "os.system": "runs a shell",
    "os.popen": "runs a shell",
    "eval": "evaluates code",
    "exec": "executes code",
}


def audit(path: Path) -> list[str]:
    """Every unsafe call in one source file, as 'file:line: what'."""
    problems = []
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        if name in FORBIDDEN:
            problems.append(f"{where}: {name} ({FORBIDDEN[name]})")
        if _kw(node, "shell") is True:
            problems.append(f"{where}: shell=True")
        if name == "torch.load" and _kw(node, "weights_only") is not True:
            problems.append(f"{where}: torch.load without weights_only=True")
        if name in ("np.load", "numpy.load") and _kw(node, "allow_pickle") not in (None, False):
            problems.append(f"{where}: np.load with allow_pickle")
    return problems


def test_the_audit_catches_unsafe_calls(tmp_path):
    bad = ROOT / "dasbi" / "_audit_probe.py"
    try:
        bad.write_text(
            "import pickle, subprocess, torch, yaml, numpy as np\n"
            "pickle.load(open('x', 'rb'))\n"
            "subprocess.run('ls', shell=True)\n"
            "torch.load('x')\n"
            "torch.load('x', weights_only=False)\n"
            "yaml.load('a: 1')\n"
            "np.load('x.npy', allow_pickle=True)\n"
            "eval('1')\n"
        )
        found = audit(bad)
    finally:
        bad.unlink()
    assert len(found) == 7, found


def test_sources_have_no_unsafe_loading_or_shell():
    problems = [p for f in _sources() for p in audit(f)]
    assert not problems, "\n".join(problems)


class _Evil:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_training_state_is_refused_even_with_valid_checksums(tmp_path):
    from dasbi.checkpoint import _sha256, load_checkpoint
    from dasbi.config import from_dict
    from dasbi.errors import CheckpointError
    from dasbi.simulate import SimulateConfig, run_simulate
    from dasbi.train import TrainConfig, train

    cfg = {"num": 200, "seed": 0, "simulator": {"name": "gaussian_linear", "dim": 2}}
    data = run_simulate(from_dict(SimulateConfig, cfg), tmp_path / "d.h5", progress=False)
    tcfg = from_dict(
        TrainConfig,
        {"network": {"dim": 8, "depth": 1, "heads": 1}, "max_steps": 3, "val_every": 2},
    )
    train(data, tcfg, out=tmp_path / "m", progress=False)
    model = tmp_path / "m"
    marker = tmp_path / "pwned"
    state = model / "train_state.pt"
    with open(state, "wb") as f:
        pickle.dump({"optimizer": _Evil(marker)}, f)
    # a forger can also fix the checksums in meta.json: loading must still refuse
    meta = json.loads((model / "meta.json").read_text())
    key = next(k for k in meta if isinstance(meta[k], dict) and "train_state.pt" in meta[k])
    meta[key]["train_state.pt"] = _sha256(state)
    (model / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="cannot read training state"):
        load_checkpoint(model, train_state=True)
    assert not marker.exists()
    # loading for inference never opens the training state at all
    from dasbi.posterior import Posterior

    Posterior.load(model)
    assert not marker.exists()


def test_weights_are_safetensors_not_pickles(tmp_path):
    from safetensors.torch import save_file

    from dasbi.checkpoint import _sha256  # noqa: F401 - same module as the loader

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(2)}, str(path))
    assert path.read_bytes()[8:9] == b"{"  # a JSON header, then raw tensor bytes
    assert b"\x80\x04" not in path.read_bytes()[:16]  # no pickle protocol marker


def test_npz_with_objects_is_refused(tmp_path):
    """dasbi's own .npz files (infer chunks, caches) load with allow_pickle=False."""
    path = tmp_path / "x.npz"
    np.savez(path, a=np.array([_Evil(tmp_path / "pwned")], dtype=object))
    with np.load(path) as z, pytest.raises(ValueError, match="allow_pickle"):
        z["a"]
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    "name", ["../evil", "/etc/passwd", "a/b", ".hidden", "..", "x\0y", "", "a..b", "a b"]
)
def test_safe_name_refuses_names_that_could_escape(name):
    from simulators.paths import safe_name

    with pytest.raises(ValueError, match="cannot be used in a file name"):
        safe_name(name, "filter")


@pytest.mark.parametrize("name", ["2mass_Ks", "wise_W1", "GaiaDR2_BP", "irac_3.6", "f+g-1"])
def test_safe_name_accepts_filter_names(name):
    from simulators.paths import safe_name

    assert safe_name(name) == name


def test_grid_writer_cannot_write_outside_its_folder(tmp_path):
    from simulators.sedgrid import SEDGrid, write_sedfitter_models

    args = dict(
        names=["m1", "m2"],
        parameters={"star.temperature": np.array([4000.0, 5000.0])},
        wav_um=np.array([1.0, 2.0, 3.0]),
        apertures_au=np.array([100.0]),
        flux_mjy=np.ones((2, 1, 3)),
    )
    target = tmp_path / "grid" / "m"
    with pytest.raises(ValueError, match="'../../escaped'"):
        write_sedfitter_models(target, convolved={"../../escaped": (np.ones((2, 1)), 1.2)}, **args)
    assert not (tmp_path / "escaped.fits").exists() and not target.exists()
    root = write_sedfitter_models(target, convolved={"2mass_J": (np.ones((2, 1)), 1.2)}, **args)
    grid = SEDGrid.read(root)
    assert grid.convolved("2mass_J")
    with pytest.raises(ValueError, match="cannot be used in a file name"):
        grid.convolved("../../../etc/passwd")

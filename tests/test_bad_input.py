"""The bad-input matrix: every CLI command and public loader, fed broken input.

Each CLI case asserts what a user sees: exit status 2, one line
``dasbi <command>: error: …`` that names the field and says how to fix it, no traceback,
and no output file (complete or half-written) left behind. Row-level problems in
catalogues (magnitudes of 99, negative fluxes) are not errors: the run completes and every
such value is listed, with its reason, in the ``.rejected.ecsv`` report, so nothing is lost
silently. The loader cases assert a :class:`~dasbi.errors.DasbiError` with the same kind of
message.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.table import Table

from dasbi.cli import main
from dasbi.config import from_dict
from dasbi.errors import DasbiError
from dasbi.simulate import SimulateConfig, run_simulate
from dasbi.train import TrainConfig, train

MAP = """
name: m
catalogue:
  id: name
  columns:
    x_1: {value: a, error: e_a}
    x_2: {value: b, error: e_b}
"""
PHOT_MAP = """
name: phot
catalogue:
  id: id
  columns:
    2mass_J: {value: J, error: eJ}
    2mass_H: {value: H, error: eH}
"""
PYTHON_TAG = "!!python/object/apply:os.system ['touch {marker}']\n"


@dataclass
class Inputs:
    root: Path
    gl: Path  # gaussian_linear, 2-D, with missing values
    gl3: Path  # gaussian_linear, 3-D: another node set
    fs: Path  # field stars (magnitudes)
    model: Path
    cat: Path  # a good catalogue for the model
    smap: Path  # its column map
    extra: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("bad")

    def sim(fname, num, **opts):
        cfg = from_dict(SimulateConfig, {"num": num, "seed": 1, "simulator": opts})
        return run_simulate(cfg, root / fname, progress=False)

    gl = sim("gl.h5", 400, name="gaussian_linear", dim=2, missing_prob=0.2)
    gl3 = sim("gl3.h5", 200, name="gaussian_linear", dim=3)
    fs = sim("fs.h5", 60, name="field_stars", library="planck")
    cfg = from_dict(
        TrainConfig,
        {
            "network": {"dim": 16, "depth": 1, "heads": 2},
            "batch_size": 64,
            "warmup_steps": 5,
            "val_every": 10,
            "max_steps": 20,
        },
    )
    train(gl, cfg, out=root / "model", progress=False)
    n = 30
    t = Table()
    t["name"] = [f"s{i:02d}" for i in range(n)]
    t["a"] = np.linspace(-1, 1, n)
    t["b"] = np.linspace(1, -1, n)
    t["e_a"] = np.full(n, 0.3)
    t["e_b"] = np.full(n, 0.3)
    t.write(root / "cat.fits")
    (root / "map.yaml").write_text(MAP)
    return Inputs(root, gl, gl3, fs, root / "model", root / "cat.fits", root / "map.yaml")


def _leftovers(folder: Path, before: set[str]) -> list[str]:
    return sorted(set(os.listdir(folder)) - before)


def assert_user_error(
    argv: list[str], fragments: list[str], capsys, work: Path, *, allowed: tuple = ()
) -> str:
    """Run the CLI in-process; it must fail as a user error and leave nothing behind."""
    before = set(os.listdir(work))
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert err.startswith(f"dasbi {argv[0]}: error: "), err
    assert err.strip().count("\n") == 0, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    left = [p for p in _leftovers(work, before) if p not in allowed]
    assert not left, f"{argv[0]} left {left} behind after an error"
    return err


# -- the cases ----------------------------------------------------------------------------
# Each builder gets the shared inputs and a fresh work folder, writes its broken input
# there and returns (argv, fragments that must appear in the message).
Case = Callable[[Inputs, Path], tuple[list[str], list[str]]]
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def deco(fn: Case) -> Case:
        CASES[name] = fn
        return fn

    return deco


def _infer(i: Inputs, w: Path, cat=None, smap=None, model=None, *extra: str) -> list[str]:
    return [
        "infer",
        "--model",
        str(model or i.model),
        "--catalogue",
        str(cat or i.cat),
        "--survey",
        str(smap or i.smap),
        "--out",
        str(w / "post.h5"),
        "--quiet",
        *extra,
    ]


def _ingest(i: Inputs, w: Path, cat=None, smap=None, like=None) -> list[str]:
    return [
        "ingest",
        "--catalogue",
        str(cat or i.cat),
        "--survey",
        str(smap or i.smap),
        "--like",
        str(like or i.gl),
        "--out",
        str(w / "real.h5"),
        "--quiet",
    ]


def _train(data: Path, w: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(data),
        "--out",
        str(w / "m"),
        "--max-steps",
        "5",
        "--quiet",
        *extra,
    ]


def _tamper(src: Path, dst: Path, path: str, index: int, value: float) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        a = f[path][...]
        a.flat[index] = value
        f[path][...] = a
    return dst


def _phot(w: Path, name: str, **cols) -> Path:
    n = 8
    t = Table()
    t["id"] = [f"y{i}" for i in range(n)]
    for key, value in {"J": 12.0, "eJ": 0.03, "H": 11.5, "eH": 0.03, **cols}.items():
        t[key] = np.broadcast_to(np.asarray(value, float), n).copy()
    t.write(w / name)
    return w / name


# config: typos, types, ranges, YAML --------------------------------------------------------
@case("simulate: typo in a config key")
def _(i, w):
    return ["simulate", "--set", "nmu=3", "--out", str(w / "s.h5"), "--quiet"], [
        "unknown key 'nmu'",
        "did you mean 'num'",
    ]


@case("simulate: out-of-range count")
def _(i, w):
    return ["simulate", "--num", "0", "--out", str(w / "s.h5"), "--quiet"], ["num: must be >= 1"]


@case("simulate: out-of-range simulator option")
def _(i, w):
    argv = ["simulate", "--simulator", "gaussian_linear", "--set", "simulator.dim=0"]
    return [*argv, "--out", str(w / "s.h5"), "--quiet"], ["simulator.dim: must be >= 1"]


@case("simulate: typo in a simulator option")
def _(i, w):
    argv = ["simulate", "--simulator", "field_stars", "--set", "simulator.libary=planck"]
    return [*argv, "--out", str(w / "s.h5"), "--quiet"], [
        "unknown key 'libary'",
        "did you mean 'library'",
    ]


@case("simulate: NaN for a number")
def _(i, w):
    return ["simulate", "--set", "num=nan", "--out", str(w / "s.h5"), "--quiet"], [
        "num: expected an integer"
    ]


@case("simulate: string for a number")
def _(i, w):
    return ["simulate", "--set", "seed=abc", "--out", str(w / "s.h5"), "--quiet"], [
        "seed: expected int, got string 'abc'"
    ]


@case("simulate: --set without =")
def _(i, w):
    return ["simulate", "--set", "num", "--out", str(w / "s.h5"), "--quiet"], [
        "--set expects KEY=VALUE"
    ]


@case("simulate: config file is not YAML")
def _(i, w):
    (w / "c.yaml").write_text("num: [1, 2\n")
    return ["simulate", "--config", str(w / "c.yaml"), "--out", str(w / "s.h5"), "--quiet"], [
        "c.yaml' is not valid YAML"
    ]


@case("simulate: config file holds a list")
def _(i, w):
    (w / "c.yaml").write_text("- 1\n- 2\n")
    return ["simulate", "--config", str(w / "c.yaml"), "--out", str(w / "s.h5"), "--quiet"], [
        "must hold a mapping of keys, got list"
    ]


@case("simulate: config file with a python tag is not executed")
def _(i, w):
    marker = w.parent / f"{w.name}-pwned"
    (w / "c.yaml").write_text(PYTHON_TAG.format(marker=marker))
    i.extra["marker"] = marker
    return ["simulate", "--config", str(w / "c.yaml"), "--out", str(w / "s.h5"), "--quiet"], [
        "is not valid YAML",
        "python/object/apply",
    ]


@case("simulate: config file does not exist")
def _(i, w):
    return ["simulate", "--config", str(w / "no.yaml"), "--out", str(w / "s.h5"), "--quiet"], [
        "does not exist"
    ]


@case("simulate: unknown simulator")
def _(i, w):
    return ["simulate", "--simulator", "nope", "--out", str(w / "s.h5"), "--quiet"], [
        "unknown simulator 'nope'"
    ]


@case("simulate: unknown survey")
def _(i, w):
    argv = ["simulate", "--simulator", "field_stars", "--set", "simulator.surveys=[gaia_dr9]"]
    return [*argv, "--out", str(w / "s.h5"), "--quiet"], [
        "unknown survey 'gaia_dr9'",
        "known surveys: 2mass",
    ]


@case("simulate: unknown filter in a survey file")
def _(i, w):
    (w / "mine.yaml").write_text(
        "name: mine\nsimulation:\n  bands:\n    gaia_G: {depth: 21}\n    sdss_zz: {depth: 20}\n"
    )
    argv = [
        "simulate",
        "--simulator",
        "field_stars",
        "--set",
        f"simulator.surveys=[{w}/mine.yaml]",
    ]
    return [*argv, "--out", str(w / "s.h5"), "--quiet"], [
        "unknown filter 'sdss_zz'",
        "known filters are:",
    ]


@case("simulate: dust map does not exist")
def _(i, w):
    argv = ["simulate", "--simulator", "field_stars", "--set", "simulator.dust_map=/no/map.h5"]
    return [*argv, "--out", str(w / "s.h5"), "--quiet"], ["dust map /no/map.h5 does not exist"]


@case("simulate: unknown YSO model set")
def _(i, w):
    argv = ["simulate", "--simulator", "yso", "--set", "simulator.model_set=spubhmx"]
    return [*argv, "--out", str(w / "s.h5"), "--quiet"], ["unknown YSO model set 'spubhmx'"]


@case("simulate: output is a folder")
def _(i, w):
    (w / "dir").mkdir()
    return ["simulate", "--num", "5", "--out", str(w / "dir"), "--quiet"], [
        "is a folder",
        "sims.h5",
    ]


@case("simulate: output is not .h5")
def _(i, w):
    return ["simulate", "--num", "5", "--out", str(w / "s.fits"), "--quiet"], [
        "--out must end in .h5 or .hdf5"
    ]


@case("simulate: output under a file")
def _(i, w):
    (w / "c.csv").write_text("x")
    return ["simulate", "--num", "5", "--out", str(w / "c.csv" / "s.h5"), "--quiet"], [
        "Not a directory",
        "a part of the path is a file",
    ]


@case("train: output under a file")
def _(i, w):
    (w / "c.csv").write_text("x")
    argv = _train(i.gl, w)
    argv[argv.index("--out") + 1] = str(w / "c.csv" / "m")
    return argv, ["c.csv", "a file is in the way of a folder"]


@case("infer: output where nothing can be created")
def _(i, w):
    argv = _infer(i, w)
    argv[argv.index("--out") + 1] = "/proc/dasbi-post.h5"
    return argv, ["/proc/dasbi-post.h5", "check the path"]


@case("train: learning rate inf")
def _(i, w):
    return _train(i.gl, w, "--set", "lr=inf"), ["lr: expected a finite number"]


@case("train: negative learning rate")
def _(i, w):
    return _train(i.gl, w, "--set", "lr=-1"), ["lr: must be > 0.0"]


@case("train: batch size 0")
def _(i, w):
    return _train(i.gl, w, "--set", "batch_size=0"), ["batch_size: must be >= 1"]


@case("train: typo in a nested key")
def _(i, w):
    return _train(i.gl, w, "--set", "network.dimm=3"), ["unknown key 'dimm'", "did you mean"]


@case("train: bad choice")
def _(i, w):
    return _train(i.gl, w, "--set", "attention=sparse"), ["attention: expected one of"]


@case("infer: zero posterior samples")
def _(i, w):
    return _infer(i, w, None, None, None, "--num-samples", "0"), ["num_samples: must be >= 1"]


@case("infer: typo in a config key")
def _(i, w):
    return _infer(i, w, None, None, None, "--set", "chunk_siz=3"), [
        "unknown key 'chunk_siz'",
        "did you mean 'chunk_size'",
    ]


@case("infer: output is not .h5")
def _(i, w):
    argv = _infer(i, w)
    argv[argv.index("--out") + 1] = str(w / "post.csv")
    return argv, ["--out must end in .h5 or .hdf5"]


@case("bench: typo in a config key")
def _(i, w):
    return ["bench", "simulate", "--quick", "--set", "nmu=3", "--out", str(w / "b.json")], [
        "unknown key 'nmu'"
    ]


@case("bench: unknown benchmark")
def _(i, w):
    return ["bench", "nope", "--out", str(w / "b.json")], ["unknown benchmark 'nope'"]


def _evaluate(i: Inputs, w: Path, data=None, *extra: str) -> list[str]:
    return [
        "evaluate",
        "--model",
        str(i.model),
        "--data",
        str(data or i.gl),
        "--out",
        str(w / "ev"),
        "--quiet",
        *extra,
    ]


@case("evaluate: no model")
def _(i, w):
    return ["evaluate", "--data", str(i.gl), "--out", str(w / "ev"), "--quiet"], ["needs --model"]


@case("evaluate: typo in a config key")
def _(i, w):
    return _evaluate(i, w, None, "--set", "num_sample=5"), [
        "unknown key 'num_sample'",
        "did you mean 'num_samples'",
    ]


@case("evaluate: too few objects")
def _(i, w):
    return _evaluate(i, w, None, "--num-objects", "3"), ["num_objects: must be >= 10"]


@case("evaluate: dataset without the model's nodes (mismatched node sets)")
def _(i, w):
    return _evaluate(i, w, i.fs), ["lacks the model's nodes ['theta_1', 'theta_2'"]


@case("evaluate: truncated dataset")
def _(i, w):
    (w / "d.h5").write_bytes(i.gl.read_bytes()[:20000])
    return _evaluate(i, w, w / "d.h5"), ["corrupt or truncated"]


@case("evaluate: output is a file")
def _(i, w):
    (w / "c.csv").write_text("x")
    argv = _evaluate(i, w)
    argv[argv.index("--out") + 1] = str(w / "c.csv")
    return argv, ["is a file; dasbi evaluate writes a folder"]


# datasets: empty, truncated, corrupt, foreign, tampered values -----------------------------
@case("train: empty dataset file")
def _(i, w):
    (w / "d.h5").write_bytes(b"")
    return _train(w / "d.h5", w), ["is empty (0 bytes)"]


@case("train: truncated dataset")
def _(i, w):
    (w / "d.h5").write_bytes(i.gl.read_bytes()[:20000])
    return _train(w / "d.h5", w), ["as HDF5", "corrupt or truncated", "regenerate it"]


@case("train: random bytes as dataset")
def _(i, w):
    (w / "d.h5").write_bytes(np.random.default_rng(0).bytes(5000))
    return _train(w / "d.h5", w), ["corrupt or truncated"]


@case("train: HDF5 that is not a dasbi dataset")
def _(i, w):
    with h5py.File(w / "d.h5", "w") as f:
        f["x"] = np.zeros(3)
    return _train(w / "d.h5", w), ["is not a dasbi dataset", "dasbi simulate"]


@case("train: dataset is a folder")
def _(i, w):
    (w / "d.h5").mkdir()
    return _train(w / "d.h5", w), ["is a folder"]


@case("train: dataset does not exist")
def _(i, w):
    return _train(w / "none.h5", w), ["does not exist"]


@case("train: NaN in theta")
def _(i, w):
    bad = _tamper(i.gl, w / "d.h5", "theta/values", 5, np.nan)
    return _train(bad, w), ["node 'theta_2' at row 2", "NaN or inf", "regenerate it"]


@case("train: inf in theta")
def _(i, w):
    bad = _tamper(i.gl, w / "d.h5", "theta/values", 0, np.inf)
    return _train(bad, w), ["node 'theta_1' at row 0", "NaN or inf"]


@case("train: inf in an observed x")
def _(i, w):
    shutil.copy(i.gl, w / "d.h5")
    with h5py.File(w / "d.h5", "r+") as f:
        row = int(np.argmax(f["x/x/observed"][:, 0]))
        a = f["x/x/values"][...]
        a[row, 0] = np.inf
        f["x/x/values"][...] = a
    return _train(w / "d.h5", w), [f"node 'x_1' at row {row}", "NaN or inf"]


@case("train: negative uncertainty in x")
def _(i, w):
    shutil.copy(i.gl, w / "d.h5")
    with h5py.File(w / "d.h5", "r+") as f:
        row = int(np.argmax(f["x/x/observed"][:, 1]))
        a = f["x/x/errors"][...]
        a[row, 1] = -1.0
        f["x/x/errors"][...] = a
    return _train(w / "d.h5", w), [f"node 'x_2' at row {row}", "uncertainty must be finite"]


@case("train: --resume with another dataset (mismatched node set)")
def _(i, w):
    shutil.copytree(i.model, w / "m")
    return ["train", "--data", str(i.gl3), "--out", str(w / "m"), "--resume", "--quiet"], [
        "trained with another config or dataset",
        "--overwrite",
    ]


@case("train: existing model without --resume")
def _(i, w):
    shutil.copytree(i.model, w / "m")
    return _train(i.gl, w), ["--resume"]


@case("train --domain-adapt: real data with other observables")
def _(i, w):
    return _train(i.gl, w, "--domain-adapt", "--real", str(i.gl3)), [
        "has observables the simulations lack: ['x_3']",
        "dasbi ingest --like",
    ]


@case("train --domain-adapt: real data lacking observables")
def _(i, w):
    return _train(i.gl3, w, "--domain-adapt", "--real", str(i.gl)), [
        "lacks the simulated observables ['x_3']"
    ]


@case("train --domain-adapt: NaN in the real data")
def _(i, w):
    shutil.copy(i.gl, w / "r.h5")
    with h5py.File(w / "r.h5", "r+") as f:
        row = int(np.argmax(f["x/x/observed"][:, 0]))
        a = f["x/x/values"][...]
        a[row, 0] = np.nan
        f["x/x/values"][...] = a
    return _train(i.gl, w, "--domain-adapt", "--real", str(w / "r.h5")), [
        f"node 'x_1' at row {row}"
    ]


@case("train: --real without --domain-adapt")
def _(i, w):
    return _train(i.gl, w, "--real", str(i.gl)), ["need --domain-adapt"]


@case("info: truncated dataset")
def _(i, w):
    (w / "d.h5").write_bytes(i.gl.read_bytes()[:20000])
    return ["info", str(w / "d.h5")], ["corrupt or truncated"]


@case("info: path does not exist")
def _(i, w):
    return ["info", str(w / "none.h5")], ["does not exist"]


# checkpoints ------------------------------------------------------------------------------
@case("infer: truncated weights")
def _(i, w):
    shutil.copytree(i.model, w / "m")
    p = w / "m" / "weights.safetensors"
    p.write_bytes(p.read_bytes()[:1000])
    return _infer(i, w, model=w / "m"), ["is corrupt (checksum mismatch)", "retrain or restore"]


@case("infer: corrupt meta.json")
def _(i, w):
    shutil.copytree(i.model, w / "m")
    (w / "m" / "meta.json").write_text("{not json")
    return _infer(i, w, model=w / "m"), ["meta.json' is corrupt"]


@case("infer: checkpoint lacks a weights file")
def _(i, w):
    shutil.copytree(i.model, w / "m")
    (w / "m" / "best.safetensors").unlink()
    return _infer(i, w, model=w / "m"), ["is incomplete: best.safetensors is missing"]


@case("infer: checkpoint does not exist")
def _(i, w):
    return _infer(i, w, model=w / "none"), ["does not exist", "dasbi train --out"]


@case("infer: column map for nodes the model lacks (mismatched node sets)")
def _(i, w):
    (w / "m.yaml").write_text(PHOT_MAP.replace("id: id", "id: name"))
    return _infer(i, w, smap=w / "m.yaml"), [
        "['2mass_J', '2mass_H'] are not observables of the model",
        "it has ['x_1', 'x_2']",
    ]


# catalogues -------------------------------------------------------------------------------
@case("infer: empty FITS file")
def _(i, w):
    (w / "c.fits").write_bytes(b"")
    return _infer(i, w, cat=w / "c.fits"), ["could not be read as FITS", "re-export"]


@case("ingest: empty FITS file")
def _(i, w):
    (w / "c.fits").write_bytes(b"")
    return _ingest(i, w, cat=w / "c.fits"), ["could not be read as FITS"]


@case("infer: random bytes as FITS")
def _(i, w):
    (w / "c.fits").write_bytes(np.random.default_rng(1).bytes(6000))
    return _infer(i, w, cat=w / "c.fits"), ["could not be read as FITS"]


def _truncated_fits(w: Path) -> Path:
    """A 3000-row FITS table cut to 60,000 bytes (its header promises more rows)."""
    t = Table({"name": [f"s{k}" for k in range(3000)], "a": np.zeros(3000)})
    for c in ("b", "e_a", "e_b"):
        t[c] = np.full(3000, 0.3)
    t.write(w / "full.fits")
    (w / "c.fits").write_bytes((w / "full.fits").read_bytes()[:60000])
    (w / "full.fits").unlink()
    return w / "c.fits"


@case("infer: truncated FITS table")
def _(i, w):
    _truncated_fits(w)
    return _infer(i, w, cat=w / "c.fits"), ["is truncated", "promises 3000 rows"]


@case("ingest: truncated FITS table")
def _(i, w):
    _truncated_fits(w)
    return _ingest(i, w, cat=w / "c.fits"), ["is truncated", "promises 3000 rows"]


@case("infer: empty CSV")
def _(i, w):
    (w / "c.csv").write_text("")
    return _infer(i, w, cat=w / "c.csv"), ["has no header line (column names)"]


@case("ingest: empty CSV")
def _(i, w):
    (w / "c.csv").write_text("")
    return _ingest(i, w, cat=w / "c.csv"), ["has no header line (column names)"]


@case("infer: CSV with a header and no rows")
def _(i, w):
    (w / "c.csv").write_text("name,a,b,e_a,e_b\n")
    return _infer(i, w, cat=w / "c.csv"), ["c.csv has no rows"]


@case("ingest: CSV with a header and no rows")
def _(i, w):
    (w / "c.csv").write_text("name,a,b,e_a,e_b\n")
    return _ingest(i, w, cat=w / "c.csv"), ["c.csv has no rows"]


@case("infer: CSV with a field that spans lines")
def _(i, w):
    (w / "c.csv").write_text('name,a,b,e_a,e_b\n"s\n1",1,2,0.3,0.3\ns2,1,2,0.3,0.3\n')
    return _infer(i, w, cat=w / "c.csv"), ["quoted fields spanning lines", "convert it to FITS"]


@case("infer: renamed column")
def _(i, w):
    t = Table.read(i.cat)
    t.rename_column("a", "A")
    t.write(w / "c.fits")
    return _infer(i, w, cat=w / "c.fits"), [
        "catalogue.columns.x_1: column 'a' is not in the catalogue",
        "(did you mean 'A'?)",
    ]


@case("ingest: missing id column")
def _(i, w):
    t = Table.read(i.cat)
    t.remove_column("name")
    t.write(w / "c.fits")
    return _ingest(i, w, cat=w / "c.fits"), ["catalogue.id: column 'name' is not in the catalogue"]


@case("infer: every row NaN or inf")
def _(i, w):
    t = Table.read(i.cat)
    t["a"] = np.nan
    t["b"] = np.inf
    t.write(w / "c.fits")
    return _infer(i, w, cat=w / "c.fits"), [
        "no usable row",
        "all 30 rows were rejected",
        "check the column map",
    ]


@case("ingest: every magnitude 99")
def _(i, w):
    cat = _phot(w, "c.fits", J=99.0, H=99.999)
    (w / "m.yaml").write_text(PHOT_MAP)
    return _ingest(i, w, cat=cat, smap=w / "m.yaml", like=i.fs), [
        "all 8 rows were rejected",
        "magnitude outside [-5.0, 35.0]",
    ]


@case("ingest: unknown unit")
def _(i, w):
    cat = _phot(w, "c.fits")
    (w / "m.yaml").write_text(PHOT_MAP.replace("error: eJ}", "error: eJ, unit: furlongs}"))
    return _ingest(i, w, cat=cat, smap=w / "m.yaml", like=i.fs), [
        "catalogue.columns.2mass_J: unknown unit 'furlongs'"
    ]


@case("ingest: wrong units (a length for a magnitude)")
def _(i, w):
    cat = _phot(w, "c.fits")
    (w / "m.yaml").write_text(PHOT_MAP.replace("error: eJ}", "error: eJ, unit: km}"))
    return _ingest(i, w, cat=cat, smap=w / "m.yaml", like=i.fs), [
        "catalogue.columns.2mass_J: values in km cannot be converted to the node's unit mag"
    ]


@case("infer: typo in a column map key")
def _(i, w):
    (w / "m.yaml").write_text(MAP.replace("columns:", "colums:"))
    return _infer(i, w, smap=w / "m.yaml"), ["unknown keys ['colums']", "valid: ['columns'"]


@case("infer: column map entry without a value column")
def _(i, w):
    (w / "m.yaml").write_text(MAP.replace("{value: a,", "{valeu: a,"))
    return _infer(i, w, smap=w / "m.yaml"), ["catalogue.columns.x_1 needs at least 'value:"]


@case("infer: column map with a python tag is not executed")
def _(i, w):
    marker = w.parent / f"{w.name}-pwned"
    (w / "m.yaml").write_text(PYTHON_TAG.format(marker=marker))
    i.extra["marker"] = marker
    return _infer(i, w, smap=w / "m.yaml"), ["is not valid YAML"]


@case("infer: unknown survey name")
def _(i, w):
    return _infer(i, w, smap="gaia_dr9"), ["unknown survey 'gaia_dr9'", "DASBI_SURVEYS"]


@case("infer: unknown catalogue format")
def _(i, w):
    (w / "c.xyz").write_text("a b\n1 2\n")
    return _infer(i, w, cat=w / "c.xyz"), ["cannot tell the format of c.xyz", "known: .csv"]


@case("infer: catalogue does not exist")
def _(i, w):
    return _infer(i, w, cat=w / "none.fits"), ["none.fits does not exist"]


@case("ingest: --like is not a dataset or model")
def _(i, w):
    (w / "like.h5").write_bytes(b"junk" * 100)
    return _ingest(i, w, like=w / "like.h5"), ["corrupt or truncated"]


@pytest.mark.parametrize("name", list(CASES))
def test_cli_bad_input(name, inputs, tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    argv, fragments = CASES[name](inputs, work)
    allowed = ("d.h5", "r.h5", "c.fits", "c.csv", "c.xyz", "m.yaml", "mine.yaml", "like.h5")
    allowed += ("c.yaml", "dir", "m")  # the inputs the case wrote itself
    assert_user_error(argv, fragments, capsys, work, allowed=allowed)
    for out in ("s.h5", "post.h5", "post.fits", "real.h5", "b.json", "ev"):
        assert not (work / out).exists()
    assert not any(p.name.startswith(".") for p in work.iterdir()), list(work.iterdir())
    marker = inputs.extra.pop("marker", None)
    if marker is not None:
        assert not marker.exists(), "a YAML python tag was executed"


def test_the_matrix_is_broad():
    """The note reports this count; the matrix covers every command that takes input."""
    commands = {name.split(":")[0].split()[0] for name in CASES}
    assert commands >= {"simulate", "train", "infer", "ingest", "evaluate", "info", "bench"}
    assert len(CASES) >= 60


# row-level problems: the run completes and the report names every value --------------------
def test_magnitudes_of_99_and_negative_fluxes_are_reported_not_lost(inputs, tmp_path, capsys):
    t = Table.read(_phot(tmp_path, "c.fits", J=[99.0, 12, 12, 12, 12, 12, 12, 12]))
    t["FJ"] = np.full(len(t), 1.5)
    t["FJ"][[2, 3]] = [-0.2, 0.0]
    t.write(tmp_path / "c.fits", overwrite=True)
    smap = tmp_path / "m.yaml"
    smap.write_text(
        PHOT_MAP.replace("{value: J, error: eJ}", "{value: FJ, error: eJ, unit: mJy}")
        + "    wise_W1: {value: J, error: eJ}\n"
    )
    argv = _ingest(inputs, tmp_path, cat=tmp_path / "c.fits", smap=smap, like=inputs.fs)
    assert main(argv) == 0
    report = Table.read(tmp_path / "real.rejected.ecsv", format="ascii.ecsv")
    reasons = {(int(r["row"]), r["column"]): r["reason"] for r in report}
    assert reasons[(0, "wise_W1")] == "magnitude outside [-5.0, 35.0]"
    assert reasons[(2, "2mass_J")] == reasons[(3, "2mass_J")] == "non-positive flux"
    from dasbi.dataset import Dataset

    with Dataset(tmp_path / "real.h5") as ds:
        assert ds.num_rows == 8  # every row kept: each still has a usable value
        blocks = ds.read()
        where = {n.name: (g, j) for g in ds.groups for j, n in enumerate(ds.nodes.group(g))}
    g, j = where["2mass_J"]
    assert not blocks[g].observed[[2, 3], j].any() and blocks[g].observed[[0, 1], j].all()
    g, j = where["wise_W1"]
    assert not blocks[g].observed[0, j] and blocks[g].observed[1:, j].all()


# public loaders ---------------------------------------------------------------------------
def _loader_cases(i: Inputs, w: Path) -> list[tuple[str, Callable[[], object], list[str]]]:
    from dasbi.catalogue import load_column_map, open_catalogue, read_catalogue
    from dasbi.checkpoint import load_checkpoint
    from dasbi.config import read_yaml
    from dasbi.dataset import Dataset
    from dasbi.posterior import Posterior
    from simulators.bandpasses import get_filter
    from simulators.surveys import load_survey

    (w / "empty.h5").write_bytes(b"")
    (w / "trunc.h5").write_bytes(i.gl.read_bytes()[:20000])
    (w / "bad.yaml").write_text("a: [1\n")
    (w / "py.yaml").write_text(PYTHON_TAG.format(marker=w / "pwned"))
    (w / "junk.fits").write_bytes(b"x" * 3000)
    shutil.copytree(i.model, w / "m")
    (w / "m" / "ema.safetensors").write_bytes(b"\0" * 64)
    post = Posterior.load(i.model)
    return [
        ("Dataset: empty", lambda: Dataset(w / "empty.h5"), ["is empty (0 bytes)"]),
        ("Dataset: truncated", lambda: Dataset(w / "trunc.h5"), ["corrupt or truncated"]),
        ("Dataset: missing", lambda: Dataset(w / "none.h5"), ["does not exist"]),
        ("read_yaml: bad", lambda: read_yaml(w / "bad.yaml"), ["is not valid YAML"]),
        ("read_yaml: python tag", lambda: read_yaml(w / "py.yaml"), ["is not valid YAML"]),
        ("load_column_map: bad", lambda: load_column_map(w / "bad.yaml"), ["not valid YAML"]),
        ("read_catalogue: junk", lambda: read_catalogue(w / "junk.fits"), ["could not be read"]),
        ("open_catalogue: junk", lambda: open_catalogue(w / "junk.fits"), ["could not be read"]),
        ("load_checkpoint: corrupt", lambda: load_checkpoint(w / "m"), ["checksum mismatch"]),
        ("Posterior.load: missing", lambda: Posterior.load(w / "none"), ["does not exist"]),
        (
            "Posterior.sample: inf",
            lambda: post.sample((4,), x={"x_1": np.inf, "x_2": 0.0}, errors={"x_2": 0.3}),
            ["node 'x_1': value is infinite", "pass NaN for a missing value"],
        ),
        (
            "Posterior.sample: unknown node",
            lambda: post.sample((4,), x={"x_9": 1.0}),
            ["unknown node 'x_9'", "theta_1"],
        ),
        (
            "Posterior.sample: negative error",
            lambda: post.sample((4,), x={"x_1": 0.0}, errors={"x_1": -1.0}),
            ["node 'x_1': errors must be finite and >= 0"],
        ),
        (
            "Posterior.sample: wrong unit",
            lambda: post.sample((4,), x={"x_1": 1.0 * __import__("astropy.units").units.km}),
            ["node 'x_1' is in", "got a quantity in km"],
        ),
        ("get_filter: unknown", lambda: get_filter("sdss_zz"), ["unknown filter 'sdss_zz'"]),
        ("load_survey: unknown", lambda: load_survey("gaia_dr9"), ["unknown survey 'gaia_dr9'"]),
    ]


def test_public_loaders_raise_clear_errors(inputs, tmp_path):
    cases = _loader_cases(inputs, tmp_path)
    for name, call, fragments in cases:
        with pytest.raises((DasbiError, ValueError)) as exc:
            call()
        for fragment in fragments:
            assert fragment in str(exc.value), (name, str(exc.value))
    assert not (tmp_path / "pwned").exists()
    assert len(cases) >= 16

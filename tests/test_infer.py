"""`dasbi infer` on a catalogue: summaries against the analytic posterior, schema round trip,
resume after a kill, Ray equals local, rejected rows reported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from astropy.table import Table

from dasbi.config import from_dict
from dasbi.errors import ConfigError, ResumeError
from dasbi.infer import FLAGS, InferConfig, read_posteriors, run_infer
from dasbi.simulate import SimulateConfig, run_simulate
from dasbi.train import TrainConfig, train

MAP = """
name: gl_catalogue
catalogue:
  id: name
  sentinels: [-999]
  columns:
    x_1: {value: a, error: e_a}
    x_2: {value: b, error: e_b, limit: l_b}
"""
SIGMA = np.sqrt(0.1)  # the linear Gaussian task's noise


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    sims = {"name": "gaussian_linear", "dim": 2, "missing_prob": 0.2}
    data = run_simulate(
        from_dict(SimulateConfig, {"num": 4000, "seed": 1, "simulator": sims}),
        root / "gl.h5",
        progress=False,
    )
    cfg = from_dict(
        TrainConfig,
        {
            "network": {"dim": 32, "depth": 2, "heads": 2},
            "batch_size": 256,
            "warmup_steps": 50,
            "val_every": 100,
            "lr": 2e-3,
            "max_steps": 1000,
        },
    )
    train(data, cfg, out=root / "model", progress=False)
    return root / "model"


@pytest.fixture
def catalogue(tmp_path):
    rng = np.random.default_rng(5)
    n = 60
    t = Table()
    t["name"] = [f"star{i:03d}" for i in range(n)]
    t["a"] = rng.uniform(-1, 1, n)
    t["b"] = rng.uniform(-1, 1, n)
    t["e_a"] = np.full(n, SIGMA)
    t["e_b"] = np.full(n, SIGMA)
    t["l_b"] = np.zeros(n, bool)
    t["l_b"][20] = True  # x_2 < b: an upper limit, sampled with guidance
    t["b"][3] = np.nan  # missing: marginalised
    t["a"][7] = -999.0  # sentinel
    t["a"][9] = t["b"][9] = np.nan  # nothing usable: rejected
    t["name"][11] = t["name"][10]  # duplicate: rejected
    t["e_a"][13] = -1.0  # bad error: value ignored
    path = tmp_path / "cat.fits"
    t.write(path)
    smap = tmp_path / "map.yaml"
    smap.write_text(MAP)
    return path, smap, t


def _cfg(model, cat, smap, **kw) -> InferConfig:
    return from_dict(
        InferConfig,
        {
            "model": str(model),
            "catalogue": str(cat),
            "survey": str(smap),
            "num_samples": 400,
            "chunk_size": 16,
            "seed": 3,
            **kw,
        },
    )


def test_summaries_match_the_analytic_posterior(model, catalogue, tmp_path):
    cat, smap, t = catalogue
    out = run_infer(
        _cfg(model, cat, smap, save_samples=True), tmp_path / "post.h5", progress=False
    )
    summary, attrs = read_posteriors(out)
    assert attrs["n_input"] == 60 and attrs["n_rejected"] == 2
    assert attrs["parameters"] == '["theta_1", "theta_2"]' and len(attrs["model_sha256"]) == 64
    assert len(summary) == 58 and "star009" not in set(summary["id"])
    assert list(summary["row"][:3]) == [0, 1, 2]
    # posterior of the linear Gaussian: N(x/2, 0.05) per coordinate when x is observed
    full = (summary["n_observed"] == 2) & ((summary["flags"] & FLAGS["upper_limits"]) == 0)
    rows = np.asarray(summary["row"])[full]
    np.testing.assert_allclose(summary["theta_1_median"][full], t["a"][rows] / 2, atol=0.08)
    np.testing.assert_allclose(summary["theta_2_mean"][full], t["b"][rows] / 2, atol=0.08)
    assert np.median(summary["theta_1_std"][full]) == pytest.approx(np.sqrt(0.05), rel=0.25)
    p16, p84 = summary["theta_1_p16"][full], summary["theta_1_p84"][full]
    assert np.median(p84 - p16) == pytest.approx(2 * np.sqrt(0.05), rel=0.25)
    # a missing x_2 leaves theta_2 at its prior N(0, 0.1)... scaled: std ≈ sqrt(0.1)
    i3 = list(summary["row"]).index(3)
    assert summary["n_observed"][i3] == 1
    assert summary["flags"][i3] & FLAGS["few_observed"]
    assert summary["theta_2_std"][i3] > 1.2 * np.sqrt(0.05)
    i20 = list(summary["row"]).index(20)
    assert summary["flags"][i20] & FLAGS["upper_limits"]
    assert not summary["flags"][0] & FLAGS["upper_limits"]
    with h5py.File(out) as f:
        assert f["samples"].shape == (58, 400, 2) and f["samples"].compression == "gzip"
    fits = Table.read(out.with_suffix(".fits"))  # streamed chunk by chunk: same table
    assert fits.colnames == summary.colnames and len(fits) == len(summary)
    np.testing.assert_array_equal(np.char.decode(np.asarray(fits["id"])), summary["id"])
    for name in summary.colnames[1:]:
        np.testing.assert_array_equal(np.asarray(fits[name]), np.asarray(summary[name]))
    assert fits.meta["MODELSHA"] == attrs["model_sha256"] and fits.meta["NINPUT"] == 60
    rej = Table.read(tmp_path / "post.rejected.ecsv")
    reasons = set(zip(rej["id"], rej["reason"], strict=True))
    assert ("star009", "no usable value") in reasons
    assert ("star010", "duplicate id") in reasons
    assert ("star013", "missing or negative error") in reasons
    assert ("star007", "no usable value") not in reasons  # b is still there


def test_ray_local_mode_equals_the_local_backend(model, catalogue, tmp_path):
    pytest.importorskip("ray")
    cat, smap, _ = catalogue
    a = run_infer(_cfg(model, cat, smap, num_samples=50), tmp_path / "a.h5", progress=False)
    b = run_infer(
        _cfg(model, cat, smap, num_samples=50, backend="ray", workers=2),
        tmp_path / "b.h5",
        progress=False,
    )
    sa, _ = read_posteriors(a)
    sb, _ = read_posteriors(b)
    for c in sa.colnames:
        np.testing.assert_array_equal(np.asarray(sa[c]), np.asarray(sb[c]), err_msg=c)


def test_resume_after_a_kill_loses_and_duplicates_nothing(model, catalogue, tmp_path):
    cat, smap, _ = catalogue
    cfg_file = tmp_path / "infer.yaml"
    cfg_file.write_text("num_samples: 300\nchunk_size: 4\nseed: 3\nsampler_steps: 60\n")
    args = [
        sys.executable,
        "-m",
        "dasbi.cli",
        "infer",
        "--config",
        str(cfg_file),
        "--model",
        str(model),
        "--catalogue",
        str(cat),
        "--survey",
        str(smap),
        "--quiet",
    ]
    ref = tmp_path / "ref.h5"
    subprocess.run(
        [*args, "--out", str(ref)],
        check=True,
        timeout=600,
        env={**os.environ, "DASBI_PROGRESS": "0"},
    )
    out = tmp_path / "killed.h5"
    proc = subprocess.Popen([*args, "--out", str(out)], env={**os.environ, "DASBI_PROGRESS": "0"})
    parts = Path(str(out) + ".parts")
    deadline = time.time() + 300
    while time.time() < deadline and len(list(parts.glob("chunk_*.npz"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the run finished before it could be killed"
    done = len(list(parts.glob("chunk_*.npz")))
    assert 3 <= done < 15
    subprocess.run(
        [*args, "--out", str(out)],
        check=True,
        timeout=600,
        env={**os.environ, "DASBI_PROGRESS": "0"},
    )
    s_ref, _ = read_posteriors(ref)
    s_out, _ = read_posteriors(out)
    assert len(s_out) == len(s_ref) == 58 and len(set(s_out["id"])) == 58
    for c in s_ref.colnames:
        np.testing.assert_array_equal(np.asarray(s_out[c]), np.asarray(s_ref[c]), err_msg=c)
    assert not parts.exists()


def test_clear_errors(model, catalogue, tmp_path):
    cat, smap, _ = catalogue
    with pytest.raises(ConfigError, match="needs --survey"):
        run_infer(
            from_dict(InferConfig, {"model": str(model), "catalogue": str(cat)}),
            tmp_path / "x.h5",
            progress=False,
        )
    with pytest.raises(ConfigError, match=r"\.h5"):
        run_infer(_cfg(model, cat, smap), tmp_path / "x.fits", progress=False)
    out = run_infer(_cfg(model, cat, smap, num_samples=5), tmp_path / "y.h5", progress=False)
    stamp = out.stat().st_mtime_ns
    # the same command again: the run is complete, nothing is rewritten
    assert run_infer(_cfg(model, cat, smap, num_samples=5), out, progress=False) == out
    assert out.stat().st_mtime_ns == stamp
    with pytest.raises(ResumeError, match="another run; pass --overwrite"):
        run_infer(_cfg(model, cat, smap, num_samples=6), out, progress=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("catalogue:\n  columns:\n    teff: {value: a}\n")
    with pytest.raises(ConfigError, match="not observables of the model"):
        run_infer(_cfg(model, cat, bad), tmp_path / "z.h5", progress=False)


def test_chunked_mapping_equals_whole_table_mapping(model, catalogue, tmp_path):
    """Rows are mapped chunk by chunk; duplicates across chunks and all-rejected chunks
    give the same accepted rows and the same report as one pass over the whole table."""
    from dasbi.catalogue import load_column_map, map_catalogue
    from dasbi.posterior import Posterior

    cat, smap, t = catalogue
    t = t.copy()
    t["name"][45] = t["name"][2]  # a duplicate three chunks after its first occurrence
    for r in range(28, 35):  # chunk 4 (rows 28-34 with chunk_size 7): nothing usable
        t["a"][r] = t["b"][r] = np.nan
    path = tmp_path / "cat2.fits"
    t.write(path)
    out = run_infer(_cfg(model, path, smap, num_samples=5, chunk_size=7), tmp_path / "c.h5")
    summary, attrs = read_posteriors(out)
    post = Posterior.load(model)
    obs = [n for n in post.diffuse if n.kind == "observable"]
    whole = map_catalogue(Table.read(path), load_column_map(smap), obs)
    np.testing.assert_array_equal(np.asarray(summary["row"]), whole.rows)
    np.testing.assert_array_equal(np.asarray(summary["id"]), whole.ids)
    assert attrs["n_rejected"] == 60 - len(whole) == 10
    rej = Table.read(tmp_path / "c.rejected.ecsv")
    assert sorted(zip(rej["row"], rej["reason"], strict=True)) == sorted(
        zip(whole.report.rows, whole.report.reasons, strict=True)
    )
    assert (45, "duplicate id") in set(zip(rej["row"], rej["reason"], strict=True))


def test_sampler_settings_reach_the_sampler(model, catalogue, tmp_path):
    cat, smap, _ = catalogue
    kw = {"num_samples": 20, "sampler": "dpm2m", "sampler_steps": 6}
    knee = run_infer(_cfg(model, cat, smap, **kw), tmp_path / "k.h5", progress=False)
    flat = run_infer(_cfg(model, cat, smap, sigma_knee=0.0, **kw), tmp_path / "f.h5")
    again = run_infer(_cfg(model, cat, smap, sigma_knee=3.0, **kw), tmp_path / "a.h5")
    a, b, c = (np.asarray(read_posteriors(p)[0]["theta_1_mean"]) for p in (knee, flat, again))
    np.testing.assert_array_equal(a, c)  # 3 is the default knee
    assert not np.allclose(a, b)  # knee 0: a different (log-uniform) grid
    end = run_infer(_cfg(model, cat, smap, sigma_end=0.05, **kw), tmp_path / "e.h5")
    d = np.asarray(read_posteriors(end)[0]["theta_1_mean"])
    assert not np.allclose(a, d)  # the grid stops at 0.05 instead of the SDE's σ_min
    with pytest.raises(ConfigError, match="sigma_end"):
        run_infer(_cfg(model, cat, smap, sigma_end=-1.0, **kw), tmp_path / "bad.h5")


def _mixed_csv(n: int = 40) -> str:
    """A catalogue as surveys publish it: x_2 (b, e_b, l_b) empty in the first rows, values
    written as integers, and one error rounded to 0."""
    rng = np.random.default_rng(11)
    lines = ["name,a,e_a,b,e_b,l_b"]
    for i in range(n):
        a = int(rng.integers(-1, 2))
        e_a = "0.000" if i == 30 else f"{SIGMA:.3f}"
        b = "" if i < 25 else str(int(rng.integers(-1, 2)))
        e_b = "" if i < 25 else "1"
        lines.append(f"star{i:03d},{a},{e_a},{b},{e_b},{'' if i < 25 else 0}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("fmt", ["csv", "ecsv", "fits", "parquet", "h5", "csv.gz"])
def test_empty_integer_columns_and_zero_errors_never_abort(model, tmp_path, fmt):
    """Optional bands empty in the first rows (read as masked integers) and an error rounded
    to 0.000 give report rows, never a traceback; error_floor makes the zero usable."""
    import gzip

    text = _mixed_csv()
    src = tmp_path / "raw.csv"
    src.write_text(text)
    cat = tmp_path / f"cat.{fmt}"
    if fmt == "csv":
        cat = src
    elif fmt == "csv.gz":
        cat.write_bytes(gzip.compress(text.encode()))
    else:
        t = Table.read(src, format="ascii.csv")
        assert t["b"].dtype.kind == "i" and t["b"].mask[:25].all()  # what the bug met
        kw = {"path": "data", "serialize_meta": True} if fmt == "h5" else {}
        t.write(cat, **kw)
    smap = tmp_path / "map.yaml"
    smap.write_text(MAP)
    out = run_infer(_cfg(model, cat, smap, chunk_size=10), tmp_path / "post.h5", progress=False)
    summary, attrs = read_posteriors(out)
    assert attrs["n_input"] == 40 and len(summary) == 40
    rej = Table.read(tmp_path / "post.rejected.ecsv")
    zero = [r for r in rej if "zero error" in r["reason"]]
    assert [r["id"] for r in zero] == ["star030"] and zero[0]["column"] == "x_1"
    assert "error_floor" in zero[0]["reason"]
    i30 = list(summary["id"]).index("star030")
    assert summary["n_observed"][i30] == 1  # x_1 ignored, x_2 kept
    # with a floor the rounded error becomes the floor and nothing is reported
    floored = tmp_path / "floor.yaml"
    floored.write_text(
        MAP.replace("{value: a, error: e_a}", "{value: a, error: e_a, error_floor: 0.01}")
    )
    out2 = run_infer(
        _cfg(model, cat, floored, chunk_size=10), tmp_path / "post2.h5", progress=False
    )
    s2, _ = read_posteriors(out2)
    assert s2["n_observed"][i30] == 2
    assert not any(
        "zero error" in r for r in Table.read(tmp_path / "post2.rejected.ecsv")["reason"]
    )


def test_error_floor_adds_in_quadrature_and_is_validated(tmp_path):
    from dasbi.catalogue import load_column_map, map_catalogue
    from dasbi.nodes import Node

    smap = tmp_path / "m.yaml"
    smap.write_text(
        MAP.replace("{value: a, error: e_a}", "{value: a, error: e_a, error_floor: 0.3}")
    )
    t = Table(
        {
            "name": ["s1", "s2"],
            "a": [0.1, 0.2],
            "e_a": [0.4, 0.0],
            "b": [1.0, 1.0],
            "e_b": [0.1, 0.1],
            "l_b": [False, False],
        }
    )
    nodes = [Node("x_1", "observable", "x"), Node("x_2", "observable", "x")]
    m = map_catalogue(t, load_column_map(smap), nodes)
    np.testing.assert_allclose(m.errors["x_1"], [0.5, 0.3])
    smap.write_text(
        MAP.replace("{value: a, error: e_a}", "{value: a, error: e_a, error_floor: -1}")
    )
    with pytest.raises(ConfigError, match="error_floor must be a number >= 0"):
        load_column_map(smap)


def test_python_api_takes_fluxes_in_mjy_for_magnitude_nodes(tmp_path):
    """Magnitude nodes carry their band's zero point (2MASS Ks: 666.7 Jy, Cohen et al.
    2003), so the API turns flux Quantities (and flux errors) into the same magnitudes the
    CLI's column map does: identical samples either way."""
    import astropy.units as u

    from dasbi.config import from_dict as fd
    from dasbi.errors import DataError
    from dasbi.posterior import Posterior
    from dasbi.simulate import SimulateConfig, run_simulate
    from dasbi.train import TrainConfig, train

    sim = {
        "name": "yso",
        "model_set": "s---s-i",
        "library": "planck",
        "surveys": ["2mass"],
        "aperture_arcsec": 3.0,
    }
    path = run_simulate(
        fd(SimulateConfig, {"num": 300, "seed": 0, "simulator": sim}),
        tmp_path / "y.h5",
        progress=False,
    )
    cfg = {"max_steps": 3, "batch_size": 32, "val_every": 3, "network": {"dim": 16, "depth": 1}}
    train(path, fd(TrainConfig, cfg), out=tmp_path / "m", progress=False)
    post = Posterior.load(tmp_path / "m")
    ks = next(n for n in post.diffuse if n.name == "2mass_Ks")
    assert ks.zero_point_jy == pytest.approx(666.7)
    mags = {"2mass_J": 12.0, "2mass_H": 11.4, "2mass_Ks": 11.1}
    errs = {"2mass_J": 0.03, "2mass_H": 0.03, "2mass_Ks": 0.03}
    zp = {n.name: n.zero_point_jy for n in post.diffuse if n.name in mags}
    flux = {k: zp[k] * 10 ** (-0.4 * m) * 1e3 * u.mJy for k, m in mags.items()}
    ferr = {k: errs[k] / 1.0857362 * flux[k] for k in mags}
    kw = {"sampler": {"method": "dpm2m", "steps": 4}, "seed": 3}
    a = post.sample((50,), x=mags, errors=errs, **kw).numpy()
    b = post.sample((50,), x=flux, errors=ferr, **kw).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    with pytest.raises(DataError, match="fluxes must be > 0"):
        post.sample((5,), x={**flux, "2mass_J": -1 * u.mJy}, errors=ferr, **kw)
    with pytest.raises(DataError, match="is in 'mag'"):
        post.sample((5,), x={**flux, "2mass_J": 3 * u.m}, errors=ferr, **kw)

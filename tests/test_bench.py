"""Benchmarks run end to end on tiny settings (the real figures come from `dasbi bench`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from dasbi.bench import run_bench
from dasbi.bench.sbibm import (
    TASKS,
    SbibmBenchConfig,
    _summary,
    _table,
    _task_errors,
    parse_sampler_specs,
)
from dasbi.config import from_dict, read_yaml
from dasbi.simulate import SimulateConfig, run_simulate
from dasbi.train import TrainConfig


def test_task_errors_come_from_the_simulations(tmp_path):
    cfg = from_dict(SimulateConfig, {"num": 50, "simulator": {"name": "gaussian_linear"}})
    errors = _task_errors(run_simulate(cfg, tmp_path / "gl.h5", progress=False))
    np.testing.assert_allclose(errors, np.full((1, 10), np.sqrt(0.1)), rtol=1e-6)
    cfg = from_dict(SimulateConfig, {"num": 50, "simulator": {"name": "two_moons"}})
    assert _task_errors(run_simulate(cfg, tmp_path / "tm.h5", progress=False)) is None


def test_summary_compares_methods_on_shared_observations():
    def rec(method, k, rf):
        return dict(task="t", budget=10, method=method, observation=k, c2st_rf=rf, train_s=1.0)

    results = [rec("dasbi", k, 0.5 + 0.01 * k) for k in (1, 2, 3, 4)]
    results += [rec("npse", k, 0.7) for k in (1, 2)]
    rows = {r["method"]: r for r in _summary(results)}
    assert rows["dasbi"]["c2st_rf"] == pytest.approx(0.525)  # all four
    assert rows["dasbi"]["c2st_rf_common"] == pytest.approx(0.515)  # observations 1-2
    assert rows["dasbi"]["common_obs"] == [1, 2]
    assert rows["npse"]["c2st_rf_common"] == pytest.approx(0.7)
    table = _table(list(rows.values()))
    assert "shared obs" in table and "0.515" in table
    # one observation set for all: no extra column
    same = _summary([rec("dasbi", 1, 0.5), rec("npe", 1, 0.6)])
    assert all("common_obs" not in r for r in same)
    assert "shared obs" not in _table(same)


def test_bench_sbibm_resumes_per_observation_from_the_saved_model(tmp_path, monkeypatch):
    """An interrupted run keeps its trained model next to the JSONL: a rerun loads it instead
    of training again and measures only the observations that have no record yet."""
    from dasbi.bench import sbibm
    from simulators import GaussianLinear

    data = run_simulate(
        from_dict(SimulateConfig, {"num": 400, "simulator": {"name": "gaussian_linear"}}),
        tmp_path / "gl.h5",
        progress=False,
    )
    sim, rng = GaussianLinear(), np.random.default_rng(0)
    refs = {}
    for k in (1, 2):
        obs = sim.simulate(sim.sample_prior(1, rng), rng)["x"].values[0]
        refs[k] = (obs, sim.reference_posterior(obs, 300, rng))
    jsonl = tmp_path / "partial.jsonl"
    cfg = from_dict(
        sbibm.SbibmBenchConfig,
        {
            "observations": [1, 2],
            "num_samples": 300,
            "c2st": ["rf"],
            "samplers": ["dpm2m-5"],
            "partial_jsonl": str(jsonl),
            "train": {"max_steps": 20, "batch_size": 64, "network": {"dim": 16, "depth": 1}},
        },
    )
    first = sbibm._run_dasbi(cfg, "gaussian_linear", 400, data, refs, False, {})
    assert [r["observation"] for r in first] == [1, 2]
    saved = tmp_path / "partial.jsonl.gaussian_linear_400_dasbi.model"
    assert saved.is_dir()
    recorded = yaml.safe_load((saved / "config.yaml").read_text())
    assert recorded["max_steps"] == 20 and recorded["network"]["dim"] == 16
    lines = jsonl.read_text().splitlines()
    jsonl.write_text(lines[0] + "\n" + lines[1][:20])  # obs 2 cut short by a crash

    def no_training(*args, **kwargs):
        raise AssertionError("the saved model should have been loaded")

    monkeypatch.setattr(sbibm, "train", no_training)
    again = sbibm._run_dasbi(
        cfg, "gaussian_linear", 400, data, refs, False, sbibm._load_partial(cfg)
    )
    assert again[0] == first[0]  # reused as recorded
    assert again[1]["c2st_rf"] == first[1]["c2st_rf"]  # same model, same seed: same samples
    assert again[1]["train_s"] == first[1]["train_s"]
    # a different training config does not pick up the saved model
    cfg.train = {**cfg.train, "max_steps": 21}
    with pytest.raises(AssertionError, match="should have been loaded"):
        sbibm._run_dasbi(cfg, "gaussian_linear", 400, data, refs, False, {})


def test_bench_sbibm_resumes_training_killed_between_checkpoints(tmp_path, monkeypatch):
    """A run killed during training picks up from the checkpoint kept next to the JSONL,
    ends with the weights of an uninterrupted run, counts the time of both segments, and
    removes the checkpoint once the model is saved."""
    from dasbi import train as train_module
    from dasbi import trainer as trainer_module
    from dasbi.bench import sbibm
    from simulators import GaussianLinear

    data = run_simulate(
        from_dict(SimulateConfig, {"num": 400, "simulator": {"name": "gaussian_linear"}}),
        tmp_path / "gl.h5",
        progress=False,
    )
    sim, rng = GaussianLinear(), np.random.default_rng(0)
    obs = sim.simulate(sim.sample_prior(1, rng), rng)["x"].values[0]
    refs = {1: (obs, sim.reference_posterior(obs, 300, rng))}
    settings = {
        "observations": [1],
        "num_samples": 300,
        "c2st": ["rf"],
        "samplers": ["dpm2m-5"],
        "train": {
            "max_steps": 40,
            "batch_size": 64,
            "checkpoint_every": 10,
            "val_every": 10,
            "network": {"dim": 16, "depth": 1},
        },
    }
    straight_cfg = from_dict(
        sbibm.SbibmBenchConfig, {**settings, "partial_jsonl": str(tmp_path / "a.jsonl")}
    )
    straight = sbibm._run_dasbi(straight_cfg, "gaussian_linear", 400, data, refs, False, {})

    cfg = from_dict(
        sbibm.SbibmBenchConfig, {**settings, "partial_jsonl": str(tmp_path / "b.jsonl")}
    )
    real_batch = trainer_module.TrainingData.batch

    def crash_at_step_25(self, step):
        if step == 25:
            raise KeyboardInterrupt("killed")
        return real_batch(self, step)

    monkeypatch.setattr(trainer_module.TrainingData, "batch", crash_at_step_25)
    with pytest.raises(KeyboardInterrupt):
        sbibm._run_dasbi(cfg, "gaussian_linear", 400, data, refs, False, {})
    ckpt = tmp_path / "b.jsonl.gaussian_linear_400_dasbi.model.train"
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["training"]["steps"] == 20
    assert meta["training"]["train_seconds"] > 0
    monkeypatch.setattr(trainer_module.TrainingData, "batch", real_batch)

    started = []

    def spy(*args, **kwargs):
        started.append(kwargs.get("resume", False))
        return train_module.train(*args, **kwargs)

    monkeypatch.setattr(sbibm, "train", spy)
    resumed = sbibm._run_dasbi(cfg, "gaussian_linear", 400, data, refs, False, {})
    assert started == [True]
    assert not ckpt.exists()
    model = tmp_path / "b.jsonl.gaussian_linear_400_dasbi.model"
    history = json.loads((model / "history.json").read_text())
    assert [h["step"] for h in history] == [10, 20, 30, 40]  # both segments
    assert (model / "loss.png").stat().st_size > 0
    info = json.loads((tmp_path / "b.jsonl.gaussian_linear_400_dasbi.model.json").read_text())
    assert info["steps"] == 40
    assert resumed[0]["train_s"] > meta["training"]["train_seconds"]
    # same weights as the uninterrupted run: same samples, same C2ST
    assert resumed[0]["c2st_rf"] == straight[0]["c2st_rf"]

    # a checkpoint from another config is not resumed: training starts afresh
    cfg.train = {**cfg.train, "max_steps": 41}
    monkeypatch.setattr(trainer_module.TrainingData, "batch", crash_at_step_25)
    with pytest.raises(KeyboardInterrupt):
        sbibm._run_dasbi(cfg, "gaussian_linear", 400, data, refs, False, {})
    monkeypatch.setattr(trainer_module.TrainingData, "batch", real_batch)
    cfg.train = {**cfg.train, "max_steps": 40}
    (tmp_path / "b.jsonl.gaussian_linear_400_dasbi.model").rename(tmp_path / "moved")
    started.clear()
    again = sbibm._run_dasbi(cfg, "gaussian_linear", 400, data, refs, False, {})
    assert started == [True, False]
    assert again[0]["c2st_rf"] == straight[0]["c2st_rf"]


def test_sampler_specs_are_checked():
    assert parse_sampler_specs(["heun-25", "dpm2m-15-bf16", "dpm2m_sde-40"]) == {
        "heun-25": {"method": "heun", "steps": 25, "precision": "float32"},
        "dpm2m_sde-40": {"method": "dpm2m_sde", "steps": 40, "precision": "float32"},
        "dpm2m-15-bf16": {"method": "dpm2m", "steps": 15, "precision": "bfloat16"},
    }
    for bad in ["rk4-3", "heun-bf16", "heun-3-fp8"]:
        with pytest.raises(ValueError, match="method-steps"):
            parse_sampler_specs([bad])
    spec = "dpm2m-10-bf16@sigma_end=0.01,sigma_knee=2"
    assert parse_sampler_specs([spec])[spec] == {
        "method": "dpm2m",
        "steps": 10,
        "precision": "bfloat16",
        "sigma_end": 0.01,
        "sigma_knee": 2,
    }
    with pytest.raises(ValueError, match="did you mean 'sigma_end'"):
        parse_sampler_specs(["dpm2m-10@sigma_ends=0.01"])
    with pytest.raises(ValueError, match="sigma_end"):
        parse_sampler_specs(["dpm2m-10@sigma_end=-1"])
    for bad in ["dpm2m-10@sigma_end", "dpm2m-10@steps=3", "dpm2m-10@=2"]:
        with pytest.raises(ValueError, match="key=value"):
            parse_sampler_specs([bad])


DOCS_BENCH = Path(__file__).resolve().parents[1] / "docs" / "bench"


@pytest.mark.parametrize("path", sorted(DOCS_BENCH.glob("sbibm_*.yaml")), ids=lambda p: p.name)
def test_documented_sbibm_configs_are_valid(path):
    """Every config in docs/bench still loads (keys, samplers, train keys) and is documented."""
    cfg = from_dict(SbibmBenchConfig, read_yaml(path))
    assert set(cfg.tasks) <= set(TASKS)
    parse_sampler_specs(cfg.samplers)
    for attention in cfg.attention:
        from_dict(TrainConfig, {**cfg.train, "attention": attention})
    assert path.name in (DOCS_BENCH.parent / "benchmarks.md").read_text(), "undocumented config"


def test_documented_configs_are_found():
    assert len(list(DOCS_BENCH.glob("sbibm_*.yaml"))) >= 8


@pytest.mark.parametrize("task", ["gaussian_linear", "two_moons"])
def test_bench_sbibm_tiny(tmp_path, task, sbibm_installed):
    options = {
        "tasks": [task],
        "budgets": [300],
        "observations": [1],
        "num_samples": 200,
        "methods": ["dasbi"],
        "samplers": ["heun-5", "dpm2m-5"],
        "c2st": ["rf"],
        "partial_jsonl": str(tmp_path / "p.jsonl"),
        "train": {"max_steps": 20, "val_every": 10, "network": {"dim": 16, "depth": 1}},
    }
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(options))
    path = run_bench("sbibm", out=tmp_path / "b.json", config=tmp_path / "b.yaml", progress=False)
    records = json.loads(path.read_text())["results"]
    assert [r["method"] for r in records] == ["dasbi", "dasbi[dpm2m-5]"]
    assert all(0.0 <= r["c2st_rf"] <= 1.0 for r in records)
    # a rerun reuses the partial records instead of training again
    path = run_bench("sbibm", out=tmp_path / "c.json", config=tmp_path / "b.yaml", progress=False)
    assert json.loads(path.read_text())["results"] == records


def test_bench_sampling_quick(tmp_path):
    options = {
        "num_samples": 100,
        "samplers": ["heun-3", "dpm2m-3"],
        "baselines": ["npe"],
        "train_steps": 2,
        "sbi_epochs": 1,
        "network": {"dim": 16, "depth": 1},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(options))
    path = run_bench("sampling", out=tmp_path / "s.json", config=tmp_path / "s.yaml", quick=True)
    out = json.loads(path.read_text())
    assert [r["method"] for r in out["results"]] == ["dasbi heun-3", "dasbi dpm2m-3", "npe"]
    assert all(r["samples_per_s"] > 0 for r in out["results"])
    assert (tmp_path / "s.md").exists()


def test_bench_simulate_yso_quick(tmp_path):
    options = {
        "model": "yso",
        "library": "planck",
        "model_sets": ["sp--s-i", "spubsmi"],
        "num_stars": 500,
        "synphot_stars": 2,
    }
    (tmp_path / "y.yaml").write_text(yaml.safe_dump(options))
    path = run_bench("simulate", out=tmp_path / "y.json", config=tmp_path / "y.yaml", quick=True)
    res = json.loads(path.read_text())["results"]
    rates = [r for r in res if r["method"] == "dasbi"]
    assert [r["model_set"] for r in rates] == ["sp--s-i", "spubsmi"]
    assert all(r["seds_per_s"] > 0 and r["bands"] == 15 for r in rates)
    # the vectorised photometry agrees with synphot on the same SEDs
    assert all(r["max_abs_mag_difference"] < 0.01 for r in res if r["method"] == "ratio")


def test_bench_infer_quick(tmp_path):
    options = {"library": "planck", "workers": [1]}
    (tmp_path / "i.yaml").write_text(yaml.safe_dump(options))
    path = run_bench("infer", out=tmp_path / "i.json", config=tmp_path / "i.yaml", quick=True)
    out = json.loads(path.read_text())
    methods = [r["method"] for r in out["results"]]
    assert methods == ["dasbi", "dasbi", "npe", "dasbi infer (local)", "dasbi infer (ray)"]
    assert [r["sampler"] for r in out["results"][:2]] == ["dpm2m-3", "dpm2m-3-bf16"]
    assert out["results"][0]["limits"] == "tokens"  # the YSO sims carry non-detections
    for r in out["results"]:
        assert r["objects_per_s"] > 0 and r["samples_per_s"] > 0
    for r in out["results"][:3]:
        assert 0.0 <= r["coverage_error"] <= 0.5 and r["rmse_mean"] > 0
    assert out["projection"]["hours_1e6_objects_this_machine"] > 0
    assert (tmp_path / "i.md").exists()


def test_infer_sampler_specs():
    from dasbi.bench.sbibm import parse_sampler_specs

    assert parse_sampler_specs(["dpm2m-10-bf16", "heun-5"]) == {
        "dpm2m-10-bf16": {"method": "dpm2m", "steps": 10, "precision": "bfloat16"},
        "heun-5": {"method": "heun", "steps": 5, "precision": "float32"},
    }
    with pytest.raises(ValueError, match="method-steps"):
        parse_sampler_specs(["dpm2m-bf16"])


def test_coverage_error_is_zero_for_calibrated_and_large_for_overconfident():
    from dasbi.bench.infer import coverage_error

    rng = np.random.default_rng(0)
    truth = rng.normal(size=(4000, 2))
    mean = truth + rng.normal(size=truth.shape)  # posterior N(mean, 1) contains truth
    calibrated = mean[None] + rng.normal(size=(200, 4000, 2))
    narrow = mean[None] + 0.3 * rng.normal(size=(200, 4000, 2))
    assert coverage_error(calibrated, truth)[0] < 0.02
    assert coverage_error(narrow, truth)[0] > 0.2


def test_bench_domain_adapt_quick(tmp_path, shared_data):
    part = tmp_path / "d.partial.jsonl"
    over = [f"partial_jsonl={part}"]
    path = run_bench(
        "domain-adapt", out=tmp_path / "d.json", quick=True, progress=False, overrides=over
    )
    out = json.loads(path.read_text())
    # --quick says it checks plumbing only; every variant is recorded as it finishes
    assert "plumbing only" in out["note"] and "plumbing only" in (tmp_path / "d.md").read_text()
    assert len(part.read_text().splitlines()) == 3
    # a rerun with the same settings trains nothing: it reuses the three records
    again = json.loads(
        run_bench(
            "domain-adapt", out=tmp_path / "e.json", quick=True, progress=False, overrides=over
        ).read_text()
    )
    assert again["results"] == out["results"] and len(part.read_text().splitlines()) == 3
    res = out["results"]
    assert [r["variant"] for r in res] == ["none", "C+OT+RS", "RS@rope"]
    names = out["parameters"]
    assert names == ["teff", "logg", "feh", "radius", "distance", "av"]
    for r in res:
        for dom in ("sim", "real"):
            assert r[f"{dom}_nrmse"] > 0 and 0 <= r[f"{dom}_coverage_error"] <= 0.5
            assert 0 <= r[f"{dom}_tarp_error"] <= 0.5
            assert {f"{dom}_bias_{n}" for n in names} <= set(r)
        assert 0 <= r["embedding_c2st"] <= 1 and r["embedding_gap"] >= 0
        assert "gap_closed" in r and {f"gap_closed_{n}" for n in names} <= set(r)
    assert out["settings"]["real"]["library"] == "kurucz_bands"
    assert "| none |" in (tmp_path / "d.md").read_text()


def test_bench_domain_adapt_xp_quick(tmp_path, shared_data):
    """xp: true puts Gaia XP on both sides, the real XP misspecified; the model reads it."""
    over = ["xp=true", "variants=[none]", "num_sims=300", "num_real=60", "num_test=20"]
    path = run_bench(
        "domain-adapt", out=tmp_path / "x.json", quick=True, progress=False, overrides=over
    )
    out = json.loads(path.read_text())
    (rec,) = out["results"]
    assert out["settings"]["xp"] and out["settings"]["xp_real"]["xp_error_scale"] == 1.5
    assert rec["sim_nrmse"] > 0 and 0 <= rec["embedding_c2st"] <= 1


def test_domain_adapt_xp_domains_differ_as_specified(tmp_path, shared_data):
    """The two XP domains of the same stars: the real spectra are the sim ones times the
    calibration error, under another extinction law, and scatter 1.5× their errors."""
    from dasbi.bench.domain_adapt import DomainAdaptBenchConfig, _simulators
    from dasbi.config import from_dict

    cfg = from_dict(
        DomainAdaptBenchConfig,
        {"xp": True, "real": {"rv_sigma": 0.0, "extinction_law": "G23", "error_scale": 1.0}},
    )
    sim, real = _simulators(cfg)
    assert "xp_spectrum" in [n["name"] for n in sim.nodes()]
    from simulators.gaia_xp import project_model, xp_design

    th = sim.sample_prior(300, np.random.default_rng(0))
    d = {k: th[:, i] for i, k in enumerate(sim.theta_names)}
    flux = sim.sed.flux(d["teff"], d["logg"], d["feh"], d["radius"], d["distance"], d["av"])
    clean = sim.sed.xp.convolve(flux).numpy().astype(np.float64)
    cal = real._xp_calibration
    assert cal[0] == pytest.approx(1.06) and cal[-1] == pytest.approx(1.02)
    b = real.simulate(th, np.random.default_rng(1))["xp"]
    expect = project_model(clean * cal) @ xp_design()[1]  # the calibrated spectrum, in the basis
    pull = (np.asarray(b.values) - expect) / np.asarray(b.errors)
    assert 1.4 < np.std(pull) < 1.6  # noise 1.5× the reported errors
    b0 = sim.simulate(th, np.random.default_rng(1))["xp"]
    pull0 = (np.asarray(b0.values) - project_model(clean) @ xp_design()[1]) / np.asarray(b0.errors)
    assert 0.9 < np.std(pull0) < 1.1


def test_domain_adapt_variants_are_parsed():
    from dasbi.bench.domain_adapt import variant_weights

    w = {"C": 0.1, "OT": 1.0, "RS": 0.5}
    assert variant_weights("none", w) == {"contrastive": 0.0, "ot": 0.0, "pair": 0.0}
    assert variant_weights("C+RS", w) == {"contrastive": 0.1, "ot": 0.0, "pair": 0.5}
    with pytest.raises(ValueError, match="unknown terms"):
        variant_weights("C+MMD", w)
    assert variant_weights("OT+RS@rope", w) == {"contrastive": 0.0, "ot": 1.0, "pair": 0.5}


def test_domain_adapt_variant_modes_set_the_align_options():
    from dasbi.bench.domain_adapt import DomainAdaptBenchConfig, variant_config

    b = DomainAdaptBenchConfig()
    plain = variant_config(b.train, "RS", b.weights, 0, 1, b.modes)
    rope = variant_config(b.train, "RS@rope", b.weights, 0, 1, b.modes)
    assert (plain.align.encoders, plain.align.level, plain.align.start_step) == (
        "shared",
        "pooled",
        0,
    )
    assert (rope.align.encoders, rope.align.level, rope.align.detach_sim) == (
        "separate",
        "tokens",
        True,
    )
    assert rope.align.pair == plain.align.pair == 1.0 and rope.align.ot == 0.0
    with pytest.raises(ValueError, match="unknown mode 'fancy'"):
        variant_config(b.train, "RS@fancy", b.weights, 0, 1, b.modes)


def test_spectral_type_temperatures(shared_data):
    from dasbi.bench.luhman import spectral_type_teff

    got = spectral_type_teff(["K7", "M0", "M3", "M3.5", "M9", "A0", "M0-M2", "L2"])
    np.testing.assert_allclose(got[:5], [4020.0, 3900.0, 3415.0, 3342.5, 2400.0])
    assert np.isnan(got[5:]).all()  # outside K5-M9 or a range: left out


def test_bench_luhman2016_quick(tmp_path, shared_data):
    path = run_bench("luhman2016", out=tmp_path / "l.json", quick=True, progress=False)
    out = json.loads(path.read_text())
    assert [r["variant"] for r in out["results"]] == ["none", "C+OT"]
    for r in out["results"]:
        assert r["members"] > 600  # IC 348 + NGC 1333 members with photometry
        assert r["log10_teff"]["n"] > 400 and r["log10_teff"]["robust_scatter"] > 0
        assert r["av_mag"]["n"] > 400
    assert out["a_j_over_a_v"] == pytest.approx(0.27, abs=0.02)  # G23, R(V) = 3.1
    assert (tmp_path / out["figures"]["members"]).stat().st_size > 20_000


def test_bench_photospheres(tmp_path, shared_data):
    """Every check is recorded; the PHOENIX photospheres beat black bodies on the real
    discless members in BP-RP at every T_eff, and pivot extinction overestimates A_G of an M
    star."""
    path = run_bench("photospheres", out=tmp_path / "p.json", progress=False)
    out = json.loads(path.read_text())
    checks = {r["check"] for r in out["results"]}
    assert checks == {
        "dwarf_sequence",
        "cra_discless",
        "dr3_minus_dr2",
        "logg_bp_rp",
        "pivot_extinction",
        "luhman_members",
        "luhman_av_from_jh",
        "cra_sed_shape",
    }
    # SED shape: each star is anchored on J/H/Ks, and a hotter model is bluer, so the
    # observed - model residual of the optical bands rises with the T_eff shift
    shape = {
        (r["teff_scale"], r["band"]): r for r in out["results"] if r["check"] == "cra_sed_shape"
    }
    assert (
        abs(shape[("+0 K", "2mass_H")]["median"]) < 0.02 and shape[("+0 K", "2mass_H")]["n"] > 30
    )
    for band in ("gaia_BP", "gaia_RP", "gaia_G"):
        rp = [shape[(f"+{d} K", band)]["median"] for d in (0, 100, 150, 200)]
        assert all(np.diff(rp) > 0), (band, rp)
    # IC 348 / NGC 1333 class III at their published T_eff and A_V: H-Ks fits within 0.06 mag,
    # and the disc stars show their K excess
    lm = {
        (r["disc"], tuple(r["av_range"]), r["colour"]): r
        for r in out["results"]
        if r["check"] == "luhman_members"
    }
    assert lm[("III", (0.0, 40.0), "H-Ks")]["n"] > 200
    assert abs(lm[("III", (0.0, 40.0), "H-Ks")]["median"]) < 0.06
    assert lm[("disc", (0.0, 40.0), "H-Ks")]["median"] > lm[("III", (0.0, 40.0), "H-Ks")]["median"]
    cra = {
        (r["library"], tuple(r["teff_range"]), r["colour"]): r
        for r in out["results"]
        if r["check"] == "cra_discless"
    }
    for (lib, rng, colour), r in cra.items():
        if lib == "phoenix" and colour == "BP-RP" and r["n"]:
            assert abs(r["median"]) < abs(cra[("planck", rng, colour)]["median"])
    g = [
        r["error"]
        for r in out["results"]
        if r["check"] == "pivot_extinction" and r["band"] == "gaia_G" and r["teff"] == 2700.0
    ]
    assert min(g) > 0.2
    assert out["members"] > 80 and (tmp_path / out["figures"]["members"]).stat().st_size > 20_000


def test_interval_stats_counts_truths_inside_the_interval():
    from dasbi.bench.yso_real import interval_stats

    med = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    truth = np.array([1.5, 2.0, 2.0, 5.0, 1.0])
    st = interval_stats(med, med - 0.6, med + 0.6, truth)
    assert st["n"] == 4 and st["bias"] == pytest.approx(np.median([-0.5, 0, 1, -1]))
    assert st["in_p16_p84"] == pytest.approx(0.5)  # 1.5 in [0.4, 1.6] and 2 in [1.4, 2.6]


def test_label_censoring_scores_the_labels_above_zero():
    """Labels published as exactly 0 are counted and left out of the second A_V score."""
    from dasbi.bench.yso_real import interval_stats, score_label_censoring

    av = np.array([0.0, 0.0, 1.0, 2.0, 3.0, 0.5])
    med = np.array([0.4, 0.5, 1.2, 2.1, 2.5, 9.0])
    s = {"av": {"median": med, "p16": med - 0.3, "p84": med + 0.3}}
    tr = {
        "teff": np.full(6, 3000.0),
        "av": av,
        "spt_num": np.array([0.0, 1.0, 2.0, 3.0, 4.0, 8.0]),  # the last is M8: outside K5-M6
    }
    rec = {"real": {"K5-M6": {}}}
    score_label_censoring(rec, s, tr)
    k = rec["real"]["K5-M6"]
    assert k["av_label_zero_fraction"] == pytest.approx(0.4)
    pos = np.array([False, False, True, True, True, False])
    assert k["av_mag_label_above_0"] == interval_stats(
        med[pos], med[pos] - 0.3, med[pos] + 0.3, av[pos]
    )
    assert k["av_mag_label_above_0"]["n"] == 3


def test_bench_yso_real_quick(tmp_path, shared_data):
    """Both development sets go through ingest and the posterior; every split and the
    simulated-test recovery are recorded; the rounded zero errors of CrA are no problem."""
    path = run_bench("yso-real", out=tmp_path / "y.json", quick=True, progress=False)
    out = json.loads(path.read_text())
    assert [(r["set"], r["variant"]) for r in out["results"]] == [
        ("cra", "phoenix/young"),
        ("ic348_ngc1333", "phoenix/young"),
        ("ngc1333_rebull", "phoenix/young"),
    ]
    cra, lu, ngc = out["results"]
    assert ngc["members_ingested"] == 203 and out["rejected"]["ngc1333_rebull"] == {}
    assert cra["members_ingested"] == 193 and out["rejected"]["cra"] == {}
    assert lu["members_ingested"] == 658  # 23 rows of the 681 have no photometry
    assert out["rejected"]["ic348_ngc1333"] == {"row rejected: no usable value": 23}
    for r in out["results"]:
        assert {"all", "K5-M6", "K5-M6 III", "K5-M6 disc", "M3-M6"} <= set(r["real"])
        k = r["real"]["K5-M6"]
        assert k["teff_K"]["n"] > 100 and 0 <= k["av_mag"]["in_p16_p84"] <= 1
        assert r["sim_test"]["all"]["teff_K"]["n"] == 40
    assert cra["real"]["K5-M6"]["a_k_from_av_0.112"]["n"] > 100
    for key in ("cra", "ic348_ngc1333", "ngc1333_rebull"):
        assert (tmp_path / out["figures"][key]).stat().st_size > 10_000
    with pytest.raises(ValueError, match="library/prior"):
        run_bench(
            "yso-real",
            out=tmp_path / "z.json",
            quick=True,
            progress=False,
            overrides=["variants=[phoenix/imf]"],
        )


def test_ngc1333_members_get_rebull_s_irac_and_mips_with_limits(shared_data):
    from dasbi.bench.yso_real import ngc1333_rebull

    t, truth = ngc1333_rebull()
    assert len(t) == len(truth["id"]) == 203 and set(truth["group"]) == {"NGC1333"}
    matched = ~t["r_match_arcsec"].mask
    assert matched.sum() == 201 and np.max(t["r_match_arcsec"][matched]) < 1.0
    assert (~t["r___3_6_"].mask).sum() == 197
    lim = np.char.strip(np.asarray(t["r_l__24_"], str)) == ">"  # fainter than
    assert lim.sum() == 42 and np.all(~t["r___24_"].mask[lim])  # a limit has its value
    assert not np.any(lim & ~matched)


def test_yso_align_pair_rows_keep_only_the_fold_inside_the_prior():
    from dasbi.bench.yso_align import _pair_rows

    tr = {
        "group": np.array(["A", "A", "A", "A", "B", "A"]),
        "teff": np.array([3000.0, 3000.0, 9000.0, np.nan, 3000.0, 3500.0]),
        "av": np.array([1.0, 20.0, 1.0, 1.0, 1.0, -0.2]),
    }
    rows, outside = _pair_rows(tr, "A", (0.0, 15.0), np.array([2300.0, 7000.0]))
    assert rows.tolist() == [0, 5] and outside == 2  # A_V 20 and 9000 K have no twin


def test_bench_yso_align_quick(tmp_path, shared_data):
    """Cross-validated pairs: each fold's pairs come from one group and its scores from the
    others, every labelled member is scored once, and a rerun reuses the partial records."""
    opts = [f"partial_jsonl={tmp_path / 'p.jsonl'}", "variants=[none,RS@rope]"]
    path = run_bench(
        "yso-align", out=tmp_path / "a.json", quick=True, progress=False, overrides=opts
    )
    out = json.loads(path.read_text())
    assert [(r["set"], r["variant"]) for r in out["results"]] == [
        ("ic348_ngc1333", "none"),
        ("ic348_ngc1333", "RS@rope"),
        ("cra", "none"),
        ("cra", "RS@rope"),
    ]
    folds = out["setup"]["ic348_ngc1333"]["folds"]
    assert folds["IC348"]["scored"] == ["NGC1333"] and folds["NGC1333"]["scored"] == ["IC348"]
    assert folds["IC348"]["n_pairs"] > 300 and folds["NGC1333"]["n_pairs"] > 100
    cra = out["setup"]["cra"]["folds"]
    assert cra["A"]["scored"] == ["B"] and 150 < cra["A"]["n_pairs"] + cra["B"]["n_pairs"] < 170
    for none, rs in (out["results"][:2], out["results"][2:]):
        assert [m["pairs_from"] for m in none["models"]] == [None]
        assert none["models"][0]["sim_test_real_encoders_2800-4400K"] is None  # shared
        assert all(m["sim_test_real_encoders_2800-4400K"] for m in rs["models"])
        assert len(rs["models"]) == 2 and all("pair" in m["last_losses"] for m in rs["models"])
        for split in ("all", "K5-M6"):  # the two folds together score every member once
            assert rs["real"][split]["teff_K"]["n"] == none["real"][split]["teff_K"]["n"]
    assert (tmp_path / out["figures"]["cra"]).stat().st_size > 10_000
    again = run_bench(
        "yso-align", out=tmp_path / "b.json", quick=True, progress=False, overrides=opts
    )
    assert json.loads(again.read_text())["results"] == out["results"]


@pytest.mark.parametrize("infer_chunks", [1, 100])
def test_bench_memory_tiny(tmp_path, infer_chunks, request):
    """The memory bench runs each command in a child process and reads its peak RSS;
    its streamed FITS writer makes a valid table with the planted duplicate ids."""
    from astropy.table import Table

    if infer_chunks == 1:
        request.getfixturevalue("shared_data")  # the XP step's test sources

    from dasbi.bench.memory import _catalogue

    _catalogue(tmp_path / "c.fits", 2500)
    t = Table.read(tmp_path / "c.fits")
    assert len(t) == 2500 and t["source_id"][3] == "G3" and t["source_id"][2499] == "G1"
    assert (t["e_a"] == np.float32(0.3)).all() and abs(float(np.mean(t["a"]))) < 0.1
    (tmp_path / "m.yaml").write_text(
        "rows: 20000\nchunk_size: 5000\ntrain_steps: 10\ncatalogue_rows: 20000\n"
        f"infer_chunks: {infer_chunks}\ninfer_chunk_size: 2000\nnum_samples: 5\n"
        f"folder: {tmp_path}\nxp_sources: {400 if infer_chunks == 1 else 0}\n"
    )
    path = run_bench("memory", out=tmp_path / "m.json", config=tmp_path / "m.yaml")
    rec = json.loads(path.read_text())
    sim, train, infer = rec["results"][:3]
    if infer_chunks == 1:  # the XP step: infer's streamed path and the whole-file one
        streamed, whole = rec["results"][3:]
        assert streamed["command"].startswith("XP spectra, streamed") and whole["rows"] == 400
        assert streamed["file_mb"] > 400 * 0.03 and 100 < streamed["peak_rss_mb"] < 4000
    else:
        assert len(rec["results"]) == 3
    for r in (sim, train, infer):
        assert 50 < r["peak_rss_mb"] < 4000
    assert sim["rows"] == 20000 and sim["in_memory_inputs_mb"] == pytest.approx(5.34, abs=0.1)
    assert infer["chunks_done"] >= 1
    if infer_chunks == 100:  # never stopped: the run finishes, all 10 chunks are done
        assert not infer["stopped_early"] and infer["chunks_done"] == 10
    elif not infer["stopped_early"]:  # it finished between two polls
        assert infer["chunks_done"] == 10
    assert "| dasbi infer |" in (tmp_path / "m.md").read_text()


def test_bench_sbibm_simulator_options_are_checked():
    from dasbi.bench.sbibm import bench_sbibm

    base = {"tasks": ["slcp"], "budgets": [300], "methods": ["dasbi"], "observations": [1]}
    with pytest.raises(ValueError, match="not among the tasks"):
        bench_sbibm(
            False, {**base, "simulator": {"two_moons": {"theta_transform": "logit"}}}, False
        )
    with pytest.raises(ValueError, match="reference posteriors would no longer apply"):
        bench_sbibm(False, {**base, "simulator": {"slcp": {"missing_prob": 0.5}}}, False)


def test_bench_sbibm_logit_theta_keeps_samples_in_the_prior_box(tmp_path, monkeypatch):
    """With ``simulator: {two_moons: {theta_transform: logit}}`` the model trains on
    logit(θ) and every posterior sample lands inside the prior box U(-1, 1)², in
    θ's own units; the saved model records the option, so a run without it retrains."""
    from dasbi.bench import sbibm

    sim = {"name": "two_moons", "theta_transform": "logit"}
    data = run_simulate(
        from_dict(SimulateConfig, {"num": 400, "simulator": sim}),
        tmp_path / "tm.h5",
        progress=False,
    )
    cfg = from_dict(
        sbibm.SbibmBenchConfig,
        {
            "tasks": ["two_moons"],
            "observations": [1],
            "num_samples": 2000,
            "c2st": ["rf"],
            "samplers": ["dpm2m-5"],
            "simulator": {"two_moons": {"theta_transform": "logit"}},
            "partial_jsonl": str(tmp_path / "p.jsonl"),
            "train": {"max_steps": 20, "batch_size": 64, "network": {"dim": 16, "depth": 1}},
        },
    )
    kept = {}

    def keep(cfg_, task, budget, k, name, train_s, dt, ref, s):
        kept["samples"] = s.numpy()
        return {"observation": k, "method": name}

    monkeypatch.setattr(sbibm, "_measurement", keep)
    obs = np.array([0.1, -0.2])
    recs = sbibm._run_dasbi(cfg, "two_moons", 400, data, {1: (obs, None)}, False, {})
    assert recs[0]["simulator"] == {"theta_transform": "logit"}
    s = kept["samples"]
    assert s.shape == (2000, 2) and np.isfinite(s).all()
    assert (np.abs(s) <= 1.0).all()
    info = json.loads((tmp_path / "p.jsonl.two_moons_400_dasbi.model.json").read_text())
    assert info["simulator"] == {"theta_transform": "logit"}

    def no_training(*args, **kwargs):
        raise AssertionError("retrained")

    monkeypatch.setattr(sbibm, "train", no_training)
    cfg.simulator = {}
    with pytest.raises(AssertionError, match="retrained"):
        sbibm._run_dasbi(cfg, "two_moons", 400, data, {1: (obs, None)}, False, {})


def test_xp_real_predictive_chi2_is_one_for_the_truth(shared_data):
    """χ²_ν of noisy simulated coefficients is ≈ 1 when the posterior draws are the true θ,
    and far above 1 for draws 20% too hot."""
    from dasbi.bench.xp_real import _hot_box, ppc_chi2
    from simulators.gaia_xp import XPNoiseModel, project
    from simulators.stars import FieldStars

    sim = FieldStars(
        {"library": "ck04", "xp": True, "bands": {"gaia_G": {}}, "priors": _hot_box()}
    )
    rng = np.random.default_rng(0)
    out = sim(200, rng)
    spectra = np.asarray(out.x["xp"].values, np.float32)  # as datasets store them
    coef = project(spectra.astype(np.float64))
    th = out.theta.astype(np.float64)
    noise = XPNoiseModel.load()
    chi = ppc_chi2(sim, np.repeat(th[None], 4, axis=0), coef, noise, spectra)
    assert 0.85 < np.median(chi) < 1.15
    # without the float32 rounding in the covariance, the high BP orders inflate it
    assert np.median(ppc_chi2(sim, np.repeat(th[None], 4, axis=0), coef, noise)) > 1.3
    hot = th.copy()
    hot[:, sim.theta_names.index("teff")] *= 1.2
    ok = sim.in_library(hot[:, 0], hot[:, 1], hot[:, 2])
    chi_hot = ppc_chi2(sim, np.repeat(hot[None], 4, axis=0), coef, noise)
    assert np.isnan(chi_hot[~ok]).all() and np.nanmedian(chi_hot) > 10


def test_bench_xp_real_quick(tmp_path, shared_data):
    part = tmp_path / "x.partial.jsonl"
    over = [f"partial_jsonl={part}"]
    path = run_bench(
        "xp-real", out=tmp_path / "x.json", quick=True, progress=False, overrides=over
    )
    out = json.loads(path.read_text())
    assert [r["variant"] for r in out["results"]] == ["none", "C+OT"]
    assert out["real_sources"] == 60 and out["real_errors_modelled"] == 60
    assert "plumbing only" in out["note"] and "plumbing only" in (tmp_path / "x.md").read_text()
    for r in out["results"]:
        assert r["real_ppc_scored"] > 0 and r["real_ppc_chi2_median"] > 0
        assert 0 <= r["data_c2st"] <= 1 and 0 <= r["embedding_c2st"] <= 1
        assert r["ppc_ratio"] == pytest.approx(
            r["real_ppc_chi2_median"] / r["sim_ppc_chi2_median"], rel=0.01
        )
    assert out["real_bp_rp_p1_p50_p99"][1] < 0.2  # the real sources are blue
    with pytest.raises(ValueError, match="no simulated twins"):
        run_bench("xp-real", out=tmp_path / "y.json", quick=True, overrides=["variants=[RS]"])

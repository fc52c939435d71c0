"""Domain adaptation: each alignment loss trains the encoders it should (sim and real side),
an end-to-end run through `dasbi train --domain-adapt`, the checkpoint round trip, errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dasbi.adapt import AdaptedPosterior, DomainAdaptConfig, train_domain_adapt
from dasbi.adapted import embedding_gap
from dasbi.config import from_dict
from dasbi.dataset import Dataset, DatasetWriter
from dasbi.errors import DataError
from dasbi.simulate import SimulateConfig, run_simulate


def _shifted(src, dst, shift):
    """A 'real' domain: the same objects with every observable offset by ``shift``."""
    with Dataset(src) as ds:
        blocks = ds.read()
        nodes = ds.nodes
    x = blocks["x"]
    x.values = x.values + np.float32(shift)
    return DatasetWriter.write(dst, nodes, blocks)


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    root = tmp_path_factory.mktemp("da")
    sims = {"name": "gaussian_linear", "dim": 2}

    def sim(n, seed, name):
        return run_simulate(
            from_dict(SimulateConfig, {"num": n, "seed": seed, "simulator": sims}),
            root / name,
            progress=False,
        )

    s = sim(3000, 0, "sim.h5")
    r = _shifted(sim(1000, 1, "r0.h5"), root / "real.h5", 0.8)
    ps = sim(200, 2, "pairs_sim.h5")
    pr = _shifted(ps, root / "pairs_real.h5", 0.8)
    return root, s, r, (ps, pr)


def _cfg(**kw):
    base = {
        "network": {"dim": 16, "depth": 1, "heads": 2},
        "encoder": {"dim": 16, "depth": 1, "heads": 2, "tokens": 2},
        "batch_size": 64,
        "real_batch_size": 64,
        "pair_batch_size": 32,
        "max_steps": 2,
        "val_every": 1,
        "warmup_steps": 0,
        "grad_clip": 1e6,
        "seed": 0,
    }
    for k, v in kw.items():
        if isinstance(v, dict):
            base[k] = {**base.get(k, {}), **v}
        else:
            base[k] = v
    return from_dict(DomainAdaptConfig, base)


def _weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("term", ["contrastive", "ot", "pair"])
def test_each_alignment_loss_trains_the_real_side_and_detach_freezes_the_sim_side(domains, term):
    _, s, r, pairs = domains
    off = {"contrastive": 0.0, "ot": 0.0, "pair": 0.0, "warmup_steps": 0}
    common = {"encoders": "separate", "detach_sim": True}
    ref, _ = train_domain_adapt(s, r, _cfg(align={**off, **common}), pairs=pairs, progress=False)
    on, hist = train_domain_adapt(
        s, r, _cfg(align={**off, **common, term: 1.0}), pairs=pairs, progress=False
    )
    assert term in hist[-1]
    # the real-side encoders only learn from the alignment term ...
    assert not _same(_weights(on.real_encoders), _weights(ref.real_encoders))
    # ... and with detach_sim the sim side learns only from the score loss
    assert _same(_weights(on.encoders), _weights(ref.encoders))
    # without detach_sim the same term trains the sim-side encoders too
    both, _ = train_domain_adapt(
        s, r, _cfg(align={**off, "encoders": "separate", term: 1.0}), pairs=pairs, progress=False
    )
    assert not _same(_weights(both.encoders), _weights(ref.encoders))


@pytest.mark.parametrize("term", ["ot", "pair"])
def test_token_level_terms_train_the_real_side_only(domains, term):
    _, s, r, pairs = domains
    off = {"contrastive": 0.0, "ot": 0.0, "pair": 0.0, "warmup_steps": 0}
    common = {"encoders": "separate", "detach_sim": True, "level": "tokens", "pair_kind": "l2"}
    ref, _ = train_domain_adapt(s, r, _cfg(align={**off, **common}), pairs=pairs, progress=False)
    on, hist = train_domain_adapt(
        s, r, _cfg(align={**off, **common, term: 1.0}), pairs=pairs, progress=False
    )
    assert hist[-1][term] > 0
    assert not _same(_weights(on.real_encoders), _weights(ref.real_encoders))
    assert _same(_weights(on.encoders), _weights(ref.encoders))
    assert _same(_weights(on.net), _weights(ref.net))


def test_start_step_delays_alignment_and_starts_the_real_side_from_the_trained_encoders(domains):
    _, s, r, pairs = domains

    def run(start):
        align = {"pair": 1.0, "ot": 0.0, "contrastive": 0.0, "encoders": "separate"}
        align.update(detach_sim=True, level="tokens", start_step=start, warmup_steps=0)
        cfg = _cfg(align=align, max_steps=12, val_every=4, lr=1e-3)
        return train_domain_adapt(s, r, cfg, pairs=pairs, progress=False)

    def dist(post):
        sim, real = _weights(post.encoders), _weights(post.real_encoders)
        return sum(float((sim[k] - real[k]).norm()) for k in sim)

    late, hist = run(8)
    early, _ = run(0)
    # the pair term is logged only once alignment has started
    assert ["pair" in h for h in hist] == [False, False, True]
    # the best snapshot is never one taken before the alignment started
    assert late.meta["training"]["best_val_loss"] == hist[-1]["val_loss"]
    # started at step 8 from the sim encoders, the real copy is much closer to them than
    # one that started from the initial weights and learnt only from the pairs
    assert dist(late) < 0.5 * dist(early)


def test_domain_adaptation_end_to_end_through_the_cli(domains, tmp_path):
    root, s, r, (ps, pr) = domains
    cfg = tmp_path / "da.yaml"
    cfg.write_text(
        "network: {dim: 16, depth: 1, heads: 2}\n"
        "encoder: {dim: 16, depth: 1, heads: 2, tokens: 2}\n"
        "batch_size: 128\nreal_batch_size: 128\nval_every: 50\nlr: 2.0e-3\n"
        "align: {contrastive: 0.1, ot: 1.0, pair: 0.5, warmup_steps: 50, ot_method: emd}\n"
    )
    out = tmp_path / "model"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dasbi.cli",
            "train",
            "--domain-adapt",
            "--data",
            str(s),
            "--real",
            str(r),
            "--pairs",
            str(ps),
            str(pr),
            "--config",
            str(cfg),
            "--max-steps",
            "300",
            "--out",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "checkpoint in" in proc.stdout
    hist = json.loads((out / "history.json").read_text())
    assert {"score", "contrastive", "ot", "pair", "val_loss"} <= set(hist[-1])
    assert (out / "loss.png").stat().st_size > 1000
    post = AdaptedPosterior.load(out)
    # alignment happened: the scale-free sim-real embedding gap is far below that of the
    # same training without the alignment terms
    plain, _ = train_domain_adapt(
        s,
        r,
        _cfg(
            max_steps=300,
            batch_size=128,
            val_every=100,
            lr=2e-3,
            align={"contrastive": 0.0, "ot": 0.0, "pair": 0.0},
        ),
        progress=False,
    )
    gap_da, gap_plain = embedding_gap(post, s, r, 500), embedding_gap(plain, s, r, 500)
    assert gap_da < 0.5 * gap_plain, (gap_da, gap_plain)
    x = np.array([[0.3, -0.2], [1.1, 0.6]])
    th = post.sample((200,), x=x, errors=np.full((2, 2), np.sqrt(0.1)), seed=0)
    assert th.shape == (200, 2, 2) and torch.isfinite(th).all()
    # what the adapted model cannot do is said, not silently wrong
    with pytest.raises(DataError, match="encoder context, not Simformer nodes"):
        post.sample_nodes((10,), given={"theta_1": 0.1})
    # log p(θ | x) through the encoders: finite, and lower far from the posterior
    err = np.full((2, 2), np.sqrt(0.1))
    lp = post.log_prob(th[:20], x=x, errors=err, steps=16).numpy()
    assert lp.shape == (20, 2) and np.isfinite(lp).all()
    far = post.log_prob(th[:20] + 3.0, x=x, errors=err, steps=16).numpy()
    assert np.median(far) < np.median(lp) - 5
    with pytest.raises(DataError, match="embed needs modality encoders"):
        from dasbi.posterior import Posterior as _P

        _P(post.net, post.sde, post.standardizer, post.nodes).embed(s)
    th_map = post.sample((50,), x={"x_1": x[:, 0], "x_2": x[:, 1]}, errors=np.full((2, 2), 0.3))
    assert th_map.shape == (50, 2, 2)
    # dasbi infer runs on a real catalogue with the adapted model (its real-side encoders)
    from astropy.table import Table

    from dasbi.infer import InferConfig, read_posteriors, run_infer

    t = Table({"id": ["a", "b", "c"], "m1": [0.3, 1.1, 0.5], "m2": [-0.2, 0.6, np.nan]})
    t.write(tmp_path / "cat.fits")
    (tmp_path / "map.yaml").write_text(
        "catalogue:\n  id: id\n  columns:\n    x_1: {value: m1, error: 0.3}\n"
        "    x_2: {value: m2, error: 0.3}\n"
    )
    icfg = from_dict(
        InferConfig,
        {
            "model": str(out),
            "catalogue": str(tmp_path / "cat.fits"),
            "num_samples": 40,
            "survey": str(tmp_path / "map.yaml"),
            "fits": False,
        },
    )
    summary, _ = read_posteriors(run_infer(icfg, tmp_path / "post.h5", progress=False))
    assert list(summary["id"]) == ["a", "b", "c"] and list(summary["n_observed"]) == [2, 2, 1]
    assert np.isfinite(summary["theta_1_median"]).all()
    # a missing observable is marginalised, not an error
    th_nan = post.sample((50,), x=np.array([np.nan, 0.2]), errors=np.full(2, 0.3))
    assert th_nan.shape == (50, 2) and torch.isfinite(th_nan).all()


def test_domain_adaptation_errors(domains, tmp_path):
    _, s, r, (ps, pr) = domains
    other = run_simulate(
        from_dict(
            SimulateConfig,
            {"num": 50, "seed": 0, "simulator": {"name": "gaussian_linear", "dim": 1}},
        ),
        tmp_path / "gl1.h5",
        progress=False,
    )
    with pytest.raises(DataError, match="lacks the simulated observables"):
        train_domain_adapt(s, other, _cfg(), progress=False)
    short = run_simulate(
        from_dict(
            SimulateConfig,
            {"num": 10, "seed": 0, "simulator": {"name": "gaussian_linear", "dim": 2}},
        ),
        tmp_path / "short.h5",
        progress=False,
    )
    with pytest.raises(DataError, match="same rows"):
        train_domain_adapt(s, r, _cfg(), pairs=(ps, short), progress=False)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dasbi.cli",
            "train",
            "--domain-adapt",
            "--data",
            str(s),
            "--out",
            str(tmp_path / "m"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "needs --real" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ingest_a_real_catalogue_as_the_real_domain(tmp_path, shared_data):
    """`dasbi ingest` turns the Luhman et al. (2016) IC 348 table into a real dataset with
    the simulation's observables (unmapped ones missing) that DA training accepts."""
    from dasbi.catalogue import catalogue_to_dataset

    sims = run_simulate(
        from_dict(
            SimulateConfig,
            {
                "num": 300,
                "seed": 0,
                "simulator": {
                    "name": "field_stars",
                    "library": "planck",
                    "mag_limit": 17.0,
                    "bands": {"gaia_G": {}, "2mass_J": {}, "2mass_H": {}, "2mass_Ks": {}},
                },
            },
        ),
        tmp_path / "sims.h5",
        progress=False,
    )
    cat = shared_data / "real/yso/IC348/Luhman2016_Table1_apjaa2cabt1_mrt.txt"
    out = tmp_path / "real.h5"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dasbi.cli",
            "ingest",
            "--catalogue",
            str(cat),
            "--survey",
            "luhman2016",
            "--like",
            str(sims),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "rows rejected" in proc.stdout
    with Dataset(out) as ds:
        names = [n.name for n in ds.nodes.diffuse]
        assert names == ["gaia_G", "2mass_J", "2mass_H", "2mass_Ks", "parallax"]
        x = ds.read()["photometry"]
        assert 450 < ds.num_rows <= 478
        assert not x.observed[:, 0].any()  # gaia_G is not in the map: missing
        assert x.observed[:, 3].mean() > 0.95 and np.nanmedian(x.values[:, 3]) > 8
    import h5py

    with h5py.File(out) as f:
        assert len(f["source_id"]) == ds.num_rows
    assert (tmp_path / "real.rejected.ecsv").exists()
    cfg = _cfg(align={"ot": 1.0, "contrastive": 0.0, "pair": 0.0})
    post, hist = train_domain_adapt(sims, out, cfg, progress=False)
    assert np.isfinite(hist[-1]["ot"])
    with pytest.raises(Exception, match="exists"):
        catalogue_to_dataset(cat, "luhman2016", sims, out)
    with pytest.raises(Exception, match="model folder|checkpoint"):
        catalogue_to_dataset(cat, "luhman2016", tmp_path, tmp_path / "x.h5")


def test_the_sim_side_can_be_streamed_from_disk(domains):
    """With in_memory: false the simulated rows are read in shuffled blocks, as in
    `dasbi train`, so the simulation set need not fit in memory."""
    _, s, r, _ = domains
    post, hist = train_domain_adapt(
        s, r, _cfg(in_memory=False, max_steps=3, val_fraction=0.0), progress=False
    )
    assert len(hist) == 3 and all(np.isfinite(h["score"]) for h in hist)
    assert hist[-1]["val_loss"] is None  # no validation rows


def test_kill_and_resume_domain_adaptation_matches_uninterrupted(domains, tmp_path):
    """SIGKILL `dasbi train --domain-adapt` after a checkpoint, resume, compare weights."""
    import os
    import signal
    import time

    import yaml

    from dasbi.checkpoint import load_checkpoint
    from dasbi.errors import ResumeError

    _, s, r, (ps, pr) = domains
    settings = {
        "network": {"dim": 16, "depth": 1, "heads": 2},
        "encoder": {"dim": 16, "depth": 1, "heads": 2, "tokens": 2},
        "batch_size": 64,
        "real_batch_size": 64,
        "pair_batch_size": 16,
        "max_steps": 240,
        "checkpoint_every": 20,
        "val_every": 20,
        "seed": 1,
        "align": {
            "contrastive": 0.1,
            "ot": 1.0,
            "pair": 0.5,
            "warmup_steps": 40,
            "ot_method": "emd",
        },
    }
    conf = tmp_path / "da.yaml"
    conf.write_text(yaml.safe_dump(settings))
    cmd = [
        sys.executable,
        "-m",
        "dasbi.cli",
        "train",
        "--domain-adapt",
        "--data",
        str(s),
        "--real",
        str(r),
        "--pairs",
        str(ps),
        str(pr),
        "--config",
        str(conf),
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    ]
    env = {**os.environ, "DASBI_PROGRESS": "0"}
    proc = subprocess.Popen(cmd, env=env)
    meta = tmp_path / "run" / "meta.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if meta.exists() and json.loads(meta.read_text())["training"]["steps"] >= 60:
                break
        except (json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps_at_kill = json.loads(meta.read_text())["training"]["steps"]
    assert 60 <= steps_at_kill < 240
    cfg = from_dict(DomainAdaptConfig, settings)
    with pytest.raises(ResumeError, match="--resume"):
        train_domain_adapt(s, r, cfg, pairs=(ps, pr), out=tmp_path / "run", progress=False)
    with pytest.raises(ResumeError, match="another config"):
        other = from_dict(DomainAdaptConfig, {**settings, "max_steps": 241})
        train_domain_adapt(
            s, r, other, pairs=(ps, pr), out=tmp_path / "run", resume=True, progress=False
        )
    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    train_domain_adapt(s, r, cfg, pairs=(ps, pr), out=tmp_path / "ref", progress=False)
    resumed = load_checkpoint(tmp_path / "run").tensors
    reference = load_checkpoint(tmp_path / "ref").tensors
    for name in ("best", "ema_all"):
        assert reference[name].keys() == resumed[name].keys()
        for k in reference[name]:
            torch.testing.assert_close(resumed[name][k], reference[name][k], rtol=0, atol=0)
    hist_run = json.loads((tmp_path / "run" / "history.json").read_text())
    hist_ref = json.loads((tmp_path / "ref" / "history.json").read_text())
    assert [h["step"] for h in hist_run] == [h["step"] for h in hist_ref]
    assert AdaptedPosterior.load(tmp_path / "run").meta["training"]["finished"]


@pytest.fixture
def xp_domains(tmp_path_factory, shared_data):
    """Field stars with Gaia photometry, parallax and XP spectra (the sim side), and a real
    side without spectra."""
    root = tmp_path_factory.mktemp("xp")
    opts = {"name": "field_stars", "bands": {"gaia_G": {}, "gaia_BP": {}, "gaia_RP": {}}}
    sim = run_simulate(
        from_dict(
            SimulateConfig,
            {"num": 400, "seed": 0, "simulator": {**opts, "xp": True, "mag_limit": 15}},
        ),
        root / "sim.h5",
        progress=False,
    )
    real = run_simulate(
        from_dict(SimulateConfig, {"num": 200, "seed": 1, "simulator": {**opts, "mag_limit": 15}}),
        root / "real.h5",
        progress=False,
    )
    return sim, real


def test_spectra_are_a_modality_of_the_adapted_model(xp_domains, tmp_path):
    from dasbi.adapted import encode
    from dasbi.bench.domain_adapt import observations
    from dasbi.inputs import context_tensors
    from dasbi.trainer import to_inputs

    sim, real = xp_domains
    cfg = _cfg(max_steps=3, align={"ot": 1.0, "contrastive": 0.1, "pair": 0.0})
    cfg.encoder.patch = 16
    post, hist = train_domain_adapt(sim, real, cfg, progress=False)
    assert np.isfinite(hist[-1]["score"])
    spec = next(sp for sp in post.specs if sp["kind"] == "spectrum")
    assert spec["name"] == "xp" and spec["nodes"] == ["xp_spectrum"]
    with Dataset(sim) as ds:
        lam_nm = np.asarray(ds.group_attrs("xp")["wavelength_nm"])
        blocks = ds.read(0, 8)
        inputs = to_inputs(blocks, ds, post.x_standardizer, context=True)
    np.testing.assert_allclose(spec["wavelengths_aa"], 10 * lam_nm)  # nm → Å
    assert -20 < spec["log_flux_ref"] < -12  # W m-2 nm-1 of G <= 15 stars

    # the score loss reaches the spectrum encoder through the context tokens
    from dasbi.loss import DenoisingScoreLoss, training_state

    enc = post.encoders
    ctx, ok, _, present = encode(enc, post.specs, inputs)
    assert present[:, [sp["kind"] for sp in post.specs].index("spectrum")].all()
    gen = torch.Generator().manual_seed(0)
    th = inputs.take(slice(0, 8))
    p = len(post.parameter_names)
    th = type(inputs)(
        th.values[:, :p],
        th.errors[:, :p],
        th.present[:, :p],
        th.limit[:, :p],
        th.limit_value[:, :p],
    )
    st = training_state(th, torch.ones(p, dtype=torch.bool), cfg.masks, gen)
    DenoisingScoreLoss(post.net, post.sde, cfg.sde.weighting)(
        th, st, gen, None, ctx, ok
    ).mean().backward()
    grads = [q.grad for q in enc["xp"].parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0

    # a spectrum changes the posterior; without one the modality is absent
    _, kw = observations(sim)
    # observations() gives the spectra too (flux NaN where not observed, errors)
    got_flux, got_err = kw.pop("spectra")["xp_spectrum"]
    n8 = len(blocks["xp"].values)  # blocks hold the first rows of the dataset
    np.testing.assert_array_equal(got_err[:n8], blocks["xp"].errors)
    obs = np.asarray(blocks["xp"].observed)
    np.testing.assert_array_equal(got_flux[:n8][obs], np.asarray(blocks["xp"].values)[obs])
    assert np.isnan(got_flux[:n8][~obs]).all()
    kw = {k: {n: v[:8] for n, v in m.items()} for k, m in kw.items()}
    xp = (blocks["xp"].values, blocks["xp"].errors)
    fast = {"method": "dpm2m", "steps": 4}
    with_xp = post.sample((40,), **kw, spectra={"xp_spectrum": xp}, seed=0, sampler=fast)
    without = post.sample((40,), **kw, seed=0, sampler=fast)
    assert with_xp.shape == without.shape == (40, 8, 6)
    assert not torch.equal(with_xp, without)
    # round trip through the checkpoint, spectrum encoder included
    post.save(tmp_path / "m")
    assert "without a training config" in (tmp_path / "m" / "config.yaml").read_text()
    again = AdaptedPosterior.load(tmp_path / "m")
    torch.testing.assert_close(
        again.sample((40,), **kw, spectra={"xp_spectrum": xp}, seed=0, sampler=fast), with_xp
    )
    # clear errors for bad spectra
    for bad, match in [
        ({"xp_spectrum": blocks["xp"].values}, "pair"),
        ({"xp_spectrum": (blocks["xp"].values[:, :10], blocks["xp"].errors[:, :10])}, "pixels"),
        ({"lamost_spectrum": xp}, "unknown spectrum"),
        ({"xp_spectrum": (np.full_like(xp[0], np.inf), xp[1])}, "finite"),
    ]:
        with pytest.raises(DataError, match=match):
            post.sample((4,), **kw, spectra=bad, seed=0, sampler=fast)
    # masked pixels are invalid ones: NaN flux or non-positive error
    flux = blocks["xp"].values.copy()
    flux[0, :50] = np.nan
    blocks["xp"].values = flux
    with Dataset(sim) as ds:
        _, _, valid = context_tensors(blocks, ds.nodes)["xp_spectrum"]
    assert not valid[0, :50].any() and valid[0, 50:].all()


def test_spectrum_specs_need_pixel_wavelengths():
    from dasbi.adapted import modality_specs
    from dasbi.nodes import Node, NodeSet

    nodes = NodeSet(
        [
            Node("teff", "parameter", "theta"),
            Node("g", "observable", "photometry", unit="mag", wavelength_um=0.48),
            Node("spec", "observable", "lamost", role="context", size=4),
        ]
    )
    with pytest.raises(DataError, match="no pixel wavelengths"):
        modality_specs(nodes, {})
    with pytest.raises(DataError, match="4 pixels but 3 wavelengths"):
        modality_specs(nodes, {"lamost": {"wavelength_aa": [4000.0, 5000.0, 6000.0]}})
    specs = modality_specs(nodes, {"lamost": {"wavelength_nm": [400.0, 500.0, 600.0, 700.0]}})
    assert [(sp["name"], sp["kind"]) for sp in specs][-1] == ("lamost", "spectrum")
    assert specs[-1]["wavelengths_aa"] == [4000.0, 5000.0, 6000.0, 7000.0]
    # the photometry encoder places bands by the pivot wavelengths in the node metadata
    assert specs[0]["kind"] == "photometry" and specs[0]["wavelengths_um"] == [0.48]
    bare = NodeSet([Node("teff", "parameter", "theta"), Node("g", "observable", "photometry")])
    with pytest.warns(UserWarning, match="no pivot wavelengths"):
        assert modality_specs(bare)[0]["kind"] == "scalar"

"""Training loop and posterior API on a 2-D linear Gaussian with a known posterior."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dasbi.checkpoint import load_checkpoint
from dasbi.config import from_dict
from dasbi.errors import DataError, ResumeError
from dasbi.inputs import model_inputs
from dasbi.network import LATENT, OBSERVED
from dasbi.posterior import Posterior
from dasbi.samplers import sample_latents
from dasbi.simulate import SimulateConfig, run_simulate
from dasbi.train import TrainConfig, train

SMALL = {
    "network": {"dim": 32, "depth": 2, "heads": 2},
    "batch_size": 256,
    "warmup_steps": 50,
    "val_every": 100,
    "lr": 2e-3,
}


def tcfg(**kw) -> TrainConfig:
    return from_dict(TrainConfig, {**SMALL, **kw})


@pytest.fixture(scope="module")
def gl_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("gl") / "gl.h5"
    # 20% of the observables are missing, as in real survey data
    sim = {"name": "gaussian_linear", "dim": 2, "missing_prob": 0.2}
    cfg = from_dict(SimulateConfig, {"num": 4000, "seed": 1, "simulator": sim})
    return run_simulate(cfg, path, progress=False)


@pytest.fixture(scope="module")
def trained(gl_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m"
    result = train(gl_data, tcfg(max_steps=1200), out=out, progress=False)
    return result, out


def test_posterior_matches_analytic_gaussian(trained):
    result, out = trained
    post = Posterior.load(out)
    x = np.array([[0.6, -0.4], [-0.2, 0.1]])
    s = post.sample((3000,), x=x, errors=np.full((2, 2), np.sqrt(0.1)), seed=0)
    assert s.shape == (3000, 2, 2)
    # posterior N(x / 2, 0.05 I)
    np.testing.assert_allclose(s.mean(0).numpy(), x / 2, atol=0.05)
    np.testing.assert_allclose(s.var(0).numpy(), 0.05, rtol=0.35)
    corr = np.corrcoef(s[:, 0, 0].numpy(), s[:, 0, 1].numpy())[0, 1]
    assert abs(corr) < 0.1


def test_log_prob_matches_the_analytic_gaussian_posterior(trained):
    """log p(θ | x) through the probability-flow ODE against N(x / 2, 0.05 I): the same
    density up to 0.05 nats on average (and a normalised one: the importance weights
    q_model / q average to 1), exact trace and Hutchinson's agree, and wrong shapes are
    explained."""
    from dasbi.errors import DataError

    _, out = trained
    post = Posterior.load(out)
    x = np.array([[0.6, -0.4], [-0.2, 0.1]])
    err = np.full((2, 2), np.sqrt(0.1))
    th = x / 2 + np.sqrt(0.05) * np.random.default_rng(0).standard_normal((400, 2, 2))
    lp = post.log_prob(th, x=x, errors=err).numpy()
    assert lp.shape == (400, 2) and lp.dtype == np.float64
    true = -0.5 * ((th - x / 2) ** 2 / 0.05).sum(-1) - np.log(2 * np.pi * 0.05)
    d = lp - true
    assert np.all(np.abs(d.mean(0)) < 0.05) and np.all(d.std(0) < 0.2)
    assert np.all(np.abs(np.exp(d).mean(0) - 1.0) < 0.05)
    # a θ far from the posterior is much less likely
    far = post.log_prob(x / 2 + 1.0, x=x, errors=err).numpy()
    assert far.shape == (2,) and np.all(far < true.max(0) - 10)
    hutch = post.log_prob(th[:50], x=x, errors=err, exact_trace=False, probes=4).numpy()
    assert np.abs(hutch - lp[:50]).mean() < 0.05
    with pytest.raises(DataError, match="theta must have shape"):
        post.log_prob(np.zeros(3), x=x, errors=err)


def test_flow_matching_objective_and_dpm_solver(gl_data, tmp_path):
    """The flow-matching option trains the same network; DPM-Solver++ (ODE and SDE)
    samples it."""
    cfg = tcfg(max_steps=1000, sde={"name": "flow", "weighting": "fm"})
    train(gl_data, cfg, out=tmp_path / "fm", progress=False)
    post = Posterior.load(tmp_path / "fm")
    assert post.meta["sde"]["name"] == "flow"
    x = np.array([[0.6, -0.4]])
    for sampler in ("heun", "dpm2m", "dpm2m_sde"):
        s = post.sample(
            (3000,), x=x, errors=np.full((1, 2), np.sqrt(0.1)), seed=0, sampler=sampler
        )
        np.testing.assert_allclose(s.mean(0).numpy(), x / 2, atol=0.06)
        np.testing.assert_allclose(s.var(0).numpy(), 0.05, rtol=0.4)


def test_joint_transformer_without_kv_cache_trains_saves_and_samples(gl_data, tmp_path):
    """network.kv_cache false (observed tokens also attend to latent ones, as in the
    reference code) goes through the same training, checkpoint and sampling paths."""
    cfg = tcfg(max_steps=1000, network={**SMALL["network"], "kv_cache": False})
    train(gl_data, cfg, out=tmp_path / "joint", progress=False)
    post = Posterior.load(tmp_path / "joint")
    assert post.meta["network"]["kv_cache"] is False and not post.net.cfg.kv_cache
    x = np.array([[0.6, -0.4]])
    s = post.sample((3000,), x=x, errors=np.full((1, 2), np.sqrt(0.1)), seed=0, sampler="dpm2m")
    np.testing.assert_allclose(s.mean(0).numpy(), x / 2, atol=0.06)
    np.testing.assert_allclose(s.var(0).numpy(), 0.05, rtol=0.4)


def test_any_conditional_likelihood_and_marginal(trained):
    post = Posterior.load(trained[1])
    lik = post.sample_nodes((3000,), given={"theta_1": 0.3, "theta_2": -0.2}, seed=1)
    assert set(lik) == {"x_1", "x_2"}
    assert float(lik["x_1"].mean()) == pytest.approx(0.3, abs=0.05)
    assert float(lik["x_2"].var()) == pytest.approx(0.1, rel=0.35)
    # marginalisation by removal: x_2 absent, θ_2 not requested
    m = post.sample_nodes(
        (3000,), given={"x_1": 0.8}, errors={"x_1": 0.316}, latent=["theta_1"], seed=2
    )
    assert set(m) == {"theta_1"}
    assert float(m["theta_1"].mean()) == pytest.approx(0.4, abs=0.05)
    # a missing observable (NaN) is marginalised: θ_2 falls back to its prior N(0, 0.1);
    # were x_2 read as a value, the variance would be the posterior's 0.05
    s = post.sample((3000,), x=np.array([0.8, np.nan]), errors=np.full(2, 0.316), seed=3)
    assert float(s[:, 1].var()) == pytest.approx(0.1, rel=0.4)
    assert float(s[:, 0].mean()) == pytest.approx(0.4, abs=0.05)


def test_inference_uses_the_training_code_path(trained, gl_data):
    """Posterior.sample equals a query built by hand from dataset rows, bit for bit."""
    from dasbi.dataset import Dataset
    from dasbi.inputs import diffuse_arrays

    post = Posterior.load(trained[1])
    with Dataset(gl_data) as ds:
        values, errors, observed, upper = diffuse_arrays(ds.read(0, 3), ds.nodes)
    inputs = model_inputs(values, errors, observed, upper, post.standardizer)
    state = torch.full((3, 4), OBSERVED)
    state[:, :2] = LATENT
    cache = post.net.encode(inputs.values, inputs.errors, state).expand(50)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        lat = sample_latents(
            lambda x, s: post.net.denoise(cache, x, s), (150, 2), post.sde, post.sampler, gen
        )
    manual = post.standardizer.subset([0, 1]).inverse(lat.view(3, 50, 2).transpose(0, 1).numpy())
    api = post.sample((50,), x=values[:, 2:], errors=errors[:, 2:], seed=7).numpy()
    np.testing.assert_allclose(api, manual, rtol=1e-5, atol=1e-6)


def test_checkpoint_contents_and_reload(trained):
    result, out = trained
    ck = load_checkpoint(out, train_state=True)
    assert {"weights", "ema", "best"} <= set(ck.tensors)
    assert ck.meta["needs_errors"] == ["x_1", "x_2"]
    history = json.loads((out / "history.json").read_text())
    assert history and all("val_loss" in h for h in history)
    assert (out / "loss.png").stat().st_size > 1000
    assert (out / "config.yaml").read_text().startswith("network:")
    a = Posterior.load(out).sample((20,), x=np.zeros(2), errors=np.full(2, 0.3), seed=3)
    b = result.posterior.sample((20,), x=np.zeros(2), errors=np.full(2, 0.3), seed=3)
    torch.testing.assert_close(a, b)


def test_best_is_a_real_copy_of_the_ema_weights(tmp_path):
    """Rerun up to the best step: its EMA weights equal the first run's saved 'best'.

    60 rows, half for validation, overfit: the validation loss is lowest before the end.
    """
    cfg = {"num": 60, "seed": 1, "simulator": {"name": "gaussian_linear", "dim": 2}}
    data = run_simulate(from_dict(SimulateConfig, cfg), tmp_path / "tiny.h5", progress=False)
    over = {
        "batch_size": 64,
        "warmup_steps": 0,
        "val_every": 50,
        "patience": 100,
        "lr": 3e-3,
        "min_lr": 3e-3,
        "val_fraction": 0.5,
        "ema_decay": 0.9,
    }
    # a constant learning rate, so that a shorter run follows the same trajectory
    first = train(data, tcfg(max_steps=400, **over), out=tmp_path / "m", progress=False)
    vals = [(h["val_loss"], h["step"]) for h in first.history]
    best_step = min(vals)[1]
    assert best_step < 400, vals
    saved = load_checkpoint(tmp_path / "m").tensors
    second = train(data, tcfg(max_steps=best_step, **over), progress=False)
    for k, v in second.posterior.net.state_dict().items():
        torch.testing.assert_close(saved["best"][k], v, rtol=0, atol=0)
    # and it differs from the final EMA weights
    assert any(not torch.equal(saved["best"][k], saved["ema"][k]) for k in saved["best"])


def test_deterministic(gl_data):
    a = train(gl_data, tcfg(max_steps=40, val_every=20), progress=False)
    b = train(gl_data, tcfg(max_steps=40, val_every=20), progress=False)
    for (k, va), vb in zip(
        a.posterior.net.state_dict().items(), b.posterior.net.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)


def test_kill_and_resume_matches_uninterrupted(gl_data, tmp_path):
    """SIGKILL `dasbi train` after a checkpoint, resume it, compare with a straight run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    settings = {**SMALL, "max_steps": 300, "checkpoint_every": 50, "val_every": 50}
    conf = tmp_path / "train.yaml"
    conf.write_text(yaml.safe_dump(settings))
    cmd = [
        sys.executable,
        "-m",
        "dasbi.cli",
        "train",
        "--data",
        str(gl_data),
        "--config",
        str(conf),
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    ]
    env = {**os.environ, "DASBI_PROGRESS": "0"}
    proc = subprocess.Popen(cmd, env=env)
    meta = tmp_path / "run" / "meta.json"
    deadline = time.time() + 240
    while time.time() < deadline:
        if meta.exists() and json.loads(meta.read_text())["training"]["steps"] >= 100:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps_at_kill = json.loads(meta.read_text())["training"]["steps"]
    assert 100 <= steps_at_kill < 300
    with pytest.raises(ResumeError, match="--resume"):
        train(gl_data, from_dict(TrainConfig, settings), out=tmp_path / "run", progress=False)
    with pytest.raises(ResumeError, match="another config"):
        train(gl_data, tcfg(max_steps=301), out=tmp_path / "run", resume=True, progress=False)
    done = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    straight = train(
        gl_data, from_dict(TrainConfig, settings), out=tmp_path / "ref", progress=False
    )
    assert straight.steps == 300
    resumed = load_checkpoint(tmp_path / "run").tensors
    reference = load_checkpoint(tmp_path / "ref").tensors
    for name in ("weights", "ema", "best"):
        for k in reference[name]:
            torch.testing.assert_close(resumed[name][k], reference[name][k], rtol=0, atol=0)


def test_streaming_equals_nothing_lost(gl_data):
    res = train(gl_data, tcfg(max_steps=30, in_memory=False, batch_size=512), progress=False)
    assert res.steps == 30 and np.isfinite(res.history[-1]["train_loss"])


def test_bad_queries(trained):
    post = Posterior.load(trained[1])
    with pytest.raises(DataError, match=r"expected shape \(\.\.\., 2\)"):
        post.sample((10,), x=np.zeros(3), errors=np.ones(3))
    with pytest.raises(DataError, match="unknown node 'x_9'"):
        post.sample((10,), x={"x_9": 1.0})
    with pytest.raises(DataError, match="pass errors="):
        post.sample((10,), x=np.zeros(2))
    with pytest.raises(DataError, match="errors must be finite"):
        post.sample((10,), x=np.zeros(2), errors=np.array([0.1, -1.0]))
    with pytest.raises(ValueError, match="sample_shape"):
        post.sample((2, 3), x=np.zeros(2), errors=np.ones(2))
    import astropy.units as u

    with pytest.raises(DataError, match="dimensionless"):
        post.sample((10,), x={"x_1": 3 * u.Jy}, errors={"x_1": 0.1})


def test_samples_stay_inside_a_bounded_prior(tmp_path):
    """two_moons declares θ ∈ [-1, 1]²; an undertrained model leaks samples outside, which
    the sampler redraws (sbi's leakage rejection) unless prior_bounds is off."""
    path = tmp_path / "tm.h5"
    run_simulate(
        from_dict(SimulateConfig, {"num": 1500, "seed": 0, "simulator": {"name": "two_moons"}}),
        path,
        progress=False,
    )
    train(path, tcfg(max_steps=60), out=tmp_path / "m", progress=False)
    post = Posterior.load(tmp_path / "m")
    x = np.array([[0.9, 0.9], [-0.1, 0.2]])  # the first far in the corner of x space
    loose = post.sample((2000,), x=x, seed=0, sampler={"prior_bounds": False}).numpy()
    assert (np.abs(loose) > 1).any(-1).mean() > 0.01
    tight = post.sample((2000,), x=x, seed=0).numpy()
    assert np.all(np.abs(tight) <= 1.0 + 1e-6)
    # redrawn, not clipped: hardly any sample sits on the edge
    assert (np.abs(tight) > 1 - 1e-6).any(-1).mean() < 0.01

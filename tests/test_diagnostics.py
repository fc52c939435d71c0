"""Diagnostics recover known answers on exact posteriors, and `dasbi evaluate` end to end.

The linear Gaussian model θ ~ N(0, 1), x = θ + N(0, 1) has the posterior N(x/2, 1/2); a
sampler drawing from it is calibrated, one drawing N(x/2, 1/8) is overconfident, one drawing
N(x/2, 2) is underconfident and one drawing N(x/2 + 0.5, 1/2) is biased.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dasbi import diagnostics as dg

N, S, P = 600, 200, 2


def _problem(seed=0, scale=1.0, shift=0.0):
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, 1, (N, P))
    x = theta + rng.normal(0, 1, (N, P))
    samples = x / 2 + shift + scale * np.sqrt(0.5) * rng.normal(0, 1, (S, N, P))
    return samples, theta


def test_a_calibrated_sampler_has_uniform_ranks_and_a_diagonal_coverage():
    samples, theta = _problem()
    ranks = dg.sbc_ranks(samples, theta)
    assert ranks.shape == (N, P) and ranks.min() >= 0 and ranks.max() <= S
    assert (dg.rank_uniformity(ranks, S) > 0.01).all()
    cov = dg.expected_coverage(samples, theta)
    assert np.abs(cov - dg.LEVELS[:, None]).max() < 0.06
    assert dg.calibration_flags(cov, N) == ["", ""]
    tarp = dg.tarp_coverage(samples, theta, seed=1)
    assert tarp["error"] < 0.05 and abs(tarp["atc"]) < 3


@pytest.mark.parametrize(
    ("scale", "shift", "flag"),
    [(0.5, 0.0, "overconfident"), (2.0, 0.0, "underconfident"), (1.0, 0.5, "overconfident")],
)
def test_miscalibrated_samplers_are_flagged(scale, shift, flag):
    samples, theta = _problem(seed=1, scale=scale, shift=shift)
    ranks = dg.sbc_ranks(samples, theta)
    assert (dg.rank_uniformity(ranks, S) < 1e-4).all()
    cov = dg.expected_coverage(samples, theta)
    assert dg.calibration_flags(cov, N) == [flag, flag]
    if flag == "overconfident" and shift == 0:
        assert (cov[dg.LEVELS > 0.5] < dg.LEVELS[dg.LEVELS > 0.5, None] - 0.1).all()
    atc = dg.tarp_coverage(samples, theta, seed=1)["atc"]
    assert (atc < 0) if scale < 1 else True  # sbi: ATC < 0 for overconfident posteriors


def test_recovery_statistics():
    rng = np.random.default_rng(2)
    truth = rng.normal(0, 1, (4000, 1))
    med = truth + 0.3 + 0.2 * rng.standard_normal((4000, 1))  # bias 0.3, scatter 0.2
    samples = med[None] + 0.1 * rng.standard_normal((101, 4000, 1))
    rec = dg.recovery_stats(samples, truth)
    assert rec["bias"][0] == pytest.approx(0.3, abs=0.02)
    assert rec["robust_sigma"][0] == pytest.approx(0.2, rel=0.06)
    assert rec["median_width"][0] == pytest.approx(0.1, rel=0.1)
    # robust σ ignores 10 % of wild outliers, the RMSE does not
    med[:400] += 50
    out = dg.recovery_stats(med[None] + 0 * samples, truth)
    assert out["robust_sigma"][0] < 0.3 < out["rmse"][0]


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\(S, N, P\)"):
        dg.sbc_ranks(np.zeros((5, 3)), np.zeros(3))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from dasbi.config import from_dict
    from dasbi.simulate import SimulateConfig, run_simulate
    from dasbi.train import TrainConfig, train

    root = tmp_path_factory.mktemp("evaluate")
    sims = {"name": "gaussian_linear", "dim": 2, "missing_prob": 0.1}
    data = run_simulate(
        from_dict(SimulateConfig, {"num": 3000, "seed": 1, "simulator": sims}),
        root / "train.h5",
        progress=False,
    )
    held = run_simulate(
        from_dict(SimulateConfig, {"num": 300, "seed": 99, "simulator": sims}),
        root / "held.h5",
        progress=False,
    )
    cfg = {
        "network": {"dim": 32, "depth": 2, "heads": 2},
        "batch_size": 256,
        "warmup_steps": 20,
        "val_every": 100,
        "lr": 2e-3,
        "max_steps": 500,
    }
    train(data, from_dict(TrainConfig, cfg), out=root / "model", progress=False)
    return root / "model", held, data


def test_dasbi_evaluate_writes_json_and_figures(trained, tmp_path, capsys):
    from dasbi.cli import main

    model, held, _ = trained
    out = tmp_path / "ev"
    argv = ["evaluate", "--model", str(model), "--data", str(held), "--out", str(out)]
    code = main([*argv, "--num-objects", "150", "--num-samples", "100", "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "theta_1: bias" in text and "coverage error" in text
    rec = json.loads((out / "evaluation.json").read_text())
    assert rec["held_out"] and rec["num_objects"] == 150
    for name in ("theta_1", "theta_2"):
        p = rec["parameters"][name]
        assert abs(p["bias"]) < 0.1 and p["coverage_error"] < 0.12
        assert 0.15 < p["median_width"] < 0.3  # the analytic posterior sd is 0.224
    # the linear Gaussian has an analytic posterior: the rf C2ST is near chance
    assert rec["c2st"]["objects"] == 10 and rec["c2st"]["mean"] < 0.65
    for fig in ("sbc", "coverage", "tarp", "recovery"):
        assert (out / f"{fig}.png").read_bytes()[:4] == b"\x89PNG"
    # rerunning replaces the folder atomically
    assert main([*argv, "--num-objects", "20", "--num-samples", "20", "--quiet"]) == 0
    assert json.loads((out / "evaluation.json").read_text())["num_objects"] == 20
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_evaluate_on_the_training_data_warns(trained, tmp_path, capsys):
    from dasbi.cli import main

    model, _, data = trained
    argv = ["evaluate", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "e")]
    assert main([*argv, "--num-objects", "20", "--num-samples", "20", "--quiet"]) == 0
    assert "training dataset" in capsys.readouterr().err
    assert not json.loads((tmp_path / "e" / "evaluation.json").read_text())["held_out"]

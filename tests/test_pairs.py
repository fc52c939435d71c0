"""Labelled sim-real pairs: twins at the labels, nuisances from the prior given them."""

from __future__ import annotations

import numpy as np
import pytest

from dasbi.config import from_dict
from dasbi.errors import ConfigError
from dasbi.pairs import make_pairs, twin_theta
from dasbi.simulate import SimulateConfig, build_simulator, run_simulate

SIM = {
    "name": "yso",
    "library": "planck",
    "model_set": "s---s-i",
    "aperture_arcsec": 3.0,
    "surveys": [],
    "bands": {"gaia_G": {}, "2mass_J": {}, "2mass_Ks": {}},
    "parallax": False,
    "priors": {"distance": {"dist": "normal", "mean": 150, "sigma": 10, "low": 100, "high": 200}},
    "population": {"kind": "young", "age_myr": [1, 10]},
}


def test_twins_take_the_labels_and_the_joint_prior_for_the_rest(rng):
    """The labelled parameters are the labels; the radius of a twin follows the young
    population's T_eff-radius relation (a joint prior), which an independent draw would
    not: cool twins are small, warm twins large."""
    sim = build_simulator(SIM)
    teff = np.concatenate([np.full(50, 2800.0), np.full(50, 4200.0)])
    av = rng.uniform(0, 5, 100)
    th = twin_theta(sim, {"star.temperature": teff, "av": av}, rng)
    names = sim.theta_names
    np.testing.assert_array_equal(th[:, names.index("star.temperature")], teff)
    np.testing.assert_array_equal(th[:, names.index("av")], av)
    r = th[:, names.index("star.radius")]
    assert np.median(r[50:]) > 2 * np.median(r[:50])
    # nuisances are not repeated across twins
    assert len(np.unique(th[:, names.index("distance")])) == 100
    with pytest.raises(ConfigError, match="not parameters of the simulator"):
        twin_theta(sim, {"teff": teff}, rng)
    with pytest.raises(ConfigError, match="NaN"):
        twin_theta(sim, {"av": np.array([1.0, np.nan])}, rng)


def test_make_pairs_writes_row_aligned_datasets_with_the_real_missingness(tmp_path):
    from dasbi.dataset import Dataset
    from dasbi.nodes import THETA

    real = run_simulate(
        from_dict(
            SimulateConfig, {"num": 60, "seed": 3, "simulator": {**SIM, "missing_prob": 0.3}}
        ),
        tmp_path / "real.h5",
        progress=False,
    )
    with Dataset(real) as ds:
        rb = ds.read()
    names = build_simulator(SIM).theta_names
    rows = np.arange(10, 40)
    labels = {
        "star.temperature": rb[THETA].values[rows, names.index("star.temperature")],
        "av": rb[THETA].values[rows, names.index("av")],
    }
    p_sim, p_real = make_pairs(
        SIM, real, labels, tmp_path / "ps.h5", tmp_path / "pr.h5", rows=rows, seed=1
    )
    with Dataset(p_sim) as a, Dataset(p_real) as b:
        sa, sb = a.read(), b.read()
    assert len(sa[THETA].values) == len(sb["photometry"].values) == 30
    np.testing.assert_array_equal(sa["photometry"].observed, sb["photometry"].observed)
    np.testing.assert_allclose(sa[THETA].values[:, names.index("av")], labels["av"], rtol=1e-6)
    # a twin looks like its partner: same A_V and T_eff, so G-J agrees to the spread that
    # the other parameters and the noise leave
    both = sa["photometry"].observed[:, 0] & sa["photometry"].observed[:, 1]
    gj_a = sa["photometry"].values[both, 0] - sa["photometry"].values[both, 1]
    gj_b = sb["photometry"].values[both, 0] - sb["photometry"].values[both, 1]
    assert np.median(np.abs(gj_a - gj_b)) < 0.3
    with pytest.raises(ConfigError, match="has 2 values for 30 rows"):
        make_pairs(SIM, real, {"av": np.ones(2)}, tmp_path / "x.h5", tmp_path / "y.h5", rows=rows)


def test_dasbi_pairs_on_the_cra_members(tmp_path, shared_data, cli):
    """The command pairs every CrA member that has a spectral-type T_eff and an A_V with a
    twin simulated at them; members without labels are left out, never guessed."""
    import pandas as pd

    from dasbi.dataset import Dataset
    from dasbi.nodes import THETA

    sim = {
        "name": "yso",
        "library": "planck",
        "model_set": "sp--s-i",
        "aperture_arcsec": 3.0,
        "priors": {
            "distance": {"dist": "normal", "mean": 150, "sigma": 15, "low": 80, "high": 220}
        },
        "population": {"kind": "young", "age_myr": [1, 15]},
    }
    sims = run_simulate(
        from_dict(SimulateConfig, {"num": 300, "seed": 0, "simulator": sim}),
        tmp_path / "sims.h5",
        progress=False,
    )
    cat = shared_data / "real/yso/CrA/cra_members_dev.csv"
    r = cli(
        "pairs",
        "--catalogue",
        str(cat),
        "--survey",
        "esplin2022_cra",
        "--like",
        str(sims),
        "--labels",
        "star.temperature=teff_spt",
        "av=a_v",
        "--out-sim",
        str(tmp_path / "ps.h5"),
        "--out-real",
        str(tmp_path / "pr.h5"),
    )
    assert r.returncode == 0, r.stderr
    df = pd.read_csv(cat)
    n = int((df.teff_spt.notna() & df.a_v.notna()).sum())
    assert f"wrote {n} pairs" in r.stdout
    with Dataset(tmp_path / "ps.h5") as a, Dataset(tmp_path / "pr.h5") as b:
        sa, sb = a.read(), b.read()
        names = [nd.name for nd in a.nodes.group(THETA)]
    assert len(sa[THETA].values) == len(sb["photometry"].values) == n
    t = sa[THETA].values[:, names.index("star.temperature")]
    assert set(np.round(t)) <= set(np.round(df.teff_spt.dropna().to_numpy(float)))
    bad = cli(
        "pairs",
        "--catalogue",
        str(cat),
        "--survey",
        "esplin2022_cra",
        "--like",
        str(sims),
        "--labels",
        "teff",
        "--out-sim",
        str(tmp_path / "x.h5"),
        "--out-real",
        str(tmp_path / "y.h5"),
    )
    assert bad.returncode == 2 and "PARAMETER=COLUMN" in bad.stderr

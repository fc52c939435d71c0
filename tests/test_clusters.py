"""Young clusters: members with discs and envelopes plus Galactic field contaminants."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

warnings.filterwarnings("ignore", message=".*coarser than the instrument.*")


@pytest.fixture(scope="module")
def sim():
    from simulators.clusters import YoungClusterSimulator

    return YoungClusterSimulator({"library": "planck"})


def test_catalogue_has_members_field_and_truth(sim, rng):
    tc = {"l": 158.3, "b": -20.5, "distance": 300.0, "log_age": 6.0, "av": 2.0, "n_members": 300}
    cat = sim.catalogue(rng, tc)
    member = cat["true_member"] == 1
    assert member.sum() == 300 and (~member).sum() == 300
    assert cat.meta["cluster_distance"] == 300.0
    # members sit at the cluster distance; their parallaxes say so
    assert np.all(np.abs(cat["true_distance"][member] - 300.0) < 10)
    plx = cat["parallax"][member]
    good = np.isfinite(plx) & (cat["parallax_error"][member] < 0.2)
    assert abs(np.median(plx[good]) - 1000 / 300) < 0.1
    # at 1 Myr most members keep discs; Class I members have the reddest Ks-[24]
    cls = np.asarray(cat["true_yso_class"])[member]
    assert set(cls) <= {"I", "II", "III"} and set(cat["true_yso_class"][~member]) <= {"field"}
    assert 0.5 < np.mean(cls != "III") < 0.9
    k24 = np.asarray(cat["2mass_Ks"] - cat["mips_24"])
    assert np.nanmedian(k24[member][cls == "I"]) > np.nanmedian(k24[member][cls == "III"]) + 2
    for col in ("gaia_G", "irac_1_error", "mips_24_upper_limit", "true_teff"):
        assert col in cat.colnames


def test_discs_disappear_with_age(sim, rng):
    frac = []
    for log_age in (5.8, 6.5, 7.0):
        tc = {
            "l": 158.3,
            "b": -20.5,
            "distance": 300.0,
            "log_age": log_age,
            "av": 1.0,
            "n_members": 400,
        }
        cl = sim.cluster(rng, tc)
        frac.append(np.mean(cl["yso_class"][cl["member"] == 1] != "III"))
    assert frac[0] > frac[1] > frac[2]
    assert frac[2] < 0.05  # 10 Myr: exp(-4) of the discs are left


def test_rows_for_dasbi_simulate(sim, rng):
    out = sim(700, rng)
    assert out.theta.shape == (700, 8)
    assert set(np.unique(out.theta[:, 0])) <= {0.0, 1.0}
    assert out.x["photometry"].values.shape == (700, 15)
    names = [n["name"] for n in sim.nodes()]
    assert names[:8] == sim.theta_names and names[-1] == "parallax"
    with pytest.raises(NotImplementedError, match="catalogue"):
        sim.simulate(out.theta, rng)


def test_bad_cluster_config():
    from simulators.clusters import YoungClusterConfig

    with pytest.raises(ValueError, match="log_age"):
        YoungClusterConfig(log_age=[5.0, 6.0])
    with pytest.raises(ValueError, match="n_members"):
        YoungClusterConfig(n_members=[100, 10])

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
    # members and contaminants pass one selection: a detection in at least one band
    assert cat.meta["cluster_members_drawn"] == 300 and 250 < member.sum() <= 300
    det = np.stack([~np.asarray(cat[f"{b}_upper_limit"]) & np.isfinite(cat[b]) for b in sim.bands])
    assert det.any(axis=0).all()
    # the field: Poisson about the Galactic model's count at 150-600 pc in the cone
    expected = sim.expected_field(300.0)
    assert 500 < expected < 5000
    assert abs(cat.meta["field_stars_drawn"] - expected) < 5 * np.sqrt(expected)
    assert (~member).sum() > 100
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


def test_contaminants_have_the_members_selection(sim):
    """The catalogue selection is the same for members and field stars, so the pattern of
    detections, limits and missing values says nothing about membership beyond what a
    source's SED says: among members and field stars matched in their true magnitudes, a
    classifier on the pattern alone has AUC <= 0.6. (Unmatched, the pattern carries the
    physics: young members are overluminous, reddened and have disc excess.) Field stars
    without a Gaia G detection are in the catalogue, as members are."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(1)
    pattern, cls, mags = [], [], []
    while sum(len(c) for c in cls) < 20_000:
        cl = sim.cluster(rng)
        obs = sim._observe(cl["mags"], cl["distance"], rng)
        sel = sim._selected(obs)
        ph = obs["photometry"]
        pattern.append(
            np.concatenate(
                [
                    (ph.observed & ~ph.upper_limit)[sel],
                    ph.upper_limit[sel],
                    ph.observed[sel],
                    obs["astrometry"].observed[sel],
                ],
                axis=1,
            )
        )
        cls.append(cl["yso_class"][sel])
        mags.append(cl["mags"][sel])
    x = np.concatenate(pattern).astype(float)
    c = np.concatenate(cls)
    m = np.clip(np.nan_to_num(np.concatenate(mags), nan=40.0, posinf=40.0), -5.0, 40.0)
    y = (c != "field").astype(float)
    g = sim.bands.index("gaia_G")
    assert 0.1 < 1 - x[y == 0, g].mean() < 0.9  # field stars lacking G are kept
    member, fld = np.nonzero(y == 1)[0], np.nonzero(y == 0)[0]
    dist, idx = NearestNeighbors(n_neighbors=1).fit(m[fld]).kneighbors(m[member])
    twin = fld[idx[:, 0]]
    close = dist[:, 0] < 0.5
    _, first = np.unique(twin[close], return_index=True)  # each field star matched once
    rows = np.concatenate([member[close][first], twin[close][first]])
    assert len(rows) > 400
    clf = HistGradientBoostingClassifier(max_iter=100, random_state=0)
    p = cross_val_predict(clf, x[rows], y[rows], cv=5, method="predict_proba")[:, 1]
    assert roc_auc_score(y[rows], p) <= 0.6


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
    from simulators.clusters import YoungClusterConfig, YoungClusterSimulator

    with pytest.raises(ValueError, match="field_distance"):
        YoungClusterConfig(field_distance=[2.0, 0.5])
    with pytest.raises(ValueError, match="select_bands: unknown"):
        YoungClusterSimulator({"library": "planck", "select_bands": ["gaia_X"]})

    with pytest.raises(ValueError, match="log_age"):
        YoungClusterConfig(log_age=[5.0, 6.0])
    with pytest.raises(ValueError, match="n_members"):
        YoungClusterConfig(n_members=[100, 10])

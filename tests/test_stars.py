"""The field-star simulator end to end (embedded Planck library: no data files needed)."""

from __future__ import annotations

import numpy as np
import pytest

from simulators import get_simulator
from simulators.stars import FieldStars


@pytest.fixture(scope="module")
def sim():
    return FieldStars(
        {
            "library": "planck",
            "xp": True,
            "mag_limit": 15.0,
            "bands": {
                "gaia_G": {},
                "gaia_BP": {},
                "gaia_RP": {},
                "2mass_Ks": {"depth": 14.0},
                "wise_W4": {"depth": 8.0},
            },
        }
    )


def test_registered_and_shapes(sim, rng):
    assert get_simulator("field_stars") is FieldStars
    out = sim(300, rng)
    assert out.theta.shape == (300, 6)
    assert out.x["photometry"].values.shape == (300, 5)
    assert out.x["xp"].values.shape == (300, 343)
    g = out.x["photometry"].values[:, 0]
    assert np.nanmax(g) < 15.0 + 0.1  # the sample is magnitude limited
    names = [n["name"] for n in sim.nodes()]
    assert names[:6] == ["teff", "logg", "feh", "radius", "distance", "av"]
    assert any(n["role"] == "context" for n in sim.nodes() if "role" in n)


def test_physics_of_the_observables(sim, rng):
    out = sim(400, rng)
    th = out.theta
    plx = out.x["astrometry"].values[:, 0]
    perr = out.x["astrometry"].errors[:, 0]
    pull = (plx - 1000 / th[:, 4]) / perr
    assert abs(np.mean(pull)) < 0.2 and np.std(pull) == pytest.approx(1.0, rel=0.15)
    ph = out.x["photometry"]
    bp_rp = ph.values[:, 1] - ph.values[:, 2]
    hot = th[:, 0] > 7000
    cool = th[:, 0] < 5000
    assert np.nanmean(bp_rp[hot]) < np.nanmean(bp_rp[cool])
    # W4 depth 8 mag: faint stars become missing (not zero, not NaN-observed)
    assert not ph.observed[:, 4].all()
    assert np.isnan(ph.values[~ph.observed]).all()


def test_simulate_given_theta_is_consistent(sim, rng):
    theta = np.array([[5772.0, 4.44, 0.0, 1.0, 10.0, 0.0]])
    x = sim.simulate(theta, rng)
    g = x["photometry"].values[0, 0]
    # the Sun at 10 pc as a black body: M_G ≈ 4.6-4.7
    assert 4.4 < g < 4.9
    redder = sim.simulate(np.array([[5772.0, 4.44, 0.0, 1.0, 10.0, 2.0]]), rng)
    assert redder["photometry"].values[0, 0] > g + 1.5
    with pytest.raises(ValueError, match=r"shape \(N, 6\)"):
        sim.simulate(np.zeros((1, 3)), rng)
    with pytest.raises(ValueError, match="distance must be > 0"):
        sim.simulate(np.array([[5772.0, 4.44, 0.0, 1.0, -1.0, 0.0]]), rng)


def test_config_errors():
    with pytest.raises(ValueError, match="must include gaia_G"):
        FieldStars({"library": "planck", "bands": {"2mass_J": {}}})
    with pytest.raises(ValueError, match="unknown filter"):
        FieldStars({"library": "planck", "bands": {"gaia_G": {}, "foo": {}}})
    with pytest.raises(ValueError, match="unknown keys"):
        FieldStars({"library": "planck", "bands": {"gaia_G": {"dpth": 3}}})


def test_survey_spectrographs_add_context_nodes(rng):
    with pytest.warns(UserWarning, match="coarser than half"):
        sim = FieldStars(
            {
                "library": "planck",
                "mag_limit": 14.0,
                "spectrographs": ["lamost"],
                "bands": {"gaia_G": {}},
            }
        )
    out = sim(20, rng)
    node = [n for n in sim.nodes() if n["name"] == "lamost_spectrum"][0]
    assert node["role"] == "context" and out.x["lamost"].values.shape == (20, node["size"])
    assert "wavelength_nm" in sim.group_attrs()["lamost"]
    with pytest.raises(ValueError, match="unknown spectrographs"):
        FieldStars({"library": "planck", "spectrographs": ["hires"]})


def test_field_stars_with_a_user_dust_map(tmp_path):
    """A map with A_V = 2 mag everywhere beyond 10 pc gives every star A_V = 2."""
    lon, b = np.array([0.0, 180.0, 360.0]), np.array([-90.0, 0.0, 90.0])
    d = np.array([0.0, 10.0, 1e5])
    av = np.broadcast_to(np.array([0.0, 2.0, 2.0]), (3, 3, 3)).copy()
    np.savez(tmp_path / "flat.npz", l=lon, b=b, distance=d, av=av)
    sim = FieldStars({"library": "planck", "dust_map": str(tmp_path / "flat.npz")})
    out = sim(200, np.random.default_rng(0))
    av_col = sim.theta_names.index("av")
    np.testing.assert_allclose(out.theta[:, av_col], 2.0, rtol=1e-6)

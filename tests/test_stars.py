"""The field-star simulator end to end (embedded Planck library: no data files needed)."""

from __future__ import annotations

import warnings

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
    with pytest.warns(UserWarning, match="continuum only"):
        sim = FieldStars(
            {
                "library": "planck",
                "mag_limit": 14.0,
                "spectrographs": ["lamost_lrs"],
                "bands": {"gaia_G": {}},
            }
        )
    out = sim(20, rng)
    node = [n for n in sim.nodes() if n["name"] == "lamost_lrs_spectrum"][0]
    assert node["role"] == "context" and out.x["lamost_lrs"].values.shape == (20, node["size"])
    attrs = sim.group_attrs()["lamost_lrs"]
    assert "wavelength_nm" in attrs and attrs["continuum_only"]
    assert attrs["content"].startswith("continuum only")
    with pytest.raises(ValueError, match="unknown spectrographs"):
        FieldStars({"library": "planck", "spectrographs": ["hires"]})


def test_ck04_spectrograph_presets_are_continuum_only(shared_data):
    """The README's figures: CK04 has 270, 329 and 26 points across the LAMOST, BOSS and
    APOGEE ranges, too few for their resolution, so the datasets say continuum only; XP's
    resolution elements are sampled."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = FieldStars(
            {"library": "ck04", "xp": True, "spectrographs": ["lamost_lrs", "boss", "apogee"]}
        )
    attrs = sim.group_attrs()
    points = {n: attrs[n]["library_points"] for n in ("lamost_lrs", "boss", "apogee")}
    assert points == {"lamost_lrs": 270, "boss": 329, "apogee": 26}
    assert all(attrs[n]["continuum_only"] for n in points)
    assert not attrs["xp"]["continuum_only"]


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


BANDS8 = ["gaia_G", "gaia_BP", "gaia_RP", "2mass_J", "2mass_H", "2mass_Ks", "wise_W1", "wise_W2"]


def _stars(**kw):
    return FieldStars({"bands": {b: {} for b in BANDS8}, "mag_limit": 16, **kw})


def test_band_flux_libraries_match_synthetic_photometry_of_the_spectra(rng, shared_data):
    """ck04_bands (astroARIADNE's precomputed CK04 band fluxes, Gaia through DR2 passbands)
    reproduces our filter convolution of the CK04 spectra; kurucz_bands differs by the
    atmosphere models' own differences (a few 0.01 mag), which the domain-adaptation
    benchmark uses as misspecification."""
    sim = _stars(library="ck04")
    ck_b, ku_b = _stars(library="ck04_bands"), _stars(library="kurucz_bands")
    th, _, mags = sim._draw(600, rng)
    ok = ck_b.sed.library.covers(th["teff"], th["logg"], th["feh"])
    ok &= ku_b.sed.library.covers(th["teff"], th["logg"], th["feh"])
    assert ok.mean() > 0.9
    args = [th[k][ok] for k in ("teff", "logg", "feh", "radius", "distance", "av", "rv")]
    d_ck = ck_b.sed.magnitudes(ck_b.sed.flux(*args)) - mags[ok]
    d_ku = ku_b.sed.magnitudes(ku_b.sed.flux(*args)) - mags[ok]
    assert np.all(np.abs(np.median(d_ck, 0)) < 0.01) and np.all(d_ck.std(0) < 0.015)
    assert np.all(np.abs(np.median(d_ku, 0)) < 0.03) and np.all(d_ku.std(0) < 0.06)
    assert d_ku.std(0).mean() > 1.5 * d_ck.std(0).mean()  # really a different model
    lib = ck_b.sed.library
    assert not lib.covers([60_000.0], [4.0], [0.0])[0]  # outside the grid
    assert lib.covers([5777.0], [4.44], [0.0])[0]


def test_any_band_flux_table_by_name_or_path(rng, shared_data, tmp_path):
    """library: bands reads the table at library_path (here a copy of the CK04 table: the
    same photometry as ck04_bands); phoenix_bands and sphinx_bands name the shared PHOENIX v2
    and SPHINX tables; a path a library does not read is an error, not ignored."""
    import shutil

    src = shared_data / "atmospheres" / "bandflux" / "CK04_DF.csv"
    mine = tmp_path / "my_table.csv"
    shutil.copy(src, mine)
    ref = _stars(library="ck04_bands")
    own = _stars(library="bands", library_path=str(mine))
    th, _, _ = ref._draw(200, rng)
    args = [th[k] for k in ("teff", "logg", "feh", "radius", "distance", "av", "rv")]
    ok = ref.sed.library.covers(th["teff"], th["logg"], th["feh"])
    a = ref.sed.magnitudes(ref.sed.flux(*args))[ok]
    b = own.sed.magnitudes(own.sed.flux(*args))[ok]
    np.testing.assert_allclose(a, b, atol=1e-9)
    ph = _stars(library="phoenix_bands")
    cool = ph.sed.library.covers([2800.0], [4.5], [0.0])[0]
    assert cool and not ref.sed.library.covers([2800.0], [4.5], [0.0])[0]
    assert _stars(library="sphinx_bands").sed.library.covers([2500.0], [5.0], [0.0])[0]
    with pytest.raises(ValueError, match="needs library_path"):
        _stars(library="bands")
    with pytest.raises(ValueError, match="not used by the planck library"):
        _stars(library="planck", library_path=str(mine))


def test_misspecified_instruments_offsets_error_scale_hidden_rv(shared_data):
    base = _stars()
    mis = _stars(
        zero_point_offsets={"gaia_BP": 0.05}, error_scale=3.0, rv_sigma=0.3, rv_in_theta=False
    )
    assert mis.theta_names == base.theta_names  # R(V) scatter is hidden
    theta = np.tile([[5800.0, 4.4, 0.0, 1.0, 500.0, 0.5]], (4000, 1))
    xb = base.simulate(theta, np.random.default_rng(1))["photometry"]
    xm = mis.simulate(theta, np.random.default_rng(1))["photometry"]
    j = BANDS8.index("gaia_BP")
    shift = np.median(xm.values[:, j]) - np.median(xb.values[:, j])
    assert shift == pytest.approx(0.05, abs=0.01)  # offset (R(V) scatter barely moves BP)
    k = BANDS8.index("2mass_Ks")  # Ks: little dust, no offset → only the error scale
    ratio = np.std(xm.values[:, k]) / np.std(xb.values[:, k])
    assert ratio == pytest.approx(3.0, rel=0.15)
    assert np.median(xm.errors / xb.errors) == pytest.approx(1.0, abs=0.02)  # as reported
    with pytest.raises(ValueError, match="not simulated bands"):
        _stars(zero_point_offsets={"irac_1": 0.1})
    with pytest.raises(ValueError, match="no band fluxes"):
        FieldStars({"library": "kurucz_bands"})  # the 15 default bands


def test_a_narrow_extinction_law_is_used_where_the_bands_see_it(shared_data):
    """F99 stops at 3.3 µm and CK04 reaches far beyond: the law is evaluated on the
    wavelengths the bands and spectra see (the same A(λ) there as on a grid inside its
    range) and a band beyond the law still raises."""
    from simulators.dust import ExtinctionCurve, ExtinctionRangeError

    bands = {b: {} for b in ("gaia_G", "gaia_BP", "2mass_Ks")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fs = FieldStars({"library": "ck04", "extinction_law": "F99", "bands": bands, "xp": True})
    w = fs.sed.library.wave_aa
    inside = (w > 3400.0) & (w < 22000.0)  # XP from 336 nm, Ks to 2.3 µm
    ref = ExtinctionCurve("F99", w[inside]).a_over_av(np.array([2.8, 4.0]))
    np.testing.assert_allclose(fs.sed.dust.a_over_av(np.array([2.8, 4.0]))[:, inside], ref)
    with pytest.raises(ExtinctionRangeError, match="F99 is valid"):
        FieldStars({"library": "ck04", "extinction_law": "F99", "bands": {**bands, "wise_W3": {}}})


def test_field_stars_priors_replace_the_population():
    """simulator.priors draws the named parameters from the given priors (a box over hot
    stars here) instead of the Galactic population; bad priors get clear errors."""
    pri = {
        "teff": {"dist": "loguniform", "low": 9000.0, "high": 20000.0},
        "av": {"dist": "uniform", "low": 0.0, "high": 0.5},
    }
    sim = FieldStars({"library": "planck", "bands": {"gaia_G": {}}, "priors": pri})
    th = sim(300, np.random.default_rng(0)).theta
    teff, av = th[:, sim.theta_names.index("teff")], th[:, sim.theta_names.index("av")]
    assert teff.min() >= 9000.0 and teff.max() <= 20000.0 and np.median(teff) > 11000.0
    assert av.max() <= 0.5
    with pytest.raises(ValueError, match="unknown parameter 'mass'"):
        FieldStars({"library": "planck", "priors": {"mass": {"dist": "fixed", "value": 1}}})
    with pytest.raises(ValueError, match="must be > 0"):
        FieldStars(
            {"library": "planck", "priors": {"radius": {"dist": "uniform", "low": 0, "high": 2}}}
        )

from __future__ import annotations

import warnings

import numpy as np
import pytest

from simulators.instruments import (
    SPECTROGRAPHS,
    BandSpec,
    Spectrograph,
    observe_photometry,
    parallax_error_mas,
    photometric_error,
)


def test_errors_grow_with_magnitude_and_hit_the_floor():
    spec = BandSpec(depth=20.0, floor=0.01)
    assert photometric_error(20.0, spec) == pytest.approx(np.hypot(0.01, 1.0857 / 5), rel=1e-6)
    assert photometric_error(10.0, spec) == pytest.approx(0.01, rel=1e-3)
    assert photometric_error(21.0, spec) > photometric_error(20.0, spec)


@pytest.mark.parametrize("mode", ["missing", "upper_limit"])
def test_depth_makes_missing_values_or_upper_limits(mode, rng):
    mags = np.array([[12.0], [19.0], [23.0]]).repeat(2000, axis=0)
    v, e, obs, ul = observe_photometry(mags, [BandSpec(20.0, 0.01, mode)], rng)
    bright = slice(0, 2000)
    faint = slice(4000, 6000)
    assert obs[bright].all() and not ul[bright].any()
    assert np.std(v[bright] - 12.0) == pytest.approx(0.01, rel=0.1)
    if mode == "missing":
        assert not obs[faint].any() and np.isnan(v[faint]).all()
    else:
        assert ul[faint].all() and np.all(v[faint] == 20.0) and obs[faint].all()
    with pytest.raises(ValueError, match="band specifications"):
        observe_photometry(mags, [], rng)


def test_parallax_errors_follow_gaia_scaling():
    assert parallax_error_mas(15.0) == pytest.approx(np.sqrt(870) / 1000, rel=1e-9)
    assert parallax_error_mas(10.0) == parallax_error_mas(13.0)
    assert parallax_error_mas(20.0) > 0.3


def test_spectrographs_conserve_a_flat_spectrum_and_warn_on_coarse_libraries():
    wave_aa = np.arange(3000.0, 20000.0, 5.0)
    flat = np.ones((2, len(wave_aa)))
    for name in ("gaia_xp", "lamost_lrs", "boss"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sg = Spectrograph(name, wave_aa)
        out = sg.convolve(flat).numpy()
        np.testing.assert_allclose(out[:, 5:-5], 1e-2, rtol=1e-5)  # erg/s/cm²/Å → W/m²/nm
    with pytest.warns(UserWarning, match="continuum only"):
        coarse = Spectrograph("apogee", np.arange(14000.0, 18000.0, 20.0))
    assert coarse.continuum_only and coarse.library_points == 90
    assert "cannot constrain what lines constrain" in coarse.content
    with pytest.raises(ValueError, match="only covers|only"):
        Spectrograph("apogee", wave_aa[:100])
    with pytest.raises(ValueError, match="presets are"):
        Spectrograph("hires", wave_aa)
    xp = Spectrograph("gaia_xp", wave_aa)
    assert not xp.continuum_only and xp.content.startswith("sampled")  # 0.5 nm < 3.4 nm
    assert len(xp.wave_nm) == 343 and xp.wave_nm[0] == 336 and xp.wave_nm[-1] == 1020
    assert set(SPECTROGRAPHS) == {"gaia_xp", "lamost_lrs", "boss", "apogee"}
    with pytest.raises(ValueError, match="lamost is now lamost_lrs"):
        Spectrograph("lamost", np.geomspace(3000.0, 20000.0, 500))


def test_lsf_width_matches_resolution():
    wave_aa = np.arange(3000.0, 11000.0, 1.0)
    sg = Spectrograph("lamost_lrs", wave_aa)
    line = np.zeros((1, len(wave_aa)))
    line[0, np.searchsorted(wave_aa, 6000.0)] = 1.0
    prof = sg.convolve(line).numpy()[0]
    # second moment of the response ≈ (λ/R / 2.3548)² in nm²
    w = sg.wave_nm
    mean = (prof * w).sum() / prof.sum()
    sigma = np.sqrt((prof * (w - mean) ** 2).sum() / prof.sum())
    assert sigma == pytest.approx(600.0 / 1800 / 2.3548, rel=0.25)


def test_noise_level(rng):
    """Pixel noise (noise: pixels) has the preset's S/N at ref_mag (XP's own coefficient
    noise is tested in test_xp.py)."""
    import dataclasses

    from simulators.instruments import SPECTROGRAPHS

    wave_aa = np.arange(3000.0, 11000.0, 10.0)
    spec = dataclasses.replace(SPECTROGRAPHS["gaia_xp"], noise="pixels")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sg = Spectrograph("gaia_xp", wave_aa, spec)
    flux = np.ones((500, len(wave_aa)))
    spec, err = sg.observe(flux, np.full(500, 15.0), rng)
    resid = (spec - 1e-2) / err
    assert np.std(resid) == pytest.approx(1.0, rel=0.05)
    assert np.median(1e-2 / err) == pytest.approx(100.0, rel=1e-3)


def test_depth_scatter_gives_each_object_its_own_limit(rng):
    """With depth_scatter the limits of non-detections spread as the depths do, and a source
    at the nominal depth is detected about half the time."""
    mags = np.full((20_000, 1), 30.0)  # never detected: every value is the object's limit
    v, e, obs, ul = observe_photometry(mags, [BandSpec(15.0, 0.04, "upper_limit", 0.8)], rng)
    assert ul.all() and np.std(v) == pytest.approx(0.8, rel=0.05)
    assert np.median(v) == pytest.approx(15.0, abs=0.03)
    np.testing.assert_allclose(e[:, 0], photometric_error(v[:, 0], BandSpec(15.0, 0.04)))
    _, _, obs0, _ = observe_photometry(np.full((4000, 1), 15.0), [BandSpec(15.0, 0.04)], rng)
    _, _, obs1, _ = observe_photometry(
        np.full((4000, 1), 15.0), [BandSpec(15.0, 0.04, depth_scatter=0.8)], rng
    )
    assert abs(obs1.mean() - obs0.mean()) < 0.05 and 0.4 < obs1.mean() < 0.6


def test_simulated_limits_spread_like_rebull2015(shared_data, rng):
    """The c2d survey's depth scatter reproduces the spread (interquartile range) of the
    upper limits in the NGC 1333 catalogue of Rebull et al. (2015) to 25% in IRAC 4.5-8.0
    and MIPS 24; without it the simulated limits would all be one value per band."""
    from astropy.table import Table

    from simulators.surveys import load_survey

    t = Table.read(shared_data / "real/yso/NGC1333/Rebull_2015AJ_150_17R_table1.fit", hdu=1)
    bands = load_survey("spitzer_c2d").bands
    for band, col in (
        ("irac_2", "__4_5_"),
        ("irac_3", "__5_8_"),
        ("irac_4", "__8_0_"),
        ("mips_24", "__24_"),
    ):
        lim = np.asarray(t["l_" + col[1:]]).astype(str) == ">"
        real = np.asarray(t[col], float)[lim]
        real = real[np.isfinite(real)]
        assert len(real) > 500
        spec = BandSpec(**{**bands[band], "non_detection": "upper_limit"})
        v, _, _, ul = observe_photometry(np.full((20_000, 1), 40.0), [spec], rng)
        iqr = lambda x: np.subtract(*np.percentile(x, [75, 25]))  # noqa: E731
        assert iqr(v[ul]) == pytest.approx(iqr(real), rel=0.25), band

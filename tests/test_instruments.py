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
    for name in ("gaia_xp", "lamost", "boss"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sg = Spectrograph(name, wave_aa)
        out = sg.convolve(flat).numpy()
        np.testing.assert_allclose(out[:, 5:-5], 1e-2, rtol=1e-5)  # erg/s/cm²/Å → W/m²/nm
    with pytest.warns(UserWarning, match="coarser than half"):
        Spectrograph("apogee", np.arange(14000.0, 18000.0, 20.0))
    with pytest.raises(ValueError, match="only covers|only"):
        Spectrograph("apogee", wave_aa[:100])
    with pytest.raises(ValueError, match="presets are"):
        Spectrograph("hires", wave_aa)
    xp = Spectrograph("gaia_xp", wave_aa)
    assert len(xp.wave_nm) == 343 and xp.wave_nm[0] == 336 and xp.wave_nm[-1] == 1020
    assert set(SPECTROGRAPHS) == {"gaia_xp", "lamost", "boss", "apogee"}


def test_lsf_width_matches_resolution():
    wave_aa = np.arange(3000.0, 11000.0, 1.0)
    sg = Spectrograph("lamost", wave_aa)
    line = np.zeros((1, len(wave_aa)))
    line[0, np.searchsorted(wave_aa, 6000.0)] = 1.0
    prof = sg.convolve(line).numpy()[0]
    # second moment of the response ≈ (λ/R / 2.3548)² in nm²
    w = sg.wave_nm
    mean = (prof * w).sum() / prof.sum()
    sigma = np.sqrt((prof * (w - mean) ** 2).sum() / prof.sum())
    assert sigma == pytest.approx(600.0 / 1800 / 2.3548, rel=0.25)


def test_noise_level(rng):
    wave_aa = np.arange(3000.0, 11000.0, 10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sg = Spectrograph("gaia_xp", wave_aa)
    flux = np.ones((500, len(wave_aa)))
    spec, err = sg.observe(flux, np.full(500, 15.0), rng)
    resid = (spec - 1e-2) / err
    assert np.std(resid) == pytest.approx(1.0, rel=0.05)
    assert np.median(1e-2 / err) == pytest.approx(100.0, rel=1e-3)

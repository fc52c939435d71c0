"""Synthetic photometry against synphot.Observation.effstim, for every band."""

from __future__ import annotations

import warnings

import astropy.units as u
import numpy as np
import pytest

from simulators.bandpasses import (
    FILTERS,
    ZERO_POINTS,
    Photometry,
    UnknownFilterError,
    calspec_zero_point_jy,
    get_filter,
    vega_spectrum,
    vega_zero_point_jy,
)
from simulators.spectra import PlanckLibrary

BANDS = list(FILTERS)


def synphot_mag(wave, flux, band, system):
    from synphot import Observation, SourceSpectrum, SpectralElement
    from synphot.models import Empirical1D

    f = get_filter(band)
    sp = SourceSpectrum(
        Empirical1D,
        points=wave * u.AA,
        lookup_table=flux * u.Unit("erg/(s cm2 AA)"),
        keep_neg=True,
    )
    bp = SpectralElement(Empirical1D, points=f.wave_aa * u.AA, lookup_table=f.transmission)
    obs = Observation(sp, bp, force="taper")
    if system == "ab":
        return obs.effstim(u.ABmag).value
    vw, vf = vega_spectrum()
    vega = SourceSpectrum(
        Empirical1D, points=vw * u.AA, lookup_table=vf * u.Unit("erg/(s cm2 AA)")
    )
    return obs.effstim("vegamag", vegaspec=vega).value


@pytest.mark.parametrize("system", ["calspec", "ab"])
def test_matches_synphot_for_every_band(system):
    lib = PlanckLibrary(wave_range_aa=(2900.0, 330_000.0), num=3000)
    flux = lib.surface_flux([3800.0, 9000.0], [4.5, 4.5], [0.0, 0.0]).astype(float) * 1e-21
    phot = Photometry(BANDS, lib.wave_aa, system=system)
    mags = phot.magnitudes(flux)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(2):
            for j, band in enumerate(BANDS):
                ref = synphot_mag(lib.wave_aa, flux[i], band, system)
                assert abs(mags[i, j] - ref) < 1e-3, (band, mags[i, j], ref)


def test_matches_synphot_on_ck04(shared_data):
    from simulators.spectra import CK04Library

    lib = CK04Library()
    flux = lib.surface_flux([5750.0, 3600.0], [4.5, 4.8], [0.0, -1.0]).astype(float) * 1e-20
    bands = [b for b in BANDS if not b.startswith("gaiadr2")]
    mags = Photometry(bands, lib.wave_aa, system="calspec").magnitudes(flux)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j, band in enumerate(bands):
            ref = synphot_mag(lib.wave_aa, flux[0], band, "vega")
            assert abs(mags[0, j] - ref) < 1e-3, band


def test_vega_has_zero_magnitude():
    wave, flux = vega_spectrum()
    sel = (wave > 2900) & (wave < 330_000)
    phot = Photometry(["gaia_G", "2mass_Ks", "irac_1"], wave[sel], system="calspec")
    np.testing.assert_allclose(phot.magnitudes(flux[None, sel])[0], 0.0, atol=1e-6)


# published Vega zero points [Jy], typed from the papers (not from the code's table)
PUBLISHED_JY = {
    # Cohen, Wheaton & Megeath (2003), Table 2
    "2mass_J": 1594.0,
    "2mass_H": 1024.0,
    "2mass_Ks": 666.7,
    # Reach et al. (2005), Table 3
    "irac_1": 280.9,
    "irac_2": 179.7,
    "irac_3": 115.0,
    "irac_4": 64.13,
    # Jarrett et al. (2011), Table 1
    "wise_W1": 309.540,
    "wise_W2": 171.787,
    "wise_W3": 31.674,
    "wise_W4": 8.363,
    # Engelbracht et al. (2007)
    "mips_24": 7.17,
    # Riello et al. (2021), Table 3: 3631 Jy × 10^(-0.4 (ZP_AB - ZP_Vega))
    "gaia_G": 3631 * 10 ** (-0.4 * (25.8010 - 25.6874)),
    "gaia_BP": 3631 * 10 ** (-0.4 * (25.3540 - 25.3385)),
    "gaia_RP": 3631 * 10 ** (-0.4 * (25.1040 - 24.7479)),
}


@pytest.mark.parametrize("band", sorted(PUBLISHED_JY))
def test_zero_point_within_half_a_percent_of_the_survey(band):
    assert set(PUBLISHED_JY) == set(ZERO_POINTS)
    assert vega_zero_point_jy(band) == pytest.approx(PUBLISHED_JY[band], rel=0.005)
    # the photometry uses it: a flat F_ν source at the zero point has magnitude 0, and one
    # 100x fainter magnitude 5
    f = get_filter(band)
    wave = np.geomspace(f.wave_aa[0] * 0.9, f.wave_aa[-1] * 1.1, 4000)
    flam = PUBLISHED_JY[band] * 1e-23 * 2.99792458e18 / wave**2
    mags = Photometry([band], wave).magnitudes(np.stack([flam, flam / 100]))
    np.testing.assert_allclose(mags[:, 0], [0.0, 5.0], atol=2e-4)


@pytest.mark.parametrize("band", sorted(PUBLISHED_JY))
def test_survey_zero_points_agree_with_calspec_vega(band):
    """The surveys' Vega systems and the CALSPEC Vega spectrum through the same curves agree
    to the few per cent by which the Vega models differ (Cohen's against Bohlin's); a zero
    point in the wrong unit or convention would be off by far more."""
    ratio = calspec_zero_point_jy(band) / PUBLISHED_JY[band]
    assert 0.95 < ratio < 1.01, (band, ratio)
    # CALSPEC Vega in the survey system is as bright as that ratio says
    wave, flux = vega_spectrum()
    f = get_filter(band)
    sel = (wave > f.wave_aa[0] * 0.9) & (wave < f.wave_aa[-1] * 1.1)
    m = Photometry([band], wave[sel]).magnitudes(flux[None, sel])[0, 0]
    assert m == pytest.approx(-2.5 * np.log10(ratio), abs=1e-4)


def test_unknown_system_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'vega', 'calspec', 'ab'"):
        Photometry(["gaia_G"], np.geomspace(3000, 12000, 100), system="st")


def test_batch_is_one_matmul_and_scales():
    lib = PlanckLibrary()
    phot = Photometry(["gaia_G", "wise_W1"], lib.wave_aa)
    f = lib.surface_flux(np.full(5, 5000.0), 4.0, 0.0)
    m1 = phot.magnitudes(f)
    m2 = phot.magnitudes(f * 100.0)
    np.testing.assert_allclose(m1 - m2, 5.0, atol=1e-5)  # 100× brighter = 5 mag
    assert phot.weights.shape == (len(lib.wave_aa), 2)


def test_unknown_filter_lists_known_ones():
    with pytest.raises(UnknownFilterError, match="known filters are: gaia_G, gaia_BP"):
        Photometry(["gaia_X"], np.linspace(3000, 10000, 10))


def test_filter_beyond_grid_is_an_error():
    with pytest.raises(ValueError, match="extends beyond the spectral grid"):
        Photometry(["wise_W4"], np.linspace(3000, 100_000, 100))


def test_pyphot_duplicate_rows_are_dropped():
    f = get_filter("2MASS_J")
    assert np.all(np.diff(f.wave_aa) > 0)

"""Synthetic photometry against synphot.Observation.effstim, for every band."""

from __future__ import annotations

import warnings

import astropy.units as u
import numpy as np
import pytest

from simulators.bandpasses import (
    FILTERS,
    Photometry,
    UnknownFilterError,
    get_filter,
    vega_spectrum,
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


@pytest.mark.parametrize("system", ["vega", "ab"])
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
    mags = Photometry(bands, lib.wave_aa).magnitudes(flux)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j, band in enumerate(bands):
            ref = synphot_mag(lib.wave_aa, flux[0], band, "vega")
            assert abs(mags[0, j] - ref) < 1e-3, band


def test_vega_has_zero_magnitude():
    wave, flux = vega_spectrum()
    sel = (wave > 2900) & (wave < 330_000)
    phot = Photometry(["gaia_G", "2mass_Ks", "irac_1"], wave[sel])
    np.testing.assert_allclose(phot.magnitudes(flux[None, sel])[0], 0.0, atol=1e-6)


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

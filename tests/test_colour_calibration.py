"""The empirical dwarf-colour calibration of the PHOENIX photospheres (``phoenix_pm13``)."""

from __future__ import annotations

import numpy as np
import pytest

from simulators.bandpasses import Photometry
from simulators.spectra import (
    CALIBRATION_BANDS,
    MangledLibrary,
    dwarf_sequence,
    make_library,
)

COLOURS = ("bp_rp", "rp_ks", "j_h", "h_ks", "ks_w1", "w1_w2")


@pytest.fixture(scope="module")
def libs():
    from pathlib import Path

    from conftest import SHARED_DATA, _absent

    if not Path(SHARED_DATA).is_dir():
        _absent(f"shared data folder {SHARED_DATA} is missing")
    return MangledLibrary(), MangledLibrary(calibration="pm13")


def _colours(lib, teff, logg):
    m = Photometry(list(CALIBRATION_BANDS), lib.wave_aa).magnitudes(
        lib.surface_flux(teff, logg, np.zeros(len(teff)))
    )
    bp, g, rp, j, h, k, w1, w2 = m.T
    return {
        "bp_rp": bp - rp,
        "g_rp": g - rp,
        "rp_ks": rp - k,
        "j_h": j - h,
        "h_ks": h - k,
        "ks_w1": k - w1,
        "w1_w2": w1 - w2,
    }


def _reference(seq):
    return {
        "bp_rp": seq["bp_rp"],
        "g_rp": seq["g_rp"],
        "rp_ks": seq["g_ks"] - seq["g_rp"],
        "j_h": seq["j_h"],
        "h_ks": seq["h_ks"],
        "ks_w1": seq["ks_w1"],
        "w1_w2": seq["w1_w2"],
    }


def test_dwarf_sequence_table():
    """The shipped table: A0V-M9.5V, sorted by T_eff, with main-sequence gravities."""
    seq = dwarf_sequence()
    assert seq["spt"][0] == "M9.5V" and seq["spt"][-1] == "A0V"
    assert np.all(np.diff(seq["teff"]) > 0)
    assert 2300 <= seq["teff"][0] and seq["teff"][-1] <= 9800
    assert np.all((seq["logg"] > 4.0) & (seq["logg"] < 5.4))
    # Mamajek's values (version 2024.05.15): M0V J-H 0.627, M5V Bp-Rp 3.35
    assert seq["j_h"][seq["spt"] == "M0V"][0] == pytest.approx(0.627)
    assert seq["bp_rp"][seq["spt"] == "M5V"][0] == pytest.approx(3.35)
    assert np.isnan(seq["w1_w2"][seq["spt"] == "M2V"][0])  # the table has none there


def test_calibration_gives_dwarfs_the_published_colours(libs):
    """At the dwarfs' T_eff and log g, the calibrated colours are the table's (to its own
    type-to-type scatter), where the uncalibrated PHOENIX photospheres are 0.06 mag too red
    in J-H (K-M types) and up to 0.5 mag too blue in BP-RP (late M)."""
    raw, cal = libs
    seq = dwarf_sequence()
    t, g = seq["teff"], seq["logg"]
    ref = _reference(seq)
    c_raw, c_cal = _colours(raw, t, g), _colours(cal, t, g)
    for key in COLOURS:
        d = np.abs(c_cal[key] - ref[key])
        d = d[np.isfinite(d)]
        assert np.median(d) < 0.006, (key, np.median(d))
        assert np.percentile(d, 90) < 0.03, (key, np.percentile(d, 90))
    km = (t > 3000) & (t < 4500)
    assert np.median(np.abs(c_raw["j_h"] - ref["j_h"])[km]) > 0.05
    late = t < 3000
    assert np.median((ref["bp_rp"] - c_raw["bp_rp"])[late]) > 0.4
    # G is not fitted (its optical colours enter through BP and RP): G-RP is the check
    d = np.abs(c_cal["g_rp"] - ref["g_rp"])
    ok = np.isfinite(d)
    assert np.all(d[ok & (t >= 3200)] < 0.06) and np.all(d[ok] < 0.25), d.round(3)


def test_calibration_keeps_bolometric_flux_and_hot_stars(libs):
    """The warp moves flux between bands but keeps ∫F_λ dλ (exactly at the table's types,
    to 2.5% between them); above 12,000 K it is gone."""
    raw, cal = libs
    t = np.array([2400.0, 3000.0, 3500.0, 4500.0, 6000.0, 15000.0])
    g = np.array([4.0, 4.0, 4.5, 4.5, 4.5, 4.0])
    f_raw = raw.surface_flux(t, g, np.zeros(len(t))).astype(np.float64)
    f_cal = cal.surface_flux(t, g, np.zeros(len(t))).astype(np.float64)
    bol = np.trapezoid(f_cal, raw.wave_aa) / np.trapezoid(f_raw, raw.wave_aa)
    np.testing.assert_allclose(bol, 1.0, atol=0.025)
    np.testing.assert_allclose(f_cal[-1], f_raw[-1], rtol=1e-5)
    assert np.abs(np.log10(f_cal[0] / f_raw[0])).max() > 0.3  # a real change at 2400 K
    # the same warp at every log g: the ratio calibrated / raw does not depend on gravity
    r = [
        cal.surface_flux([3200.0], [lg], [0.0])[0] / raw.surface_flux([3200.0], [lg], [0.0])[0]
        for lg in (3.5, 5.0)
    ]
    np.testing.assert_allclose(r[0], r[1], rtol=1e-4)


def test_calibration_by_name_and_errors(shared_data):
    with pytest.raises(ValueError, match="unknown colour calibration 'pm14'.*none, pm13"):
        MangledLibrary(calibration="pm14")
    lib = make_library("phoenix_pm13")
    assert isinstance(lib, MangledLibrary) and lib.calibration == "pm13"


def test_simulators_take_the_calibrated_library(shared_data):
    """field_stars and the YSO model accept ``library: phoenix_pm13`` and give M stars
    redder optical colours than ``phoenix``."""
    from simulators.yso import YSOModel

    out = {}
    for name in ("phoenix", "phoenix_pm13"):
        m = YSOModel("s---s-i", library=name)
        flux = m._star_surface(np.array([2600.0]), np.array([4.0])).double().numpy()
        out[name] = Photometry(["gaia_BP", "gaia_RP"], m.wave_aa).magnitudes(flux)[0]
    bp_rp = {k: v[0] - v[1] for k, v in out.items()}
    assert bp_rp["phoenix_pm13"] - bp_rp["phoenix"] > 0.3
    from simulators.stars import FieldStars

    sim = FieldStars({"library": "phoenix_pm13", "bands": {"gaia_G": {}, "2mass_Ks": {}}})
    assert sim.sed.library.calibration == "pm13"

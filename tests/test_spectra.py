from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from simulators.spectra import (
    BandFluxLibrary,
    CK04Library,
    OutOfGridError,
    PlanckLibrary,
    make_library,
)


@pytest.fixture
def ck04(shared_data):
    return CK04Library(shared_data / "atmospheres" / "ck04models")


def test_ck04_reproduces_grid_nodes(ck04, shared_data):
    table = Table.read(shared_data / "atmospheres/ck04models/ckm10/ckm10_6250.fits")
    wave = np.asarray(table["WAVELENGTH"], float)
    truth = np.asarray(table["g40"], float)
    flux = ck04.surface_flux([6250.0], [4.0], [-1.0])[0]
    sel = (wave >= 3000) & (wave <= 1e5)
    model = np.interp(wave[sel], ck04.wave_aa, flux)
    np.testing.assert_allclose(model, truth[sel], rtol=1e-5)


def test_ck04_interpolates_between_nodes(ck04):
    a, b = ck04.surface_flux([6000.0, 6250.0], [4.0, 4.0], [0.0, 0.0])
    mid = ck04.surface_flux([6125.0], [4.0], [0.0])[0]
    # log-linear interpolation: the midpoint is the geometric mean of the nodes
    np.testing.assert_allclose(mid, np.sqrt(a * b), rtol=1e-4)
    assert ck04.surface_flux([5800.0] * 3, [4.4] * 3, [-0.3] * 3).shape == (3, len(ck04.wave_aa))


def test_ck04_luminosity_is_sigma_t4(ck04):
    """∫ F_λ dλ over the grid ≈ σ T⁴ (most of the flux falls in 0.3-32 µm for 5000 K)."""
    from simulators.units import SIGMA_SB

    flux = ck04.surface_flux([5000.0], [4.5], [0.0])[0]
    total = np.trapezoid(flux, ck04.wave_aa)
    assert total / (SIGMA_SB * 5000.0**4) == pytest.approx(0.97, abs=0.03)


def test_ck04_missing_points_and_bounds(ck04):
    # 20000 K at log g 1 has no model: raise by default, clip raises log g
    with pytest.raises(OutOfGridError, match="log g must be >= "):
        ck04.surface_flux([20000.0], [1.0], [0.0])
    with pytest.raises(OutOfGridError, match="teff outside"):
        ck04.surface_flux([2000.0], [4.0], [0.0])
    with pytest.raises(ValueError, match="NaN"):
        ck04.surface_flux([np.nan], [4.0], [0.0])
    clip = CK04Library.__new__(CK04Library)
    clip.__dict__.update(ck04.__dict__)
    clip.out_of_grid = "clip"
    f = clip.surface_flux([20000.0, 2000.0], [1.0, 4.0], [0.0, 0.0])
    assert np.isfinite(f).all() and (f > 0).all()
    np.testing.assert_allclose(f[1], ck04.surface_flux([3500.0], [4.0], [0.0])[0], rtol=1e-5)


def test_planck_matches_stefan_boltzmann():
    from simulators.units import SIGMA_SB

    lib = PlanckLibrary(wave_range_aa=(500.0, 1e7), num=20000)
    flux = lib.surface_flux([5772.0], [4.4], [0.0])[0]
    assert np.trapezoid(flux, lib.wave_aa) == pytest.approx(SIGMA_SB * 5772.0**4, rel=2e-3)


def test_bandflux_table_nodes_and_errors(shared_data, tmp_path):
    import pandas as pd

    df = pd.read_csv(shared_data / "atmospheres/bandflux/Kurucz_DF.csv")
    lib = BandFluxLibrary("Kurucz", bands=["2MASS_J", "GaiaDR2v2_G"])
    row = df[(df.teff == 5750) & (df.logg == 4.5) & (df.feh == 0.0)].iloc[0]
    flux = lib.surface_flux([5750.0], [4.5], [0.0])[0]
    np.testing.assert_allclose(flux, [row["2MASS_J"] * 1e-4, row["GaiaDR2v2_G"] * 1e-4], rtol=1e-5)
    assert lib.kind == "bands" and lib.wave_aa[0] > lib.wave_aa[1]
    with pytest.raises(ValueError, match="unknown bands"):
        BandFluxLibrary("Kurucz", bands=["NOPE"])
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="lacks the columns"):
        BandFluxLibrary(bad)


def test_registry_and_missing_grid(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="valid libraries are: ck04, bandflux, planck"):
        make_library("phoenix")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CK04Library(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no ck"):
        CK04Library(tmp_path / "empty")
    corrupt = tmp_path / "bad" / "ckp00"
    corrupt.mkdir(parents=True)
    (corrupt / "ckp00_5000.fits").write_text("not fits")
    with pytest.raises(OSError, match="cannot read CK04 model"):
        CK04Library(tmp_path / "bad")

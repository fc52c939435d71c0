"""sedfitter model folders: write, read back (ours and sedfitter's), look up, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from simulators.sedgrid import SEDGrid, write_sedfitter_models
from simulators.yso import export_grid


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory):
    """A small R17-like grid of the embedded model: 12 models × 3 inclinations."""
    root = tmp_path_factory.mktemp("grids") / "sp--s-i"
    return export_grid(
        root,
        "sp--s-i",
        n_models=12,
        n_inclinations=3,
        wav_um=np.geomspace(0.2, 500, 80),
        library="planck",
    )


def _tiny(tmp_path, **kw):
    names = ["a_01", "b_01", "c_01", "d_01"]
    params = {
        "star.temperature": np.array([3000.0, 4000.0, 5000.0, 6000.0]),
        "inclination": np.array([10.0, 40.0, 60.0, 80.0]),
    }
    wav = np.geomspace(1.0, 10.0, 5)
    ap = np.array([100.0, 1000.0, 10000.0])
    flux = np.arange(1, 4 * 3 * 5 + 1, dtype=float).reshape(4, 3, 5)
    conv = {"2J": (flux[:, :, 0] * 2, 1.235)}
    path = write_sedfitter_models(
        tmp_path / "g", names, params, wav, ap, flux, 1000.0, convolved=conv, **kw
    )
    return path, params, wav, ap, flux


def test_round_trip_and_sedfitter_order(tmp_path):
    from astropy.io import fits

    path, params, wav, ap, flux = _tiny(tmp_path)
    with fits.open(path / "flux.fits") as h:  # sedfitter's quirk: increasing frequency
        assert np.all(np.diff(h["SPECTRAL_INFO"].data["WAVELENGTH"]) < 0)
        assert h[0].header["DISTANCE"] == pytest.approx(1000 * 3.0856775814913673e18)
    g = SEDGrid.read(path)
    assert np.allclose(g.wav_um, wav) and np.allclose(g.apertures_au, ap)
    assert np.allclose(g.flux_mjy, flux)
    assert g.parameter_names == ["star.temperature", "inclination"]
    # nearest lookup at each model and aperture returns it exactly
    out = g.sed(params, ap[[0, 1, 2, 1]])
    assert np.allclose(out, flux[np.arange(4), [0, 1, 2, 1]])
    # fluxes scale as 1/d²
    assert np.allclose(g.sed(params, 100.0, distance_pc=2000.0), flux[:, 0] / 4)
    conv = g.convolved("2J")
    assert np.allclose(conv["flux_mjy"], flux[:, :, 0] * 2) and conv["wavelength_um"] == 1.235


def test_interpolation_in_parameters_and_apertures(tmp_path):
    path, params, wav, ap, flux = _tiny(tmp_path)
    g = SEDGrid.read(path)
    # at a grid model the interpolated lookup is exact; between apertures it is log-linear
    exact = g.sed({k: v[:1] for k, v in params.items()}, 100.0, method="interp", k=3)
    assert np.allclose(exact, flux[0, 0])
    mid = g.sed({k: v[:1] for k, v in params.items()}, np.sqrt(100.0 * 1000.0), method="interp")
    assert np.allclose(mid, np.sqrt(flux[0, 0] * flux[0, 1]))
    # between models: a weighted geometric mean, so inside the neighbours' range
    between = {"star.temperature": np.array([4500.0]), "inclination": np.array([50.0])}
    f = g.sed(between, 100.0, method="interp", k=2)[0]
    assert np.all(f > flux[1, 0] * 0.999) and np.all(f < flux[2, 0] * 1.001)
    near = g.sed(between, 100.0, method="nearest")[0]
    assert any(np.allclose(near, flux[i, 0]) for i in (1, 2))
    with pytest.raises(ValueError, match="outside the grid's range"):
        g.sed({"star.temperature": np.array([9000.0]), "inclination": np.array([50.0])}, 100.0)
    assert np.isfinite(
        g.sed(
            {"star.temperature": np.array([9000.0]), "inclination": np.array([50.0])},
            100.0,
            clip=True,
        )
    ).all()
    with pytest.raises(ValueError, match="needs parameters"):
        g.sed({"star.temperature": np.array([4000.0])}, 100.0)
    with pytest.raises(ValueError, match="method"):
        g.sed(params, 100.0, method="cubic")


def test_sedfitter_reads_what_we_write(grid_dir, tmp_path):
    pytest.importorskip("sedfitter")  # in the test extra
    from sedfitter.convolved_fluxes import ConvolvedFluxes
    from sedfitter.sed import SEDCube

    g = SEDGrid.read(grid_dir)
    cube = SEDCube.read(str(grid_dir / "flux.fits"))
    assert cube.val.shape == g.flux_mjy.shape
    i = list(cube.names).index(g.names[5])
    theirs = cube.val[i].to_value("mJy")
    wav = cube.wav.to_value("micron")
    theirs = theirs[:, np.argsort(wav)]
    assert np.allclose(theirs, g.flux_mjy[5], rtol=1e-6)
    path, *_, flux = _tiny(tmp_path)
    conv = ConvolvedFluxes.read(str(path / "convolved" / "2J.fits"))
    assert np.allclose(conv.flux.to_value("mJy"), flux[:, :, 0] * 2)


def test_exported_grid_reproduces_the_embedded_model(grid_dir):
    from simulators.units import C_AA_S
    from simulators.yso import YSOModel

    g = SEDGrid.read(grid_dir)
    assert len(g.names) == 36 and len(g.apertures_au) == 20
    m = YSOModel("sp--s-i", wave_aa=g.wav_um * 1e4, library="planck")
    j = 7
    p = {k: v[j : j + 1] for k, v in g.params.items()}
    p["aperture"] = g.apertures_au[10:11]
    flam = m.sed(p, 1000.0).double().numpy()[0]
    mjy = flam * (g.wav_um * 1e4) ** 2 / C_AA_S / 1e-26
    ok = mjy > 1e-12 * mjy.max()
    assert np.allclose(g.flux_mjy[j, 10][ok], mjy[ok], rtol=1e-4)


def test_yso_simulator_draws_grid_models(grid_dir, rng):
    from simulators.yso import YSOSimulator

    sim = YSOSimulator({"grid": str(grid_dir), "library": "planck", "distance": [300, 300]})
    assert sim.theta_names[: len(sim.grid.parameter_names)] == sim.grid.parameter_names
    out = sim(40, rng)
    assert out.theta.shape == (40, len(sim.theta_names))
    assert np.isfinite(out.x["photometry"].values).any()


def test_bad_grids_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        SEDGrid.read(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="models.conf"):
        SEDGrid.read(tmp_path / "empty")
    path, *_ = _tiny(tmp_path)
    with pytest.raises(FileExistsError, match="overwrite"):
        _tiny(tmp_path)
    (path / "flux.fits").write_bytes(b"SIMPLE  = this is not a FITS file" + b"\0" * 100)
    with pytest.raises(ValueError, match="not a readable FITS file"):
        SEDGrid.read(path)
    path, *_ = _tiny(tmp_path, overwrite=True)
    (path / "parameters.fits").unlink()
    with pytest.raises(FileNotFoundError, match="parameters.fits"):
        SEDGrid.read(path)
    path, *_ = _tiny(tmp_path, overwrite=True)
    (path / "models.conf").write_text("name = g\nversion = 1\n")
    with pytest.raises(ValueError, match="version 1"):
        SEDGrid.read(path)
    (path / "models.conf").write_text("this line has no equals sign\n")
    with pytest.raises(ValueError, match="key = value"):
        SEDGrid.read(path)
    with pytest.raises(ValueError, match="shape"):
        write_sedfitter_models(tmp_path / "x", ["a"], {}, [1.0, 2.0], [100.0], np.ones((1, 1, 3)))


def test_missing_grid_in_a_simulate_config_is_a_config_error(tmp_path):
    from dasbi.errors import ConfigError
    from dasbi.simulate import build_simulator

    with pytest.raises(ConfigError, match="not found"):
        build_simulator({"name": "yso", "grid": str(tmp_path / "missing"), "library": "planck"})

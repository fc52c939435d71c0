"""The Galaxia adapter and simulator on catalogues the tests write: EBF and both HDF5 layouts,
the same stars through galaxia and field_stars, and the galaxia-ananke call."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from simulators.galaxia import read_galaxia, run_ananke, to_field_star_theta

warnings_filter = pytest.mark.filterwarnings("ignore:.*coarser than the instrument.*")

COLS = {
    "teff": np.log10([5772.0, 4000.0]),
    "grav": np.array([4.44, 2.0]),
    "lum": np.array([0.0, 2.0]),
    "feh": np.array([0.0, -0.5]),
    "rad": np.array([0.01, 2.5]),
    "age": np.array([9.66, 10.0]),
    "mact": np.array([1.0, 1.1]),
    "glon": np.array([10.0, 200.0]),
    "glat": np.array([5.0, -30.0]),
    "exbv_solar": np.array([0.0, 0.2]),
    "gaia_gmag": np.array([4.7, 12.0]),
}


def write_root(path):
    with h5py.File(path, "w") as f:
        for k, v in COLS.items():
            f[k] = v


def write_vaex(path):
    with h5py.File(path, "w") as f:
        for k, v in COLS.items():
            f.create_dataset(f"table/columns/{k}/data", data=v)


@pytest.mark.parametrize("writer", [write_root, write_vaex])
def test_reads_and_converts(tmp_path, writer):
    path = tmp_path / "survey.h5"
    writer(path)
    s = read_galaxia(path)
    np.testing.assert_allclose(s["teff"], [5772.0, 4000.0])
    np.testing.assert_allclose(s["radius"][0], 1.0, rtol=1e-12)  # the Sun
    # L = 100 L_sun at 4000 K: R = 10 (5772/4000)² R_sun
    np.testing.assert_allclose(s["radius"][1], 10 * (5772 / 4000) ** 2, rtol=1e-12)
    np.testing.assert_allclose(s["distance"], [10.0, 2500.0])
    np.testing.assert_allclose(s["av"], [0.0, 0.62])
    np.testing.assert_allclose(s["gaia_gmag"], [4.7, 12.0])
    theta = to_field_star_theta(s, ["teff", "logg", "feh", "radius", "distance", "av"])
    assert theta.shape == (2, 6)
    assert read_galaxia(path, max_rows=1)["teff"].shape == (1,)


def test_bad_files(tmp_path):
    (tmp_path / "x.h5").write_text("garbage")
    with pytest.raises(ValueError, match="cannot read"):
        read_galaxia(tmp_path / "x.h5")
    with h5py.File(tmp_path / "partial.h5", "w") as f:
        f["teff"] = np.ones(2)
    with pytest.raises(ValueError, match="lacks the Galaxia columns"):
        read_galaxia(tmp_path / "partial.h5")
    with pytest.raises(ValueError, match="lacks"):
        to_field_star_theta({"teff": np.ones(1)}, ["teff", "rv"])


def write_ebf(path, cols=COLS):
    import ebf

    for i, (k, v) in enumerate(cols.items()):
        ebf.write(str(path), f"/{k}", np.asarray(v), "w" if i == 0 else "a")


def test_ebf_round_trip(tmp_path):
    """A Galaxia EBF file written here reads as its HDF5 twin, by suffix or by content."""
    write_ebf(tmp_path / "survey.ebf")
    write_root(tmp_path / "survey.h5")
    a, b = read_galaxia(tmp_path / "survey.ebf"), read_galaxia(tmp_path / "survey.h5")
    assert set(a) == set(b) and "ebv" in a and "mass_initial" not in a
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    (tmp_path / "survey.ebf").rename(tmp_path / "survey_no_suffix")
    np.testing.assert_array_equal(read_galaxia(tmp_path / "survey_no_suffix")["teff"], a["teff"])
    (tmp_path / "bad.ebf").write_bytes(b"not an EBF file at all")
    with pytest.raises(ValueError, match="cannot read .* as EBF"):
        read_galaxia(tmp_path / "bad.ebf")
    with pytest.raises(ValueError, match="does not exist"):
        read_galaxia(tmp_path / "none.ebf")


FIELD = {
    "library": "planck",
    "surveys": ["gaia_dr3", "2mass"],
    "l": 60.0,
    "b": 20.0,
    "radius": 1.0,
    "mag_limit": 19.0,
    "rv_sigma": 0.0,
}


def _galaxia_twin(path, n=2000):
    """Stars of field_stars' own population written as a Galaxia EBF catalogue (initial
    mass, log age, [Fe/H], distance, E(B-V) = A_V / 3.1), with field_stars' θ of them."""
    from simulators.stars import FieldStars

    fs = FieldStars(FIELD)
    rng = np.random.default_rng(3)
    pop = fs._population(4 * n, rng)
    th = fs._candidates(len(pop["distance"]), np.random.default_rng(4), pop)
    # the stars that stayed (on the isochrones and the library), in the same order
    ok = np.isin(pop["distance"], th["distance"])
    pop = {k: v[ok][:n] for k, v in pop.items()}
    th = {k: v[:n] for k, v in th.items()}
    lum = th["radius"] ** 2 * (th["teff"] / 5772.0) ** 4
    write_ebf(
        path,
        {
            "teff": np.log10(th["teff"]),
            "grav": th["logg"],
            "lum": np.log10(lum),
            "feh": pop["feh"],
            "rad": pop["distance"] / 1000.0,
            "age": pop["log_age"],
            "smass": pop["mass"],
            "mact": pop["mass"],
            "glon": pop["l"],
            "glat": pop["b"],
            "exbv_solar": th["av"] / 3.1,
        },
    )
    return fs, th


@warnings_filter
@pytest.mark.parametrize("stellar_params", ["isochrone", "catalogue"])
def test_galaxia_stars_are_observed_as_field_stars_observes_them(tmp_path, stellar_params):
    from simulators.galaxia import GalaxiaStars

    fs, th = _galaxia_twin(tmp_path / "mock.ebf")
    gs = GalaxiaStars(
        {**FIELD, "source": str(tmp_path / "mock.ebf"), "stellar_params": stellar_params}
    )
    assert gs.nodes() == fs.nodes() and gs.edges() == fs.edges()
    cat = gs.catalogue(np.random.default_rng(5))
    # every star brighter than the limit, with field_stars' parameters
    true_mags = fs.sed.magnitudes(
        fs.sed.flux(
            th["teff"], th["logg"], th["feh"], th["radius"], th["distance"], th["av"], th["rv"]
        )
    )
    bright = (
        fs.sed.magnitudes(
            fs.sed.flux(
                th["teff"], th["logg"], th["feh"], th["radius"], th["distance"], th["av"], th["rv"]
            )
        )[:, fs._g]
        <= FIELD["mag_limit"]
    )
    assert len(cat) == bright.sum() > 50
    for k in ("teff", "logg", "radius", "distance", "av"):
        np.testing.assert_allclose(cat[f"true_{k}"], th[k][bright], rtol=1e-6, err_msg=k)
    # and the same photometry: field_stars' simulate on the same θ with the same noise
    theta = np.stack([np.asarray(cat[f"true_{k}"]) for k in fs.theta_names], axis=1)
    x = fs.simulate(theta, np.random.default_rng(6))
    y = gs.simulate(theta, np.random.default_rng(6))
    np.testing.assert_array_equal(x["photometry"].values, y["photometry"].values)
    # the catalogue is G-limited as field_stars is: every star has its G, near the truth
    g = np.asarray(cat["gaia_G"])
    assert np.isfinite(g).all() and np.median(np.abs(g - true_mags[bright][:, fs._g])) < 0.01


@warnings_filter
def test_dasbi_simulate_runs_galaxia_with_field_stars_nodes(tmp_path):
    from dasbi.config import from_dict
    from dasbi.dataset import Dataset
    from dasbi.simulate import SimulateConfig, run_simulate

    _galaxia_twin(tmp_path / "mock.ebf")
    out = {}
    for name in ("galaxia", "field_stars"):
        sim = {**FIELD, "name": name}
        if name == "galaxia":
            sim["source"] = str(tmp_path / "mock.ebf")
        cfg = from_dict(SimulateConfig, {"num": 200, "seed": 1, "simulator": sim})
        with Dataset(run_simulate(cfg, tmp_path / f"{name}.h5", progress=False)) as ds:
            out[name] = (ds.nodes.to_json(), ds.read(0, ds.num_rows))
    assert out["galaxia"][0] == out["field_stars"][0]
    assert len(out["galaxia"][1]["photometry"]) == 200


def test_galaxia_config_errors(tmp_path):
    from simulators.galaxia import GalaxiaStars

    with pytest.raises(ValueError, match="simulator.source"):
        GalaxiaStars({"library": "planck"})
    cols = {k: v for k, v in COLS.items() if k != "exbv_solar"}
    write_ebf(tmp_path / "no_dust.ebf", cols)
    with pytest.raises(ValueError, match="dust: model"):
        GalaxiaStars({"library": "planck", "source": str(tmp_path / "no_dust.ebf")})


class _Ananke08:
    """Stands in for galaxia-ananke 0.8 where it cannot be installed (its build downloads
    Galaxia): the signature of ``make_survey_from_particles`` (0.8.0, ``__init__.py``):
    ``(*args, pname=None, kname=None, photo_sys=..., cmd_magnames=..., simname='sim',
    surveyname='survey', fsample=1, ngb=64, k_factor=1, caching=False, **kwargs)`` with
    ``args = (particles, kernels)``; its output writes ``<output_dir>/<output_name>.<i>.h5``
    with the columns under ``/StarCatalog/columns/<name>/data``."""

    def __init__(self, folder):
        self.folder = folder
        self.calls = []

    def make_survey_from_particles(
        self, *args, pname=None, kname=None, simname="sim", surveyname="survey", **kwargs
    ):
        if not (pname is not None and kname is not None) and len(args) != 2:
            raise TypeError(
                f"make_survey_from_particles takes (particles, kernels), got {len(args)}"
            )
        particles, kernels = args
        assert isinstance(particles, dict) and len(kernels) == len(next(iter(particles.values())))
        self.calls.append(kwargs)
        name = f"{surveyname}.{simname}"
        for i, rows in enumerate((slice(0, 1), slice(1, 2))):
            with h5py.File(self.folder / f"{name}.{i}.h5", "w") as f:
                for k, v in COLS.items():
                    f.create_dataset(f"StarCatalog/columns/{k}/data", data=v[rows])
                f.create_dataset("StarCatalog/columns/minit/data", data=COLS["mact"][rows])
        out = type("Output", (), {})()
        out.output_dir, out.output_name = self.folder, name
        return out


def test_run_ananke_calls_galaxia_ananke_0_8_and_reads_its_partitions(tmp_path, monkeypatch):
    import sys

    fake = _Ananke08(tmp_path)
    monkeypatch.setitem(sys.modules, "galaxia_ananke", fake)
    particles = {"pos3": np.zeros((3, 3)), "mass": np.ones(3)}
    s = run_ananke(particles, np.ones((3, 2)), fsample=0.1, photo_sys="padova/GAIA__DR2")
    assert fake.calls == [{"fsample": 0.1, "photo_sys": "padova/GAIA__DR2"}]
    np.testing.assert_allclose(s["teff"], [5772.0, 4000.0])  # both partitions, in order
    np.testing.assert_allclose(s["mass_initial"], COLS["mact"])


def test_run_ananke_explains_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "galaxia_ananke", None)  # not installed
    with pytest.raises(ImportError, match="galaxia-ananke is not installed"):
        run_ananke({}, np.zeros(1))

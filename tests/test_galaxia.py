"""The Galaxia adapter on catalogues written by the test in both HDF5 layouts."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from simulators.galaxia import read_galaxia, run_ananke, to_field_star_theta

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


def test_run_ananke_explains_how_to_install():
    try:
        import galaxia_ananke  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="galaxia-ananke is not installed"):
            run_ananke({}, np.zeros(1), np.zeros(1))

"""Isochrone interpolation reproduces the lachesis-grids tables at their nodes."""

from __future__ import annotations

import numpy as np
import pytest

from simulators.isochrones import GRIDS, IsochroneGrid


@pytest.fixture(scope="module", params=sorted(GRIDS))
def grid(request):
    return IsochroneGrid(request.param)


def test_grid_nodes_are_reproduced(grid):
    rng = np.random.default_rng(0)
    for _ in range(3):
        iz = int(rng.integers(len(grid.feh_grid)))
        ia = int(rng.integers(len(grid.age_grid)))
        iso = grid.isochrone(iz, ia)
        if len(iso["eep"]) < 3:
            continue
        out = grid.interpolate(iso["initial_mass"], grid.age_grid[ia], grid.feh_grid[iz])
        np.testing.assert_allclose(out["teff"], 10 ** iso["log_Teff"], rtol=1e-10)
        np.testing.assert_allclose(out["logg"], iso["log_g"], atol=1e-10)
        np.testing.assert_allclose(out["radius"], 10 ** iso["log_R"], rtol=1e-10)
        np.testing.assert_allclose(out["logL"], iso["log_L"], atol=1e-10)


def test_between_nodes_lies_between_neighbours(grid):
    if len(grid.age_grid) < 2:
        pytest.skip("single age")
    iz = len(grid.feh_grid) // 2
    ia = len(grid.age_grid) // 2
    a0, a1 = grid.age_grid[ia], grid.age_grid[ia + 1]
    m = 0.6
    lo = grid.interpolate(m, a0, grid.feh_grid[iz])["teff"][0]
    hi = grid.interpolate(m, a1, grid.feh_grid[iz])["teff"][0]
    mid = grid.interpolate(m, 0.5 * (a0 + a1), grid.feh_grid[iz])["teff"][0]
    assert min(lo, hi) - 1e-6 <= mid <= max(lo, hi) + 1e-6


def test_the_sun():
    sun = IsochroneGrid("mist").interpolate(1.0, np.log10(4.57e9), 0.0)
    assert sun["teff"][0] == pytest.approx(5772, abs=100)
    assert sun["logg"][0] == pytest.approx(4.44, abs=0.05)
    assert sun["radius"][0] == pytest.approx(1.0, abs=0.05)


def test_dead_stars_are_nan_and_bad_inputs_raise():
    g = IsochroneGrid("mist")
    out = g.interpolate([50.0, 1.0], [10.0, 9.0], [0.0, 0.0])
    assert np.isnan(out["teff"][0]) and np.isfinite(out["teff"][1])
    with pytest.raises(ValueError, match="log_age in"):
        g.interpolate(1.0, 11.0, 0.0)
    with pytest.raises(ValueError, match="feh in"):
        g.interpolate(1.0, 9.0, 1.5)
    with pytest.raises(ValueError, match="valid grids are"):
        IsochroneGrid("yale")

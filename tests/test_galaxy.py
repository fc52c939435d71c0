"""Galactic population: IMF, densities, number counts against the analytic integral."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from simulators.galaxy import (
    COMPONENTS,
    ExponentialDust,
    GalaxyModel,
    heliocentric_to_galactocentric,
    imf_mean_mass,
    imf_number_fraction,
    sample_imf,
)


@pytest.mark.parametrize("pop", COMPONENTS, ids=[c.name for c in COMPONENTS])
def test_imf_sampling_matches_its_moments(pop, rng):
    m = sample_imf(pop.imf, 200_000, rng)
    assert m.min() >= 0.07 and m.max() <= 100
    assert m.mean() == pytest.approx(imf_mean_mass(pop.imf), rel=0.05)
    assert (m > 1).mean() == pytest.approx(imf_number_fraction(pop.imf, 1.0), abs=0.003)


def test_local_densities_reproduce_robin_normalisation():
    g = GalaxyModel()
    x, y, z = heliocentric_to_galactocentric(np.array(0.0), np.array(0.0), np.array(0.0))
    for pop in g.pops:
        if pop.kind == "bulge":
            continue
        rho = g.number_density(pop, x, y, z) * imf_mean_mass(pop.imf)
        assert float(rho) == pytest.approx(pop.rho0, rel=1e-9)


def test_thin_disc_is_thin_and_halo_is_round():
    g = GalaxyModel(["thin7", "halo"])
    thin, halo = g.pops
    r = np.array(8000.0)
    assert g.number_density(thin, r, 0 * r, r * 0 + 1000) < 0.1 * g.number_density(
        thin, r, 0 * r, r * 0
    )
    ratio = g.number_density(halo, r, 0 * r, r * 0 + 1000) / g.number_density(
        halo, r, 0 * r, r * 0
    )
    assert 0.9 < float(ratio) < 1.0


def test_expected_counts_equal_the_analytic_integral():
    """Counts in a cone = ∫dΩ ∫ n(d) d² dd, checked with scipy's adaptive quadrature."""
    g = GalaxyModel(["thin5", "thick", "halo"])
    l0, b0, rad, dmax = 60.0, 20.0, 2.0, 15_000.0
    counts = g.expected_counts(l0, b0, rad, dmax, m_min=0.3, n_dir=256, n_d=4000)
    r = np.deg2rad(rad)
    for pop in g.pops:

        def integrand(d, theta, phi, pop=pop):
            from simulators.galaxy import _rotate_to

            ls, bs = _rotate_to(l0, b0, np.array([theta]), np.array([phi]))
            x, y, z = heliocentric_to_galactocentric(ls, bs, np.array([d]))
            return float(g.number_density(pop, x, y, z)[0]) * d**2 * np.sin(theta)

        val, _ = integrate.tplquad(integrand, 0, 2 * np.pi, 0, r, 0, dmax, epsrel=1e-4, epsabs=0)
        val *= imf_number_fraction(pop.imf, 0.3)
        assert counts[pop.name] == pytest.approx(val, rel=5e-3), pop.name


def test_sampled_counts_and_distances_follow_the_model(rng):
    g = GalaxyModel(["thin6", "thick"])
    exp = g.expected_counts(120.0, 10.0, 1.5, 8000.0, m_min=0.4)
    s = g.sample_cone(120.0, 10.0, 1.5, 8000.0, rng, m_min=0.4)
    for k, pop in enumerate(g.pops):
        n = int((s["population"] == k).sum())
        assert abs(n - exp[pop.name]) < 4 * np.sqrt(exp[pop.name]) + 1, pop.name
    assert s["mass"].min() >= 0.4 and s["distance"].max() <= 8000.0
    # the angular offset from the cone axis stays within the radius
    lr, br = np.deg2rad(s["l"]), np.deg2rad(s["b"])
    cos_sep = np.sin(br) * np.sin(np.deg2rad(10.0)) + np.cos(br) * np.cos(
        np.deg2rad(10.0)
    ) * np.cos(lr - np.deg2rad(120.0))
    assert np.rad2deg(np.arccos(np.clip(cos_sep, -1, 1))).max() <= 1.5 + 1e-6
    # thick-disc stars are older and more metal-poor than the thin-disc bin
    thick = s["population"] == 1
    assert s["feh"][thick].mean() < s["feh"][~thick].mean() - 0.4
    assert np.all(s["log_age"][thick] == pytest.approx(np.log10(11e9)))


def test_dust_and_errors():
    dust = ExponentialDust()
    av = dust.av(
        np.array([30.0, 30.0, 30.0]), np.array([0.0, 0.0, 60.0]), np.array([500.0, 2000.0, 2000.0])
    )
    assert av[0] == pytest.approx(0.35, rel=0.1)  # 0.7 mag/kpc in the plane
    assert av[1] > av[0] > av[2] > 0
    with pytest.raises(ValueError, match="unknown populations"):
        GalaxyModel(["thin9"])
    with pytest.raises(ValueError, match="radius_deg"):
        GalaxyModel().sample_cone(0, 0, 0, 100, np.random.default_rng(0))
    with pytest.raises(ValueError, match="max_stars"):
        GalaxyModel().sample_cone(0, -5, 1.0, 15000, np.random.default_rng(0), max_stars=1000)


@pytest.mark.parametrize(
    ("l0", "b0", "radius", "tol"), [(90.0, 30.0, 2.0, 0.005), (1.0, 2.0, 5.0, 0.02)]
)
def test_tabulated_exponential_dust_matches_the_integral(l0, b0, radius, tol, rng):
    from simulators.galaxy import sample_stars

    s = sample_stars(GalaxyModel(), 5000, l0, b0, radius, 15000.0, rng)
    dust = ExponentialDust()
    top = abs(b0) + radius
    dl = radius / np.cos(np.radians(top)) + 0.01
    grid = dust.grid((l0 - dl, l0 + dl), (b0 - radius - 0.01, b0 + radius + 0.01), 15000.0)
    n = min(len(s["l"]), 5000)
    ref = dust.av(s["l"][:n], s["b"][:n], s["distance"][:n], steps=2048)
    got = grid.av(s["l"][:n], s["b"][:n], s["distance"][:n])
    m = ref > 0.01
    assert m.sum() > 100
    assert np.max(np.abs(got - ref)[m] / ref[m]) < tol


def _write_map(path, lon, b, d, av):
    if path.suffix == ".h5":
        import h5py

        with h5py.File(path, "w") as f:
            for k, v in zip(("l", "b", "distance", "av"), (lon, b, d, av), strict=True):
                f[k] = v
    elif path.suffix == ".fits":
        from astropy.io import fits

        hdus = [fits.PrimaryHDU()] + [
            fits.ImageHDU(np.asarray(v), name=k)
            for k, v in zip(("L", "B", "DISTANCE", "AV"), (lon, b, d, av), strict=True)
        ]
        fits.HDUList(hdus).writeto(path)
    else:
        np.savez(path, l=lon, b=b, distance=d, av=av)


@pytest.mark.parametrize("suffix", [".h5", ".fits", ".npz"])
def test_user_dust_map_round_trip_and_interpolation(tmp_path, suffix):
    from simulators.galaxy import GridDustMap

    lon = np.array([350.0, 355.0, 360.0, 365.0])  # crosses l = 0
    b = np.array([-5.0, 0.0, 5.0])
    d = np.array([0.0, 1000.0, 2000.0])
    # A_V = 1 mag/kpc × d × (1 + b/10): linear in each axis, so trilinear is exact
    av = np.broadcast_to((d[None, :] / 1000.0) * (1 + b[:, None] / 10.0), (4, 3, 3)).copy()
    path = tmp_path / f"map{suffix}"
    _write_map(path, lon, b, d, av)
    m = GridDustMap.from_file(path)
    got = m.av(np.array([2.0, 357.5]), np.array([2.5, -5.0]), np.array([1500.0, 500.0]))
    np.testing.assert_allclose(got, [1.5 * 1.25, 0.5 * 0.5], rtol=1e-12)
    with pytest.raises(ValueError, match="b = 7 is outside"):
        m.av(0.0, 7.0, 100.0)
    with pytest.raises(ValueError, match="distance = 3000 is outside"):
        m.av(0.0, 0.0, 3000.0)
    clipped = GridDustMap.from_file(path, clip=True).av(0.0, 0.0, 3000.0)
    assert clipped == pytest.approx(2.0)


def test_user_dust_map_errors(tmp_path):
    import h5py

    from simulators.galaxy import GridDustMap

    lon, b, d = np.array([0.0, 10.0]), np.array([-1.0, 1.0]), np.array([0.0, 100.0])
    good = np.zeros((2, 2, 2))
    with pytest.raises(ValueError, match="strictly increasing"):
        GridDustMap(lon[::-1], b, d, good)
    with pytest.raises(ValueError, match="expected"):
        GridDustMap(lon, b, d, np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="non-decreasing with distance"):
        GridDustMap(lon, b, d, np.stack([np.ones((2, 2)), np.zeros((2, 2))], -1))
    with pytest.raises(ValueError, match="finite and >= 0"):
        GridDustMap(lon, b, d, np.full((2, 2, 2), np.nan))
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["l"], f["b"], f["av"] = lon, b, good
    with pytest.raises(ValueError, match=r"missing datasets \['distance'\]"):
        GridDustMap.from_file(tmp_path / "m.h5")
    (tmp_path / "bad.h5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(ValueError, match="could not be read"):
        GridDustMap.from_file(tmp_path / "bad.h5")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown format"):
        GridDustMap.from_file(tmp_path / "m.txt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        GridDustMap.from_file(tmp_path / "nope.h5")


def test_imf_reaches_below_the_galactic_mass_floor_when_asked(rng):
    """A lower ``m_lo`` than the Galactic model's 0.07 M_sun extends the first segment: the
    Kroupa IMF from 0.02 to 1.4 M_sun has 33.8% of its stars below 0.08 M_sun (analytic);
    the brown dwarfs of young clusters were cut at 0.07 before."""
    from simulators.priors import KROUPA

    m = sample_imf(KROUPA, 200_000, rng, m_lo=0.02, m_hi=1.4)
    assert m.min() >= 0.02 and m.max() <= 1.4
    a1 = (0.08**0.7 - 0.02**0.7) / 0.7
    a2 = 0.08 * (0.08**-0.3 - 0.5**-0.3) / 0.3
    a3 = 0.08 * 0.5 * (0.5**-1.3 - 1.4**-1.3) / 1.3
    assert (m < 0.08).mean() == pytest.approx(a1 / (a1 + a2 + a3), abs=0.005)
    assert (m < 0.05).mean() > 0.1

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

"""Population priors: per-parameter distributions, young populations, YSO simulator wiring."""

from __future__ import annotations

import numpy as np
import pytest

from simulators.priors import ParameterPrior, parse_population, parse_priors, sample_young_stars

NAMES = ["star.temperature", "distance", "av"]


@pytest.mark.parametrize(
    "spec, check",
    [
        ({"dist": "uniform", "low": 1.0, "high": 3.0}, lambda x: abs(x.mean() - 2.0) < 0.02),
        (
            {"dist": "loguniform", "low": 10.0, "high": 1000.0},
            lambda x: abs(np.log10(x).mean() - 2.0) < 0.02 and x.min() >= 10 and x.max() <= 1000,
        ),
        (
            {"dist": "normal", "mean": 150.0, "sigma": 10.0},
            lambda x: abs(x.mean() - 150) < 0.3 and abs(x.std() - 10) < 0.3,
        ),
        (
            {"dist": "normal", "mean": 150.0, "sigma": 10.0, "low": 145.0, "high": 170.0},
            lambda x: x.min() >= 145 and x.max() <= 170 and 152 < x.mean() < 156,
        ),
        (
            {"dist": "lognormal", "mean": 100.0, "sigma": 0.1},
            lambda x: (
                abs(np.log10(x).mean() - 2.0) < 0.005 and abs(np.log10(x).std() - 0.1) < 0.005
            ),
        ),
        ({"dist": "fixed", "value": 3.5}, lambda x: np.all(x == 3.5)),
    ],
)
def test_distributions_draw_what_they_say(spec, check):
    prior = parse_priors({"av": spec}, NAMES)["av"]
    x = prior.sample(20_000, np.random.default_rng(0))
    assert x.shape == (20_000,) and check(x)


@pytest.mark.parametrize(
    "spec, msg",
    [
        ({"nope": {"dist": "uniform", "low": 0, "high": 1}}, "unknown parameter 'nope'; valid"),
        ({"av": {"dist": "gauss"}}, "unknown 'gauss'; valid: uniform"),
        ({"av": {"dist": "uniform", "low": 0}}, r"uniform needs \['high'\]"),
        ({"av": {"dist": "uniform", "low": 2, "high": 1}}, "low must be < high"),
        ({"av": {"dist": "normal", "mean": 1, "sigma": 0}}, "sigma must be > 0"),
        ({"av": {"dist": "fixed", "value": 1, "low": 0}}, r"\['low'\] do not apply to fixed"),
        ({"av": {"dist": "uniform", "low": "a", "high": 1}}, "must be a finite number"),
        ({"av": [0, 1]}, "must be a mapping with 'dist'"),
        ({"av": {"dist": "loguniform", "low": 0, "high": 1}}, "loguniform needs low > 0"),
    ],
)
def test_bad_priors_say_what_is_wrong(spec, msg):
    with pytest.raises(ValueError, match=msg):
        parse_priors(spec, NAMES)


def test_truncation_that_holds_nothing_is_an_error():
    p = ParameterPrior("normal", low=100.0, high=101.0, mean=0.0, sigma=1.0)
    with pytest.raises(ValueError, match="holds almost none"):
        p.sample(10, np.random.default_rng(0))


def test_young_population_lies_on_the_bhac15_isochrones():
    """T_eff, radius and log g come jointly: re-interpolating each star's mass and age gives
    them back, and a younger population is larger at the same T_eff (contracting stars)."""
    from simulators.isochrones import IsochroneGrid

    pop = parse_population({"kind": "young", "age_myr": [1, 10], "mass": [0.05, 1.0]})
    rng = np.random.default_rng(1)
    s = sample_young_stars(pop, 3000, rng)
    assert set(s) == {"teff", "radius", "logg", "mass", "age_myr"}
    assert np.all((s["age_myr"] >= 1 - 1e-6) & (s["age_myr"] <= 10 + 1e-6))
    assert np.all((s["mass"] >= 0.05) & (s["mass"] <= 1.0))
    back = IsochroneGrid("bhac15").interpolate(
        s["mass"][:200], np.log10(s["age_myr"][:200] * 1e6), np.zeros(200)
    )
    np.testing.assert_allclose(back["teff"], s["teff"][:200], rtol=1e-9)
    np.testing.assert_allclose(back["radius"], s["radius"][:200], rtol=1e-9)
    assert 2500 < np.median(s["teff"]) < 3600  # a Kroupa IMF is dominated by M stars
    young = sample_young_stars(parse_population({"kind": "young", "age_myr": [1, 1.5]}), 2000, rng)
    old = sample_young_stars(parse_population({"kind": "young", "age_myr": [8, 10]}), 2000, rng)
    band = lambda d: (d["teff"] > 3000) & (d["teff"] < 3300)  # noqa: E731
    assert np.median(young["radius"][band(young)]) > 1.5 * np.median(old["radius"][band(old)])


@pytest.mark.parametrize(
    "spec, msg",
    [
        ({"kind": "old"}, "must be {kind: young"),
        ({"kind": "young", "age": [1, 2]}, "unknown keys"),
        ({"kind": "young", "mass": [1.0, 0.5]}, r"mass must be \[lo, hi\]"),
        ({"kind": "young", "isochrones": "mist"}, "only bhac15"),
    ],
)
def test_bad_populations_say_what_is_wrong(spec, msg):
    with pytest.raises(ValueError, match=msg):
        parse_population(spec)


def test_yso_simulator_takes_priors_and_a_population(rng):
    from simulators.yso import YSOSimulator

    sim = YSOSimulator(
        {
            "library": "planck",
            "model_set": "sp--s-i",
            "aperture_arcsec": 3.0,
            "priors": {
                "distance": {"dist": "normal", "mean": 150, "sigma": 10, "low": 100, "high": 200},
                "av": {"dist": "uniform", "low": 0, "high": 5},
            },
            "population": {"kind": "young", "age_myr": [1, 10]},
        }
    )
    th = sim.sample_prior(4000, rng)
    n = sim.theta_names
    d, av, t = (th[:, n.index(k)] for k in ("distance", "av", "star.temperature"))
    assert abs(d.mean() - 150) < 1 and abs(d.std() - 10) < 1 and d.min() >= 100
    assert av.max() <= 5 and av.mean() == pytest.approx(2.5, abs=0.1)
    assert np.percentile(t, 90) < 4700  # BHAC15 ends at 1.4 M_sun
    out = sim(200, rng)
    assert np.isfinite(out.x["photometry"].values[out.x["photometry"].observed]).all()
    with pytest.raises(ValueError, match="both set the star"):
        YSOSimulator(
            {
                "library": "planck",
                "priors": {"star.radius": {"dist": "fixed", "value": 1.0}},
                "population": {"kind": "young"},
            }
        )
    with pytest.raises(ValueError, match="unknown parameter 'disk.mass'"):
        YSOSimulator(
            {
                "library": "planck",
                "model_set": "s---s-i",
                "priors": {"disk.mass": {"dist": "fixed", "value": 1e-3}},
            }
        )


def test_young_gravity_from_teff_and_radius_matches_the_isochrones():
    """young_logg (mass from T_eff on the isochrone at the mean age, log g from M and R)
    reproduces the BHAC15 log g of young stars drawn at 1-15 Myr to 0.08 dex (Hayashi tracks:
    T_eff fixes the mass); the isochrone log g of an M3 star at a few Myr is 3.7-4.1."""
    from simulators.priors import YoungPopulation, isochrone_logg, mass_from_teff, young_logg

    s = sample_young_stars(YoungPopulation((1.0, 15.0)), 4000, np.random.default_rng(1))
    d = young_logg(s["teff"], s["radius"], (1.0, 15.0)) - s["logg"]
    assert np.abs(np.median(d)) < 0.02 and np.percentile(np.abs(d), 90) < 0.08
    m = mass_from_teff(np.array([2600.0, 3000.0, 3500.0, 4000.0]), (1.0, 15.0))
    assert np.all(np.diff(m) > 0) and 0.05 < m[1] < 0.2
    assert 3.7 < isochrone_logg(np.array([3400.0]), (1.0, 15.0))[0] < 4.1

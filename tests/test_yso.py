"""YSO model: R17 parameters and model sets, energy bookkeeping, physical trends, simulator."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from simulators.units import PC_CM, RSUN_CM, SIGMA_SB
from simulators.yso import (
    MODEL_SETS,
    PARAMETERS,
    YSOConfig,
    YSOModel,
    YSOSimulator,
    luminosity_out,
    parse_model_set,
    sample_parameters,
    spectral_index,
    validate_parameters,
    yso_class,
)

WIDE = np.geomspace(912.0, 3e7, 1200)  # 0.09 µm - 3 mm


def _params(ms: str, **over: float) -> dict[str, np.ndarray]:
    """Mid-range parameters of a model set (a T Tauri star with a massive disc)."""
    base = {
        "star.radius": 2.0,
        "star.temperature": 4000.0,
        "disk.mass": 1e-3,
        "disk.rmin": 1.0,
        "disk.rmax": 200.0,
        "disk.beta": 1.15,
        "disk.p": -1.0,
        "disk.h100": 5.0,
        "envelope.rho_0": 1e-20,
        "envelope.power": -1.5,
        "envelope.rc": 300.0,
        "envelope.rmin": 1.0,
        "cavity.power": 1.5,
        "cavity.theta_0": 20.0,
        "cavity.rho_0": 1e-22,
        "ambient.density": 1e-24,
        "inclination": 45.0,
        "aperture": 1e4,
    }
    base.update(over)
    names = YSOModel.__new__(YSOModel)
    names.set = parse_model_set(ms)
    return {k: np.atleast_1d(np.asarray(base[k], float)) for k in names.parameter_names}


@pytest.fixture(scope="module")
def planck_models() -> dict[str, YSOModel]:
    return {}


def model(cache: dict[str, YSOModel], ms: str, wide: bool = False) -> YSOModel:
    key = f"{ms}-{wide}"
    if key not in cache:
        cache[key] = YSOModel(ms, wave_aa=WIDE if wide else None, library="planck")
    return cache[key]


# -- parameterisation ------------------------------------------------------------------
def test_all_r17_model_sets_parse_and_declare_their_parameters():
    assert len(MODEL_SETS) == 18
    for name in MODEL_SETS:
        s = parse_model_set(name)
        assert ("disk.mass" in s.parameters) == (name[1] == "p")
        assert ("envelope.rho_0" in s.parameters) == (name[2] != "-")
        assert ("cavity.theta_0" in s.parameters) == (name[3] == "b")
        assert ("ambient.density" in s.parameters) == (name[5] == "m")
    assert "envelope.rc" not in parse_model_set("spu-smi").parameters  # R_c = disc R_max
    assert "envelope.rc" in parse_model_set("s-u-smi").parameters
    assert "disk.rmin" in parse_model_set("sp--h-i").parameters


@pytest.mark.parametrize(
    "bad, msg",
    [("spubhm", "seven characters"), ("sx--s-i", "seven characters"), ("s--bs-i", "cavities")],
)
def test_bad_model_set_names_are_explained(bad, msg):
    with pytest.raises(ValueError, match=msg):
        parse_model_set(bad)


def test_priors_follow_r17_ranges_and_sampling(rng):
    s = parse_model_set("spubhmi")
    p = sample_parameters(s, 20_000, rng)
    for name, v in p.items():
        spec = PARAMETERS[name]
        assert v.min() >= spec.low and v.max() <= spec.high, name
        if spec.log:  # log-uniform: the median is the geometric mid-point
            mid = np.sqrt(spec.low * spec.high)
            assert abs(np.log10(np.median(v) / mid)) < 0.05 * np.log10(spec.high / spec.low)
    # inclinations are isotropic: cos i uniform
    assert abs(np.mean(np.cos(np.radians(p["inclination"]))) - 0.5) < 0.01


def test_parameter_validation_names_the_culprit():
    p = _params("sp--s-i")
    validate_parameters(p, list(p))
    with pytest.raises(ValueError, match="disk.mass.*outside"):
        validate_parameters({**p, "disk.mass": np.array([1.0])}, list(p))
    with pytest.raises(ValueError, match="star.temperature.*NaN"):
        validate_parameters({**p, "star.temperature": np.array([np.nan])}, list(p))
    with pytest.raises(ValueError, match="disk.beta.*missing"):
        validate_parameters({k: v for k, v in p.items() if k != "disk.beta"}, list(p))
    m = YSOModel("sp--s-i", library="planck")
    with pytest.raises(ValueError, match="star.radius"):
        m.sed({**p, "star.radius": np.array([500.0])})
    with pytest.raises(ValueError, match="distance"):
        m.sed(p, distance_pc=-1.0)
    with pytest.raises(ValueError, match="A_V"):
        m.sed(p, av=np.nan)


# -- physics ---------------------------------------------------------------------------
def test_bare_star_has_the_stefan_boltzmann_luminosity(planck_models):
    m = model(planck_models, "s---s-i", wide=True)
    p = _params("s---s-i", **{"star.radius": 3.0, "star.temperature": 5000.0})
    f = m.sed(p, 1000.0).double().numpy()[0]
    lum = np.trapezoid(f, WIDE) * 4 * np.pi * (1000 * PC_CM) ** 2
    expected = 4 * np.pi * (3.0 * RSUN_CM) ** 2 * SIGMA_SB * 5000.0**4
    assert lum == pytest.approx(expected, rel=0.01)
    # inverse-square dilution, interstellar extinction 10^(-0.4 A)
    assert m.sed(p, 2000.0).double().numpy()[0].sum() == pytest.approx(f.sum() / 4, rel=1e-5)
    v = np.argmin(np.abs(WIDE - 5500.0))
    ratio = m.sed(p, 1000.0, av=1.0).double().numpy()[0, v] / f[v]
    assert ratio == pytest.approx(10**-0.4, rel=0.02)


@pytest.mark.parametrize("ms", ["sp--s-i", "sp--h-i", "s-u-smi", "s-pbhmi", "spubsmi", "spubhmi"])
def test_energy_is_conserved_to_the_stated_tolerance(planck_models, ms, rng):
    m = model(planck_models, ms, wide=True)
    p = sample_parameters(m.set, 150, rng)
    e = m.energy(p)
    assert np.all(e["disc"] <= 0.5 + 1e-9) and np.all(e["envelope"] <= 1 + 1e-9)
    out = luminosity_out(m, p, n_incl=8)  # F_λ over wavelength and the sphere, in L*
    assert np.all(out > 0.65) and np.all(out < 1.35), (out.min(), out.max())
    assert abs(np.median(out) - 1) < 0.06
    assert np.mean(np.abs(out - 1) < 0.15) > 0.85


def test_edge_on_discs_hide_the_optical_star(planck_models):
    m = model(planck_models, "sp--s-i")
    g = np.argmin(np.abs(m.wave_aa - 6000.0))
    f = [m.sed(_params("sp--s-i", inclination=i)).numpy()[0, g] for i in (10.0, 60.0, 89.0)]
    assert f[2] < 1e-4 * f[0]  # > 10 mag fainter edge-on
    assert f[1] > 0.5 * f[0]  # a disc seen at 60° leaves the star visible


def test_more_envelope_is_redder_and_inclination_dims_the_optical(planck_models):
    from simulators.bandpasses import Photometry

    m = model(planck_models, "spubsmi")
    ph = Photometry(["gaia_G", "2mass_Ks", "mips_24"], m.wave_aa)
    rho = np.geomspace(1e-22, 1e-18, 6)
    mags = ph.magnitudes(m.sed(_params("spubsmi", **{"envelope.rho_0": rho}), 300.0))
    k24 = mags[:, 1] - mags[:, 2]
    g_k = mags[:, 0] - mags[:, 1]
    assert np.all(np.diff(k24) > 0) and np.all(np.diff(g_k) > 0)
    inc = np.array([30.0, 45.0, 60.0, 75.0, 89.0])  # outside the 20° cavity
    g = ph.magnitudes(m.sed(_params("spubsmi", inclination=inc), 300.0))[:, 0]
    assert np.all(np.diff(g) > 0)


def test_spectral_index_and_classes():
    lam1, lam2, z1, z2 = 2.159, 23.675, 666.7, 7.17
    k = np.array([10.0, 10.0, 10.0])
    for alpha in (-2.0, 0.0, 1.0):
        fnu2 = z1 * 10**-4 * (lam2 / lam1) ** (alpha + 1)  # λF_λ ∝ λ^α ⇒ F_ν ∝ λ^(α+1)
        m24 = -2.5 * np.log10(fnu2 / z2)
        assert spectral_index(k[:1], np.array([m24]))[0] == pytest.approx(alpha, abs=1e-9)
    cls = yso_class(np.array([1.0, 0.3, 0.0, -0.3, -1.0, -1.6, -2.5]))
    assert list(cls) == ["I", "I", "flat", "flat", "II", "II", "III"]


def test_simulated_spectral_indices_span_all_classes(rng):
    from simulators.bandpasses import Photometry

    classes = set()
    for ms in ("s---s-i", "sp--s-i", "spubsmi"):
        m = YSOModel(ms, library="planck")
        ph = Photometry(["2mass_Ks", "mips_24"], m.wave_aa)
        mags = ph.magnitudes(m.sed(sample_parameters(m.set, 2000, rng), 300.0))
        a = spectral_index(mags[:, 0], mags[:, 1])
        classes |= set(yso_class(a[np.isfinite(a)]))
    assert classes == {"I", "flat", "II", "III"}


def test_numerical_tables_match_direct_evaluation():
    import torch

    from simulators.dust import dust_opacity as _dust_opacity
    from simulators.yso import (
        _EmissionTable,
        _mu0_lookup,
        _planck_lam,
        _streamline_mu0,
    )

    r = np.random.default_rng(0)
    x = np.exp(r.uniform(np.log(1e-5), np.log(1e5), 50_000))
    mu = r.uniform(0, 1, 50_000)
    root = _streamline_mu0(x, mu)
    assert np.abs(root**3 + root * (x - 1) - mu * x).max() < 1e-8  # the exact root
    assert np.abs(_mu0_lookup(x, mu) - root).max() < 2e-3
    w = np.geomspace(3000.0, 300_000.0, 120)
    k = _dust_opacity(w)
    tab = _EmissionTable(w, k, "slab")
    temp = np.array([[50.0, 300.0, 1200.0]])
    tau = np.array([[0.01, 3.0, 1e3]])
    got = tab(temp, tau, np.ones((1, 3))).double().numpy()[0]
    direct = sum(
        _planck_lam(torch.from_numpy(w), torch.tensor(t, dtype=torch.float64)).numpy()
        * -np.expm1(-tt * k)
        for t, tt in zip(temp[0], tau[0], strict=True)
    )
    band = direct > 1e-3 * direct.max()
    assert np.abs(got[band] / direct[band] - 1).max() < 0.025


def test_ck04_photosphere_matches_the_field_star_pipeline(shared_data):
    """The binned CK04 photosphere gives the synphot-tested StellarSED photometry."""
    from simulators.spectra import CK04Library
    from simulators.stars import StellarSED

    bands = ["gaia_G", "gaia_BP", "gaia_RP", "2mass_J", "2mass_Ks", "wise_W1", "irac_4"]
    m = YSOModel("s---s-i", library="ck04")
    from simulators.bandpasses import Photometry

    ph = Photometry(bands, m.wave_aa)
    teff = np.array([3600.0, 4500.0, 6000.0, 9000.0, 15000.0])
    p = _params("s---s-i", **{"star.temperature": teff, "star.radius": np.full(5, 2.0)})
    p = {k: np.broadcast_to(v, (5,)) for k, v in p.items()}
    mine = ph.magnitudes(m.sed(p, 500.0))
    ref_sed = StellarSED(CK04Library(), bands)
    ref = ref_sed.magnitudes(
        ref_sed.flux(teff, np.full(5, 4.0), np.zeros(5), np.full(5, 2.0), np.full(5, 500.0), 0.0)
    )
    assert np.abs(mine - ref).max() < 0.03


def test_phoenix_photosphere_matches_the_field_star_pipeline_down_to_2300_k(shared_data):
    """The default YSO photosphere (CK04 mangled to PHOENIX v2) gives the field stars'
    photometry of the same library, also below CK04's 3500 K edge, where it is 0.4 (2900 K)
    to 1.1 mag (2400 K) redder in BP-RP than the Planck-continued ck04 table."""
    from simulators.bandpasses import Photometry
    from simulators.spectra import MangledLibrary
    from simulators.stars import StellarSED

    assert YSOSimulator.config_class().library == "phoenix"
    bands = ["gaia_G", "gaia_BP", "gaia_RP", "2mass_J", "2mass_Ks", "wise_W1", "irac_4"]
    teff = np.array([2400.0, 2900.0, 3300.0, 4500.0, 9000.0])
    p = _params("s---s-i", **{"star.temperature": teff, "star.radius": np.full(5, 2.0)})
    p = {k: np.broadcast_to(v, (5,)) for k, v in p.items()}
    mags = {}
    for lib in ("phoenix", "ck04"):
        m = YSOModel("s---s-i", library=lib)
        mags[lib] = Photometry(bands, m.wave_aa).magnitudes(m.sed(p, 500.0))
    ref_sed = StellarSED(MangledLibrary(), bands)
    ref = ref_sed.magnitudes(
        ref_sed.flux(teff, np.full(5, 4.0), np.zeros(5), np.full(5, 2.0), np.full(5, 500.0), 0.0)
    )
    assert np.abs(mags["phoenix"] - ref).max() < 0.03
    bp_rp = {k: v[:, 1] - v[:, 2] for k, v in mags.items()}
    np.testing.assert_array_less([1.0, 0.3], bp_rp["phoenix"][:2] - bp_rp["ck04"][:2])
    assert np.abs(bp_rp["phoenix"][3:] - bp_rp["ck04"][3:]).max() < 0.05


def test_photosphere_gravity_enters_the_sed(shared_data):
    """The star table has a log g axis: at a table node the YSO photosphere is the library's
    spectrum at that gravity (to the bin averaging), log g moves a 3,000 K star's BP-RP by
    the library's amount, and the Planck table ignores it."""
    from simulators.bandpasses import Photometry
    from simulators.spectra import MangledLibrary
    from simulators.stars import StellarSED

    bands = ["gaia_BP", "gaia_RP", "2mass_J", "2mass_H"]
    teff = np.array([3000.0, 3000.0, 3300.0])
    logg = np.array([3.5, 4.5, 3.0])
    p = _params("s---s-i", **{"star.temperature": teff, "star.radius": np.full(3, 1.0)})
    p = {k: np.broadcast_to(v, (3,)) for k, v in p.items()}
    m = YSOModel("s---s-i", library="phoenix")
    mine = Photometry(bands, m.wave_aa).magnitudes(m.sed({**p, "star.logg": logg}, 150.0))
    ref_sed = StellarSED(MangledLibrary(), bands)
    ref = ref_sed.magnitudes(
        ref_sed.flux(teff, logg, np.zeros(3), np.full(3, 1.0), np.full(3, 150.0), 0.0)
    )
    assert np.abs(mine - ref).max() < 0.03
    # BP-RP at 3,000 K: log g 3.5 is redder than 4.5 by what the library says (> 0.05 mag)
    d_mine = (mine[0, 0] - mine[0, 1]) - (mine[1, 0] - mine[1, 1])
    d_ref = (ref[0, 0] - ref[0, 1]) - (ref[1, 0] - ref[1, 1])
    assert d_ref > 0.05 and abs(d_mine - d_ref) < 0.01
    default = Photometry(bands, m.wave_aa).magnitudes(m.sed(p, 150.0))
    at4 = Photometry(bands, m.wave_aa).magnitudes(m.sed({**p, "star.logg": 4.0}, 150.0))
    np.testing.assert_allclose(default, at4, atol=1e-6)
    pl = YSOModel("s---s-i", library="planck")
    a = pl.sed({**p, "star.logg": logg}, 150.0)
    np.testing.assert_allclose(a.numpy(), pl.sed(p, 150.0).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="star.logg"):
        m.sed({**p, "star.logg": np.array([np.nan, 4.0, 4.0])}, 150.0)


def test_simulator_gives_young_stars_their_isochrone_gravity(shared_data):
    """photosphere_logg: 'isochrone' gives a young M star the log g of its radius and BHAC15
    mass (a 3,000 K star of 1 R_sun: M ~ 0.11 M_sun, log g ~ 3.5), which makes it redder in
    BP-RP than the fixed log g 4 of R17; a number fixes it."""
    cfg = dict(model_set="s---s-i", surveys=["gaia_dr3"], aperture_arcsec=3.0)
    iso = YSOSimulator(YSOConfig(**cfg))
    fixed = YSOSimulator(YSOConfig(**cfg, photosphere_logg=4.0))
    assert iso.config.photosphere_logg == "isochrone"
    g = iso.photosphere_logg(np.array([3000.0, 3000.0]), np.array([1.0, 0.5]))
    assert 3.3 < g[0] < 3.7 and abs(g[1] - g[0] - 2 * np.log10(2.0)) < 1e-9
    np.testing.assert_array_equal(fixed.photosphere_logg(np.array([3000.0]), np.ones(1)), 4.0)
    names = iso.theta_names
    th = np.zeros((1, len(names)))
    for k, v in (("star.temperature", 3000.0), ("star.radius", 1.0), ("distance", 150.0)):
        th[0, names.index(k)] = v
    th[0, names.index("inclination")] = 30.0
    bp, rp = iso.bands.index("gaia_BP"), iso.bands.index("gaia_RP")
    c_iso = np.diff(iso.magnitudes(th)[0, [rp, bp]])[0]
    c_fix = np.diff(fixed.magnitudes(th)[0, [rp, bp]])[0]
    assert c_iso - c_fix > 0.03
    with pytest.raises(Exception, match="photosphere_logg"):
        YSOConfig(**cfg, photosphere_logg="young")  # type: ignore[arg-type]


# -- the simulator -----------------------------------------------------------------------
def test_yso_simulator_outputs_and_missingness(rng):
    sim = YSOSimulator({"library": "planck", "non_detection": "upper_limit", "missing_prob": 0.5})
    names = sim.theta_names
    assert names[-2:] == ["distance", "av"] and "aperture" in names
    nodes = {n["name"]: n for n in sim.nodes()}
    assert nodes["disk.mass"]["transform"] == "log10" and nodes["parallax"]["unit"] == "mas"
    # band metadata for the model core: 2MASS Ks 666.7 Jy (Cohen et al. 2003), ~2.16 µm
    assert nodes["2mass_Ks"]["zero_point_jy"] == pytest.approx(666.7)
    assert nodes["2mass_Ks"]["wavelength_um"] == pytest.approx(2.16, abs=0.01)
    assert nodes["irac_1"]["wavelength_um"] == pytest.approx(3.55, abs=0.03)
    out = sim(3000, rng)
    assert out.theta.shape == (3000, len(names))
    ph = out.x["photometry"]
    assert ph.values.shape == (3000, 15)
    frac = ph.observed.mean()
    assert 0.3 < frac < 0.52  # half dropped at random, the rest detections or limits
    assert ph.upper_limit.any()
    assert np.all(np.isnan(ph.values[~ph.observed]))
    plx = out.x["astrometry"]
    assert 0.0 < plx.observed.mean() < 0.5


def test_yso_simulator_fixed_aperture_and_bad_theta(rng):
    sim = YSOSimulator({"library": "planck", "model_set": "s---s-i", "aperture_arcsec": 3.0})
    assert "aperture" not in sim.theta_names
    theta = sim.sample_prior(10, rng)
    with pytest.raises(ValueError, match="shape"):
        sim.simulate(theta[:, :-1], rng)
    bad = theta.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sim.simulate(bad, rng)
    with pytest.raises(ValueError, match="distance"):
        YSOSimulator({"library": "planck", "distance": [300.0, 100.0]})
    with pytest.raises(ValueError, match="unknown YSO model set"):
        YSOSimulator({"library": "planck", "model_set": "spubhmx"})


def test_simulated_ysos_cover_the_ngc1333_loci(shared_data):
    """Most real NGC 1333 YSOs (Rebull et al. 2015) lie inside the simulated colour support."""
    from simulators.validation import simulate_ysos, yso_colour_coverage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cov = yso_colour_coverage(simulate_ysos(n_per_set=2500))
    assert cov["irac_cc_n_real"] > 200 and cov["k24_n_real"] > 100
    assert cov["irac_cc_fraction"] >= 0.9
    assert cov["k24_fraction"] >= 0.95

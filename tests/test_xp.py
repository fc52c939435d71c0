"""Real Gaia XP: the archive's coefficients → sampled spectra with GaiaXPy, checked input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dasbi.catalogue.xp import (
    N_COEF,
    concat_xp,
    fit_noise,
    pack_correlation,
    read_xp,
    sample_xp,
    unpack_correlation,
)
from dasbi.errors import DataError

XP = "real/gaia_xp/gaiaxpy_tests"


@pytest.fixture(autouse=True)
def _no_latex_leak():
    """Importing GaiaXPy switches matplotlib to LaTeX text; keep that out of later tests."""
    import matplotlib

    with matplotlib.rc_context():
        yield


@pytest.fixture
def xp_dir(shared_data):
    return shared_data / XP


def test_correlations_unpack_as_gaiaxpy_reads_them():
    from gaiaxpy.core.generic_functions import array_to_symmetric_matrix

    rng = np.random.default_rng(0)
    packed = rng.uniform(-0.5, 0.5, N_COEF * (N_COEF - 1) // 2)
    ours = unpack_correlation(packed)
    assert np.array_equal(ours, array_to_symmetric_matrix(packed, N_COEF))
    assert np.array_equal(pack_correlation(ours), packed)
    with pytest.raises(ValueError, match="expected 1485"):
        unpack_correlation(packed[:-1])


def test_archive_csv_and_fits_read_the_same_and_sample_as_gaiaxpy(xp_dir):
    import gaiaxpy

    csv = read_xp(xp_dir / "xp_continuous/XP_CONTINUOUS_RAW.csv")
    fits = read_xp(xp_dir / "xp_continuous/XP_CONTINUOUS_RAW.fits")
    assert (
        list(csv.source_id)
        == list(fits.source_id)
        == ["5853498713190525696", "5762406957886626816"]
    )
    for b in ("bp", "rp"):
        np.testing.assert_allclose(csv.coef[b], fits.coef[b], rtol=1e-6)
        np.testing.assert_allclose(csv.corr[b], fits.corr[b], atol=1e-6)
        assert np.all(np.linalg.eigvalsh(csv.covariance(b)) > 0)
    wave, flux, err, corr = sample_xp(csv, with_correlation=True)
    ref, sampling = gaiaxpy.calibrate(
        str(xp_dir / "xp_continuous/XP_CONTINUOUS_RAW.csv"), save_file=False
    )
    assert wave.shape == (343,) and wave[0] == 336.0 and wave[-1] == 1020.0
    scale = np.abs(flux).max(axis=1, keepdims=True)
    np.testing.assert_allclose(flux / scale, np.stack(ref["flux"]) / scale, atol=1e-9)
    np.testing.assert_array_equal(wave, sampling)
    from simulators.instruments import gaiaxpy_sampling

    np.testing.assert_array_equal(wave, gaiaxpy_sampling())  # the simulated XP grid
    np.testing.assert_allclose(err, np.stack(ref["flux_error"]), rtol=2e-3)
    assert corr.shape == (2, 343, 343) and np.allclose(np.diagonal(corr, axis1=1, axis2=2), 1)
    # neighbouring samples of a real XP spectrum are strongly correlated
    assert np.median(np.abs(np.diagonal(corr[0], 1))) > 0.5


def test_a_missing_band_is_missing_not_an_error(xp_dir):
    xp = read_xp(xp_dir / "xp_continuous/XP_CONTINUOUS_RAW_with_missing_BP.csv")
    assert xp.has("bp").tolist() == [True, False, True] and xp.has("rp").all()
    assert xp.report.counts() == {}
    wave, flux, _, _ = sample_xp(xp)
    assert np.isfinite(flux[0]).all() and np.isfinite(flux[1][wave > 700]).all()


def _archive_rows(xp_dir) -> pd.DataFrame:
    return pd.read_csv(
        xp_dir / "xp_continuous/XP_CONTINUOUS_RAW_colour_eq_dr3int6.csv", dtype={"source_id": str}
    )


def _fmt(a) -> str:
    return "(" + ", ".join(repr(float(v)) for v in a) + ")"


def test_bad_coefficients_are_reported_by_row_and_reason(xp_dir, tmp_path):
    df = _archive_rows(xp_dir)
    coef = np.array(df["bp_coefficients"][0].strip("()").split(","), float)
    df.loc[0, "bp_coefficients"] = _fmt(coef[:54])  # wrong count
    rp = np.array(df["rp_coefficients"][1].strip("()").split(","), float)
    rp[3] = np.nan
    df.loc[1, "rp_coefficients"] = _fmt(rp)  # NaN
    bad = np.full(N_COEF * (N_COEF - 1) // 2, 0.9)
    bad[:60] = -0.9
    df.loc[1, "bp_coefficient_correlations"] = _fmt(bad)  # |ρ| ≤ 1 but not positive definite
    df.loc[2, "rp_coefficient_errors"] = df["rp_coefficient_errors"][2].replace("(", "(-", 1)
    path = tmp_path / "bad.csv"
    df.to_csv(path, index=False)
    xp = read_xp(path)
    rep = xp.report.table()
    reasons = {(int(r["row"]), r["column"]): r["reason"] for r in rep}
    assert "54 coefficients" in reasons[(0, "bp_coefficients")]
    assert "NaN" in reasons[(1, "rp_coefficients")]
    assert "not positive definite" in reasons[(1, "bp_coefficients")]
    assert "non-positive" in reasons[(2, "rp_coefficients")]
    # row 1 lost both bands: rejected; rows 0 and 2 keep one band each
    assert (1, "xp") in reasons and list(xp.source_id) == [df["source_id"][0], df["source_id"][2]]
    assert xp.has("rp").tolist() == [True, False] and xp.has("bp").tolist() == [False, True]


def test_unusable_files_get_clear_errors(tmp_path, xp_dir):
    df = _archive_rows(xp_dir).drop(columns=["rp_coefficient_errors"])
    df.to_csv(tmp_path / "no_err.csv", index=False)
    with pytest.raises(DataError, match=r"missing columns \['rp_coefficient_errors'\]"):
        read_xp(tmp_path / "no_err.csv")
    (tmp_path / "junk.fits").write_bytes(b"SIMPLE  = not a fits file")
    with pytest.raises(DataError, match="cannot read it"):
        read_xp(tmp_path / "junk.fits")
    np.savez(tmp_path / "x.npz", X=np.zeros((3, 100)), source_id=np.arange(3))
    with pytest.raises(DataError, match=r"expected \(N, 110\)"):
        read_xp(tmp_path / "x.npz")
    with pytest.raises(DataError, match="does not exist"):
        read_xp(tmp_path / "none.csv")


def test_noise_model_predicts_published_errors_leave_one_out(xp_dir):
    parts = [
        read_xp(xp_dir / f)
        for f in (
            "xp_continuous/XP_CONTINUOUS_RAW.csv",
            "xp_continuous/XP_CONTINUOUS_RAW_colour_eq_dr3int6.csv",
            "cholesky_solution/18Sco-XP-spectra.csv",
        )
    ]
    ref = concat_xp(parts)
    assert len(ref) == 6
    for i in range(len(ref)):
        rest = ref.take(np.flatnonzero(np.arange(len(ref)) != i))
        nm = fit_noise(rest)
        for b in ("bp", "rp"):
            r = np.log(nm.errors(b, ref.coef[b][i : i + 1])[0] / ref.error[b][i])
            assert abs(np.median(r)) < np.log(2.5), (i, b, np.median(r))
    # photon noise alone (no knee) misses the brightest source (18 Sco, G = 5.3) by > 20×
    nm = fit_noise(ref.take(np.arange(5)))
    nm.c_knee = {b: np.inf for b in nm.c_knee}
    r = np.log(nm.errors("bp", ref.coef["bp"][5:6])[0] / ref.error["bp"][5])
    assert np.median(r) < -np.log(20)
    assert np.all(np.linalg.eigvalsh(fit_noise(ref).corr["rp"]) > 0)


def test_npz_sources_get_modelled_errors_and_a_flag(shared_data):
    xp = read_xp(shared_data / "real/gaia_xp/GaiaXP_Spectra_Analysis/gaia_dr3_xp_c110_binary.npz")
    assert len(xp) == 2815 and xp.errors_modelled.all()
    assert np.all(xp.error["bp"] > 0) and xp.has("bp").all() and xp.has("rp").all()
    wave, flux, err, _ = sample_xp(xp.take(np.arange(20)))
    assert np.isfinite(flux).all() and np.all(err > 0)
    # S/N along the spectrum is the order of magnitude of real XP (tens, not thousands)
    assert 3 < np.median(np.abs(flux) / err) < 1000


@pytest.fixture
def xp_sims(tmp_path_factory, shared_data):
    from dasbi.config import from_dict
    from dasbi.simulate import SimulateConfig, run_simulate

    opts = {"name": "field_stars", "bands": {"gaia_G": {}, "gaia_BP": {}}, "xp": True}
    return run_simulate(
        from_dict(SimulateConfig, {"num": 50, "seed": 0, "simulator": {**opts, "mag_limit": 15}}),
        tmp_path_factory.mktemp("xp") / "sim.h5",
        progress=False,
    )


def test_ingest_puts_real_xp_on_the_rows_that_have_it(xp_sims, xp_dir, tmp_path):
    """A catalogue whose XP spectra come from the archive file: matched by source_id, some
    rows without XP, one spectrum for a source not in the catalogue, one bad spectrum."""
    from dasbi.catalogue import catalogue_to_dataset
    from dasbi.dataset import Dataset
    from dasbi.inputs import context_tensors

    df = pd.read_csv(
        xp_dir / "xp_continuous/XP_CONTINUOUS_RAW_with_missing_BP.csv", dtype={"source_id": str}
    )
    bad = df.iloc[[2]].copy()
    bad["source_id"] = "42"
    bad["rp_coefficient_errors"] = bad["rp_coefficient_errors"].str.replace("(", "(-", n=1)
    bad["bp_coefficients"] = "(1.0, 2.0)"
    pd.concat([df, bad]).to_csv(tmp_path / "xp.csv", index=False)
    ids = [df["source_id"][0], df["source_id"][1], "7", "42", "99"]
    pd.DataFrame({"source_id": ids, "G": [12.0, 13.0, 14.0, 12.5, 13.5], "G_err": 0.01}).to_csv(
        tmp_path / "cat.csv", index=False
    )
    (tmp_path / "map.yaml").write_text(
        "catalogue:\n  id: source_id\n  columns:\n    gaia_G: {value: G, error: G_err}\n"
        "  spectra:\n    xp_spectrum: {kind: gaia_xp, file: xp.csv}\n"
    )
    out, report = catalogue_to_dataset(
        tmp_path / "cat.csv", tmp_path / "map.yaml", xp_sims, tmp_path / "real.h5"
    )
    with Dataset(out) as ds:
        assert "xp_spectrum" in [n.name for n in ds.nodes]
        wave = np.asarray(ds.group_attrs("xp")["wavelength_nm"])
        with Dataset(xp_sims) as sim:
            np.testing.assert_array_equal(wave, sim.group_attrs("xp")["wavelength_nm"])
        flux, err, ok = context_tensors(ds.read(), ds.nodes)["xp_spectrum"]
    has = ok.any(dim=1).tolist()
    assert has == [True, True, False, False, False]  # 42's spectrum is bad in both bands
    assert not ok[1][torch.as_tensor(wave < 600)].all()  # source 1 has no BP
    assert (1e-19 < flux[0][ok[0]].abs().median() < 1e-14) and (err[ok] > 0).all()
    rows = {(r["id"], r["column"], r["reason"].split()[0]) for r in report.table()}
    assert ("42", "xp_spectrum:xp", "no") in rows  # row rejected: no usable BP or RP
    assert any(i == df["source_id"][2] and c == "xp_spectrum" for i, c, _ in rows)  # not here
    # a map naming a spectrum node the model does not have
    (tmp_path / "map2.yaml").write_text(
        "catalogue:\n  id: source_id\n  columns:\n    gaia_G: {value: G, error: G_err}\n"
        "  spectra:\n    lamost_spectrum: {kind: gaia_xp, file: xp.csv}\n"
    )
    with pytest.raises(DataError, match="no such spectrum node"):
        catalogue_to_dataset(
            tmp_path / "cat.csv", tmp_path / "map2.yaml", xp_sims, tmp_path / "r2.h5"
        )
    # the CLI: spectra given on the command line to a map without a spectra: section
    from dasbi.cli import main

    (tmp_path / "map3.yaml").write_text(
        "catalogue:\n  id: source_id\n  columns:\n    gaia_G: {value: G, error: G_err}\n"
    )
    args = [
        "ingest",
        "--catalogue",
        str(tmp_path / "cat.csv"),
        "--survey",
        str(tmp_path / "map3.yaml"),
        "--like",
        str(xp_sims),
        "--out",
    ]
    assert (
        main([*args, str(tmp_path / "r3.h5"), "--spectra", f"xp_spectrum={tmp_path / 'xp.csv'}"])
        == 0
    )
    with Dataset(tmp_path / "r3.h5") as ds:
        assert context_tensors(ds.read(), ds.nodes)["xp_spectrum"][2].any(dim=1).sum() == 2
    assert main([*args, str(tmp_path / "r4.h5"), "--spectra", "xp.csv"]) == 2


def test_infer_reads_xp_for_the_rows_that_have_it(xp_sims, xp_dir, tmp_path):
    """dasbi infer with spectra: a model with encoders reads each row's XP; rows without XP
    get the same posterior as without any spectra file, rows with XP a different one."""
    from dasbi.adapt import DomainAdaptConfig, train_domain_adapt
    from dasbi.cli import main
    from dasbi.config import from_dict
    from dasbi.infer import read_posteriors

    cfg = from_dict(
        DomainAdaptConfig,
        {
            "max_steps": 3,
            "batch_size": 16,
            "real_batch_size": 8,
            "val_every": 3,
            "network": {"dim": 16, "depth": 1, "heads": 2},
            "encoder": {"dim": 16, "depth": 1, "heads": 2, "tokens": 2, "patch": 16},
            "align": {"contrastive": 0.0, "ot": 0.0, "pair": 0.0},
        },
    )
    train_domain_adapt(xp_sims, xp_sims, cfg, out=tmp_path / "model", progress=False)
    df = pd.read_csv(xp_dir / "xp_continuous/XP_CONTINUOUS_RAW.csv", dtype={"source_id": str})
    ids = [df["source_id"][0], "7", df["source_id"][1]]
    pd.DataFrame({"source_id": ids, "G": [12.0, 13.0, 14.0], "G_err": 0.01}).to_csv(
        tmp_path / "cat.csv", index=False
    )
    (tmp_path / "map.yaml").write_text(
        "catalogue:\n  id: source_id\n  columns:\n    gaia_G: {value: G, error: G_err}\n"
    )
    base = [
        "infer",
        "--model",
        str(tmp_path / "model"),
        "--catalogue",
        str(tmp_path / "cat.csv"),
        "--survey",
        str(tmp_path / "map.yaml"),
        "--num-samples",
        "20",
        "--quiet",
        "--out",
    ]
    xp = str(xp_dir / "xp_continuous/XP_CONTINUOUS_RAW.csv")
    assert main([*base, str(tmp_path / "with.h5"), "--spectra", f"xp_spectrum={xp}"]) == 0
    assert main([*base, str(tmp_path / "without.h5")]) == 0
    with_, _ = read_posteriors(tmp_path / "with.h5")
    without, _ = read_posteriors(tmp_path / "without.h5")
    med = [n for n in with_.colnames if n.endswith("_median")]
    same = [all(with_[c][r] == without[c][r] for c in med) for r in range(3)]
    assert same == [False, True, False]
    assert main([*base, str(tmp_path / "x.h5"), "--spectra", f"lamost_spectrum={xp}"]) == 2


def test_simulated_xp_goes_through_gaiaxpy_s_own_calibration(xp_dir):
    """The coefficient → sample map is GaiaXPy's, the projection inverts it, and a
    simulated spectrum's errors are GaiaXPy's propagation of the modelled covariance."""
    from dasbi.catalogue.xp import XPCoefficients
    from simulators.gaia_xp import (
        XPCoefficientNoise,
        XPNoiseModel,
        project,
        project_model,
        xp_design,
    )

    xp = read_xp(xp_dir / "xp_continuous/XP_CONTINUOUS_RAW.csv")
    _, flux, _, _ = sample_xp(xp)
    wave, m = xp_design()
    c = np.concatenate([xp.coef["bp"], xp.coef["rp"]], axis=1)
    np.testing.assert_allclose(c @ m, flux, rtol=0, atol=1e-12 * np.abs(flux).max())
    np.testing.assert_allclose(project(flux), c, rtol=1e-8, atol=1e-8 * np.abs(c).max())
    nm = XPNoiseModel.load()
    sim = XPCoefficientNoise(nm)
    _, err = sim.observe(flux, np.random.default_rng(0))
    cm = project_model(flux, nm)  # what the simulator observes: the regularised projection
    coef = {"bp": cm[:, :55], "rp": cm[:, 55:]}
    modelled = XPCoefficients(
        xp.source_id,
        coef,
        {b: nm.errors(b, coef[b]) for b in ("bp", "rp")},
        {b: np.repeat(nm.corr[b][None], 2, 0) for b in ("bp", "rp")},
        {b: np.ones(2) for b in ("bp", "rp")},
        np.ones(2, bool),
    )
    _, _, err_gx, _ = sample_xp(modelled)
    np.testing.assert_allclose(err, err_gx, rtol=1e-8)
    # the draws have that spread, and are correlated between neighbouring samples as real XP
    draws = np.stack([sim.observe(flux[:1], np.random.default_rng(i))[0][0] for i in range(800)])
    assert abs(np.median(draws.std(0) / err[0]) - 1) < 0.08
    resid = (draws - draws.mean(0)) / draws.std(0)
    rho = np.mean(resid[:, :-1] * resid[:, 1:], axis=0)
    assert np.median(rho) > 0.5


def test_shipped_noise_model_is_the_fit_on_the_archive_sources(xp_dir):
    from simulators.gaia_xp import XPNoiseModel

    ref = concat_xp(
        [
            read_xp(xp_dir / f)
            for f in (
                "xp_continuous/XP_CONTINUOUS_RAW.csv",
                "xp_continuous/XP_CONTINUOUS_RAW_colour_eq_dr3int6.csv",
                "cholesky_solution/18Sco-XP-spectra.csv",
            )
        ]
    )
    fitted, shipped = fit_noise(ref), XPNoiseModel.load()
    for b in ("bp", "rp"):
        np.testing.assert_allclose(shipped.log_profile[b], fitted.log_profile[b], atol=1e-12)
        assert shipped.c_knee[b] == pytest.approx(fitted.c_knee[b])
        np.testing.assert_allclose(shipped.corr[b], fitted.corr[b], atol=1e-6)  # float32
        np.testing.assert_allclose(shipped.log_amplitude[b], fitted.log_amplitude[b], atol=1e-12)


def test_model_spectra_get_coefficients_like_real_ones(xp_dir, shared_data):
    """Plain least squares gives a CK04 spectrum a first BP coefficient of the wrong sign and
    high orders 1000x too large; the regularised projection gives coefficients shaped as the
    archive's (first coefficient per unit BP flux as the real hot sources', high orders at
    their relative size), still reproduces the spectrum to ~1%, and leaves real XP alone."""
    from simulators.gaia_xp import project, project_model, xp_design
    from simulators.stars import FieldStars

    wave, m = xp_design()
    bp = wave < 640.0
    real = read_xp(
        shared_data / "real/gaia_xp/GaiaXP_Spectra_Analysis/gaia_dr3_xp_c110_binary.npz"
    )
    rc = np.concatenate([real.coef["bp"], real.coef["rp"]], axis=1)
    rf = rc @ m
    from dasbi.bench.xp_real import _hot_box

    # stars like these real ones (hot: synthetic BP-RP -0.5 to 0.3), as bench xp-real draws
    fs = FieldStars({"library": "ck04", "xp": True, "bands": {"gaia_G": {}}, "priors": _hot_box()})
    th = fs.sample_prior(1000, np.random.default_rng(0))
    d = {k: th[:, i] for i, k in enumerate(fs.theta_names)}
    flux = fs.sed.flux(d["teff"], d["logg"], d["feh"], d["radius"], d["distance"], d["av"])
    clean = fs.sed.xp.convolve(flux).numpy().astype(np.float64)
    plain, reg = project(clean), project_model(clean)
    high = lambda c: np.median(np.abs(c[:, 30:55]).max(1) / np.abs(c[:, 0]))  # noqa: E731
    c0 = lambda c, f, k=0, w=bp: np.median(c[:, k] / f[:, w].sum(1))  # noqa: E731
    assert c0(plain, clean) < 0 and high(plain) > 1.0  # the failure this guards against
    # at the same colour (blue to red sampled flux), the first coefficients per unit flux
    # agree with the real sources' to 10%
    col = lambda f: np.log10(f[:, bp].sum(1) / f[:, ~bp].sum(1))  # noqa: E731
    lo, hi = np.percentile(col(rf), [25, 75])
    at_r, at_s = (col(rf) > lo) & (col(rf) < hi), (col(clean) > lo) & (col(clean) < hi)
    assert at_s.sum() > 20
    for k, w in ((0, bp), (55, ~bp)):
        ratio = c0(reg[at_s], clean[at_s], k, w) / c0(rc[at_r], rf[at_r], k, w)
        assert 0.9 < ratio < 1.1, (k, ratio)
    assert 0.3 < high(reg) / high(rc) < 3.0
    resid = np.linalg.norm(reg @ m - clean, axis=1) / np.linalg.norm(clean, axis=1)
    assert np.median(resid) < 0.02
    # a real spectrum is in the basis: the regularised map changes it by < 0.5%
    back = project_model(rf) @ m
    assert np.median(np.linalg.norm(back - rf, axis=1) / np.linalg.norm(rf, axis=1)) < 0.005


def test_modelled_sample_correlations_match_a_real_source(xp_dir):
    """Sampled-spectrum correlations of the model against GaiaXPy's for a real source with
    published correlations (neighbour and 5-sample lags)."""
    from dasbi.catalogue.xp import XPCoefficients
    from simulators.gaia_xp import XPNoiseModel

    xp = read_xp(xp_dir / "xp_continuous/XP_CONTINUOUS_RAW_colour_eq_dr3int6.csv")
    nm = XPNoiseModel.load()
    n = len(xp)
    modelled = XPCoefficients(
        xp.source_id,
        xp.coef,
        {b: nm.errors(b, xp.coef[b]) for b in ("bp", "rp")},
        {b: np.repeat(nm.corr[b][None], n, 0) for b in ("bp", "rp")},
        {b: np.ones(n) for b in ("bp", "rp")},
        np.ones(n, bool),
    )
    _, _, _, real = sample_xp(xp, with_correlation=True)
    _, _, _, model = sample_xp(modelled, with_correlation=True)
    for lag in (1, 5):
        r = np.diagonal(real, lag, axis1=1, axis2=2)
        m = np.diagonal(model, lag, axis1=1, axis2=2)
        assert np.median(np.abs(r - m)) < 0.15, lag


def test_the_gaia_xp_spectrograph_uses_coefficient_noise(shared_data):
    """The gaia_xp preset observes with coefficient noise; noise: pixels keeps the old
    independent pixels; field stars with xp get it."""
    import dataclasses

    from simulators.instruments import SPECTROGRAPHS, Spectrograph
    from simulators.stars import FieldStars

    wave_aa = np.arange(3000.0, 11000.0, 2.0)
    teff = np.array([3500.0, 5800.0, 9000.0])[:, None]
    lam_cm = wave_aa[None] * 1e-8
    flam = 1e-3 / lam_cm**5 / np.expm1(1.4388 / (lam_cm * teff))  # B_λ shapes
    flam = flam / flam.max(axis=1, keepdims=True) * 1e-13
    mag = np.array([12.0, 12.0, 12.0])
    assert SPECTROGRAPHS["gaia_xp"].noise == "xp_coefficients"
    xp = Spectrograph("gaia_xp", wave_aa)
    pix = Spectrograph(
        "gaia_xp", wave_aa, dataclasses.replace(SPECTROGRAPHS["gaia_xp"], noise="pixels")
    )
    v, e = xp.observe(flam, mag, np.random.default_rng(0))
    vp, ep = pix.observe(flam, mag, np.random.default_rng(0))
    assert v.shape == vp.shape == (3, 343) and np.all(e > 0)
    # pixel noise: |f|/σ is the same at every sample of a star; XP noise: it is not
    spread = lambda f, s: np.median(np.std(np.abs(f) / s, 1) / np.mean(np.abs(f) / s, 1))  # noqa: E731
    clean = xp.convolve(flam).numpy()
    assert spread(clean, ep) < 1e-6 < 0.1 < spread(clean, e)
    sim = FieldStars({"bands": {"gaia_G": {}}, "xp": True, "mag_limit": 15})
    rng = np.random.default_rng(0)
    b = sim.simulate(sim.sample_prior(40, rng), rng)["xp"]
    assert np.asarray(b.values).shape == (40, 343) and np.all(np.asarray(b.errors) > 0)


def test_misspecified_xp_calibration_and_error_scale(shared_data):
    """A truth-known misspecified XP (bench domain-adapt, xp: true): the calibration error
    multiplies the clean spectrum, the drawn noise is error_scale × the reported errors, which
    stay those of the calibrated spectrum; bad settings get clear errors."""
    from simulators.gaia_xp import XPCoefficientNoise, project_model, xp_design
    from simulators.instruments import Spectrograph
    from simulators.stars import FieldStars

    wave_aa = np.arange(3000.0, 11000.0, 2.0)
    lam_cm = wave_aa[None] * 1e-8
    flam = 1e-3 / lam_cm**5 / np.expm1(1.4388 / (lam_cm * np.array([[4500.0], [7000.0]])))
    flam = flam / flam.max(axis=1, keepdims=True) * 1e-13
    xp = Spectrograph("gaia_xp", wave_aa)
    cal = 1.0 + 0.05 * np.cos(np.linspace(0.0, 3.0, len(xp.wave_nm)))
    mag = np.full(2, 12.0)
    v0, e0 = xp.observe(flam, mag, np.random.default_rng(3))
    v1, e1 = xp.observe(flam, mag, np.random.default_rng(3), calibration=cal, error_scale=1.5)
    clean = xp.convolve(flam).numpy().astype(np.float64)
    m = xp_design()[1]
    base1 = project_model(clean * cal) @ m  # noise-free, in the basis
    noise = XPCoefficientNoise()
    a, ea = noise.observe(clean * cal, np.random.default_rng(3))
    np.testing.assert_allclose(v1 - base1, 1.5 * (a - base1), rtol=1e-6, atol=1e-24)
    np.testing.assert_allclose(e1, ea)  # the reported errors: of the calibrated flux, × 1
    np.testing.assert_allclose(e0, noise.observe(clean, np.random.default_rng(3))[1])
    assert np.max(np.abs(e1 / e0 - 1)) > 0.01  # the reported errors follow the calibrated flux
    with pytest.raises(ValueError, match="one factor per pixel"):
        xp.observe(flam, mag, np.random.default_rng(0), calibration=cal[:10])
    knots = [[336.0, 0.06], [500.0, 0.0], [1020.0, 0.02]]
    fs = FieldStars({"bands": {"gaia_G": {}}, "xp": True, "xp_calibration": knots})
    at = np.searchsorted(fs.sed.xp.wave_nm, [336.0, 500.0, 1020.0])
    np.testing.assert_allclose(fs._xp_calibration[at], [1.06, 1.0, 1.02], atol=1e-12)
    with pytest.raises(ValueError, match="set xp: true"):
        FieldStars({"bands": {"gaia_G": {}}, "xp_error_scale": 1.5})
    with pytest.raises(ValueError, match="increasing"):
        FieldStars(
            {"bands": {"gaia_G": {}}, "xp": True, "xp_calibration": [[500, 0.0], [400, 0.1]]}
        )


def _many_sources(xp_dir, tmp_path, n=7):
    """A CSV of ``n`` archive rows (the test file's sources under new ids), with row 3 bad in
    both bands and row 5 a second copy of row 1's id with another spectrum."""
    df = _archive_rows(xp_dir)
    rows = pd.concat([df] * (n // len(df) + 1), ignore_index=True).iloc[:n].copy()
    rows["source_id"] = [str(1000 + i) for i in range(n)]
    for b in ("bp", "rp"):
        rows.loc[3, f"{b}_coefficients"] = "(1.0, 2.0)"
    rows.loc[5, "source_id"] = "1001"
    path = tmp_path / "many.csv"
    rows.to_csv(path, index=False)
    return path, rows


def test_xp_files_are_read_in_blocks_as_whole(xp_dir, tmp_path):
    """iter_xp in blocks of 2 rows gives read_xp's sources, and the report names the file's
    rows (not the block's); FITS blocks equal CSV ones."""
    from dasbi.catalogue.xp import iter_xp

    path, _ = _many_sources(xp_dir, tmp_path)
    whole = read_xp(path)
    parts = list(iter_xp(path, chunk_rows=2))
    assert [len(p) for p in parts] == [2, 1, 2, 1]  # row 3 rejected
    got = concat_xp(parts)
    assert (
        list(got.source_id)
        == list(whole.source_id)
        == ["1000", "1001", "1002"]
        + [
            "1004",
            "1001",
            "1006",
        ]
    )
    for b in ("bp", "rp"):
        np.testing.assert_array_equal(got.coef[b], whole.coef[b])
        np.testing.assert_array_equal(got.corr[b], whole.corr[b])
    rep = parts[0].report.table()
    assert {(int(r["row"]), r["column"]) for r in rep} >= {(3, "bp_coefficients"), (3, "xp")}
    assert rep.pformat_all() == whole.report.table().pformat_all()
    # FITS, memory-mapped, one row at a time
    csv = read_xp(xp_dir / "xp_continuous/XP_CONTINUOUS_RAW.csv")
    fits = concat_xp(list(iter_xp(xp_dir / "xp_continuous/XP_CONTINUOUS_RAW.fits", chunk_rows=1)))
    np.testing.assert_allclose(fits.coef["rp"], csv.coef["rp"], rtol=1e-6)
    with pytest.raises(ValueError, match="chunk_rows"):
        next(iter_xp(path, chunk_rows=0))
    # an .npz in blocks: the same modelled errors as whole
    npz = tmp_path / "x.npz"
    x = np.concatenate([whole.coef["bp"], whole.coef["rp"]], axis=1)
    np.savez(npz, X=x, source_id=np.asarray(whole.source_id))
    np.testing.assert_array_equal(
        concat_xp(list(iter_xp(npz, chunk_rows=4))).error["bp"], read_xp(npz).error["bp"]
    )


def test_sampled_xp_store_gives_the_rows_asked_for_and_is_reused(xp_dir, tmp_path):
    """SampledXP into an HDF5 store: any order of ids, unknown ids and repeats give the same
    spectra as in memory; a repeated source id keeps its first spectrum and is reported; the
    store is reused while the file is unchanged and rebuilt when it changes."""
    from dasbi.catalogue.xp import SampledXP

    path, _ = _many_sources(xp_dir, tmp_path)
    mem = SampledXP.load(path, "xp_spectrum", chunk_rows=2)
    store = tmp_path / "parts" / "xp.h5"
    disk = SampledXP.load(path, "xp_spectrum", store=store, chunk_rows=2)
    assert disk.flux is None and store.is_file() and len(disk) == len(mem) == 6
    ids = np.array(["1006", "nope", "1001", "1000", "1006", "1003"])
    f_mem, e_mem = mem.rows(ids)
    f_disk, e_disk = disk.rows(ids)
    np.testing.assert_array_equal(f_mem, f_disk)
    np.testing.assert_array_equal(e_mem, e_disk)
    assert np.isnan(f_disk[[1, 5]]).all() and np.isfinite(f_disk[[0, 2, 3]]).any(axis=1).all()
    np.testing.assert_array_equal(f_disk[0], f_disk[4])
    # 1001's first spectrum (file row 1), not the copy at row 5
    whole = read_xp(path)
    _, flux, _, _ = sample_xp(whole.take(np.array([1, 4])), quiet=True)
    np.testing.assert_allclose(f_disk[2], flux[0], rtol=1e-6)
    assert not np.allclose(flux[0], flux[1], rtol=1e-3, atol=0)
    dup = [r for r in disk.report.table() if r["column"] == "source_id"]
    assert len(dup) == 1 and dup[0]["id"] == "1001" and "first" in dup[0]["reason"]
    # reused: the same report, without reading the file again
    stamp = store.stat().st_mtime_ns
    again = SampledXP.load(path, "xp_spectrum", store=store)
    assert store.stat().st_mtime_ns == stamp
    assert again.report.table().pformat_all() == disk.report.table().pformat_all()
    np.testing.assert_array_equal(again.rows(ids)[0], f_disk)
    # the file changes (one source less): sampled again
    df = pd.read_csv(path, dtype={"source_id": str}).iloc[:-1]
    df.to_csv(path, index=False)
    assert len(SampledXP.load(path, "xp_spectrum", store=store)) == 5
    # a file without a usable row leaves no store behind
    df.iloc[[3]].to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="no row has a usable"):
        SampledXP.load(tmp_path / "bad.csv", "xp_spectrum", store=tmp_path / "bad.h5")
    assert not (tmp_path / "bad.h5").exists()

"""Survey definitions in configs/surveys: loading, validation, and their use by field_stars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulators.instruments import SPECTROGRAPHS
from simulators.stars import DEFAULT_BANDS, FieldStars, FieldStarsConfig
from simulators.surveys import available_surveys, load_survey, merge_surveys

SHIPPED = Path(__file__).resolve().parents[1] / "configs" / "surveys"


def test_every_shipped_survey_loads():
    names = sorted(p.stem for p in SHIPPED.glob("*.yaml"))
    assert {"gaia_dr3", "2mass", "allwise", "spitzer_c2d", "lamost_lrs", "boss", "apogee"} <= set(
        names
    )
    assert set(names) <= set(available_surveys())
    from dasbi.catalogue import load_column_map

    for name in names:
        s = load_survey(name)
        assert s.reference, f"{name} has no reference"
        if not (s.bands or s.spectra):  # a catalogue's column map only
            assert load_column_map(name).columns, name


def test_photometric_surveys_reproduce_the_embedded_default_bands():
    """The embedded 15-band default is exactly Gaia + 2MASS + AllWISE + Spitzer c2d."""
    merged = merge_surveys(
        [load_survey(n) for n in ("gaia_dr3", "2mass", "allwise", "spitzer_c2d")]
    )
    assert list(merged.bands) == list(DEFAULT_BANDS)
    for band, spec in DEFAULT_BANDS.items():
        assert merged.bands[band] == spec
    assert merged.parallax_error_factor == 1.0
    assert set(merged.spectra) == {"gaia_xp"}


def test_field_stars_from_surveys():
    cfg = FieldStarsConfig(
        library="planck",
        surveys=["gaia_dr3", "2mass"],
        bands={"2mass_Ks": {"depth": 14.0}},
        non_detection="upper_limit",
    )
    assert list(cfg.bands) == ["gaia_G", "gaia_BP", "gaia_RP", "2mass_J", "2mass_H", "2mass_Ks"]
    assert cfg.bands["2mass_Ks"] == {"depth": 14.0, "floor": 0.02}
    assert cfg.parallax is True and cfg.xp is True
    sim = FieldStars(cfg)
    # the global non_detection applies where a survey does not set its own
    assert all(s.non_detection == "upper_limit" for s in sim.band_specs)
    out = sim(300, np.random.default_rng(0))
    assert out.x["photometry"].values.shape == (300, 6)
    assert out.x["xp"].values.shape[1] == 343
    # a 2MASS-only survey list has no parallax and no XP
    cfg2 = FieldStarsConfig(library="planck", surveys=["2mass"], bands={"gaia_G": {}})
    assert cfg2.parallax is False and cfg2.xp is False


def test_spectrograph_overrides_from_a_survey_file(tmp_path):
    path = tmp_path / "deep_lamost.yaml"
    path.write_text(
        "name: deep_lamost\nreference: test\nsimulation:\n  spectra:\n"
        "    lamost_lrs: {snr_at_ref: 500.0}\n"
    )
    s = load_survey(path)
    assert s.spectra["lamost_lrs"].snr_at_ref == 500.0
    assert s.spectra["lamost_lrs"].wave_min_nm == SPECTROGRAPHS["lamost_lrs"].wave_min_nm


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name: x\nsimulaton: {}\n", r"unknown keys \['simulaton'\]; valid keys"),
        ("simulation:\n  bands:\n    gaia_Q: {}\n", "unknown filter"),
        ("simulation:\n  bands:\n    gaia_G: {dept: 20}\n", r"gaia_G: unknown keys \['dept'\]"),
        ("simulation:\n  bands:\n    gaia_G: {depth: deep}\n", "gaia_G.depth: expected a number"),
        (
            "simulation:\n  bands:\n    gaia_G: {non_detection: drop}\n",
            "non_detection must be 'missing' or 'upper_limit'",
        ),
        ("simulation:\n  spectra:\n    hermes: {}\n", "unknown spectrograph 'hermes'"),
        (
            "simulation:\n  astrometry: {parallax_error_factor: -1}\n",
            "parallax_error_factor: must be >= 0",
        ),
        ("simulation: [1, 2]\n", "expected a mapping"),
        ("", "is empty"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_survey_files_get_clear_errors(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_survey(path)


def test_unknown_survey_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="known surveys: .*gaia_dr3"):
        load_survey("gaia_dr9")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_survey("nowhere/gaia.yaml")


def test_a_band_in_two_surveys_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("simulation:\n  bands:\n    gaia_G: {}\n")
    with pytest.raises(ValueError, match=r"band \['gaia_G'\] defined by more than one survey"):
        FieldStarsConfig(library="planck", surveys=["gaia_dr3", str(tmp_path / "a.yaml")])


def test_surveys_through_dasbi_simulate(tmp_path, monkeypatch):
    from dasbi.dataset import Dataset
    from dasbi.simulate import SimulateConfig, run_simulate

    monkeypatch.setenv("DASBI_PROGRESS", "0")
    cfg = SimulateConfig(
        num=64,
        chunk_size=32,
        simulator={"name": "field_stars", "library": "planck", "surveys": ["gaia_dr3"]},
    )
    out = run_simulate(cfg, tmp_path / "s.h5", progress=False)
    with Dataset(out) as ds:
        blocks = ds.read()
    assert blocks["photometry"].values.shape == (64, 3)
    assert "astrometry" in blocks and "xp" in blocks

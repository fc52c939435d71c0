"""The validation figures run on the shared data and show what they claim."""

from __future__ import annotations

import numpy as np

from simulators.validation import kurucz_vs_ck04, luhman2016_members, make_figures


def test_real_members_table(shared_data):
    real = luhman2016_members()
    assert len(real["Jmag"]) == 478 + 203
    assert np.nanmedian(real["Jmag"] - real["Ksmag"]) > 0.8  # young, reddened members


def test_kurucz_and_ck04_differ_most_for_cool_stars(shared_data):
    d = kurucz_vs_ck04()
    cool = d["teff"] < 4000
    warm = (d["teff"] > 5000) & (d["teff"] < 8000)
    assert np.nanmedian(np.abs(d["GaiaDR2v2_G"][warm])) < 0.02
    assert np.nanmedian(np.abs(d["GaiaDR2v2_G"][cool])) > 0.05


def test_make_figures(shared_data, tmp_path):
    summary = make_figures(tmp_path)
    assert (tmp_path / "cmd_ccd_young_clusters.png").stat().st_size > 10_000
    assert (tmp_path / "kurucz_vs_ck04.png").stat().st_size > 10_000
    assert summary["sim_stars"] > 1000 and summary["real_members"] > 600

"""Plot helpers: each draws what it says (checked on the artists), and bad input is clear."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dasbi import plots  # noqa: E402


def test_corner_plot_has_a_panel_per_pair_and_the_truths():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(2000, 3))
    fig = plots.corner_plot(s, ["a", "b", "c"], truths=[0.0, 1.0, -1.0], reference=s + 0.5)
    assert len(fig.axes) == 9
    # the truth lines of the diagonal panels sit at the given values
    diag = fig.axes[0]
    assert any(np.allclose(line.get_xdata(), 0.0) for line in diag.lines)
    assert "a = " in diag.get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match=r"samples must be \(S, 3\)"):
        plots.corner_plot(s[:, :2], ["a", "b", "c"])


def test_sed_predictive_draws_limits_as_arrows():
    rng = np.random.default_rng(1)
    wave = [1.24, 1.66, 2.16, 3.4]
    pred = 12 + rng.normal(0, 0.1, (500, 4))
    obs = np.array([12.0, np.nan, 11.9, 14.0])
    lim = np.array([False, False, False, True])
    fig = plots.plot_sed_predictive(wave, pred, obs, np.full(4, 0.05), lim, ["J", "H", "K", "W1"])
    ax = fig.axes[0]
    arrows = [c for c in ax.texts if getattr(c, "arrow_patch", None) is not None]
    assert len(arrows) == 1
    (x_tip, y_tip), (x0, y0) = arrows[0].xy, arrows[0].xyann
    assert x_tip == x0 == 3.4 and y_tip > y0  # fainter: larger magnitude
    assert ax.yaxis_inverted() and ax.get_xscale() == "log"
    assert len(ax.collections) >= 2  # the 95 % and 68 % bands
    plt.close(fig)


def test_cmd_colour_colour_and_embeddings():
    rng = np.random.default_rng(2)
    sim = {b: rng.normal(15, 1, 300) for b in ("gaia_G", "gaia_BP", "gaia_RP", "2mass_J")}
    sim |= {"2mass_H": sim["2mass_J"] - 0.5, "2mass_Ks": sim["2mass_J"] - 0.7}
    real = {k: v[:50] + 0.1 for k, v in sim.items()}
    fig = plots.plot_cmd(sim, real)
    ax = fig.axes[0]
    assert ax.yaxis_inverted() and len(ax.collections) == 2
    np.testing.assert_allclose(
        ax.collections[0].get_offsets()[:, 0], sim["gaia_BP"] - sim["gaia_RP"]
    )
    plt.close(fig)
    fig = plots.plot_colour_colour(sim, real)
    np.testing.assert_allclose(fig.axes[0].collections[0].get_offsets()[:, 1], 0.5)
    plt.close(fig)
    with pytest.raises(ValueError, match="bands \\['wise_W1'\\] are not in the data"):
        plots.plot_cmd(sim, magnitude="wise_W1")
    zs, zr = rng.normal(size=(200, 8)), rng.normal(2, 1, size=(100, 8))
    fig = plots.plot_embeddings((zs, zr), (zs, zs[:100]))
    assert [a.get_title() for a in fig.axes] == ["before DA", "after DA"]
    plt.close(fig)

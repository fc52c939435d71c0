"""Diagnostic figures (matplotlib, Agg): SBC ranks, coverage, TARP and recovery.

Each function returns a :class:`matplotlib.figure.Figure`; ``dasbi evaluate`` writes them
as PNG. Parameters are labelled with their names and the space they are shown in (e.g.
``log10 teff``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "corner_plot",
    "plot_cmd",
    "plot_colour_colour",
    "plot_coverage",
    "plot_embeddings",
    "plot_recovery",
    "plot_sbc",
    "plot_sed_predictive",
    "plot_tarp",
]


def _grid(n: int, size: float = 3.0) -> tuple[Any, np.ndarray]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def plot_sbc(
    ranks: np.ndarray, num_samples: int, labels: Sequence[str], pvalues: Sequence[float]
) -> Any:
    """Rank histograms with the 99 % band of a uniform histogram."""
    from scipy.stats import binom

    n, p = ranks.shape
    bins = int(max(2, min(20, num_samples + 1, n // 5)))
    fig, axes = _grid(p)
    lo, hi = binom.ppf([0.005, 0.995], n, 1 / bins)
    for j, ax in enumerate(axes[:p]):
        ax.axhspan(lo, hi, color="0.85", zorder=0, label="99% uniform")
        ax.hist(ranks[:, j], bins=bins, range=(0, num_samples + 1), color="C0", alpha=0.85)
        ax.axhline(n / bins, color="0.4", lw=1)
        ax.set_title(f"{labels[j]}  (χ² p = {pvalues[j]:.2g})", fontsize=9)
        ax.set_xlabel("rank of the truth")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Simulation-based calibration")
    fig.tight_layout()
    return fig


def plot_coverage(
    levels: np.ndarray, coverage: np.ndarray, labels: Sequence[str], num_objects: int
) -> Any:
    """Expected coverage of central intervals against the credibility level."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    from .diagnostics import coverage_band

    band = coverage_band(num_objects)
    ax.fill_between(levels, levels - band, levels + band, color="0.85", label="99% band (DKW)")
    ax.plot([0, 1], [0, 1], color="0.4", lw=1)
    for j, label in enumerate(labels):
        ax.plot(levels, coverage[:, j], lw=1.5, label=label)
    ax.set_xlabel("credibility level of the central interval")
    ax.set_ylabel("fraction of truths inside")
    ax.text(0.03, 0.93, "underconfident", fontsize=8, color="0.4", transform=ax.transAxes)
    ax.text(0.55, 0.05, "overconfident", fontsize=8, color="0.4", transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 0.1))
    ax.set_title(f"Expected coverage ({num_objects} objects)")
    fig.tight_layout()
    return fig


def plot_tarp(alpha: np.ndarray, ecp: np.ndarray, atc: float, ks_p: float) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="0.4", lw=1)
    ax.plot(alpha, ecp, color="C3", lw=1.5)
    ax.set_xlabel("credibility level α")
    ax.set_ylabel("expected coverage probability")
    ax.set_title(f"TARP (ATC = {atc:.3g}, KS p = {ks_p:.2g})", fontsize=10)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig.tight_layout()
    return fig


def plot_recovery(
    truth: np.ndarray,
    median: np.ndarray,
    width: np.ndarray,
    labels: Sequence[str],
    bias: np.ndarray,
    sigma: np.ndarray,
) -> Any:
    """Posterior median against truth, coloured by the posterior width (Leung & Bovy 2024,
    Fig. 4), with the bias and robust σ of the residuals in each panel."""
    p = truth.shape[1]
    fig, axes = _grid(p, 3.3)
    for j, ax in enumerate(axes[:p]):
        lo = float(np.nanmin([truth[:, j].min(), median[:, j].min()]))
        hi = float(np.nanmax([truth[:, j].max(), median[:, j].max()]))
        pad = 0.03 * (hi - lo or 1.0)
        sc = ax.scatter(
            truth[:, j], median[:, j], c=width[:, j], s=6, cmap="viridis", rasterized=True
        )
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.3", lw=0.8)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel(f"true {labels[j]}")
        ax.set_ylabel("posterior median")
        ax.text(
            0.04,
            0.96,
            f"bias {bias[j]:+.3g}\nσ (1.4826 MAD) {sigma[j]:.3g}",
            transform=ax.transAxes,
            va="top",
            fontsize=8,
            bbox={"fc": "white", "ec": "0.8", "alpha": 0.8},
        )
        cb = fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
        cb.set_label("(p84 − p16) / 2", fontsize=7)
        cb.ax.tick_params(labelsize=6)
    fig.suptitle("Parameter recovery")
    fig.tight_layout()
    return fig


def corner_plot(
    samples: np.ndarray,
    labels: Sequence[str],
    truths: Sequence[float] | None = None,
    reference: np.ndarray | None = None,
) -> Any:
    """Corner plot of (S, P) posterior draws (the ``corner`` package), with optional true
    values and a second set of draws (e.g. without DA, or reference samples) in grey."""
    import corner

    samples = np.asarray(samples, float)
    if samples.ndim != 2 or samples.shape[1] != len(labels):
        raise ValueError(f"samples must be (S, {len(labels)}), got {samples.shape}")
    fig = None
    if reference is not None:
        fig = corner.corner(
            np.asarray(reference, float),
            labels=list(labels),
            color="0.6",
            plot_datapoints=False,
            plot_density=False,
            hist_kwargs={"density": True},
        )
    fig = corner.corner(
        samples,
        fig=fig,
        labels=list(labels),
        truths=None if truths is None else list(truths),
        truth_color="C3",
        color="C0",
        quantiles=[0.16, 0.5, 0.84],
        show_titles=True,
        title_fmt=".3g",
        plot_datapoints=False,
        hist_kwargs={"density": True},
    )
    return fig


def plot_sed_predictive(
    wave_um: Sequence[float],
    predicted: np.ndarray,
    observed: np.ndarray,
    errors: np.ndarray,
    upper_limits: np.ndarray,
    bands: Sequence[str],
    unit: str = "mag",
) -> Any:
    """Posterior-predictive photometry against the observations of one object.

    Args:
        wave_um: (B,) band pivot wavelengths in µm.
        predicted: (S, B) predicted magnitudes (or fluxes) from posterior draws.
        observed, errors: (B,) the measurements (NaN where missing).
        upper_limits: (B,) bool: the value is a limit (a faint limit for magnitudes), drawn
            as an arrow.
        unit: "mag" (y axis inverted) or a flux unit.
    """
    import matplotlib.pyplot as plt

    wave = np.asarray(wave_um, float)
    order = np.argsort(wave)
    pred = np.asarray(predicted, float)[:, order]
    obs, err = np.asarray(observed, float)[order], np.asarray(errors, float)[order]
    lim = np.asarray(upper_limits, bool)[order]
    w = wave[order]
    fig, ax = plt.subplots(figsize=(6, 4))
    lo, mid, hi = np.nanpercentile(pred, [2.5, 50, 97.5], axis=0)
    l16, h84 = np.nanpercentile(pred, [16, 84], axis=0)
    ax.fill_between(w, lo, hi, color="C0", alpha=0.2, label="posterior predictive 95%")
    ax.fill_between(w, l16, h84, color="C0", alpha=0.35, label="68%")
    ax.plot(w, mid, color="C0", lw=1)
    det = np.isfinite(obs) & ~lim
    ax.errorbar(w[det], obs[det], yerr=err[det], fmt="o", color="k", ms=4, label="observed")
    if lim.any():
        sign = 1.0 if unit == "mag" else -1.0  # a faint limit: fainter is larger magnitude
        span = 0.05 * (np.nanmax(hi) - np.nanmin(lo) or 1.0) * 3
        for x, y in zip(w[lim], obs[lim], strict=True):
            ax.annotate(
                "",
                xy=(x, y + sign * span),
                xytext=(x, y),
                arrowprops={"arrowstyle": "-|>", "color": "C3", "lw": 1.5},
            )
        ax.plot(w[lim], obs[lim], "_", color="C3", ms=12, mew=2, label="upper limit")
    for x, name in zip(w, np.asarray(bands)[order], strict=True):
        ax.text(
            x,
            1.01,
            name,
            transform=ax.get_xaxis_transform(),
            rotation=90,
            fontsize=6,
            ha="center",
            va="bottom",
        )
    ax.set_xscale("log")
    ax.set_xlabel("wavelength (µm)")
    ax.set_ylabel(unit)
    if unit == "mag":
        ax.invert_yaxis()
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _scatter_two(ax: Any, sim: tuple, real: tuple | None, s: float = 3) -> None:
    ax.scatter(*sim, s=s, color="C0", alpha=0.4, label="simulated", rasterized=True, lw=0)
    if real is not None:
        ax.scatter(*real, s=s + 3, color="C3", alpha=0.7, label="real", rasterized=True, lw=0)
    ax.legend(fontsize=7, markerscale=3)


def plot_cmd(
    sim: dict[str, np.ndarray],
    real: dict[str, np.ndarray] | None = None,
    colour: tuple[str, str] = ("gaia_BP", "gaia_RP"),
    magnitude: str = "gaia_G",
) -> Any:
    """Colour–magnitude diagram of simulated (and real) magnitudes, by band name."""
    import matplotlib.pyplot as plt

    def pts(d: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        missing = [b for b in (*colour, magnitude) if b not in d]
        if missing:
            raise ValueError(f"bands {missing} are not in the data; it has {sorted(d)}")
        return np.asarray(d[colour[0]]) - np.asarray(d[colour[1]]), np.asarray(d[magnitude])

    fig, ax = plt.subplots(figsize=(4.5, 5))
    _scatter_two(ax, pts(sim), pts(real) if real is not None else None)
    ax.set_xlabel(f"{colour[0]} − {colour[1]}")
    ax.set_ylabel(magnitude)
    ax.invert_yaxis()
    fig.tight_layout()
    return fig


def plot_colour_colour(
    sim: dict[str, np.ndarray],
    real: dict[str, np.ndarray] | None = None,
    x: tuple[str, str] = ("2mass_H", "2mass_Ks"),
    y: tuple[str, str] = ("2mass_J", "2mass_H"),
) -> Any:
    """Colour–colour diagram (default J−H against H−Ks) of simulated and real data."""
    import matplotlib.pyplot as plt

    def pts(d: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        missing = [b for b in (*x, *y) if b not in d]
        if missing:
            raise ValueError(f"bands {missing} are not in the data; it has {sorted(d)}")
        return np.asarray(d[x[0]]) - np.asarray(d[x[1]]), np.asarray(d[y[0]]) - np.asarray(d[y[1]])

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    _scatter_two(ax, pts(sim), pts(real) if real is not None else None)
    ax.set_xlabel(f"{x[0]} − {x[1]}")
    ax.set_ylabel(f"{y[0]} − {y[1]}")
    fig.tight_layout()
    return fig


def plot_embeddings(
    before: tuple[np.ndarray, np.ndarray], after: tuple[np.ndarray, np.ndarray] | None = None
) -> Any:
    """Simulated against real embeddings (PCA to 2-D, fitted on the simulated ones), before
    and after domain adaptation: ``before`` and ``after`` are (z_sim, z_real) pairs."""
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    pairs = [("before DA", before)] + ([("after DA", after)] if after is not None else [])
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.5 * len(pairs), 4.2), squeeze=False)
    for ax, (title, (zs, zr)) in zip(axes[0], pairs, strict=True):
        pca = PCA(2).fit(np.asarray(zs, float))
        _scatter_two(ax, tuple(pca.transform(zs).T), tuple(pca.transform(zr).T))
        ax.set_title(title)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
    fig.tight_layout()
    return fig

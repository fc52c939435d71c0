"""Diagnostic figures (matplotlib, Agg): SBC ranks, coverage, TARP and recovery.

Each function returns a :class:`matplotlib.figure.Figure`; ``dasbi evaluate`` writes them
as PNG. Parameters are labelled with their names and the space they are shown in (e.g.
``log10 teff``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["plot_coverage", "plot_recovery", "plot_sbc", "plot_tarp"]


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
    band = 3 * np.sqrt(levels * (1 - levels) / num_objects)
    ax.fill_between(levels, levels - band, levels + band, color="0.85", label="±3σ, calibrated")
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

"""Posterior diagnostics: SBC ranks, expected coverage, TARP, C2ST and parameter recovery.

All functions take posterior draws ``samples`` of shape (S, N, P) (S draws for each of N
objects and P parameters) and the true values ``truth`` (N, P), in whatever space the
caller chooses (``dasbi evaluate`` uses each parameter's transform space, e.g. log10 T).

* **SBC** (Talts et al. 2018): the rank of the truth among the draws is uniform on
  {0, …, S} for a calibrated posterior; :func:`rank_uniformity` tests it with a χ² test on
  ``bins`` equal bins.
* **Expected coverage** of central marginal intervals: the fraction of objects whose truth
  lies inside the central interval of credibility α, for α in ``levels``. Below α the
  posterior is overconfident (too narrow or biased), above α underconfident.
  :func:`calibration_flags` flags a parameter when the curve leaves the 99 % simultaneous
  (DKW) band of N objects anywhere.
* **TARP** (Lemos et al. 2023), through the ``tarp`` package and sbi's ``check_tarp``: a
  joint (all parameters at once) coverage test.
* **C2ST** (Lopez-Paz & Oquab 2017) against reference samples, sbi's random-forest version.
* **Recovery**: posterior median against truth, with the bias (median of the residuals) and
  the robust scatter 1.4826 × MAD, as in Leung & Bovy (2024, Fig. 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "LEVELS",
    "calibration_flags",
    "coverage_band",
    "expected_coverage",
    "rank_uniformity",
    "recovery_stats",
    "robust_sigma",
    "sbc_ranks",
    "tarp_coverage",
]

LEVELS = np.linspace(0.05, 0.95, 19)


def _check(samples: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    samples = np.asarray(samples, np.float64)
    truth = np.asarray(truth, np.float64)
    if samples.ndim != 3 or truth.shape != samples.shape[1:]:
        raise ValueError(
            f"samples must be (S, N, P) and truth (N, P); got {samples.shape} and {truth.shape}"
        )
    return samples, truth


def sbc_ranks(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N, P) number of draws below the truth, in {0, …, S}."""
    samples, truth = _check(samples, truth)
    return np.sum(samples < truth[None], axis=0)


def rank_uniformity(ranks: np.ndarray, num_samples: int, bins: int = 20) -> np.ndarray:
    """(P,) χ² p-values of the hypothesis that the ranks are uniform on {0, …, S}.

    The S + 1 rank values are split into ``bins`` groups of (nearly) equal size, at most
    N / 5 groups so that each expects five counts or more.
    """
    from scipy.stats import chisquare

    ranks = np.asarray(ranks)
    n = len(ranks)
    bins = int(max(2, min(bins, num_samples + 1, n // 5)))
    groups = np.array_split(np.arange(num_samples + 1), bins)
    edges = np.array([g[0] for g in groups] + [num_samples + 1])
    expected = np.array([len(g) for g in groups], float) * n / (num_samples + 1)
    out = []
    for j in range(ranks.shape[1]):
        counts = np.histogram(ranks[:, j], bins=edges)[0]
        out.append(chisquare(counts, expected).pvalue)
    return np.array(out)


def expected_coverage(
    samples: np.ndarray, truth: np.ndarray, levels: Sequence[float] = LEVELS
) -> np.ndarray:
    """(L, P) fraction of objects whose truth is inside the central interval of level α."""
    samples, truth = _check(samples, truth)
    s = samples.shape[0]
    # mid-ranks in (0, 1): ties (discrete draws) do not bias the coverage
    below = np.sum(samples < truth[None], axis=0)
    equal = np.sum(samples == truth[None], axis=0)
    q = (below + 0.5 * equal + 0.5) / (s + 1)
    dist = np.abs(q - 0.5) * 2  # the central level at which the truth sits on the edge
    return np.array([np.mean(dist <= a, axis=0) for a in levels])


def coverage_band(num_objects: int, alpha: float = 0.01) -> float:
    """Half-width ε of the simultaneous (1 - alpha) band of a calibrated coverage curve.

    The curve is the empirical CDF of N uniform values, so by the Dvoretzky–Kiefer–Wolfowitz
    inequality it stays within ε = √(ln(2/alpha) / 2N) of the diagonal at every level at
    once with probability ≥ 1 - alpha.
    """
    return float(np.sqrt(np.log(2 / alpha) / (2 * max(num_objects, 1))))


def calibration_flags(
    coverage: np.ndarray,
    num_objects: int,
    levels: Sequence[float] = LEVELS,
    alpha: float = 0.01,
) -> list[str]:
    """Per parameter: "" (calibrated), "overconfident" or "underconfident".

    A parameter is flagged when its coverage curve leaves the simultaneous band
    α ± :func:`coverage_band` anywhere, so a calibrated parameter is flagged with
    probability ≤ ``alpha``; the larger excursion decides the direction.
    """
    levels = np.asarray(levels)
    eps = coverage_band(num_objects, alpha)
    low = np.max(levels[:, None] - eps - coverage, axis=0)
    high = np.max(coverage - levels[:, None] - eps, axis=0)
    out = []
    for lo, hi in zip(low, high, strict=True):
        if lo <= 0 and hi <= 0:
            out.append("")
        else:
            out.append("overconfident" if lo >= hi else "underconfident")
    return out


def tarp_coverage(samples: np.ndarray, truth: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """TARP expected coverage (``tarp`` package) with sbi's ATC and KS test.

    Returns ``alpha``, ``ecp`` (arrays), ``error`` (mean |ECP - α|), ``atc`` (area to the
    curve; > 0 underconfident, < 0 overconfident) and ``ks_pvalue``.
    """
    import tarp
    import torch
    from sbi.diagnostics import check_tarp

    samples, truth = _check(samples, truth)
    ecp, alpha = tarp.get_tarp_coverage(samples, truth, references="random", norm=True, seed=seed)
    ecp, alpha = np.asarray(ecp, float), np.asarray(alpha, float)
    atc, ks_p = check_tarp(torch.as_tensor(ecp), torch.as_tensor(alpha))
    return {
        "alpha": alpha,
        "ecp": ecp,
        "error": float(np.mean(np.abs(ecp - alpha))),
        "atc": float(atc),
        "ks_pvalue": float(ks_p),
    }


def robust_sigma(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """1.4826 × median absolute deviation (the σ of a Gaussian)."""
    x = np.asarray(x, np.float64)
    med = np.median(x, axis=axis, keepdims=True)
    return 1.4826 * np.median(np.abs(x - med), axis=axis)


def recovery_stats(samples: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Per parameter: bias (median of median − truth), robust σ of the residuals, RMSE,
    and the median posterior width (p84 − p16) / 2."""
    samples, truth = _check(samples, truth)
    med = np.median(samples, axis=0)
    res = med - truth
    p16, p84 = np.percentile(samples, [16, 84], axis=0)
    return {
        "median": med,
        "width": (p84 - p16) / 2,
        "bias": np.median(res, axis=0),
        "robust_sigma": robust_sigma(res),
        "rmse": np.sqrt(np.mean(res**2, axis=0)),
        "median_width": np.median((p84 - p16) / 2, axis=0),
    }

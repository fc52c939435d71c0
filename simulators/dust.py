r"""Interstellar extinction A(λ) on a fixed wavelength grid, with a per-star R(V).

Curves come from dust_extinction and are tabulated once on the spectral grid:

* Laws of the form :math:`A(\lambda)/A(V) = a(x) + b(x)/R_V` (G23, CCM89, O94) are evaluated
  at two R(V) values; the exact linear form then gives every star's curve with one
  multiply-add, :math:`A(\lambda) = A_V [a(x) + b(x) (1/R_V - 1/3.1)]`.
* Other R(V)-dependent laws (F99, F04, F19) are tabulated on an R(V) grid (step 0.05) and
  interpolated linearly.
* Average curves (``G21_MWAvg``) have no R(V) dependence.

Each law declares its wavelength and R(V) ranges (taken from dust_extinction). Outside its
wavelength range a curve follows one documented policy (:class:`ExtinctionCurve`: λ^-1.8
beyond a far-infrared red edge, from Weingartner & Draine 2001; constant below the Lyman
limit; an error elsewhere); an R(V) outside the law's range raises
:class:`ExtinctionRangeError`.

References:
    Gordon, K. D. et al. (2023). ApJ 950, 86 (G23, 0.0912-32 µm).
    Cardelli, Clayton & Mathis (1989). ApJ 345, 245 (CCM89).
    Fitzpatrick, E. L. (1999). PASP 111, 63 (F99).
    Gordon, K. D. et al. (2021). ApJ 916, 33 (G21_MWAvg).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "LAWS",
    "FAR_IR_UM",
    "LONG_WAVELENGTH_SLOPE",
    "LYMAN_UM",
    "ExtinctionCurve",
    "ExtinctionRangeError",
    "dust_opacity",
    "extension_factor",
]

# law -> (module, linear in 1/R_V?)
LAWS: dict[str, tuple[str, bool | None]] = {
    "G23": ("parameter_averages", True),
    "CCM89": ("parameter_averages", True),
    "O94": ("parameter_averages", True),
    "F99": ("parameter_averages", False),
    "F04": ("parameter_averages", False),
    "F19": ("parameter_averages", False),
    "G21_MWAvg": ("averages", None),
}


class ExtinctionRangeError(ValueError):
    """Wavelengths or R(V) outside an extinction law's valid range."""


def _law_class(name: str) -> type:
    if name not in LAWS:
        raise ValueError(f"unknown extinction law {name!r}; valid laws are: {', '.join(LAWS)}")
    import importlib

    module = importlib.import_module(f"dust_extinction.{LAWS[name][0]}")
    return getattr(module, name)


#: power-law index β of A(λ) ∝ λ^-β beyond a law's long-wavelength edge: the slope of the
#: Weingartner & Draine (2001) R(V) = 5.5 grain model between 32 and 100 µm (1.77, as
#: tabulated in dust_extinction's ``WD01``; tests/test_dust.py). WD01 steepens beyond
#: (2.09 fitted over 32-1000 µm), so at 300 µm this continuation lies 1.9× above WD01's
#: relative decline; no band of dasbi's surveys reaches past 30 µm, only the Planck means of
#: dust colder than ~30 K in the YSO model feel it
LONG_WAVELENGTH_SLOPE = 1.8
#: a law is continued as λ^-β only from its red edge on if that edge is at least this [µm]
#: (the far infrared; between 3 and 20 µm the silicate features and the mid-infrared plateau
#: make any power law wrong), and held constant blueward only if its blue edge is below
#: LYMAN_UM [µm]
FAR_IR_UM = 20.0
LYMAN_UM = 0.1


def extension_factor(wave_aa: np.ndarray, edge_aa: float) -> np.ndarray:
    """(λ / edge)^-β beyond the long-wavelength edge, 1 inside (:data:`LONG_WAVELENGTH_SLOPE`)."""
    w = np.asarray(wave_aa, np.float64)
    return np.where(w > edge_aa, (np.maximum(w, edge_aa) / edge_aa) ** -LONG_WAVELENGTH_SLOPE, 1.0)


class ExtinctionCurve:
    """A(λ)/A(V) of a law on ``wave_aa``, for any per-star R(V).

    One policy outside a law's wavelength range, for the field stars and the YSO model alike
    (``outside="extend"``, the default): beyond the law's long-wavelength edge, if that edge
    is in the far infrared (≥ :data:`FAR_IR_UM`; G23 ends at 32 µm), A(λ) falls as λ^-β from
    its value at the edge (:data:`LONG_WAVELENGTH_SLOPE`, from Weingartner & Draine 2001);
    blueward of a short edge below :data:`LYMAN_UM` it keeps the value at that edge (only
    the dust re-emission tables of the YSO model reach there). A grid beyond any other edge
    raises, as every grid outside the range does with ``outside="raise"``.

    Args:
        law: Name in :data:`LAWS`.
        wave_aa: (W,) wavelengths in Å.
        outside: ``extend`` or ``raise`` (see above).

    Raises:
        ExtinctionRangeError: With ``outside="raise"``, if ``wave_aa`` leaves the law's
            valid range.
    """

    def __init__(self, law: str, wave_aa: np.ndarray, outside: str = "extend") -> None:
        import astropy.units as u

        if outside not in ("extend", "raise"):
            raise ValueError(f"outside must be 'extend' or 'raise', got {outside!r}")
        cls = _law_class(law)
        self.law = law
        self.wave_aa = np.asarray(wave_aa, np.float64)
        x = 1e4 / self.wave_aa  # 1/µm
        lo, hi = cls.x_range
        red = x.min() < lo * (1 - 1e-9)
        blue = x.max() > hi * (1 + 1e-9)
        # the λ^-β continuation holds in the far infrared, and the constant only below the
        # Lyman limit: a law that stops short of them is not continued
        if (red and (outside == "raise" or 1 / lo < FAR_IR_UM)) or (
            blue and (outside == "raise" or 1 / hi > LYMAN_UM)
        ):
            why = (
                ""
                if outside == "raise"
                else f" (dasbi continues a law as λ^-{LONG_WAVELENGTH_SLOPE:g} only from "
                f"{FAR_IR_UM:g} µm on, and holds it constant only below {LYMAN_UM:g} µm)"
            )
            raise ExtinctionRangeError(
                f"{law} is valid for {1e4 / hi:.0f}-{1e4 / lo:.0f} Å, but the grid spans "
                f"{self.wave_aa.min():.0f}-{self.wave_aa.max():.0f} Å{why}; restrict the "
                "wavelength range or choose another law (G23 reaches 0.0912-32 µm)"
            )
        self.range_aa = (1e4 / hi, 1e4 / lo)
        x = np.clip(x, lo * (1 + 1e-9), hi * (1 - 1e-9))
        factor = extension_factor(self.wave_aa, 1e4 / lo)
        self.rv_range = tuple(getattr(cls, "Rv_range", (3.1, 3.1)))
        xq = x / u.micron
        self.linear = LAWS[law][1]
        if self.linear is None:
            self.base = np.asarray(cls()(xq), np.float64) * factor
            self.slope = np.zeros_like(self.base)
        elif self.linear:
            r1, r2 = 3.1, self.rv_range[0]
            self.base = np.asarray(cls(Rv=r1)(xq), np.float64) * factor
            other = np.asarray(cls(Rv=r2)(xq), np.float64) * factor
            self.slope = (other - self.base) / (1 / r2 - 1 / r1)
        else:
            self.rv_grid = np.arange(self.rv_range[0], self.rv_range[1] + 1e-9, 0.05)
            self.table = np.stack(
                [np.asarray(cls(Rv=r)(xq), np.float64) * factor for r in self.rv_grid]
            )
        self._t_base = torch.from_numpy(getattr(self, "base", np.zeros(1))).float()
        self._t_slope = torch.from_numpy(getattr(self, "slope", np.zeros(1))).float()

    def _check_rv(self, rv: np.ndarray) -> np.ndarray:
        rv = np.atleast_1d(np.asarray(rv, np.float64))
        if self.linear is None:
            return rv
        lo, hi = self.rv_range
        bad = ~np.isfinite(rv) | (rv < lo - 1e-9) | (rv > hi + 1e-9)
        if bad.any():
            raise ExtinctionRangeError(
                f"{self.law} is valid for R(V) in [{lo}, {hi}]; got {rv[bad][0]!r}"
            )
        return rv

    def a_over_av(self, rv: np.ndarray | float = 3.1) -> np.ndarray:
        """(N, W) A(λ)/A(V) for R(V) values (N,)."""
        rv = self._check_rv(rv)
        if self.linear is None:
            return np.broadcast_to(self.base, (len(rv), len(self.base))).copy()
        if self.linear:
            return self.base + (1 / rv[:, None] - 1 / 3.1) * self.slope
        i = np.clip(np.searchsorted(self.rv_grid, rv, side="right") - 1, 0, len(self.rv_grid) - 2)
        f = ((rv - self.rv_grid[i]) / (self.rv_grid[i + 1] - self.rv_grid[i]))[:, None]
        return self.table[i] * (1 - f) + self.table[i + 1] * f

    def a_lambda(self, av: np.ndarray, rv: np.ndarray | float = 3.1) -> torch.Tensor:
        """(N, W) float32 tensor of A(λ) in mag for A(V) (N,) and R(V) (N,) or scalar."""
        av = np.atleast_1d(np.asarray(av, np.float64))
        if not np.all(np.isfinite(av)) or np.any(av < 0):
            raise ValueError("A(V) must be finite and >= 0")
        rv = np.broadcast_to(np.asarray(rv, np.float64), av.shape)
        if self.linear is not False:
            self._check_rv(rv)
            eps = torch.from_numpy((1 / rv - 1 / 3.1).astype(np.float32))[:, None]
            av_t = torch.from_numpy(av.astype(np.float32))[:, None]
            return av_t * (self._t_base + eps * self._t_slope)
        return torch.from_numpy((av[:, None] * self.a_over_av(rv)).astype(np.float32))


def dust_opacity(wave_aa: np.ndarray, rv: float = 5.5) -> np.ndarray:
    """κ_λ / κ_V of the YSO model's dust: G23 at R(V) (5.5, dense-cloud grains, by default),
    outside 0.0912-32 µm by the policy of :class:`ExtinctionCurve` (λ^-β beyond, constant
    blueward); the YSO model's and the YSO grids' extinction (:mod:`simulators.yso`)."""
    return np.ravel(ExtinctionCurve("G23", np.asarray(wave_aa, np.float64)).a_over_av(rv))

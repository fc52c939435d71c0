"""Physical constants and unit conversions used inside the simulators.

Internal units (the names of variables carry them): wavelength in Å (``wave_aa``), flux
density F_λ in erg s⁻¹ cm⁻² Å⁻¹ (``flam``), distances in pc, radii in R_sun, temperatures in K,
extinction in mag. Astropy Quantities are accepted at the boundary through :func:`to_value`.
"""

from __future__ import annotations

from typing import Any

import astropy.constants as const
import astropy.units as u
import numpy as np

__all__ = [
    "C_AA_S",
    "PC_CM",
    "RSUN_CM",
    "ab_mag_to_fnu",
    "flam_to_fnu",
    "fnu_to_flam",
    "to_value",
]

C_AA_S = const.c.to_value(u.AA / u.s)  # speed of light, Å/s
PC_CM = const.pc.to_value(u.cm)
RSUN_CM = const.R_sun.to_value(u.cm)
H_CGS = const.h.cgs.value
K_CGS = const.k_B.cgs.value
SIGMA_SB = const.sigma_sb.cgs.value


def to_value(x: Any, unit: str | u.UnitBase, name: str = "value") -> np.ndarray:
    """Array of ``x`` in ``unit``; plain numbers are taken to be in ``unit`` already.

    Raises:
        ValueError: If ``x`` is a Quantity that cannot be converted to ``unit``.
    """
    unit = u.Unit(unit)
    if isinstance(x, u.Quantity):
        try:
            return np.asarray(x.to_value(unit, equivalencies=u.spectral()), np.float64)
        except u.UnitConversionError:
            raise ValueError(f"{name}: expected a quantity in {unit}, got {x.unit}") from None
    return np.asarray(x, np.float64)


def flam_to_fnu(flam: np.ndarray, wave_aa: np.ndarray) -> np.ndarray:
    """F_λ [erg/s/cm²/Å] → F_ν [erg/s/cm²/Hz]."""
    return flam * wave_aa**2 / C_AA_S


def fnu_to_flam(fnu: np.ndarray, wave_aa: np.ndarray) -> np.ndarray:
    """F_ν [erg/s/cm²/Hz] → F_λ [erg/s/cm²/Å]."""
    return fnu * C_AA_S / wave_aa**2


def ab_mag_to_fnu(mag: np.ndarray) -> np.ndarray:
    """AB magnitude → F_ν [erg/s/cm²/Hz]."""
    return 10.0 ** (-0.4 * (np.asarray(mag) + 48.6))

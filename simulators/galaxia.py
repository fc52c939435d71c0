"""Adapter for Galaxia and galaxia-ananke output: mock catalogues → dasbi stellar parameters.

Galaxia (Sharma et al. 2011) writes EBF files; galaxia-ananke (Thob et al. 2024) converts
them to HDF5, either with one dataset per column at the root or in vaex's layout
(``/table/columns/<name>/data``). The columns used here follow Galaxia's conventions:

=========  ===========================================  ======================
column     meaning                                      converted to
=========  ===========================================  ======================
teff       log10 T_eff [K]                              ``teff`` [K]
grav       log10 g [cgs]                                ``logg``
lum        log10 L / L_sun                              ``radius`` [R_sun] (*)
feh        [Fe/H]                                       ``feh``
rad        heliocentric distance [kpc]                  ``distance`` [pc]
age        log10 age [yr]                               ``log_age``
mact       present mass [M_sun]                         ``mass``
glon/glat  Galactic longitude / latitude [deg]          ``l``, ``b``
exbv_*     E(B-V) at the star (``exbv_solar`` first)    ``av`` = 3.1 E(B-V)
=========  ===========================================  ======================

(*) R/R_sun = √(L/L_sun) (5772 K / T_eff)² from L = 4πR²σT⁴.

:func:`run_ananke` is the calling code for users who have galaxia-ananke installed: it runs
``galaxia_ananke.make_survey_from_particles`` and reads the result. It is not installable
here (its build clones from GitHub), so the tests exercise :func:`read_galaxia` on files in
both layouts written by the tests.

References:
    Sharma, S. et al. (2011). ApJ 730, 3.
    Thob, A. C. R. et al. (2024). JOSS 9, 6234 (py-ananke).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

__all__ = ["read_galaxia", "run_ananke", "to_field_star_theta"]

REQUIRED = ("teff", "grav", "lum", "feh", "rad")
T_SUN = 5772.0


def _columns(f: h5py.File) -> dict[str, h5py.Dataset]:
    if "table" in f and "columns" in f["table"]:  # vaex
        cols = f["table"]["columns"]
        return {k: cols[k]["data"] for k in cols if "data" in cols[k]}
    return {k: v for k, v in f.items() if isinstance(v, h5py.Dataset)}


def read_galaxia(path: str | os.PathLike, max_rows: int | None = None) -> dict[str, np.ndarray]:
    """Read a Galaxia / galaxia-ananke HDF5 catalogue into dasbi's stellar parameters.

    Args:
        path: The HDF5 file.
        max_rows: Read at most this many rows.

    Returns:
        ``teff, logg, feh, radius, distance, av, log_age, mass, l, b`` plus every
        photometric column ``<system>_<band>`` as found.

    Raises:
        ValueError: If the file is not HDF5 or lacks required columns.
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"cannot read {path} as HDF5 Galaxia output: {err}") from None
    with f:
        cols = _columns(f)
        missing = [c for c in REQUIRED if c not in cols]
        if missing:
            raise ValueError(
                f"{path} lacks the Galaxia columns {missing}; found {sorted(cols)[:20]}"
            )
        sl = slice(None) if max_rows is None else slice(0, max_rows)

        def get(name: str) -> np.ndarray:
            return np.asarray(cols[name][sl], np.float64)

        teff = 10 ** get("teff")
        out = {
            "teff": teff,
            "logg": get("grav"),
            "feh": get("feh"),
            "radius": np.sqrt(10 ** get("lum")) * (T_SUN / teff) ** 2,
            "distance": 1000.0 * get("rad"),
        }
        ebv = next(
            (c for c in ("exbv_solar", "exbv_schlegel", "exbv_schlegel_inf") if c in cols), None
        )
        out["av"] = 3.1 * get(ebv) if ebv else np.zeros_like(teff)
        for src, dst in (("age", "log_age"), ("mact", "mass"), ("glon", "l"), ("glat", "b")):
            if src in cols:
                out[dst] = get(src)
        for name in cols:
            if (
                "_" in name
                and name.split("_")[0].isalpha()
                and name not in out
                and not name.startswith("exbv")
            ):
                data = cols[name]
                if data.ndim == 1:
                    out[name] = np.asarray(data[sl], np.float64)
    bad = ~np.isfinite(out["teff"]) | (out["distance"] <= 0)
    if bad.any():
        raise ValueError(f"{path}: {int(bad.sum())} rows have invalid teff or distance")
    return out


def to_field_star_theta(stars: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    """Stack catalogue columns into θ (N, P) in the order of ``names`` (FieldStars)."""
    missing = [n for n in names if n not in stars]
    if missing:
        raise ValueError(f"the catalogue lacks {missing} needed for θ")
    return np.stack([stars[n] for n in names], axis=1)


def run_ananke(
    particles: dict[str, Any], rho_pos: np.ndarray, rho_vel: np.ndarray, **kwargs: Any
) -> dict[str, np.ndarray]:
    """Run galaxia-ananke on simulation particles and read the mock catalogue.

    Args:
        particles: Particle arrays as galaxia-ananke expects (positions, velocities, mass,
            age, metallicities, …).
        rho_pos, rho_vel: Phase-space densities of the particles.
        **kwargs: Passed to ``galaxia_ananke.make_survey_from_particles`` (``photo_sys``,
            ``surveyname``, ``fsample``, …).

    Raises:
        ImportError: With installation advice when galaxia-ananke is missing.
    """
    try:
        import galaxia_ananke
    except ImportError:
        raise ImportError(
            "galaxia-ananke is not installed; install it from "
            "https://github.com/athob/galaxia-ananke (it builds Galaxia from source) or "
            "use the embedded Galactic model (simulators.galaxy)"
        ) from None
    output = galaxia_ananke.make_survey_from_particles(particles, rho_pos, rho_vel, **kwargs)
    path = output if isinstance(output, str | os.PathLike) else getattr(output, "_path", None)
    if path is None:
        raise ValueError("galaxia-ananke returned no file path to read")
    return read_galaxia(path)

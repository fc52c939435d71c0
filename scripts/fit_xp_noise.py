"""Refit the shipped XP noise model (``simulators/xp_noise_reference.npz``) on the archive
sources with published errors of GaiaXPy's test files.

    python scripts/fit_xp_noise.py        # reads real/gaia_xp/gaiaxpy_tests (dasbi data)
"""

from __future__ import annotations

from pathlib import Path

from dasbi.catalogue.xp import concat_xp, fit_noise, read_xp
from simulators.data import find_data
from simulators.gaia_xp import REFERENCE

FILES = (
    "xp_continuous/XP_CONTINUOUS_RAW.csv",
    "xp_continuous/XP_CONTINUOUS_RAW_colour_eq_dr3int6.csv",
    "cholesky_solution/18Sco-XP-spectra.csv",
)


def main() -> None:
    root = find_data("real/gaia_xp/gaiaxpy_tests")
    model = fit_noise(concat_xp([read_xp(Path(root) / f) for f in FILES]))
    model.save(REFERENCE)
    print(f"wrote {REFERENCE}: {model.n_sources} sources, c_knee {model.c_knee}")


if __name__ == "__main__":
    main()

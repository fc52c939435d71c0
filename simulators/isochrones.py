r"""Stellar isochrones from lachesis-grids: (mass, age, [Fe/H]) → T_eff, log g, log L, R.

lachesis-grids ships HDF5 isochrone grids in a sparse layout (``sparse_v1``): ``values``
(rows × columns) holds the isochrones of the ([Fe/H], log age) nodes one after the other in
C order; ``lengths`` gives the number of rows of each, ``offsets`` its first EEP, and every
row carries its equivalent evolutionary point (EEP). Rows with NaN are dropped.

Interpolation follows the EEPs. For a star of initial mass M at (log age, [Fe/H]):

1. on each of the four neighbouring isochrones, find the (fractional) EEP at which the
   initial mass equals M;
2. average these EEPs with the bilinear weights in (log age, [Fe/H]);
3. read every quantity at that EEP on each neighbour and average with the same weights.

At grid nodes this reproduces the table exactly. Stars more massive than the end of any
neighbouring isochrone (evolved past the grid) or below its lower end get NaN.

Grids: ``mist`` (MIST v2.5, v/v_crit = 0.4), ``parsec`` (PARSEC v1.2S), ``bhac15``
(Baraffe et al. 2015, solar metallicity, pre-main sequence and low masses).

References:
    Choi, J. et al. (2016). ApJ 823, 102; Dotter, A. (2016). ApJS 222, 8 (MIST, EEPs).
    Bressan, A. et al. (2012). MNRAS 427, 127 (PARSEC).
    Baraffe, I. et al. (2015). A&A 577, A42 (BHAC15).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import h5py
import numpy as np

__all__ = ["GRIDS", "IsochroneGrid"]

GRIDS = {
    "mist": "mist_v2.5_vvcrit0.4.h5",
    "parsec": "parsec_v1.25.h5",
    "bhac15": "bhac15.h5",
}
OUTPUTS = ("log_Teff", "log_g", "log_L", "log_R", "star_mass", "phase")


@dataclass
class _Track:
    eep: np.ndarray
    mass: np.ndarray
    cols: np.ndarray  # (L, len(OUTPUTS))


class IsochroneGrid:
    """An isochrone grid with EEP-based interpolation.

    Args:
        name: ``mist``, ``parsec`` or ``bhac15``; or a path to a lachesis-grids HDF5 file.
    """

    def __init__(self, name: str = "mist") -> None:
        from pathlib import Path

        if name in GRIDS:
            import lachesis_grids

            path = lachesis_grids.grid_path(GRIDS[name])
        elif Path(name).is_file():
            path = Path(name)
        else:
            raise ValueError(
                f"unknown isochrone grid {name!r}; valid grids are: {', '.join(GRIDS)} "
                "(or the path of a lachesis-grids HDF5 file)"
            )
        self.name = name
        try:
            with h5py.File(path, "r") as f:
                columns = [
                    c.decode() if isinstance(c, bytes) else str(c) for c in f.attrs["columns"]
                ]
                self.feh_grid = np.asarray(f["feh_values"][:], float)
                self.age_grid = np.asarray(f["age_values"][:], float)  # log10 yr
                self._lengths = np.asarray(f["lengths"][:])
                self._starts = np.concatenate([[0], np.cumsum(self._lengths)])
                self._values = np.asarray(f["values"][:], np.float64)
        except (OSError, KeyError) as err:
            raise OSError(f"cannot read isochrone grid {path}: {err}") from None
        missing = {"eep", "initial_mass", *OUTPUTS} - set(columns)
        if missing:
            raise OSError(f"isochrone grid {path} lacks the columns {sorted(missing)}")
        self._col = {c: i for i, c in enumerate(columns)}
        self.bounds = {
            "log_age": (self.age_grid[0], self.age_grid[-1]),
            "feh": (self.feh_grid[0], self.feh_grid[-1]),
        }

    def isochrone(self, i_feh: int, i_age: int) -> dict[str, np.ndarray]:
        """The tabulated isochrone of a grid node as a dict of columns."""
        t = self._track(i_feh * len(self.age_grid) + i_age)
        out = {"eep": t.eep, "initial_mass": t.mass}
        out.update({c: t.cols[:, j] for j, c in enumerate(OUTPUTS)})
        return out

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - the grid lives as long as the object
    def _track(self, k: int) -> _Track:
        rows = self._values[self._starts[k] : self._starts[k + 1]]
        need = [self._col[c] for c in ("eep", "initial_mass", *OUTPUTS) if c != "phase"]
        rows = rows[np.all(np.isfinite(rows[:, need]), axis=1)]
        mass = rows[:, self._col["initial_mass"]]
        order = np.argsort(mass, kind="stable")
        rows = rows[order]
        mass = rows[:, self._col["initial_mass"]]
        keep = np.concatenate([[True], np.diff(mass) > 0])[: len(mass)]  # increasing mass
        rows = rows[keep]
        return _Track(
            rows[:, self._col["eep"]],
            rows[:, self._col["initial_mass"]],
            rows[:, [self._col[c] for c in OUTPUTS]],
        )

    @staticmethod
    def _cell(grid: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(grid) == 1:
            return np.zeros(len(x), int), np.zeros(len(x))
        i = np.clip(np.searchsorted(grid, x, side="right") - 1, 0, len(grid) - 2)
        return i, np.clip((x - grid[i]) / (grid[i + 1] - grid[i]), 0.0, 1.0)

    def interpolate(
        self, mass: np.ndarray, log_age: np.ndarray, feh: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Stellar properties for arrays broadcast to (N,).

        Args:
            mass: Initial mass [M_sun].
            log_age: log10 age [yr].
            feh: [Fe/H].

        Returns:
            ``teff`` [K], ``logg``, ``logL`` [L_sun], ``radius`` [R_sun], ``star_mass``,
            ``phase`` and ``eep``; NaN where the star lies outside the isochrones.

        Raises:
            ValueError: Ages or metallicities outside the grid.
        """
        mass, log_age, feh = (
            np.ravel(a).astype(np.float64) for a in np.broadcast_arrays(mass, log_age, feh)
        )
        for name, arr in (("log_age", log_age), ("feh", feh)):
            lo, hi = self.bounds[name]
            if not np.all(np.isfinite(arr)) or np.any(arr < lo - 1e-9) or np.any(arr > hi + 1e-9):
                raise ValueError(
                    f"{self.name} isochrones cover {name} in [{lo}, {hi}]; got values outside "
                    f"(e.g. {arr[(arr < lo) | (arr > hi) | ~np.isfinite(arr)][0]!r})"
                )
        n = len(mass)
        ia, wa = self._cell(self.age_grid, log_age)
        iz, wz = self._cell(self.feh_grid, feh)
        corners = []
        for dz, fz in ((0, 1 - wz), (1, wz)):
            for da, fa in ((0, 1 - wa), (1, wa)):
                if len(self.feh_grid) == 1 and dz == 1:
                    continue
                k = np.minimum(iz + dz, len(self.feh_grid) - 1) * len(self.age_grid) + np.minimum(
                    ia + da, len(self.age_grid) - 1
                )
                corners.append((k, fz * fa))
        # 1-2: the EEP of mass M on each neighbour, averaged with the weights
        eep = np.zeros(n)
        ok = np.ones(n, bool)
        eeps_c = []
        for k, w in corners:
            e = np.full(n, np.nan)
            for track_id in np.unique(k[w > 0]):
                sel = (k == track_id) & (w > 0)
                t = self._track(int(track_id))
                if len(t.mass) < 2:
                    continue  # an empty node of the grid: these stars stay NaN
                inside = (mass[sel] >= t.mass[0]) & (mass[sel] <= t.mass[-1])
                e_sel = np.interp(mass[sel], t.mass, t.eep)
                e[np.nonzero(sel)[0]] = np.where(inside, e_sel, np.nan)
            ok &= np.isfinite(e) | (w == 0)
            eeps_c.append(e)
            eep += np.where(w > 0, w * np.nan_to_num(e), 0.0)
        # 3: quantities at that EEP on each neighbour
        props = np.zeros((n, len(OUTPUTS)))
        for (k, w), _e in zip(corners, eeps_c, strict=True):
            for track_id in np.unique(k[w > 0]):
                sel = np.nonzero((k == track_id) & (w > 0))[0]
                t = self._track(int(track_id))
                if len(t.eep) < 2:
                    ok[sel] = False
                    continue
                order = np.argsort(t.eep)
                te, tc = t.eep[order], t.cols[order]
                inside = (eep[sel] >= te[0]) & (eep[sel] <= te[-1])
                ok[sel] &= inside
                vals = np.stack(
                    [np.interp(eep[sel], te, tc[:, j]) for j in range(len(OUTPUTS))], axis=1
                )
                props[sel] += w[sel, None] * vals
        props[~ok] = np.nan
        out = {c: props[:, j] for j, c in enumerate(OUTPUTS)}
        return {
            "teff": 10 ** out["log_Teff"],
            "logg": out["log_g"],
            "logL": out["log_L"],
            "radius": 10 ** out["log_R"],
            "star_mass": out["star_mass"],
            "phase": out["phase"],
            "eep": np.where(ok, eep, np.nan),
        }

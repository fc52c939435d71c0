r"""Stellar spectral libraries: surface flux F_λ(λ; T_eff, log g, [M/H]).

Three implementations share the :class:`SpectralLibrary` interface:

* :class:`CK04Library`: Castelli & Kurucz (2004) ATLAS9 models in the STScI CDBS layout.
  The grid is loaded once into a cube of log10 F_λ and interpolated trilinearly in
  (T_eff, log g, [M/H]), fully vectorised. Missing grid points (all-zero columns, mostly
  low log g at high T_eff) are handled: a star whose interpolation cell touches a missing
  point either raises :class:`OutOfGridError` or, with ``out_of_grid="clip"``, has its
  log g raised to the lowest value populated at all four (T_eff, [M/H]) corners.
* :class:`BandFluxLibrary`: tables of band-averaged surface flux per filter (the
  astroARIADNE layout, CK04_DF.csv / Kurucz_DF.csv). Each "pixel" is a band, placed at the
  band's pivot wavelength; photometry selects columns instead of integrating.
* :class:`PlanckLibrary`: π B_λ(T_eff), the embedded fallback when no grid is installed.
* :class:`MangledLibrary` (``phoenix``): spectra whose broad-band fluxes are those of a
  band-flux table (PHOENIX v2 by default, 2300-12000 K, log g 0-6), made by "mangling" a base
  spectrum (CK04, scaled by B_λ(T)/B_λ(3500 K) below its 3500 K edge): the base is multiplied
  by a smooth function of wavelength, piecewise linear in (log λ, log F) between the pivots
  of the fitted bands and flat beyond them, iterated until every fitted band matches the
  table (Hsiao et al. 2007 use the same idea for supernova templates). Cool and young stars
  then have the right colours in every band the table holds, while the spectrum still serves
  filter curves, extinction across a band, and the YSO model's reprocessing.

Outside the grid (T_eff, log g or [M/H] beyond the covered range) a library raises
:class:`OutOfGridError` (``out_of_grid="raise"``, the default) or clips the parameters to
the nearest covered values (``"clip"``).

References:
    Castelli, F. & Kurucz, R. L. (2004). New Grids of ATLAS9 Model Atmospheres.
    arXiv:astro-ph/0405087.
    Husser, T.-O. et al. (2013). A new extensive library of PHOENIX stellar atmospheres and
    synthetic spectra. A&A 553, A6.
    Hsiao, E. Y. et al. (2007). K-corrections and spectral templates of Type Ia supernovae.
    ApJ 663, 1187 (colour mangling).
    Vines, J. I. & Jenkins, J. S. (2022). ARIADNE. MNRAS 513, 2719 (band-flux tables).
"""

from __future__ import annotations

import abc
import functools
import os
import re
import warnings
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch

from .data import find_data
from .units import C_AA_S, H_CGS, K_CGS

__all__ = [
    "BAND_COLUMNS",
    "BandFluxLibrary",
    "CALIBRATIONS",
    "CALIBRATION_BANDS",
    "CK04Library",
    "MANGLE_BANDS",
    "MangledLibrary",
    "OutOfGridError",
    "PlanckLibrary",
    "SpectralLibrary",
    "dwarf_sequence",
    "make_library",
]

OutOfGrid = Literal["raise", "clip"]


class OutOfGridError(ValueError):
    """Stellar parameters outside a library's grid."""


def axis_weights(grid: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower index and fractional weight of x in a sorted grid (x already inside)."""
    i = np.clip(np.searchsorted(grid, x, side="right") - 1, 0, len(grid) - 2)
    w = (x - grid[i]) / (grid[i + 1] - grid[i])
    return i, np.clip(w, 0.0, 1.0)


class SpectralLibrary(abc.ABC):
    """Surface flux F_λ [erg s⁻¹ cm⁻² Å⁻¹] on ``wave_aa`` for (T_eff, log g, [M/H]).

    Attributes:
        name: Registry name.
        kind: ``"spectrum"`` (a wavelength grid) or ``"bands"`` (one value per filter).
        wave_aa: (W,) wavelengths (pivot wavelengths for band libraries).
        bounds: Valid range of each parameter.
    """

    name: ClassVar[str]
    kind: ClassVar[str] = "spectrum"
    wave_aa: np.ndarray
    bounds: dict[str, tuple[float, float]]

    def __init__(self, out_of_grid: OutOfGrid = "raise") -> None:
        if out_of_grid not in ("raise", "clip"):
            raise ValueError(f"out_of_grid must be 'raise' or 'clip', got {out_of_grid!r}")
        self.out_of_grid = out_of_grid

    def _prepare(
        self, teff: np.ndarray, logg: np.ndarray, feh: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        arrays = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (teff, logg, feh)))
        teff, logg, feh = (np.ravel(a) for a in arrays)
        for name, arr in (("teff", teff), ("logg", logg), ("feh", feh)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{self.name}: {name} contains NaN or inf")
        out = []
        for name, arr in (("teff", teff), ("logg", logg), ("feh", feh)):
            lo, hi = self.bounds[name]
            bad = (arr < lo) | (arr > hi)
            if bad.any():
                if self.out_of_grid == "raise":
                    raise OutOfGridError(
                        f"{self.name}: {bad.sum()} stars have {name} outside [{lo}, {hi}] "
                        f"(e.g. {arr[bad][0]:.4g}); restrict the prior or set "
                        "out_of_grid='clip'"
                    )
                arr = np.clip(arr, lo, hi)
            out.append(arr)
        return out[0], out[1], out[2]

    @abc.abstractmethod
    def surface_flux(self, teff: np.ndarray, logg: np.ndarray, feh: np.ndarray) -> np.ndarray:
        """(N, W) float32 surface F_λ for parameter arrays broadcast to (N,)."""

    def observed_flux(
        self,
        teff: np.ndarray,
        logg: np.ndarray,
        feh: np.ndarray,
        radius_rsun: np.ndarray,
        distance_pc: np.ndarray,
    ) -> np.ndarray:
        """(N, W) F_λ at Earth, surface flux × (R/d)², before extinction."""
        from .units import PC_CM, RSUN_CM

        scale = (np.asarray(radius_rsun) * RSUN_CM / (np.asarray(distance_pc) * PC_CM)) ** 2
        return self.surface_flux(teff, logg, feh) * np.ravel(scale)[:, None].astype(np.float32)


class CK04Library(SpectralLibrary):
    """Castelli & Kurucz (2004) models from a CDBS ``ck04models`` folder.

    Args:
        path: The ``ck04models`` folder (default: ``atmospheres/ck04models`` in the data
            folder, see :func:`simulators.data.find_data`).
        wave_range_aa: Keep wavelengths in this range (Å).
        out_of_grid: ``"raise"`` or ``"clip"``.
    """

    name = "ck04"
    _FOLDER = re.compile(r"^ck([mp])(\d\d)$")

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        wave_range_aa: tuple[float, float] = (3000.0, 320_000.0),
        out_of_grid: OutOfGrid = "raise",
    ) -> None:
        super().__init__(out_of_grid)
        from astropy.io import fits

        root = find_data("atmospheres/ck04models", path)
        folders = sorted(p for p in Path(root).iterdir() if self._FOLDER.match(p.name))
        if not folders:
            raise FileNotFoundError(f"{root} holds no ck[mp]NN folders: not a CDBS ck04 grid")
        cache = _cache_file(root, folders, wave_range_aa)
        if cache is not None and cache.exists():
            try:
                with np.load(cache, allow_pickle=False) as z:
                    self._setup(z["wave"], z["cube"], z["feh"], z["teff"], z["logg"])
                return
            except (OSError, KeyError, ValueError):
                cache.unlink(missing_ok=True)
        fehs, teffs = [], set()
        for f in folders:
            sign, num = self._FOLDER.match(f.name).groups()
            fehs.append((-1 if sign == "m" else 1) * int(num) / 10)
            teffs |= {int(p.stem.split("_")[1]) for p in f.glob(f"{f.name}_*.fits")}
        order = np.argsort(fehs)
        folders = [folders[i] for i in order]
        self.feh_grid = np.array(sorted(fehs), float)
        self.teff_grid = np.array(sorted(teffs), float)
        self.logg_grid = np.arange(0.0, 5.01, 0.5)
        wave = None
        cube = None
        for i, folder in enumerate(folders):
            for j, teff in enumerate(self.teff_grid):
                fpath = folder / f"{folder.name}_{int(teff)}.fits"
                if not fpath.exists():
                    continue
                try:
                    with fits.open(fpath, memmap=False) as hdul:
                        data = hdul[1].data
                        w = np.asarray(data["WAVELENGTH"], np.float64)
                        cols = [
                            np.asarray(data[f"g{int(round(g * 10)):02d}"], np.float64)
                            for g in self.logg_grid
                        ]
                except (OSError, KeyError, TypeError) as err:
                    raise OSError(f"cannot read CK04 model {fpath}: {err}") from None
                if wave is None:
                    # keep the nodes that bracket the range, so it is covered entirely
                    lo_i = max(np.searchsorted(w, wave_range_aa[0], side="right") - 1, 0)
                    hi_i = min(np.searchsorted(w, wave_range_aa[1], side="left"), len(w) - 1)
                    keep = np.zeros(len(w), bool)
                    keep[lo_i : hi_i + 1] = True
                    wave = w[keep]
                    cube = np.full(
                        (len(folders), len(self.teff_grid), len(self.logg_grid), keep.sum()),
                        np.nan,
                        np.float32,
                    )
                flux = np.stack(cols)[:, keep]
                present = np.any(flux > 0, axis=1)
                with np.errstate(divide="ignore"):
                    logf = np.log10(np.maximum(flux, 1e-40))
                cube[i, j, present] = logf[present]
        if cube is None:
            raise FileNotFoundError(f"{root} holds no model files")
        # Beyond 10 µm the CDBS grid has nodes only at 10, 20, 40, … µm: resample onto a
        # log grid (1% steps) by power-law (log-log) interpolation, the Rayleigh-Jeans shape
        sparse = np.nonzero(np.diff(wave) / wave[:-1] > 0.05)[0]
        if len(sparse):
            start = sparse[0]
            top = min(wave[-1], wave_range_aa[1])
            fine = np.exp(np.arange(np.log(wave[start]), np.log(top), 0.01))[1:]
            new_wave = np.concatenate([wave[: start + 1], fine[fine < top], [top]])
            x_old, x_new = np.log10(wave[start:]), np.log10(new_wave[start + 1 :])
            tail = cube[..., start:]
            k = np.clip(np.searchsorted(x_old, x_new, side="right") - 1, 0, len(x_old) - 2)
            f = ((x_new - x_old[k]) / (x_old[k + 1] - x_old[k])).astype(np.float32)
            cube = np.concatenate(
                [cube[..., : start + 1], tail[..., k] * (1 - f) + tail[..., k + 1] * f], axis=-1
            )
            wave = new_wave
        if cache is not None:
            _save_cache(
                cache,
                wave=wave,
                cube=cube,
                feh=self.feh_grid,
                teff=self.teff_grid,
                logg=self.logg_grid,
            )
        self._setup(wave, cube, self.feh_grid, self.teff_grid, self.logg_grid)

    def _setup(
        self,
        wave: np.ndarray,
        cube: np.ndarray,
        feh: np.ndarray,
        teff: np.ndarray,
        logg: np.ndarray,
    ) -> None:
        self.feh_grid, self.teff_grid, self.logg_grid = feh, teff, logg
        self.wave_aa = wave
        self._flat = torch.from_numpy(np.nan_to_num(cube, nan=-40.0)).reshape(-1, len(wave))
        self.valid = ~np.isnan(cube[..., 0])  # (feh, teff, logg)
        # lowest populated log g index per (feh, teff); valid points are contiguous upward
        has = self.valid.any(axis=2)
        first = np.where(has, self.valid.argmax(axis=2), len(self.logg_grid))
        self._logg_min = np.where(
            has, self.logg_grid[np.minimum(first, len(self.logg_grid) - 1)], np.inf
        )
        self.bounds = {
            "teff": (self.teff_grid[0], self.teff_grid[-1]),
            "logg": (self.logg_grid[0], self.logg_grid[-1]),
            "feh": (self.feh_grid[0], self.feh_grid[-1]),
        }

    chunk = 2048

    def log_surface_flux(
        self, teff: np.ndarray, logg: np.ndarray, feh: np.ndarray
    ) -> torch.Tensor:
        """(N, W) float32 tensor of log10 F_λ (trilinear interpolation in log flux)."""
        teff, logg, feh = self._prepare(teff, logg, feh)
        it, wt = axis_weights(self.teff_grid, teff)
        i_f, wf = axis_weights(self.feh_grid, feh)
        need = np.max(
            np.stack([self._logg_min[i_f + a, it + b] for a in (0, 1) for b in (0, 1)]), axis=0
        )
        low = logg < need - 1e-9
        if low.any():
            if self.out_of_grid == "raise" or not np.all(np.isfinite(need[low])):
                k = int(np.argmax(low))
                raise OutOfGridError(
                    f"ck04: {low.sum()} stars fall where the grid has no models (e.g. teff="
                    f"{teff[k]:.0f}, logg={logg[k]:.2f}, feh={feh[k]:.2f}: log g must be >= "
                    f"{need[k]:.1f} there); restrict the prior or set out_of_grid='clip'"
                )
            logg = np.where(low, need, logg)
        ig, wg = axis_weights(self.logg_grid, logg)
        nt, ng = len(self.teff_grid), len(self.logg_grid)
        base = (i_f * nt + it) * ng + ig
        offsets = np.array([(a * nt + b) * ng + c for a in (0, 1) for b in (0, 1) for c in (0, 1)])
        weights = np.stack(
            [wa * wb * wc for wa in (1 - wf, wf) for wb in (1 - wt, wt) for wc in (1 - wg, wg)],
            axis=1,
        ).astype(np.float32)
        # the 8-corner interpolation as one sparse (N × grid) @ dense (grid × W) product
        n = len(teff)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sparse CSR support is flagged as beta
            s = torch.sparse_csr_tensor(
                torch.arange(0, 8 * n + 1, 8),
                torch.from_numpy((base[:, None] + offsets[None, :]).ravel()),
                torch.from_numpy(weights.ravel()),
                (n, self._flat.shape[0]),
            )
            return s @ self._flat

    def surface_flux(self, teff: np.ndarray, logg: np.ndarray, feh: np.ndarray) -> np.ndarray:
        return torch.pow(10.0, self.log_surface_flux(teff, logg, feh)).numpy()


def _cache_file(root: Path, folders: list[Path], wave_range: tuple[float, float]) -> Path | None:
    """A cache path keyed by the grid's files (names, sizes, mtimes) and the range."""
    import hashlib

    base = os.environ.get("DASBI_CACHE", str(Path.home() / ".cache" / "dasbi"))
    if base in ("", "0", "off"):
        return None
    h = hashlib.sha256(f"{Path(root).resolve()}|{wave_range}|v1".encode())
    for folder in folders:
        for f in sorted(folder.iterdir()):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return Path(base) / f"ck04_{h.hexdigest()[:16]}.npz"


def _save_cache(path: Path, **arrays: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass  # the cache is an optimisation only


#: canonical band (simulators.bandpasses.FILTERS) → column of the astroARIADNE band-flux
#: tables; the tables' Gaia columns are DR2 passbands (pyphot ``GaiaDR2v2_*``)
BAND_COLUMNS: dict[str, str] = {
    "gaia_G": "GaiaDR2v2_G",
    "gaia_BP": "GaiaDR2v2_BP",
    "gaia_RP": "GaiaDR2v2_RP",
    "2mass_J": "2MASS_J",
    "2mass_H": "2MASS_H",
    "2mass_Ks": "2MASS_Ks",
    "wise_W1": "WISE_RSR_W1",
    "wise_W2": "WISE_RSR_W2",
    "wise_W3": "WISE_RSR_W3",
    "wise_W4": "WISE_RSR_W4",
    "irac_1": "SPITZER_IRAC_36",
    "irac_2": "SPITZER_IRAC_45",
}


#: band-flux tables found by name in the data folder (``atmospheres/bandflux/<name>_DF.csv``)
BAND_TABLES = ("CK04", "Kurucz", "Phoenixv2", "SPHINX")


class BandFluxLibrary(SpectralLibrary):
    """Band-averaged surface fluxes from an astroARIADNE-style table.

    The CSV has index columns ``logg, teff, feh`` and one column per band with the
    band-averaged surface flux in erg s⁻¹ cm⁻² µm⁻¹ (converted to per Å here). Values are
    interpolated linearly in log flux on the regular (feh, teff, logg) grid.

    Args:
        table: ``"CK04"``, ``"Kurucz"``, ``"Phoenixv2"``, ``"SPHINX"`` or a CSV path.
        bands: Columns to keep (default: all).
        out_of_grid: ``"raise"`` or ``"clip"``.
    """

    name = "bandflux"
    kind = "bands"

    def __init__(
        self,
        table: str | os.PathLike = "CK04",
        bands: list[str] | None = None,
        out_of_grid: OutOfGrid = "raise",
    ) -> None:
        super().__init__(out_of_grid)
        import pandas as pd

        if str(table) in BAND_TABLES:
            path = find_data(f"atmospheres/bandflux/{table}_DF.csv")
        else:
            path = Path(table)
        try:
            df = pd.read_csv(path)
        except (OSError, ValueError) as err:
            raise OSError(f"cannot read band-flux table {path}: {err}") from None
        missing = {"logg", "teff", "feh"} - set(df.columns)
        if missing:
            raise ValueError(f"{path}: band-flux table lacks the columns {sorted(missing)}")
        all_bands = [c for c in df.columns if c not in ("logg", "teff", "feh")]
        bands = all_bands if bands is None else list(bands)
        unknown = [b for b in bands if b not in all_bands]
        if unknown:
            raise ValueError(f"{path}: unknown bands {unknown}; the table has {all_bands}")
        self.band_names = bands
        self.teff_grid = np.unique(df["teff"].to_numpy(float))
        self.logg_grid = np.unique(df["logg"].to_numpy(float))
        self.feh_grid = np.unique(df["feh"].to_numpy(float))
        cube = np.full(
            (len(self.feh_grid), len(self.teff_grid), len(self.logg_grid), len(bands)), np.nan
        )
        i = np.searchsorted(self.feh_grid, df["feh"].to_numpy(float))
        j = np.searchsorted(self.teff_grid, df["teff"].to_numpy(float))
        k = np.searchsorted(self.logg_grid, df["logg"].to_numpy(float))
        vals = df[bands].to_numpy(float) * 1e-4  # per µm → per Å
        with np.errstate(divide="ignore", invalid="ignore"):
            cube[i, j, k] = np.where(vals > 0, np.log10(vals), np.nan)
        self._cube = cube
        self.valid = np.all(np.isfinite(cube), axis=-1)
        from .bandpasses import pivot_wavelength

        self.wave_aa = np.array([pivot_wavelength(b) for b in bands])
        self.bounds = {
            "teff": (self.teff_grid[0], self.teff_grid[-1]),
            "logg": (self.logg_grid[0], self.logg_grid[-1]),
            "feh": (self.feh_grid[0], self.feh_grid[-1]),
        }

    def covers(self, teff: np.ndarray, logg: np.ndarray, feh: np.ndarray) -> np.ndarray:
        """True where the table has every model needed to interpolate (inside the grid and
        no hole at the surrounding grid points)."""
        teff, logg, feh = (np.atleast_1d(np.asarray(v, np.float64)) for v in (teff, logg, feh))
        inside = np.ones(len(teff), bool)
        for v, key in ((teff, "teff"), (logg, "logg"), (feh, "feh")):
            lo, hi = self.bounds[key]
            inside &= np.isfinite(v) & (v >= lo) & (v <= hi)
        t = np.clip(np.nan_to_num(teff, nan=self.bounds["teff"][0]), *self.bounds["teff"])
        g = np.clip(np.nan_to_num(logg, nan=self.bounds["logg"][0]), *self.bounds["logg"])
        f = np.clip(np.nan_to_num(feh, nan=self.bounds["feh"][0]), *self.bounds["feh"])
        it, wt = axis_weights(self.teff_grid, t)
        i_f, wf = axis_weights(self.feh_grid, f)
        ig, wg = axis_weights(self.logg_grid, g)
        for a, wa in ((0, 1 - wf), (1, wf)):
            for b, wb in ((0, 1 - wt), (1, wt)):
                for c, wc in ((0, 1 - wg), (1, wg)):
                    inside &= self.valid[i_f + a, it + b, ig + c] | (wa * wb * wc == 0)
        return inside

    def surface_flux(self, teff: np.ndarray, logg: np.ndarray, feh: np.ndarray) -> np.ndarray:
        teff, logg, feh = self._prepare(teff, logg, feh)
        it, wt = axis_weights(self.teff_grid, teff)
        i_f, wf = axis_weights(self.feh_grid, feh)
        ig, wg = axis_weights(self.logg_grid, logg)
        out = np.zeros((len(teff), len(self.band_names)))
        ok = np.ones(len(teff), bool)
        for a, wa in ((0, 1 - wf), (1, wf)):
            for b, wb in ((0, 1 - wt), (1, wt)):
                for c, wc in ((0, 1 - wg), (1, wg)):
                    w = wa * wb * wc
                    v = self._cube[i_f + a, it + b, ig + c]
                    ok &= np.all(np.isfinite(v), axis=1) | (w == 0)
                    out += w[:, None] * np.nan_to_num(v)
        if not ok.all():
            k = int(np.argmin(ok))
            raise OutOfGridError(
                f"bandflux: {int((~ok).sum())} stars fall where the table has no models (e.g. "
                f"teff={teff[k]:.0f}, logg={logg[k]:.2f}, feh={feh[k]:.2f})"
            )
        return (10.0**out).astype(np.float32)


class PlanckLibrary(SpectralLibrary):
    """Black bodies, surface flux π B_λ(T_eff); log g and [M/H] are accepted and ignored.

    Args:
        wave_range_aa: Range of the log-spaced wavelength grid (Å).
        num: Number of wavelengths.
    """

    name = "planck"

    def __init__(
        self,
        wave_range_aa: tuple[float, float] = (900.0, 350_000.0),
        num: int = 2000,
        out_of_grid: OutOfGrid = "raise",
    ) -> None:
        super().__init__(out_of_grid)
        self.wave_aa = np.geomspace(wave_range_aa[0], wave_range_aa[1], num)
        self.bounds = {"teff": (100.0, 1e6), "logg": (-10.0, 10.0), "feh": (-10.0, 10.0)}

    def surface_flux(self, teff: np.ndarray, logg: np.ndarray, feh: np.ndarray) -> np.ndarray:
        teff, _, _ = self._prepare(teff, logg, feh)
        lam_cm = self.wave_aa * 1e-8
        x = H_CGS * C_AA_S * 1e-8 / (lam_cm[None, :] * K_CGS * teff[:, None])
        with np.errstate(over="ignore"):
            b_lam = 2 * H_CGS * (C_AA_S * 1e-8) ** 2 / lam_cm**5 / np.expm1(x)  # per cm
        return (np.pi * b_lam * 1e-8).astype(np.float32)  # per Å


#: table columns the mangling fits, blue to red: SDSS u g r i z, 2MASS J H Ks, WISE W1 W2
#: (bands that barely overlap, so the fit is well posed; Gaia, PS1 and IRAC stay as checks)
MANGLE_BANDS = (
    "SDSS_u",
    "SDSS_g",
    "SDSS_r",
    "SDSS_i",
    "SDSS_z",
    "2MASS_J",
    "2MASS_H",
    "2MASS_Ks",
    "WISE_RSR_W1",
    "WISE_RSR_W2",
)


#: empirical colour calibrations of :class:`MangledLibrary` (``none``: the table as it is)
CALIBRATIONS = ("none", "pm13")

#: bands whose colours the ``pm13`` calibration matches, blue to red (a knot at each pivot);
#: Gaia in DR2 passbands, as the dwarf sequence's Gaia colours are
CALIBRATION_BANDS = (
    "gaiadr2_BP",
    "gaiadr2_G",
    "gaiadr2_RP",
    "2mass_J",
    "2mass_H",
    "2mass_Ks",
    "wise_W1",
    "wise_W2",
)

#: the calibration holds below this T_eff [K] and fades linearly to nothing at the second
CALIBRATION_TAPER_K = (9700.0, 12000.0)


def dwarf_sequence() -> dict[str, np.ndarray]:
    """The mean main-sequence dwarf colours of E. Mamajek's table (version 2024.05.15; largely
    Pecaut & Mamajek 2013, Table 5), A0V-M9.5V, shipped as ``simulators/mamajek_dwarfs.csv``:
    ``spt``, ``teff`` [K], ``logg`` (from the table's mass and radius), and the colours
    ``bp_rp``, ``g_rp`` (Gaia DR2), ``g_ks``, ``j_h``, ``h_ks``, ``ks_w1``, ``w1_w2``
    (NaN where the table has none), sorted by T_eff."""
    import csv
    from importlib import resources

    text = resources.files("simulators").joinpath("mamajek_dwarfs.csv").read_text()
    rows = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    out: dict[str, np.ndarray] = {"spt": np.array([r["spt"] for r in rows])}
    for key in rows[0]:
        if key != "spt":
            out[key] = np.array([float(r[key]) if r[key] else np.nan for r in rows])
    order = np.argsort(out["teff"])
    return {k: v[order] for k, v in out.items()}


def _dwarf_offsets(seq: dict[str, np.ndarray], mags: np.ndarray) -> np.ndarray:
    """(N, 8) magnitude offsets per :data:`CALIBRATION_BANDS` (0 at Ks) that give the model
    magnitudes ``mags`` (N, 8) the dwarf sequence's colours. Colour residuals missing from
    the table are interpolated in T_eff from the neighbouring types, then each is smoothed by
    a 3-point running median along the sequence."""
    bp, g, rp, j, h, k, w1, w2 = mags.T
    model = {
        "bp_rp": bp - rp,
        "g_rp": g - rp,
        "g_ks": g - k,
        "j_h": j - h,
        "h_ks": h - k,
        "ks_w1": k - w1,
        "w1_w2": w1 - w2,
    }
    t = seq["teff"]
    res = {}
    for key, m in model.items():
        r = seq[key] - m
        ok = np.isfinite(r)
        r = np.interp(t, t[ok], r[ok])
        pad = np.concatenate([r[:1], r, r[-1:]])
        res[key] = np.median(np.stack([pad[:-2], pad[1:-1], pad[2:]]), axis=0)
    d_h = res["h_ks"]
    d_j = d_h + res["j_h"]
    d_w1 = -res["ks_w1"]
    d_w2 = d_w1 - res["w1_w2"]
    d_g = res["g_ks"]
    d_rp = d_g - res["g_rp"]
    d_bp = d_rp + res["bp_rp"]
    return np.stack([d_bp, d_g, d_rp, d_j, d_h, np.zeros_like(t), d_w1, d_w2], axis=1)


class MangledLibrary(SpectralLibrary):
    """A base spectrum warped to the band fluxes of an atmosphere table (see the module
    docstring); the default is PHOENIX v2 band fluxes on CK04 spectra.

    Args:
        table: Band-flux table name (``"Phoenixv2"``, ``"SPHINX"``, …) or CSV path.
        bands: Table columns to match (default :data:`MANGLE_BANDS`).
        base_path: The ck04models folder of the base spectra.
        wave_range_aa: Wavelength range of the spectra (Å).
        iterations: Fixed-point iterations of the mangling (each multiplies the correction
            at every band by target / current band flux). The corrections are fitted once at
            every node of the table and interpolated trilinearly for each star.
        out_of_grid: ``"raise"`` or ``"clip"`` for log g and [M/H] outside the table and
            T_eff outside 1000 K to CK04's 50,000 K.
        calibration: ``"none"`` or ``"pm13"``: an empirical colour calibration. The mangled
            spectra of main-sequence dwarfs (at each type's T_eff and log g, [M/H] = 0) are
            multiplied by a second smooth warp, piecewise linear in (log λ, mag) between the
            pivots of :data:`CALIBRATION_BANDS` and flat beyond, fitted so that their BP-RP,
            G-RP, G-Ks, J-H, H-Ks, Ks-W1 and W1-W2 are the mean dwarf colours of
            :func:`dwarf_sequence`; the warp is then rescaled to keep the bolometric flux. A
            star takes the warp of its T_eff (linear between the types, at any log g and
            [M/H]), faded to nothing between 9,700 and 12,000 K (:data:`CALIBRATION_TAPER_K`).
            The atmosphere models lack opacity in cool stars (M dwarfs come out up to 0.6 mag
            too blue in BP-RP and 0.1 mag too red in J-H); the calibration assumes that their
            error at a given T_eff does not depend on gravity.

    Example:
        >>> lib = MangledLibrary()                                 # doctest: +SKIP
        >>> flux = lib.surface_flux([3000.0], [4.0], [0.0])       # (1, W) F_λ # doctest: +SKIP
    """

    name = "phoenix"

    def __init__(
        self,
        table: str | os.PathLike = "Phoenixv2",
        bands: list[str] | tuple[str, ...] | None = None,
        base_path: str | os.PathLike | None = None,
        wave_range_aa: tuple[float, float] = (2500.0, 320_000.0),
        iterations: int = 12,
        out_of_grid: OutOfGrid = "raise",
        calibration: str = "none",
    ) -> None:
        super().__init__(out_of_grid)
        from .bandpasses import get_filter, merged_weights

        if calibration not in CALIBRATIONS:
            raise ValueError(
                f"unknown colour calibration {calibration!r}; valid: {', '.join(CALIBRATIONS)}"
            )
        self.calibration = calibration

        bands = list(MANGLE_BANDS if bands is None else bands)
        self.table = BandFluxLibrary(table, bands=bands, out_of_grid=out_of_grid)
        self.base = CK04Library(base_path, wave_range_aa=wave_range_aa, out_of_grid="clip")
        self.wave_aa = self.base.wave_aa
        # T_eff beyond the table takes the correction at the table's edge (on the base
        # spectrum, Planck-scaled below CK04's 3500 K), so hot stars stay CK04 to a few 0.01
        # mag and the coolest YSO photospheres are continued smoothly
        self.bounds = {
            "teff": (1000.0, self.base.bounds["teff"][1]),
            "logg": self.table.bounds["logg"],
            "feh": self.table.bounds["feh"],
        }
        self.band_names = bands
        self.iterations = int(iterations)
        filters = [get_filter(b) for b in bands]
        for f in filters:
            if f.wave_aa[0] < self.wave_aa[0] or f.wave_aa[-1] > self.wave_aa[-1]:
                raise ValueError(
                    f"mangling band {f.name} ({f.wave_aa[0]:.0f}-{f.wave_aa[-1]:.0f} Å) is not "
                    f"inside wave_range_aa {wave_range_aa}"
                )
        # photon-weighted band means <F_λ> = ∫F T λ dλ / ∫T λ dλ, as the tables hold them
        w = np.stack([merged_weights(self.wave_aa, f) for f in filters], axis=1)
        self._band_w = w / w.sum(axis=0, keepdims=True)
        pivots = np.log(self.table.wave_aa)
        order = np.argsort(pivots)
        if np.any(np.diff(pivots[order]) <= 0):
            raise ValueError("mangling bands must have distinct pivot wavelengths")
        # (B, W): log-linear interpolation between the pivots, flat beyond the end bands
        eye = np.eye(len(bands))[order]
        lw = np.log(self.wave_aa)
        self._basis = np.stack([np.interp(lw, pivots[order], row) for row in eye.T])
        self._basis32 = torch.from_numpy(self._basis.astype(np.float32))
        self._log_r = self._node_corrections()
        self._cal: tuple[np.ndarray, np.ndarray, torch.Tensor] | None = None
        if calibration == "pm13":
            self._cal = self._fit_calibration()

    def _node_corrections(self) -> np.ndarray:
        """(F, T, G, B) log correction at the pivots for every node of the table; holes (low
        log g at high T_eff) take the correction of the nearest populated log g."""
        tab = self.table
        ff, tt, gg = np.meshgrid(tab.feh_grid, tab.teff_grid, tab.logg_grid, indexing="ij")
        out = np.full((*tab.valid.shape, len(self.band_names)), np.nan)
        ok = tab.valid
        for part in np.array_split(np.argwhere(ok), max(1, int(ok.sum()) // 2000)):
            i, j, k = part.T
            out[i, j, k] = self._fit(tt[i, j, k], gg[i, j, k], ff[i, j, k])
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                have = np.nonzero(ok[i, j])[0]
                if len(have) and len(have) < out.shape[2]:
                    near = have[np.abs(have[None, :] - np.arange(out.shape[2])[:, None]).argmin(1)]
                    out[i, j] = out[i, j, near]
        # a (feh, teff) column with no model at all: the nearest T_eff's
        for i in range(out.shape[0]):
            have = np.nonzero(ok[i].any(axis=1))[0]
            near = have[np.abs(have[None, :] - np.arange(out.shape[1])[:, None]).argmin(1)]
            out[i] = out[i, near]
        return out

    def _fit(self, teff: np.ndarray, logg: np.ndarray, feh: np.ndarray) -> np.ndarray:
        """(N, B) log correction at the pivots that takes the base to the table, by
        fixed-point iteration at table nodes."""
        base = self.base_flux(teff, logg, feh)
        target = np.log(self.table.surface_flux(teff, logg, feh).astype(np.float64))
        log_r = target - np.log(base @ self._band_w)
        for _ in range(self.iterations):
            corr = np.exp(log_r @ self._basis)
            log_r += target - np.log((base * corr) @ self._band_w)
        return log_r

    def _fit_calibration(self) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """(T nodes, (N, K + 1) log10 warp at the knots and the bolometric renormalisation,
        (K + 1, W) basis) of the ``pm13`` calibration: at each dwarf of the sequence, the
        knot magnitudes solved by Gauss-Newton so that the warped spectrum's band offsets are
        :func:`_dwarf_offsets`."""
        from .bandpasses import Photometry, get_filter

        seq = dwarf_sequence()
        t = seq["teff"]
        g = np.clip(seq["logg"], *self.table.bounds["logg"])
        flux = self.surface_flux(t, g, np.zeros(len(t))).astype(np.float64)  # uncalibrated
        phot = Photometry(list(CALIBRATION_BANDS), self.wave_aa)
        target = _dwarf_offsets(seq, phot.magnitudes(flux))
        # G spans BP and RP: a knot of its own makes the fit singular, so G's colours enter
        # through the BP and RP offsets (and G - RP is the check)
        fit = [i for i, b in enumerate(CALIBRATION_BANDS) if b != "gaiadr2_G"]
        target = target[:, fit]
        bands = [CALIBRATION_BANDS[i] for i in fit]
        w = phot.weights[:, fit]
        pivots = np.log([get_filter(b).pivot_aa for b in bands])
        lw = np.log(self.wave_aa)
        basis = np.stack([np.interp(lw, pivots, row) for row in np.eye(len(pivots))])
        knots = target.copy()
        for _ in range(8):
            warp = flux * 10 ** (-0.4 * knots @ basis)  # (N, W)
            band = warp @ w  # (N, B)
            now = -2.5 * np.log10(band / (flux @ w))
            jac = np.einsum("nw,wb,kw->nbk", warp, w, basis) / band[:, :, None]
            knots += np.linalg.solve(jac, (target - now)[:, :, None])[:, :, 0]
        warp = flux * 10 ** (-0.4 * knots @ basis)
        bol = np.log10(np.trapezoid(flux, self.wave_aa) / np.trapezoid(warp, self.wave_aa))
        log_knots = np.concatenate([-0.4 * knots, bol[:, None]], axis=1)
        full = np.concatenate([basis, np.ones((1, len(lw)))], axis=0)
        return t, log_knots, torch.from_numpy(full.astype(np.float32))

    def _log_calibration(self, teff: np.ndarray) -> torch.Tensor | None:
        """(N, W) float32 log10 warp of the colour calibration at each T_eff, or None."""
        if self._cal is None:
            return None
        t, log_knots, basis = self._cal
        lo, hi = CALIBRATION_TAPER_K
        fade = np.clip((hi - teff) / (hi - lo), 0.0, 1.0)
        k = np.stack([np.interp(teff, t, col) for col in log_knots.T], axis=1) * fade[:, None]
        return torch.from_numpy(k.astype(np.float32)) @ basis

    def correction(self, teff: np.ndarray, logg: np.ndarray, feh: np.ndarray) -> np.ndarray:
        """(N, W) factor that takes the base spectra to the table's band fluxes (and the
        colour calibration's, if any)."""
        return torch.pow(10.0, self._log_correction(*self._prepare(teff, logg, feh))).numpy()

    def _log_base(self, teff: np.ndarray, logg: np.ndarray, feh: np.ndarray) -> torch.Tensor:
        """(N, W) float32 log10 F_λ of the base: CK04, below its edge the edge spectrum times
        B_λ(T)/B_λ(T_edge)."""
        lo, hi = self.base.bounds["teff"]
        log_f = self.base.log_surface_flux(
            np.clip(teff, lo, hi),
            np.clip(logg, *self.base.bounds["logg"]),
            np.clip(feh, *self.base.bounds["feh"]),
        )
        cool = teff < lo
        if cool.any():
            x = H_CGS * C_AA_S / (self.wave_aa[None, :] * K_CGS)
            with np.errstate(over="ignore"):
                ratio = np.log10(np.expm1(x / lo)) - np.log10(np.expm1(x / teff[cool, None]))
            log_f[torch.from_numpy(cool)] += torch.from_numpy(ratio.astype(np.float32))
        return log_f

    def base_flux(self, teff: np.ndarray, logg: np.ndarray, feh: np.ndarray) -> np.ndarray:
        """(N, W) float64 F_λ of the base spectra before mangling (CK04, Planck-continued
        below its 3,500 K edge)."""
        return torch.pow(10.0, self._log_base(teff, logg, feh)).double().numpy()

    def _log_correction(self, teff: np.ndarray, logg: np.ndarray, feh: np.ndarray) -> torch.Tensor:
        """(N, W) float32 log10 correction: the node corrections interpolated trilinearly in
        (T_eff, log g, [M/H]), T_eff clipped to the table."""
        tab = self.table
        it, wt = axis_weights(tab.teff_grid, np.clip(teff, *tab.bounds["teff"]))
        i_f, wf = axis_weights(tab.feh_grid, np.clip(feh, *tab.bounds["feh"]))
        ig, wg = axis_weights(tab.logg_grid, np.clip(logg, *tab.bounds["logg"]))
        log_r = np.zeros((len(teff), len(self.band_names)))
        for a, wa in ((0, 1 - wf), (1, wf)):
            for b, wb in ((0, 1 - wt), (1, wt)):
                for c, wc in ((0, 1 - wg), (1, wg)):
                    log_r += (wa * wb * wc)[:, None] * self._log_r[i_f + a, it + b, ig + c]
        out = torch.from_numpy((log_r / np.log(10.0)).astype(np.float32)) @ self._basis32
        cal = self._log_calibration(teff)
        return out if cal is None else out + cal

    def surface_flux(self, teff: np.ndarray, logg: np.ndarray, feh: np.ndarray) -> np.ndarray:
        teff, logg, feh = self._prepare(teff, logg, feh)
        log_f = self._log_base(teff, logg, feh) + self._log_correction(teff, logg, feh)
        return torch.pow(10.0, log_f).numpy()


def make_library(name: str, **kwargs: object) -> SpectralLibrary:
    """Build a library by name: ``ck04``, ``bandflux``, ``phoenix``, ``phoenix_pm13``
    (``phoenix`` with the ``pm13`` colour calibration), ``planck``."""
    classes = {
        "ck04": CK04Library,
        "bandflux": BandFluxLibrary,
        "phoenix": MangledLibrary,
        "phoenix_pm13": functools.partial(MangledLibrary, calibration="pm13"),
        "planck": PlanckLibrary,
    }
    try:
        cls = classes[name]
    except KeyError:
        raise ValueError(
            f"unknown spectral library {name!r}; valid libraries are: {', '.join(classes)}"
        ) from None
    return cls(**kwargs)  # type: ignore[arg-type]

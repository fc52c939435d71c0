"""YSO model grids in sedfitter's model-directory format (Robitaille 2017; Richardson et al. 2024).

A model folder holds

* ``models.conf``: ``name``, ``logd_step``, ``aperture_dependent`` and ``version`` (2: the
  SEDs are in ``flux.fits``);
* ``flux.fits``: HDU 0 a validity flag per model (header ``DISTANCE`` in cm, ``NWAV``,
  ``NAP``), then ``MODEL_NAMES`` (``MODEL_NAME``), ``SPECTRAL_INFO`` (``WAVELENGTH``,
  ``FREQUENCY``), ``APERTURES`` (``APERTURE``, AU), ``VALUES`` (n_models, n_ap, n_wav) with a
  flux-density ``BUNIT`` and optionally ``UNCERTAINTIES``;
* ``parameters.fits`` or ``parameters.fits.gz``: ``MODEL_NAME`` plus one column per parameter;
* ``convolved/<FILTER>.fits``: HDU 0 header ``FILTWAV`` (µm) and a ``CONVOLVED FLUXES``
  table with ``MODEL_NAME``, ``TOTAL_FLUX`` and ``TOTAL_FLUX_ERR`` (n_models, n_ap) in mJy.

sedfitter stores wavelengths in increasing *frequency* order and its ``SEDCube.read`` flips
the second axis of the cube when they are not; :func:`write_sedfitter_models` therefore
writes increasing frequency, and :class:`SEDGrid` sorts by increasing wavelength on reading.

:class:`SEDGrid` looks models up in parameter space, nearest or interpolated (inverse-distance
weighting of log fluxes over the k nearest models in a normalised space: log10 for parameters
spanning more than a decade, linear otherwise), per aperture (log-linear between the grid's
apertures), and scales fluxes from the grid's distance to any other.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .paths import safe_name

__all__ = ["SEDGrid", "write_sedfitter_models"]

AU_CM = 1.495978707e13
PC_CM = 3.0856775814913673e18
_SKIP = {"MODEL_NAME", "scattering"}


def _read_fits(path: Path) -> Any:
    from astropy.io import fits

    try:
        hdul = fits.open(path, memmap=False)
        hdul.verify("exception")
        return hdul
    except Exception as err:  # astropy raises OSError, VerifyError, TypeError...
        raise ValueError(
            f"{path} is not a readable FITS file ({type(err).__name__}: {err}); re-download "
            "or re-write the grid"
        ) from None


def _read_conf(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: a sedfitter model folder needs models.conf (name, logd_step, "
            "aperture_dependent, version)"
        )
    out: dict[str, str] = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#")[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise ValueError(f"{path}:{i}: expected 'key = value', got {line!r}")
        k, v = (s.strip() for s in line.split("=", 1))
        out[k] = v
    if "version" not in out:
        raise ValueError(f"{path}: no 'version' key (2 for grids with flux.fits)")
    return out


class SEDGrid:
    """A sedfitter model folder in memory (see the module docstring)."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.conf: dict[str, str] = {}
        self.names = np.zeros(0, str)
        self.valid = np.zeros(0, bool)
        self.wav_um = np.zeros(0)
        self.apertures_au = np.zeros(0)
        self.flux_mjy = np.zeros((0, 0, 0), np.float32)
        self.distance_pc = 1000.0
        self.params: dict[str, np.ndarray] = {}
        self._tree: Any = None

    # -- reading -----------------------------------------------------------------------
    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> SEDGrid:
        """Read a model folder: models.conf, flux.fits, parameters.fits(.gz)."""
        import astropy.units as u
        from astropy.table import Table

        root = Path(path).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"YSO model grid folder {root} not found (set simulator.grid to a sedfitter "
                "model folder such as .../spubhmi, or leave it empty for the embedded model)"
            )
        self = cls()
        self.path = root
        self.conf = _read_conf(root / "models.conf")
        if self.conf["version"] != "2":
            raise ValueError(
                f"{root}/models.conf: version {self.conf['version']} grids (one file per "
                "model) are not supported; convert them to version 2 (flux.fits)"
            )
        flux_path = root / "flux.fits"
        if not flux_path.is_file():
            raise FileNotFoundError(f"{flux_path} is missing (version 2 grids keep SEDs there)")
        with _read_fits(flux_path) as hdul:
            need = ["MODEL_NAMES", "SPECTRAL_INFO", "VALUES"]
            missing = [h for h in need if h not in hdul]
            if missing or "DISTANCE" not in hdul[0].header:
                raise ValueError(
                    f"{flux_path}: missing HDUs {missing or ''} "
                    f"{'' if 'DISTANCE' in hdul[0].header else 'and header DISTANCE'}; "
                    "not a sedfitter SEDCube file"
                )
            self.distance_pc = float(hdul[0].header["DISTANCE"]) / PC_CM
            self.valid = np.asarray(hdul[0].data, bool).ravel()
            self.names = np.char.strip(
                np.asarray(hdul["MODEL_NAMES"].data["MODEL_NAME"]).astype(str)
            )
            spec = hdul["SPECTRAL_INFO"]
            wunit = u.Unit(spec.columns["WAVELENGTH"].unit or "micron")
            wav = (np.asarray(spec.data["WAVELENGTH"], np.float64) * wunit).to_value(u.micron)
            if "APERTURES" in hdul:
                ap = hdul["APERTURES"]
                aunit = u.Unit(ap.columns["APERTURE"].unit or "AU")
                self.apertures_au = (np.asarray(ap.data["APERTURE"], float) * aunit).to_value(u.AU)
            else:
                self.apertures_au = np.array([np.inf])
            vals = np.asarray(hdul["VALUES"].data, np.float64)
            bunit = u.Unit(hdul["VALUES"].header.get("BUNIT", "mJy"))
        shape = (len(self.names), len(self.apertures_au), len(wav))
        if vals.shape != shape:
            raise ValueError(
                f"{flux_path}: VALUES has shape {vals.shape}, expected (models, apertures, "
                f"wavelengths) = {shape}"
            )
        if len(self.valid) != len(self.names):
            self.valid = np.ones(len(self.names), bool)
        order = np.argsort(wav)  # increasing wavelength (sedfitter stores increasing ν)
        self.wav_um = wav[order]
        equiv = u.spectral_density(self.wav_um * u.micron)
        self.flux_mjy = (
            (vals[:, :, order] * bunit).to_value(u.mJy, equivalencies=equiv).astype(np.float32)
        )
        for fname in ("parameters.fits", "parameters.fits.gz"):
            if (root / fname).is_file():
                try:
                    t = Table.read(root / fname)
                except Exception as err:
                    raise ValueError(
                        f"{root / fname} is not a readable FITS table: {err}"
                    ) from None
                break
        else:
            raise FileNotFoundError(f"{root} has no parameters.fits or parameters.fits.gz")
        if "MODEL_NAME" not in t.colnames:
            raise ValueError(f"{root}/parameters.fits has no MODEL_NAME column")
        index = {str(n).strip(): i for i, n in enumerate(t["MODEL_NAME"])}
        absent = [n for n in self.names if n not in index]
        if absent:
            raise ValueError(
                f"{len(absent)} models of flux.fits are not in parameters.fits (e.g. {absent[0]})"
            )
        rows = np.array([index[n] for n in self.names])
        for c in t.colnames:
            if c in _SKIP or t[c].dtype.kind not in "fiu":
                continue
            self.params[c] = np.asarray(t[c], np.float64)[rows]
        return self

    @property
    def parameter_names(self) -> list[str]:
        return list(self.params)

    def convolved(self, filter_name: str) -> dict[str, Any]:
        """``convolved/<filter_name>.fits``: flux (n_models, n_ap) mJy aligned with the SEDs."""
        path = (self.path or Path(".")) / "convolved" / f"{safe_name(filter_name, 'filter')}.fits"
        if not path.is_file():
            have = (
                sorted(p.stem for p in path.parent.glob("*.fits")) if path.parent.is_dir() else []
            )
            raise FileNotFoundError(f"{path} not found; convolved filters here: {have}")
        from astropy.table import Table

        with _read_fits(path) as hdul:
            if "CONVOLVED FLUXES" not in hdul:
                raise ValueError(f"{path}: no 'CONVOLVED FLUXES' HDU")
            t = Table.read(hdul["CONVOLVED FLUXES"])
            wav = hdul[0].header.get("FILTWAV")
        flux = np.asarray(t["TOTAL_FLUX"], np.float64).reshape(len(t), -1)
        index = {str(n).strip(): i for i, n in enumerate(t["MODEL_NAME"])}
        rows = np.array([index.get(n, -1) for n in self.names])
        if np.any(rows < 0):
            raise ValueError(f"{path}: models of flux.fits are missing")
        return {"flux_mjy": flux[rows], "wavelength_um": wav}

    # -- parameter space ---------------------------------------------------------------
    def _space(self) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if self._tree is None:
            from scipy.spatial import cKDTree

            cols, logs = [], []
            for v in self.params.values():
                lg = bool(np.all(v > 0) and v.max() / v.min() > 10)
                cols.append(np.log10(v) if lg else v)
                logs.append(lg)
            x = np.stack(cols, 1) if cols else np.zeros((len(self.names), 0))
            lo, hi = x.min(0), x.max(0)
            span = np.where(hi > lo, hi - lo, 1.0)
            keep = np.nonzero(self.valid)[0]
            self._tree = (cKDTree((x[keep] - lo) / span), keep, lo, span, np.array(logs))
        return self._tree

    def _query(self, params: dict[str, Any], k: int, clip: bool) -> tuple[np.ndarray, np.ndarray]:
        tree, keep, lo, span, logs = self._space()
        names = self.parameter_names
        missing = [n for n in names if n not in params]
        if missing:
            raise ValueError(f"grid lookup needs parameters {missing}; the grid has {names}")
        cols = []
        for j, n in enumerate(names):
            v = np.atleast_1d(np.asarray(params[n], np.float64))
            if not np.all(np.isfinite(v)) or (logs[j] and np.any(v <= 0)):
                raise ValueError(
                    f"grid lookup: parameter {n!r} has non-finite or non-positive values"
                )
            cols.append(np.log10(v) if logs[j] else v)
        x = (np.stack(np.broadcast_arrays(*cols), 1) - lo) / span
        if not clip and (np.any(x < -1e-5) or np.any(x > 1 + 1e-5)):  # float32 θ
            j = int(np.nonzero(np.any((x < -1e-5) | (x > 1 + 1e-5), 0))[0][0])
            vals = self.params[names[j]]
            raise ValueError(
                f"grid lookup: {names[j]!r} outside the grid's range [{vals.min():.4g}, "
                f"{vals.max():.4g}] (pass clip=True to use the nearest edge)"
            )
        dist, idx = tree.query(np.clip(x, 0, 1), k=k)
        return np.atleast_2d(dist.T).T if k > 1 else dist[:, None], keep[
            np.atleast_2d(idx.T).T if k > 1 else idx[:, None]
        ]

    def _aperture_weights(self, aperture_au: np.ndarray, method: str) -> tuple[np.ndarray, ...]:
        ap = self.apertures_au
        a = np.atleast_1d(np.asarray(aperture_au, np.float64))
        if len(ap) == 1:
            z = np.zeros(len(a), int)
            return z, z, np.zeros(len(a))
        if np.any(~np.isfinite(a)) or np.any(a <= 0):
            raise ValueError("apertures must be finite and > 0 (AU)")
        la = np.log(np.clip(a, ap[0], ap[-1]))
        lg = np.log(ap)
        i = np.clip(np.searchsorted(lg, la, side="right") - 1, 0, len(ap) - 2)
        f = (la - lg[i]) / (lg[i + 1] - lg[i])
        if method == "nearest":
            i = np.where(f > 0.5, i + 1, i)
            f = np.zeros(len(a))
        return i, np.minimum(i + 1, len(ap) - 1), f

    def lookup(
        self,
        values: np.ndarray,
        params: dict[str, Any],
        aperture_au: np.ndarray | float,
        distance_pc: np.ndarray | float | None = None,
        method: str = "nearest",
        k: int = 8,
        clip: bool = False,
    ) -> np.ndarray:
        """Fluxes (N, ...) of ``values`` (n_models, n_ap, ...) at parameters, aperture and
        distance (None: the grid's own)."""
        if method not in ("nearest", "interp"):
            raise ValueError(f"method must be 'nearest' or 'interp', got {method!r}")
        dist, idx = self._query(
            params, 1 if method == "nearest" else min(k, len(self._space()[1])), clip
        )
        n = idx.shape[0]
        i0, i1, fa = self._aperture_weights(np.broadcast_to(aperture_au, (n,)), method)
        tail = (slice(None),) * (values.ndim - 2)
        floor = 1e-30

        def at(ap_index: np.ndarray) -> np.ndarray:
            v = values[idx, ap_index[:, None]][(...,) + tail]  # (N, k, ...)
            if idx.shape[1] == 1:
                return np.log(np.maximum(v[:, 0], floor))
            exact = dist[:, :1] < 1e-12
            w = np.where(exact, (dist < 1e-12).astype(float), 1 / np.maximum(dist, 1e-12) ** 2)
            w /= w.sum(1, keepdims=True)
            w = w.reshape(w.shape + (1,) * (v.ndim - 2))
            return np.sum(w * np.log(np.maximum(v, floor)), axis=1)

        shape = (n,) + (1,) * (values.ndim - 2)
        out = np.exp(at(i0) * (1 - fa).reshape(shape) + at(i1) * fa.reshape(shape))
        if distance_pc is not None:
            d = np.broadcast_to(np.asarray(distance_pc, np.float64), (n,))
            if np.any(~np.isfinite(d)) or np.any(d <= 0):
                raise ValueError("distance must be finite and > 0 (pc)")
            out = out * ((self.distance_pc / d) ** 2).reshape(shape)
        return out

    def sed(
        self, params: dict[str, Any], aperture_au: Any, distance_pc: Any = None, **kw: Any
    ) -> np.ndarray:
        """SEDs (N, n_wav) in mJy on :attr:`wav_um` (see :meth:`lookup`)."""
        return self.lookup(self.flux_mjy, params, aperture_au, distance_pc, **kw)

    # -- simulation --------------------------------------------------------------------
    def sample_parameters(
        self, n: int, rng: np.random.Generator, aperture: bool = True
    ) -> dict[str, np.ndarray]:
        """Uniform draws of valid grid models (R17 grids sample the prior) and log-uniform
        apertures."""
        keep = np.nonzero(self.valid)[0]
        if len(keep) == 0:
            raise ValueError(f"grid {self.path} has no valid models")
        pick = keep[rng.integers(0, len(keep), n)]
        out = {k: v[pick] for k, v in self.params.items()}
        if aperture:
            ap = self.apertures_au
            lo, hi = (ap[0], ap[-1]) if np.isfinite(ap[0]) else (100.0, 1e6)
            out["aperture"] = 10 ** rng.uniform(np.log10(lo), np.log10(hi), n)
        return out

    def photometry(self, bands: list[str]) -> Any:
        from .bandpasses import Photometry

        return Photometry(bands, self.wav_um * 1e4)

    def magnitudes(self, th: dict[str, np.ndarray], bands: list[str], phot: Any) -> np.ndarray:
        """Magnitudes of the nearest grid SEDs at distance and behind interstellar A_V."""
        import torch

        from .dust import dust_opacity
        from .units import C_AA_S

        ap = th.get("aperture", np.full(len(th["distance"]), self.apertures_au[-1]))
        fnu = self.sed(th, ap, th["distance"]) * 1e-26  # erg/s/cm²/Hz
        wave_aa = self.wav_um * 1e4
        flam = fnu * C_AA_S / wave_aa**2
        a = dust_opacity(wave_aa, 3.1)
        flam = flam * 10 ** (-0.4 * np.asarray(th["av"])[:, None] * a[None])
        return phot.magnitudes(torch.from_numpy(flam.astype(np.float32)))


def write_sedfitter_models(
    path: str | os.PathLike[str],
    names: list[str] | np.ndarray,
    parameters: dict[str, np.ndarray],
    wav_um: np.ndarray,
    apertures_au: np.ndarray,
    flux_mjy: np.ndarray,
    distance_pc: float = 1000.0,
    convolved: dict[str, tuple[np.ndarray, float]] | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a sedfitter model folder (version 2, see the module docstring).

    Args:
        names: (n_models,) unique model names.
        parameters: column → (n_models,) values (written to parameters.fits).
        wav_um: (n_wav,) wavelengths in µm (any order; written in increasing frequency).
        apertures_au: (n_ap,) increasing aperture radii in AU.
        flux_mjy: (n_models, n_ap, n_wav) flux densities at ``distance_pc``, in mJy.
        convolved: filter name → ((n_models, n_ap) mJy, filter wavelength µm).
        overwrite: Replace an existing folder (otherwise an existing folder is an error).
    """
    from astropy.io import fits
    from astropy.table import Table

    root = Path(path)
    for band in convolved or {}:
        safe_name(band, "filter")  # before anything is written
    if root.exists():
        if not overwrite:
            raise FileExistsError(f"{root} exists; pass overwrite=True to replace it")
        shutil.rmtree(root)
    names = np.asarray(names).astype(str)
    wav = np.asarray(wav_um, np.float64)
    flux = np.asarray(flux_mjy, np.float64)
    ap = np.asarray(apertures_au, np.float64)
    if flux.shape != (len(names), len(ap), len(wav)):
        raise ValueError(
            f"flux_mjy has shape {flux.shape}, expected (models, apertures, wavelengths) = "
            f"{(len(names), len(ap), len(wav))}"
        )
    if len(set(names)) != len(names):
        raise ValueError("model names must be unique")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.tmp-"))
    try:
        (tmp_root / "convolved").mkdir()
        conf = f"name = {name or root.name}\nlogd_step = 0.02\naperture_dependent = yes\n"
        (tmp_root / "models.conf").write_text(conf + "version = 2\n")
        order = np.argsort(-wav)  # increasing frequency
        c_um = 2.99792458e14  # µm/s
        hdus = [fits.PrimaryHDU(np.ones(len(names), np.int32))]
        hdus[0].header["DISTANCE"] = (
            distance_pc * PC_CM,
            "Distance assumed for the values, in cm",
        )
        hdus[0].header["NWAV"] = len(wav)
        hdus[0].header["NAP"] = len(ap)
        t = Table({"MODEL_NAME": np.asarray(names, "S")})
        h = fits.table_to_hdu(t)
        h.name = "MODEL_NAMES"
        hdus.append(h)
        t = Table({"WAVELENGTH": wav[order], "FREQUENCY": c_um / wav[order]})
        t["WAVELENGTH"].unit, t["FREQUENCY"].unit = "um", "Hz"
        h = fits.table_to_hdu(t)
        h.name = "SPECTRAL_INFO"
        hdus.append(h)
        t = Table({"APERTURE": ap})
        t["APERTURE"].unit = "AU"
        h = fits.table_to_hdu(t)
        h.name = "APERTURES"
        hdus.append(h)
        for hname, data in (("VALUES", flux[:, :, order]), ("UNCERTAINTIES", np.zeros_like(flux))):
            h = fits.ImageHDU(data.astype(np.float32))
            h.header["BUNIT"] = "mJy"
            h.name = hname
            hdus.append(h)
        fits.HDUList(hdus).writeto(tmp_root / "flux.fits")
        cols = {"MODEL_NAME": np.asarray(names, "S")}
        cols.update({k: np.asarray(v, np.float64) for k, v in parameters.items()})
        Table(cols).write(tmp_root / "parameters.fits")
        for band, (fl, fw) in (convolved or {}).items():
            safe_name(band, "filter")
            fl = np.asarray(fl, np.float64).reshape(len(names), len(ap))
            h0 = fits.PrimaryHDU()
            h0.header["FILTWAV"] = float(fw)
            h0.header["NMODELS"] = len(names)
            h0.header["NAP"] = len(ap)
            t = Table(
                {
                    "MODEL_NAME": np.asarray(names, "S"),
                    "TOTAL_FLUX": fl,
                    "TOTAL_FLUX_ERR": np.zeros_like(fl),
                }
            )
            h1 = fits.table_to_hdu(t)
            h1.name = "CONVOLVED FLUXES"
            t = Table({"APERTURE": ap})
            h2 = fits.table_to_hdu(t)
            h2.name = "APERTURES"
            fits.HDUList([h0, h1, h2]).writeto(tmp_root / "convolved" / f"{band}.fits")
        os.replace(tmp_root, root)
    finally:
        if tmp_root.exists():
            shutil.rmtree(tmp_root)
    return root

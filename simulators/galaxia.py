"""Galaxia mock catalogues as a dasbi simulator, and the adapter that reads them.

Galaxia (Sharma et al. 2011) writes EBF files (read with ``ebfpy``); galaxia-ananke (Thob et
al. 2024) converts them to HDF5, either with one dataset per column at the root or in vaex's
layout (``/table/columns/<name>/data``; galaxia-ananke's ``/StarCatalog/columns/<name>/data``).
:func:`read_galaxia` reads all of them. The columns used here follow Galaxia's conventions:

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
smass      initial mass [M_sun] (``minit`` in ananke)   ``mass_initial``
glon/glat  Galactic longitude / latitude [deg]          ``l``, ``b``
exbv_*     E(B-V) at the star (``exbv_solar`` first)    ``ebv`` (and ``av`` =
                                                        3.1 E(B-V) for reference)
=========  ===========================================  ======================

(*) R/R_sun = √(L/L_sun) (5772 K / T_eff)² from L = 4πR²σT⁴.

:class:`GalaxiaStars` (``dasbi simulate --set simulator.name=galaxia --set
simulator.source=<file>``) observes a mock catalogue's stars with the *same* path as
``field_stars``: each star's initial mass, age and [Fe/H] go through field_stars' isochrones
(or, with ``stellar_params: catalogue``, Galaxia's own T_eff, log g and L are kept), its
E(B-V) becomes A_V = R(V) E(B-V) with the star's own R(V) (or, with ``dust: model``,
field_stars' dust model or 3D map is used), and the atmospheres, photometry, parallaxes,
spectra, magnitude limit and missingness are field_stars'. The dataset has the same nodes,
so a model trained on the embedded Milky Way can be tested on a Galaxia mock and back.
Rows are stars drawn at random from the catalogue (with replacement); :meth:`catalogue`
observes every star once.

:func:`run_ananke` is the calling code for users who have galaxia-ananke (>= 0.8) installed:
it runs ``galaxia_ananke.make_survey_from_particles(particles, kernels, ...)`` and reads the
partition files it writes. galaxia-ananke does not install without network access (its build
downloads Galaxia), so the tests run the call against a stand-in with 0.8's signature and
output layout, and against the real package where it is installed.

References:
    Sharma, S. et al. (2011). ApJ 730, 3.
    Thob, A. C. R. et al. (2024). JOSS 9, 6234 (py-ananke).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from .base import observation_columns
from .stars import FieldStars, FieldStarsConfig

__all__ = ["GalaxiaConfig", "GalaxiaStars", "read_galaxia", "run_ananke", "to_field_star_theta"]

REQUIRED = ("teff", "grav", "lum", "feh", "rad")
T_SUN = 5772.0


def _columns(f: h5py.File) -> dict[str, h5py.Dataset]:
    for group in ("table", "StarCatalog"):  # vaex; galaxia-ananke's group
        if group in f and "columns" in f[group]:
            cols = f[group]["columns"]
            return {k: cols[k]["data"] for k in cols if "data" in cols[k]}
    return {k: v for k, v in f.items() if isinstance(v, h5py.Dataset)}


def _ebf_columns(path: Path) -> dict[str, np.ndarray]:
    try:
        import ebf
    except ImportError:
        raise ImportError(
            f"{path} is an EBF file; reading it needs ebfpy (pip install ebfpy)"
        ) from None
    try:
        data = ebf.read(str(path), "/")
    except Exception as err:  # ebfpy raises bare RuntimeErrors and struct errors
        raise ValueError(f"cannot read {path} as EBF Galaxia output: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the EBF file holds no table of columns")
    return {str(k).lstrip("/"): np.asarray(v) for k, v in data.items()}


def _is_ebf(path: Path) -> bool:
    if path.suffix.lower() == ".ebf":
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(8) != b"\x89HDF\r\n\x1a\n" and path.suffix.lower() not in (
                ".h5",
                ".hdf5",
                ".hdf",
            )
    except OSError:
        return False


def read_galaxia(path: str | os.PathLike, max_rows: int | None = None) -> dict[str, np.ndarray]:
    """Read a Galaxia EBF or galaxia-ananke HDF5 catalogue into dasbi's stellar parameters.

    Args:
        path: The EBF (``.ebf``) or HDF5 file.
        max_rows: Read at most this many rows.

    Returns:
        ``teff, logg, feh, radius, distance, ebv, av, log_age, mass, mass_initial, l, b`` (those
        the file has) plus every photometric column ``<system>_<band>`` as found.

    Raises:
        ValueError: If the file cannot be read or lacks required columns.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"Galaxia catalogue {path} does not exist")
    if _is_ebf(path):
        return _convert(path, _ebf_columns(path), max_rows)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"cannot read {path} as HDF5 Galaxia output: {err}") from None
    with f:
        return _convert(path, _columns(f), max_rows)


def _convert(path: Path, cols: dict[str, Any], max_rows: int | None) -> dict[str, np.ndarray]:
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise ValueError(f"{path} lacks the Galaxia columns {missing}; found {sorted(cols)[:20]}")
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
    if ebv:
        out["ebv"] = get(ebv)
        out["av"] = 3.1 * out["ebv"]
    else:
        out["av"] = np.zeros_like(teff)
    for src, dst in (
        ("age", "log_age"),
        ("mact", "mass"),
        ("smass", "mass_initial"),
        ("minit", "mass_initial"),
        ("glon", "l"),
        ("glat", "b"),
    ):
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
    particles: dict[str, Any], kernels: np.ndarray, **kwargs: Any
) -> dict[str, np.ndarray]:
    """Run galaxia-ananke (>= 0.8) on simulation particles and read the mock catalogue.

    Args:
        particles: Particle arrays as galaxia-ananke expects (positions, velocities, initial
            mass, age, metallicities, …; ``galaxia_ananke.make_dummy_particles_input()``
            shows the layout).
        kernels: (N,) or (N, 2) kernel lengths of the particles (position or phase space).
        **kwargs: Passed to ``galaxia_ananke.make_survey_from_particles`` (``photo_sys``,
            ``surveyname``, ``fsample``, …).

    Returns:
        :func:`read_galaxia` of every partition file the survey wrote, concatenated.

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
    output = galaxia_ananke.make_survey_from_particles(particles, kernels, **kwargs)
    # one HDF5 file per partition: <output_dir>/<output_name>.<partition>.h5
    files = sorted(Path(output.output_dir).glob(f"{output.output_name}.*.h5"))
    if not files:
        raise ValueError(
            f"galaxia-ananke wrote no catalogue {output.output_name}.*.h5 in {output.output_dir}"
        )
    parts = [read_galaxia(f) for f in files]
    keys = set.intersection(*(set(p) for p in parts))
    return {k: np.concatenate([p[k] for p in parts]) for k in sorted(keys)}


@dataclass
class GalaxiaConfig(FieldStarsConfig):
    """Options of :class:`GalaxiaStars`: field_stars' options (its survey, atmosphere, dust
    law, R(V), magnitude limit and missingness; its cone and Galactic model are unused) and
    the catalogue."""

    source: str | None = field(
        default=None,
        metadata={"help": "the Galaxia EBF or galaxia-ananke / ananke HDF5 catalogue"},
    )
    stellar_params: Literal["isochrone", "catalogue"] = field(
        default="isochrone",
        metadata={
            "help": "isochrone: T_eff, log g and radius from each star's initial mass, age and "
            "[Fe/H] through field_stars' isochrones (the same path); catalogue: Galaxia's own"
        },
    )
    dust: Literal["catalogue", "model"] = field(
        default="catalogue",
        metadata={
            "help": "catalogue: A_V = R(V) E(B-V) from the catalogue's exbv_* column; model: "
            "field_stars' dust (dust_kappa, or dust_map for a 3D map)"
        },
    )
    max_rows: int | None = field(
        default=None, metadata={"ge": 1, "help": "read at most this many catalogue rows"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.source:
            raise ValueError(
                "galaxia needs the catalogue: set simulator.source to a Galaxia .ebf or a "
                "galaxia-ananke/ananke .h5 file"
            )


class GalaxiaStars(FieldStars):
    """The stars of a Galaxia mock catalogue observed as ``field_stars`` observes its own
    (module docstring)."""

    name = "galaxia"
    config_class = GalaxiaConfig

    def __init__(self, config: Any | None = None) -> None:
        super().__init__(config)
        c = self.config
        self.stars = read_galaxia(c.source, c.max_rows)
        n = len(self.stars["teff"])
        if n == 0:
            raise ValueError(f"{c.source} holds no stars")
        need: list[str] = []
        if c.stellar_params == "isochrone":
            need += ["log_age"]
            if "mass_initial" not in self.stars and "mass" not in self.stars:
                need.append("smass or mact")
        if c.dust == "catalogue" and "ebv" not in self.stars:
            need.append("exbv_solar, exbv_schlegel or exbv_schlegel_inf")
        if c.dust == "model":
            need += [k for k in ("l", "b") if k not in self.stars]
        missing = [k for k in need if k not in self.stars]
        if missing:
            raise ValueError(
                f"{c.source} lacks {missing} for stellar_params: {c.stellar_params}, dust: "
                f"{c.dust}; use stellar_params: catalogue or dust: model"
            )
        if c.dust == "model" and not c.dust_map:
            from .galaxy import ExponentialDust

            self.dust = ExponentialDust(kappa_mag_per_kpc=c.dust_kappa)  # any sight line

    def _population(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        return self._rows(rng.integers(0, len(self.stars["teff"]), n))

    def _rows(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        c, st = self.config, self.stars
        out = {"distance": st["distance"][idx], "feh": st["feh"][idx]}
        for key in ("l", "b"):
            if key in st:
                out[key] = st[key][idx]
        if c.stellar_params == "catalogue":
            out.update({k: st[k][idx] for k in ("teff", "logg", "radius")})
        else:
            out["mass"] = st.get("mass_initial", st.get("mass"))[idx]
            out["log_age"] = st["log_age"][idx]
        if c.dust == "catalogue":
            out["ebv"] = st["ebv"][idx]
        return out

    def _draw(self, n: int, rng: np.random.Generator) -> Any:
        try:
            return super()._draw(n, rng)
        except RuntimeError as err:
            raise RuntimeError(
                f"galaxia: {err}; the catalogue {self.config.source} has too few stars "
                f"brighter than G = {self.config.mag_limit} on the isochrones and library"
            ) from None

    def catalogue(self, rng: np.random.Generator) -> Any:
        """Every star of the catalogue observed once (those off the isochrones or the
        library, or fainter than ``mag_limit``, dropped), with θ, as an astropy Table."""
        from astropy.table import Table

        idx = np.arange(len(self.stars["teff"]))
        th = self._candidates(len(idx), rng, self._rows(idx))
        flux = self.sed.flux(
            th["teff"], th["logg"], th["feh"], th["radius"], th["distance"], th["av"], th["rv"]
        )
        mags = self.sed.magnitudes(flux)
        keep = mags[:, self._g] <= self.config.mag_limit
        th = {k: v[keep] for k, v in th.items()}
        obs = self._observe(th, flux[keep], mags[keep], rng)
        t = Table({f"true_{k}": v for k, v in th.items()})
        observation_columns(t, obs, self.bands)
        t.meta["source"] = str(self.config.source)
        return t

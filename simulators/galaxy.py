r"""An analytic Milky Way: thin disc, thick disc, halo and bulge, plus a 3D dust model.

Densities, initial mass functions (IMF), ages, metallicities and velocity dispersions follow
the Besançon model of Robin et al. (2003) with the parameters tabulated by Sharma et al.
(2011, Galaxia, Table 1); Rybizki et al. (2018, Galaxia_wrap) use the same set. Positions
are Galactocentric cylindrical (R, z) in pc, the Sun at R_0 = 8000 pc, z_⊙ = 15 pc.

* **Thin disc**, seven age bins with Einasto profiles in :math:`a^2 = R^2 + z^2/\epsilon^2`:
  for 0-0.15 Gyr :math:`\rho \propto e^{-(a/h_+)^2} - e^{-(a/h_-)^2}` with h_+ = 5000,
  h_- = 3000 pc; older bins :math:`\rho \propto e^{-\sqrt{0.25 + a^2/h_+^2}} -
  e^{-\sqrt{0.25 + a^2/h_-^2}}` with h_+ = 2530, h_- = 1320 pc. Each bin is normalised to
  its local mass density ρ_0 at the Sun. IMF dN/dm ∝ m^-1.6 (m < 1) and m^-3 (m > 1),
  constant star formation within a bin, [Fe/H] per bin with a -0.07 dex/kpc radial gradient.
* **Thick disc**: exponential in R (h_R = 2500 pc) and in z (h_z = 800 pc) with a parabolic
  core below x_l = 400 pc; age 11 Gyr, [Fe/H] = -0.78 ± 0.30, IMF m^-0.5 below 1 M_sun
  (Salpeter above).
* **Halo**: power law :math:`\rho_0 (a/R_0)^{-2.44}` with flattening ε = 0.76 and a core of
  500 pc; age 14 Gyr, [Fe/H] = -1.78 ± 0.50, IMF as the thick disc.
* **Bulge**: triaxial boxy Gaussian :math:`\exp(-r_s^2/2)`, :math:`r_s^2 = \sqrt{
  ((x/x_0)^2 + (y/y_0)^2)^2 + (z/z_0)^4}`, x_0 = 1590, y_0 = z_0 = 424 pc, bar angle 11.1°,
  cut-off beyond R_c = 2540 pc; age 10 Gyr, [Fe/H] = 0.0 ± 0.4, IMF m^-1 below 0.7 M_sun
  and m^-2.35 above.
* **Dust**: an exponential disc, :math:`dA_V/ds = \kappa\,e^{-(R-R_0)/h_R - |z|/h_z}` with
  κ = 0.7 mag/kpc in the plane at the Sun, h_R = 3000 pc, h_z = 110 pc (Drimmel & Spergel
  2001-like scales), or a user map ``A_V(l, b, d)``.

Simplifications (documented, not hidden): no warp or flare of the disc, no spiral arms,
single-age thick disc/halo/bulge, Gaussian metallicity and velocity distributions, and the
asymmetric drift of Robin et al. as a fixed lag per population.

References:
    Robin, A. C. et al. (2003). A&A 409, 523.
    Sharma, S. et al. (2011). ApJ 730, 3 (Galaxia).
    Rybizki, J. et al. (2018). PASP 130, 074101.
    Drimmel, R. & Spergel, D. N. (2001). ApJ 556, 181.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "COMPONENTS",
    "sample_stars",
    "ExponentialDust",
    "GridDustMap",
    "GalaxyModel",
    "Population",
    "imf_mean_mass",
    "sample_imf",
]

R_SUN = 8000.0  # pc
Z_SUN = 15.0  # pc
M_MIN, M_MAX = 0.07, 100.0


@dataclass(frozen=True)
class Population:
    """One stellar population of the model."""

    name: str
    rho0: float  # local mass density at the Sun [M_sun / pc^3]
    age_gyr: tuple[float, float]  # uniform age range
    feh_mean: float
    feh_sigma: float
    imf: tuple[tuple[float, float], ...]  # (upper mass, slope alpha) of dN/dm ∝ m^-alpha
    sigma_uvw: tuple[float, float, float]  # km/s
    lag: float  # asymmetric drift, km/s
    kind: str  # thin, thick, halo, bulge
    eps: float = 1.0  # axis ratio for the thin disc and halo
    feh_gradient: float = 0.0  # dex / pc


_THIN_IMF = ((1.0, 1.6), (M_MAX, 3.0))
# Robin et al.'s m^-0.5 describes the surviving low-mass stars of old populations; above
# 1 M_sun (stars that have since died or evolved) we continue with Salpeter's slope
_OLD_IMF = ((1.0, 0.5), (M_MAX, 2.35))
_THIN = [
    # age range, rho0, eps, [Fe/H] mean, sigma, (σU, σV, σW), lag
    ((0.0, 0.15), 4.0e-3, 0.0140, 0.01, 0.12, (16.7, 10.8, 6.0), 0.0),
    ((0.15, 1.0), 7.9e-3, 0.0268, 0.03, 0.12, (19.8, 12.8, 8.0), 3.5),
    ((1.0, 2.0), 6.2e-3, 0.0375, 0.03, 0.10, (27.2, 17.6, 10.0), 3.1),
    ((2.0, 3.0), 4.0e-3, 0.0551, 0.01, 0.11, (30.2, 19.5, 13.2), 5.8),
    ((3.0, 5.0), 5.8e-3, 0.0696, -0.07, 0.18, (36.7, 23.7, 15.8), 7.3),
    ((5.0, 7.0), 4.9e-3, 0.0785, -0.14, 0.17, (43.1, 27.8, 17.4), 10.8),
    ((7.0, 10.0), 6.6e-3, 0.0791, -0.37, 0.20, (43.1, 27.8, 17.5), 14.8),
]

COMPONENTS: list[Population] = [
    Population(f"thin{i + 1}", rho, age, fe, sfe, _THIN_IMF, uvw, lag, "thin", eps, -7e-5)
    for i, (age, rho, eps, fe, sfe, uvw, lag) in enumerate(_THIN)
] + [
    Population(
        "thick", 1.34e-3, (11.0, 11.0), -0.78, 0.30, _OLD_IMF, (67.0, 51.0, 42.0), 53.0, "thick"
    ),
    Population(
        "halo",
        9.32e-6,
        (14.0, 14.0),
        -1.78,
        0.50,
        _OLD_IMF,
        (131.0, 106.0, 85.0),
        226.0,
        "halo",
        eps=0.76,
    ),
    Population(
        "bulge",
        0.0,
        (10.0, 10.0),
        0.0,
        0.40,
        ((0.7, 1.0), (M_MAX, 2.35)),
        (113.0, 115.0, 100.0),
        79.0,
        "bulge",
    ),
]
BULGE_N0 = 13.70  # stars / pc^3 at the bulge centre (Robin et al. 2003)


# -- IMF ----------------------------------------------------------------------------------
def _imf_pieces(
    imf: tuple[tuple[float, float], ...], m_lo: float, m_hi: float
) -> list[tuple[float, float, float, float]]:
    """Continuous broken power law as (lo, hi, alpha, amplitude) segments in [m_lo, m_hi].

    ``imf`` lists (upper mass, alpha) of dN/dm = A_i m^-alpha_i from M_MIN (or ``m_lo``, if
    lower: brown dwarfs) upwards; the amplitudes make dN/dm continuous at the breaks.
    """
    pieces, lo, amp = [], min(M_MIN, m_lo), 1.0
    for k, (hi, alpha) in enumerate(imf):
        seg_lo, seg_hi = max(lo, m_lo), min(hi, m_hi)
        if seg_hi > seg_lo:
            pieces.append((seg_lo, seg_hi, alpha, amp))
        if k + 1 < len(imf):
            amp = amp * hi ** (-alpha) / hi ** (-imf[k + 1][1])
        lo = hi
    return pieces


def _power_integral(lo: float, hi: float, p: float) -> float:
    """∫ m^p dm."""
    if abs(p + 1) < 1e-12:
        return float(np.log(hi / lo))
    return float((hi ** (p + 1) - lo ** (p + 1)) / (p + 1))


def imf_number_fraction(
    imf: tuple[tuple[float, float], ...], m_lo: float, m_hi: float = M_MAX
) -> float:
    """Fraction of stars (by number) with mass in [m_lo, m_hi]."""
    total = sum(
        a * _power_integral(lo, hi, -al) for lo, hi, al, a in _imf_pieces(imf, M_MIN, M_MAX)
    )
    part = sum(a * _power_integral(lo, hi, -al) for lo, hi, al, a in _imf_pieces(imf, m_lo, m_hi))
    return part / total


def imf_mean_mass(imf: tuple[tuple[float, float], ...]) -> float:
    """Mean stellar mass [M_sun] of the IMF on [M_MIN, M_MAX]."""
    pieces = _imf_pieces(imf, M_MIN, M_MAX)
    num = sum(a * _power_integral(lo, hi, -al) for lo, hi, al, a in pieces)
    mass = sum(a * _power_integral(lo, hi, 1 - al) for lo, hi, al, a in pieces)
    return mass / num


def sample_imf(
    imf: tuple[tuple[float, float], ...],
    n: int,
    rng: np.random.Generator,
    m_lo: float = M_MIN,
    m_hi: float = M_MAX,
) -> np.ndarray:
    """Draw n masses from the broken power law restricted to [m_lo, m_hi]."""
    pieces = _imf_pieces(imf, m_lo, m_hi)
    weights = np.array([a * _power_integral(lo, hi, -al) for lo, hi, al, a in pieces])
    which = rng.choice(len(pieces), size=n, p=weights / weights.sum())
    u = rng.random(n)
    out = np.empty(n)
    for k, (lo, hi, al, _) in enumerate(pieces):
        sel = which == k
        p = 1 - al
        if abs(p) < 1e-12:
            out[sel] = lo * (hi / lo) ** u[sel]
        else:
            out[sel] = (lo**p + u[sel] * (hi**p - lo**p)) ** (1 / p)
    return out


# -- densities ----------------------------------------------------------------------------
def _thin_shape(R: np.ndarray, z: np.ndarray, pop: Population) -> np.ndarray:
    a2 = R**2 + (z / pop.eps) ** 2
    if pop.age_gyr[1] <= 0.15:
        hp, hm = 5000.0, 3000.0
        return np.exp(-a2 / hp**2) - np.exp(-a2 / hm**2)
    hp, hm = 2530.0, 1320.0
    return np.exp(-np.sqrt(0.25 + a2 / hp**2)) - np.exp(-np.sqrt(0.25 + a2 / hm**2))


def _thick_shape(R: np.ndarray, z: np.ndarray) -> np.ndarray:
    hR, hz, xl = 2500.0, 800.0, 400.0
    az = np.abs(z)
    inner = 1 - az**2 / (hz * xl * (2 + xl / hz))
    outer = np.exp(xl / hz) / (1 + xl / (2 * hz)) * np.exp(-az / hz)
    return np.exp(-(R - R_SUN) / hR) * np.where(az <= xl, inner, outer)


def _halo_shape(R: np.ndarray, z: np.ndarray, pop: Population) -> np.ndarray:
    a = np.sqrt(R**2 + (z / pop.eps) ** 2)
    return (np.maximum(a, 500.0) / R_SUN) ** -2.44


def _bulge_density(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Stars / pc³ of the bulge; x, y, z Galactocentric with x towards the Sun."""
    alpha = np.deg2rad(11.1)
    xb = x * np.cos(alpha) + y * np.sin(alpha)
    yb = -x * np.sin(alpha) + y * np.cos(alpha)
    x0, y0, z0, rc = 1590.0, 424.0, 424.0, 2540.0
    rs2 = np.sqrt(((xb / x0) ** 2 + (yb / y0) ** 2) ** 2 + (z / z0) ** 4)
    rho = BULGE_N0 * np.exp(-0.5 * rs2)
    R = np.hypot(x, y)
    return np.where(R > rc, rho * np.exp(-0.5 * ((R - rc) / 500.0) ** 2), rho)


def heliocentric_to_galactocentric(
    l_deg: np.ndarray, b_deg: np.ndarray, d_pc: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, z) in pc, x from the Galactic centre towards the Sun."""
    lr, br = np.deg2rad(l_deg), np.deg2rad(b_deg)
    xs = d_pc * np.cos(br) * np.cos(lr)
    ys = d_pc * np.cos(br) * np.sin(lr)
    zs = d_pc * np.sin(br)
    return R_SUN - xs, ys, zs + Z_SUN


@dataclass
class ExponentialDust:
    """dA_V/ds = κ exp(-(R - R_0)/h_R - |z|/h_z), integrated along the line of sight."""

    kappa_mag_per_kpc: float = 0.7
    h_r: float = 3000.0
    h_z: float = 110.0

    def av(
        self, l_deg: np.ndarray, b_deg: np.ndarray, d_pc: np.ndarray, steps: int = 64
    ) -> np.ndarray:
        """A_V to distance d (trapezoid on ``steps`` points along each sight line)."""
        l_deg, b_deg, d_pc = np.broadcast_arrays(l_deg, b_deg, d_pc)
        s = np.linspace(0.0, 1.0, steps)[None, :] * d_pc[..., None]
        x, y, z = heliocentric_to_galactocentric(l_deg[..., None], b_deg[..., None], s)
        R = np.hypot(x, y)
        dens = (
            self.kappa_mag_per_kpc
            / 1000.0
            * np.exp(-(R - R_SUN) / self.h_r - np.abs(z) / self.h_z)
        )
        return np.trapezoid(dens, s, axis=-1)

    def grid(
        self,
        l_range: tuple[float, float],
        b_range: tuple[float, float],
        d_max: float,
        n_l: int = 41,
        n_b: int | None = None,
        n_dist: int = 257,
        steps: int = 4096,
    ) -> GridDustMap:
        """Tabulates cumulative A_V on an (l, b, d) grid covering a sky region.

        Sight lines are integrated once on ``steps`` log-spaced points (1 pc to d_max) and
        stored at ``n_dist`` distances, so a star's A_V costs one trilinear interpolation
        instead of an integral. ``n_b`` defaults to 41, or to a 0.05° spacing (at most 401
        rows) when the region comes within 10° of the plane, where A_V changes quickly with
        latitude. Used by :class:`~simulators.stars.FieldStars` for cones of radius ≤ 10°;
        tested against :meth:`av` to 1 % (0.5 % away from the plane).
        """
        if n_b is None:
            near_plane = b_range[0] < 10.0 and b_range[1] > -10.0
            n_b = int(np.clip(np.ceil((b_range[1] - b_range[0]) / 0.05) + 1, 41, 401))
            n_b = n_b if near_plane else 41
        ls = np.linspace(*l_range, n_l)
        bs = np.linspace(*b_range, n_b)
        s = np.concatenate([[0.0], np.geomspace(1.0, d_max, steps)])
        d = np.concatenate([[0.0], np.geomspace(1.0, d_max, n_dist - 1)])
        idx = np.clip(np.searchsorted(s, d), 0, len(s) - 1)  # store at the nodes of s
        ds = np.diff(s)
        out = np.empty((n_l, n_b, n_dist))
        for i, lv in enumerate(ls):  # one longitude row at a time bounds the memory
            x, y, z = heliocentric_to_galactocentric(
                np.full((n_b, 1), lv), bs[:, None], s[None, :]
            )
            dens = (
                self.kappa_mag_per_kpc
                / 1000.0
                * np.exp(-(np.hypot(x, y) - R_SUN) / self.h_r - np.abs(z) / self.h_z)
            )
            cum = np.zeros_like(dens)
            np.cumsum(0.5 * (dens[:, 1:] + dens[:, :-1]) * ds, axis=-1, out=cum[:, 1:])
            out[i] = cum[:, idx]
        return GridDustMap(ls, bs, s[idx], out)


class GridDustMap:
    """A user-supplied 3D dust map: cumulative A_V on a regular (l, b, distance) grid.

    Values between grid points are interpolated trilinearly
    (``scipy.interpolate.RegularGridInterpolator``). Longitudes are wrapped into the grid's
    range; a query outside the grid in b or distance raises :class:`ValueError`, with
    ``clip=True`` it is clipped to the edge instead.

    Args:
        l_deg: (nl,) increasing Galactic longitudes [deg].
        b_deg: (nb,) increasing Galactic latitudes [deg].
        d_pc: (nd,) increasing distances [pc], usually starting at 0.
        av: (nl, nb, nd) cumulative A_V [mag] to each distance (non-decreasing in d).
        clip: Clip out-of-grid queries instead of raising.
    """

    def __init__(
        self,
        l_deg: np.ndarray,
        b_deg: np.ndarray,
        d_pc: np.ndarray,
        av: np.ndarray,
        clip: bool = False,
    ) -> None:
        from scipy.interpolate import RegularGridInterpolator

        axes = {"l": l_deg, "b": b_deg, "distance": d_pc}
        axes = {k: np.asarray(v, np.float64) for k, v in axes.items()}
        av = np.asarray(av, np.float64)
        for k, v in axes.items():
            if v.ndim != 1 or len(v) < 2 or not np.all(np.diff(v) > 0):
                raise ValueError(
                    f"dust map axis {k!r} must be 1-D, strictly increasing, with >= 2 points"
                )
            if not np.all(np.isfinite(v)):
                raise ValueError(f"dust map axis {k!r} contains NaN or inf")
        shape = tuple(len(v) for v in axes.values())
        if av.shape != shape:
            raise ValueError(
                f"dust map 'av' has shape {av.shape}; expected (len(l), len(b), len(distance))"
                f" = {shape}"
            )
        if not np.all(np.isfinite(av)) or np.any(av < 0):
            raise ValueError("dust map 'av' must be finite and >= 0 everywhere")
        if np.any(np.diff(av, axis=-1) < -1e-6):
            raise ValueError(
                "dust map 'av' must be cumulative: non-decreasing with distance along each "
                "sight line (pass the integral of dA_V/ds, not the density)"
            )
        if axes["distance"][0] < 0:
            raise ValueError("dust map distances must be >= 0 pc")
        self.l_deg, self.b_deg, self.d_pc = axes["l"], axes["b"], axes["distance"]
        self.av_grid = av
        self.clip = clip
        self._interp = RegularGridInterpolator(
            (self.l_deg, self.b_deg, self.d_pc), av, bounds_error=False, fill_value=None
        )

    @classmethod
    def from_file(cls, path: str | Path, clip: bool = False) -> GridDustMap:
        """Reads a map from HDF5 (datasets l, b, distance, av), FITS (extensions L, B,
        DISTANCE, AV) or ``.npz`` (arrays l, b, distance, av); distances in pc."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"dust map {path} does not exist")
        keys = ("l", "b", "distance", "av")
        suffix = "".join(path.suffixes).lower()
        try:
            if suffix.endswith((".h5", ".hdf5")):
                import h5py

                with h5py.File(path, "r") as f:
                    missing = [k for k in keys if k not in f]
                    if missing:
                        raise ValueError(
                            f"dust map {path}: missing datasets {missing}; need {list(keys)}"
                        )
                    arrays = [f[k][()] for k in keys]
            elif suffix.endswith((".fits", ".fits.gz", ".fit")):
                from astropy.io import fits

                with fits.open(path) as hdul:
                    names = {h.name.lower(): h for h in hdul}
                    missing = [k for k in keys if k not in names]
                    if missing:
                        raise ValueError(
                            f"dust map {path}: missing extensions "
                            f"{[m.upper() for m in missing]}; need L, B, DISTANCE, AV"
                        )
                    arrays = [np.asarray(names[k].data) for k in keys]
            elif suffix.endswith(".npz"):
                with np.load(path, allow_pickle=False) as z:
                    missing = [k for k in keys if k not in z]
                    if missing:
                        raise ValueError(
                            f"dust map {path}: missing arrays {missing}; need {list(keys)}"
                        )
                    arrays = [z[k] for k in keys]
            else:
                raise ValueError(
                    f"dust map {path}: unknown format {suffix!r}; use .h5/.hdf5, .fits or .npz"
                )
        except (OSError, EOFError) as err:
            raise ValueError(f"dust map {path} could not be read ({err}); is it corrupt?") from err
        return cls(*arrays, clip=clip)

    def av(self, l_deg: np.ndarray, b_deg: np.ndarray, d_pc: np.ndarray) -> np.ndarray:
        """Cumulative A_V [mag] to distance d towards (l, b)."""
        l_deg, b_deg, d_pc = np.broadcast_arrays(
            np.asarray(l_deg, np.float64), np.asarray(b_deg, np.float64), d_pc
        )
        lo = self.l_deg[0]
        l_w = (l_deg - lo) % 360.0 + lo
        pts = np.stack([l_w, b_deg, np.asarray(d_pc, np.float64)], axis=-1)
        if self.clip:
            for i, ax in enumerate((self.l_deg, self.b_deg, self.d_pc)):
                pts[..., i] = np.clip(pts[..., i], ax[0], ax[-1])
        else:
            for i, (name, ax) in enumerate(
                zip(("l", "b", "distance"), (self.l_deg, self.b_deg, self.d_pc), strict=True)
            ):
                tol = 1e-9 * max(1.0, abs(ax[-1]))
                bad = (pts[..., i] < ax[0] - tol) | (pts[..., i] > ax[-1] + tol)
                if np.any(bad):
                    v = pts[..., i][bad][0]
                    raise ValueError(
                        f"dust map: {name} = {v:g} is outside the map's range "
                        f"[{ax[0]:g}, {ax[-1]:g}]; use a map that covers the sky region and "
                        "distances, or clip=True"
                    )
                pts[..., i] = np.clip(pts[..., i], ax[0], ax[-1])
        return self._interp(pts)


@dataclass
class GalaxyModel:
    """Number densities of all populations and sampling of stars in a cone.

    Args:
        components: Names of populations to include (default all).
    """

    components: list[str] = field(default_factory=lambda: [c.name for c in COMPONENTS])

    def __post_init__(self) -> None:
        known = {c.name: c for c in COMPONENTS}
        unknown = [c for c in self.components if c not in known]
        if unknown:
            raise ValueError(f"unknown populations {unknown}; valid: {', '.join(known)}")
        self.pops = [known[c] for c in self.components]
        self._norm = {}
        for pop in self.pops:
            if pop.kind == "thin":
                self._norm[pop.name] = float(_thin_shape(np.array(R_SUN), np.array(Z_SUN), pop))
            elif pop.kind == "thick":
                self._norm[pop.name] = float(_thick_shape(np.array(R_SUN), np.array(Z_SUN)))
            elif pop.kind == "halo":
                self._norm[pop.name] = float(_halo_shape(np.array(R_SUN), np.array(Z_SUN), pop))

    def number_density(
        self, pop: Population, x: np.ndarray, y: np.ndarray, z: np.ndarray
    ) -> np.ndarray:
        """Stars / pc³ (all masses of the IMF) at Galactocentric (x, y, z)."""
        R = np.hypot(x, y)
        if pop.kind == "bulge":
            return _bulge_density(x, y, z)
        if pop.kind == "thin":
            shape = _thin_shape(R, z, pop)
        elif pop.kind == "thick":
            shape = _thick_shape(R, z)
        else:
            shape = _halo_shape(R, z, pop)
        return pop.rho0 / imf_mean_mass(pop.imf) * shape / self._norm[pop.name]

    def expected_counts(
        self,
        l_deg: float,
        b_deg: float,
        radius_deg: float,
        d_max: float,
        m_min: float = M_MIN,
        n_dir: int = 64,
        n_d: int = 2000,
    ) -> dict[str, float]:
        """Expected number of stars with mass ≥ m_min per population in a cone to d_max.

        Quadrature: ``n_dir`` directions on a Fibonacci pattern in the cone, and the
        trapezoid rule on ``n_d`` distances.
        """
        ls, bs, omega = _cone_directions(l_deg, b_deg, radius_deg, n_dir)
        d = np.linspace(0.0, d_max, n_d)
        out = {}
        for pop in self.pops:
            x, y, z = heliocentric_to_galactocentric(ls[:, None], bs[:, None], d[None, :])
            n = self.number_density(pop, x, y, z) * d[None, :] ** 2
            per_dir = np.trapezoid(n, d, axis=1)
            out[pop.name] = float(per_dir.mean() * omega * imf_number_fraction(pop.imf, m_min))
        return out

    def sample_cone(
        self,
        l_deg: float,
        b_deg: float,
        radius_deg: float,
        d_max: float,
        rng: np.random.Generator,
        m_min: float = M_MIN,
        n_d: int = 512,
        max_stars: int = 50_000_000,
    ) -> dict[str, np.ndarray]:
        """Draw the stars of a cone: positions, masses, ages, [Fe/H] and velocities.

        Returns arrays: ``l, b, distance [pc], mass, log_age [yr], feh, U, V, W [km/s],
        population`` (index into :attr:`pops`).
        """
        if not 0 < radius_deg <= 180:
            raise ValueError(f"radius_deg must be in (0, 180], got {radius_deg}")
        if d_max <= 0:
            raise ValueError(f"d_max must be > 0 pc, got {d_max}")
        cols: dict[str, list[np.ndarray]] = {
            k: []
            for k in ("l", "b", "distance", "mass", "log_age", "feh", "U", "V", "W", "population")
        }
        expected = self.expected_counts(l_deg, b_deg, radius_deg, d_max, m_min)
        total = sum(expected.values())
        if total > max_stars:
            raise ValueError(
                f"the cone holds about {total:.3g} stars above {m_min} M_sun, more than "
                f"max_stars={max_stars}; narrow the cone, lower d_max or raise m_min"
            )
        d_grid = np.linspace(0.0, d_max, n_d)
        for k, pop in enumerate(self.pops):
            n = int(rng.poisson(expected[pop.name]))
            if n == 0:
                continue
            # directions uniform on the cone; distances by rejection from n(d) d²
            ls, bs = _uniform_cone(l_deg, b_deg, radius_deg, n, rng)
            dist = _sample_los(self, pop, ls, bs, d_grid, rng)
            cols["l"].append(ls)
            cols["b"].append(bs)
            cols["distance"].append(dist)
            cols["mass"].append(sample_imf(pop.imf, n, rng, m_lo=m_min))
            age = rng.uniform(pop.age_gyr[0], pop.age_gyr[1], n) * 1e9
            cols["log_age"].append(np.log10(np.maximum(age, 1e5)))
            x, y, z = heliocentric_to_galactocentric(ls, bs, dist)
            feh = pop.feh_mean + pop.feh_gradient * (np.hypot(x, y) - R_SUN)
            cols["feh"].append(feh + pop.feh_sigma * rng.standard_normal(n))
            su, sv, sw = pop.sigma_uvw
            cols["U"].append(su * rng.standard_normal(n))
            cols["V"].append(-pop.lag + sv * rng.standard_normal(n))
            cols["W"].append(sw * rng.standard_normal(n))
            cols["population"].append(np.full(n, k, np.int16))
        return {k: (np.concatenate(v) if v else np.zeros(0)) for k, v in cols.items()}


def sample_stars(
    model: GalaxyModel,
    n: int,
    l_deg: float,
    b_deg: float,
    radius_deg: float,
    d_max: float,
    rng: np.random.Generator,
    m_min: float = M_MIN,
    weights: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Draw exactly ``n`` stars from the cone's population mixture (no Poisson total).

    ``weights`` are the expected counts per population (computed if not given); pass them
    when calling repeatedly.
    """
    weights = weights or model.expected_counts(l_deg, b_deg, radius_deg, d_max, m_min)
    p = np.array([weights[pop.name] for pop in model.pops])
    if p.sum() <= 0:
        raise ValueError("the cone holds no stars; widen it or raise d_max")
    counts = rng.multinomial(n, p / p.sum())
    parts = []
    d_grid = np.linspace(0.0, d_max, 512)
    for k, (pop, c) in enumerate(zip(model.pops, counts, strict=True)):
        if c == 0:
            continue
        ls, bs = _uniform_cone(l_deg, b_deg, radius_deg, c, rng)
        dist = _sample_los(model, pop, ls, bs, d_grid, rng, n_dir=64 if radius_deg <= 5 else 0)
        age = rng.uniform(pop.age_gyr[0], pop.age_gyr[1], c) * 1e9
        x, y, _ = heliocentric_to_galactocentric(ls, bs, dist)
        feh = pop.feh_mean + pop.feh_gradient * (np.hypot(x, y) - R_SUN)
        parts.append(
            {
                "l": ls,
                "b": bs,
                "distance": dist,
                "mass": sample_imf(pop.imf, c, rng, m_lo=m_min),
                "log_age": np.log10(np.maximum(age, 1e5)),
                "feh": feh + pop.feh_sigma * rng.standard_normal(c),
                "population": np.full(c, k, np.int16),
            }
        )
    return {key: np.concatenate([q[key] for q in parts]) for key in parts[0]}


def _cone_directions(
    l_deg: float, b_deg: float, radius_deg: float, n: int
) -> tuple[np.ndarray, np.ndarray, float]:
    """Fibonacci directions filling a cone, and its solid angle."""
    r = np.deg2rad(radius_deg)
    i = np.arange(n) + 0.5
    cos_t = 1 - i / n * (1 - np.cos(r))
    phi = np.pi * (1 + 5**0.5) * i
    ls, bs = _rotate_to(l_deg, b_deg, np.arccos(cos_t), phi)
    return ls, bs, 2 * np.pi * (1 - np.cos(r))


def _uniform_cone(
    l_deg: float, b_deg: float, radius_deg: float, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    r = np.deg2rad(radius_deg)
    cos_t = 1 - rng.random(n) * (1 - np.cos(r))
    return _rotate_to(l_deg, b_deg, np.arccos(cos_t), rng.uniform(0, 2 * np.pi, n))


def _rotate_to(
    l_deg: float, b_deg: float, theta: np.ndarray, phi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Directions at angle theta from (l, b), azimuth phi → (l, b) in degrees."""
    v = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])
    lr, br = np.deg2rad(l_deg), np.deg2rad(b_deg)
    # rotate the z axis onto the direction (l, b)
    ry = np.array([[np.sin(br), 0, np.cos(br)], [0, 1, 0], [-np.cos(br), 0, np.sin(br)]])
    rz = np.array([[np.cos(lr), -np.sin(lr), 0], [np.sin(lr), np.cos(lr), 0], [0, 0, 1]])
    w = rz @ ry @ v
    return np.rad2deg(np.arctan2(w[1], w[0])) % 360, np.rad2deg(np.arcsin(np.clip(w[2], -1, 1)))


def _sample_los(
    model: GalaxyModel,
    pop: Population,
    ls: np.ndarray,
    bs: np.ndarray,
    d_grid: np.ndarray,
    rng: np.random.Generator,
    n_dir: int = 0,
) -> np.ndarray:
    """Distances with density ∝ n(d) d² along each star's sight line (inverse CDF).

    With ``n_dir > 0`` the CDF is tabulated on ``n_dir`` reference directions and each star
    uses the nearest one (for small cones the density barely changes across the cone).
    """
    if n_dir > 0 and len(ls) > n_dir:
        centre_l, centre_b = _circular_mean(ls), float(np.mean(bs))
        ref_l, ref_b, _ = _cone_directions(
            centre_l, centre_b, _max_sep(ls, bs, centre_l, centre_b), n_dir
        )
        cdf = _los_cdf(model, pop, ref_l, ref_b, d_grid)
        nearest = _nearest_direction(ls, bs, ref_l, ref_b)
        return _invert(cdf[nearest], d_grid, rng)
    out = np.empty(len(ls))
    for lo in range(0, len(ls), 4096):
        sl = slice(lo, lo + 4096)
        out[sl] = _invert(_los_cdf(model, pop, ls[sl], bs[sl], d_grid), d_grid, rng)
    return out


def _los_cdf(
    model: GalaxyModel, pop: Population, ls: np.ndarray, bs: np.ndarray, d_grid: np.ndarray
) -> np.ndarray:
    x, y, z = heliocentric_to_galactocentric(ls[:, None], bs[:, None], d_grid[None, :])
    w = model.number_density(pop, x, y, z) * d_grid[None, :] ** 2
    cdf = np.concatenate(
        [
            np.zeros((w.shape[0], 1)),
            np.cumsum(0.5 * (w[:, 1:] + w[:, :-1]) * np.diff(d_grid), axis=1),
        ],
        axis=1,
    )
    return cdf / np.maximum(cdf[:, -1:], 1e-300)


def _invert(cdf: np.ndarray, d_grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(cdf.shape[0])
    k = np.clip((cdf < u[:, None]).sum(axis=1), 1, len(d_grid) - 1)
    rows = np.arange(len(k))
    c0, c1 = cdf[rows, k - 1], cdf[rows, k]
    f = (u - c0) / np.maximum(c1 - c0, 1e-300)
    return d_grid[k - 1] + f * (d_grid[k] - d_grid[k - 1])


def _circular_mean(l_deg: np.ndarray) -> float:
    r = np.deg2rad(l_deg)
    return float(np.rad2deg(np.arctan2(np.sin(r).mean(), np.cos(r).mean())) % 360)


def _unit(l_deg: np.ndarray, b_deg: np.ndarray) -> np.ndarray:
    lr, br = np.deg2rad(l_deg), np.deg2rad(b_deg)
    return np.stack([np.cos(br) * np.cos(lr), np.cos(br) * np.sin(lr), np.sin(br)], axis=-1)


def _max_sep(ls: np.ndarray, bs: np.ndarray, l0: float, b0: float) -> float:
    cos = _unit(ls, bs) @ _unit(np.array(l0), np.array(b0))
    return float(np.rad2deg(np.arccos(np.clip(cos.min(), -1, 1)))) + 1e-6


def _nearest_direction(
    ls: np.ndarray, bs: np.ndarray, ref_l: np.ndarray, ref_b: np.ndarray
) -> np.ndarray:
    return np.argmax(_unit(ls, bs) @ _unit(ref_l, ref_b).T, axis=1)

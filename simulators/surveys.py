"""Survey definitions: which bands, astrometry and spectra a survey observes, and how well.

A survey is a YAML file (``simulators/configs/surveys/<name>.yaml``)::

    name: gaia_dr3
    reference: Gaia Collaboration (2023), A&A 674, A1
    simulation:
      bands:                      # filter name -> noise model (simulators.instruments.BandSpec)
        gaia_G: {depth: 20.7, floor: 0.003, non_detection: missing}
      astrometry:
        parallax_error_factor: 1.0
      spectra:                    # spectrograph preset -> overrides of its SpectrographSpec
        gaia_xp: {snr_at_ref: 100.0}

``FieldStars`` takes a list of them (``simulator.surveys: [gaia_dr3, 2mass]``) and observes
the union of their bands, the parallax if one of them measures it, and their spectra.
Surveys are found by name in the folders of ``$DASBI_SURVEYS`` (``os.pathsep``-separated),
then ``./configs/surveys`` and the surveys shipped with the package
(``simulators/configs/surveys``, installed as package data; ``configs/`` at the top of a
source checkout links to it); a path to a YAML file works too. YAML is read with
``yaml.safe_load``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .instruments import SPECTROGRAPHS, BandSpec, SpectrographSpec

__all__ = ["Survey", "load_survey", "merge_surveys", "survey_dirs", "available_surveys"]

_TOP_KEYS = {"name", "reference", "description", "simulation", "catalogue"}
_SIM_KEYS = {"bands", "astrometry", "spectra"}
_BAND_KEYS = {f.name for f in dataclasses.fields(BandSpec)}
_ASTRO_KEYS = {"parallax_error_factor"}
_SPEC_KEYS = {f.name for f in dataclasses.fields(SpectrographSpec)}


@dataclass
class Survey:
    """What one survey observes (the ``simulation`` section of its YAML file)."""

    name: str
    reference: str = ""
    bands: dict[str, dict[str, Any]] = field(default_factory=dict)  # BandSpec keys set
    parallax_error_factor: float | None = None  # None: no astrometry
    spectra: dict[str, SpectrographSpec] = field(default_factory=dict)
    path: str | None = None


def survey_dirs() -> list[Path]:
    """Folders searched for ``<name>.yaml``, in order."""
    dirs = [Path(p) for p in os.environ.get("DASBI_SURVEYS", "").split(os.pathsep) if p]
    dirs.append(Path.cwd() / "configs" / "surveys")
    dirs.append(Path(__file__).resolve().parent / "configs" / "surveys")  # package data
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def available_surveys() -> list[str]:
    """Names of the surveys found in :func:`survey_dirs`."""
    return sorted({p.stem for d in survey_dirs() for p in d.glob("*.yaml")})


def find_survey(name_or_path: str | os.PathLike[str]) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise FileNotFoundError(f"survey file {p} does not exist")
        return p
    if os.sep in str(name_or_path) or "/" in str(name_or_path):
        raise ValueError(f"survey {str(name_or_path)!r}: give a name or a .yaml file")
    for d in survey_dirs():
        cand = d / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand
    known = available_surveys()
    raise ValueError(
        f"unknown survey {str(name_or_path)!r}; known surveys: "
        f"{', '.join(known) if known else '(none found)'} (searched "
        f"{', '.join(str(d) for d in survey_dirs()) or 'no folders'}; set DASBI_SURVEYS to "
        "add a folder, or pass a path to a .yaml file)"
    )


def _check_keys(where: str, got: dict[str, Any], valid: set[str]) -> None:
    if not isinstance(got, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(got).__name__}")
    unknown = sorted(set(got) - valid)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; valid keys: {sorted(valid)}")


def _number(where: str, value: Any, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{where}: must be >= {low}, got {value}")
    return float(value)


def load_survey(name_or_path: str | os.PathLike[str]) -> Survey:
    """Reads and validates one survey definition (by name or path)."""
    import yaml

    from .bandpasses import get_filter

    path = find_survey(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"survey file {path} is not valid YAML: {err}") from err
    where = str(path)
    if raw is None:
        raise ValueError(f"survey file {path} is empty")
    _check_keys(where, raw, _TOP_KEYS)
    sim = raw.get("simulation") or {}
    _check_keys(f"{where}: simulation", sim, _SIM_KEYS)
    bands = {}
    for band, spec in (sim.get("bands") or {}).items():
        get_filter(band)  # unknown filters list the known ones
        spec = spec or {}
        _check_keys(f"{where}: simulation.bands.{band}", spec, _BAND_KEYS)
        for key in ("depth", "floor", "depth_scatter"):
            if key in spec:
                _number(f"{where}: simulation.bands.{band}.{key}", spec[key], 0.0)
        if spec.get("non_detection", "missing") not in ("missing", "upper_limit"):
            raise ValueError(
                f"{where}: simulation.bands.{band}.non_detection must be 'missing' or "
                f"'upper_limit', got {spec['non_detection']!r}"
            )
        BandSpec(**spec)
        bands[band] = dict(spec)
    factor = None
    if "astrometry" in sim:
        astro = sim["astrometry"] or {}
        _check_keys(f"{where}: simulation.astrometry", astro, _ASTRO_KEYS)
        factor = _number(
            f"{where}: simulation.astrometry.parallax_error_factor",
            astro.get("parallax_error_factor", 1.0),
            0.0,
        )
        if factor <= 0:
            raise ValueError(f"{where}: simulation.astrometry.parallax_error_factor must be > 0")
    spectra = {}
    for inst, over in (sim.get("spectra") or {}).items():
        if inst not in SPECTROGRAPHS:
            raise ValueError(
                f"{where}: unknown spectrograph {inst!r} in simulation.spectra; presets are: "
                f"{', '.join(SPECTROGRAPHS)}"
                + (" (lamost is now lamost_lrs, as its survey)" if inst == "lamost" else "")
            )
        over = over or {}
        _check_keys(f"{where}: simulation.spectra.{inst}", over, _SPEC_KEYS)
        spectra[inst] = dataclasses.replace(SPECTROGRAPHS[inst], **over)
    return Survey(
        name=str(raw.get("name", path.stem)),
        reference=str(raw.get("reference", "")),
        bands=bands,
        parallax_error_factor=factor,
        spectra=spectra,
        path=str(path),
    )


def merge_surveys(surveys: list[Survey]) -> Survey:
    """The union of several surveys; a band or spectrograph in two of them is an error."""
    out = Survey(name="+".join(s.name for s in surveys))
    for s in surveys:
        for kind, mine, theirs in (
            ("band", out.bands, s.bands),
            ("spectra", out.spectra, s.spectra),
        ):
            twice = sorted(set(mine) & set(theirs))
            if twice:
                raise ValueError(
                    f"{kind} {twice} defined by more than one survey ({s.name} and another); "
                    "keep each in one survey file"
                )
            mine.update(theirs)
        if s.parallax_error_factor is not None:
            if out.parallax_error_factor is not None:
                raise ValueError(f"astrometry defined by more than one survey ({s.name})")
            out.parallax_error_factor = s.parallax_error_factor
    return out

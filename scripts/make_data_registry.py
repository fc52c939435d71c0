"""Regenerate ``simulators/data_registry.json`` from a complete data folder.

    python scripts/make_data_registry.py ../shared/data

Every file under the collections below gets its SHA-256 from the folder; its download URL is
the collection's ``url`` + the path inside the collection, or the per-file entry of ``urls``.
A collection without a URL has no public download of this exact file (a derived table, or
a journal page that needs a browser): ``dasbi data fetch`` then says where it comes from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from simulators.data import sha256

GAIAXPY = "https://raw.githubusercontent.com/gaia-dpci/GaiaXPy"


def _gx(commit: str, fname: str) -> str:
    """A GaiaXPy test file at the commit whose copy the registry hashes."""
    return f"{GAIAXPY}/{commit}/tests/files/xp_continuous/{fname}"


COLLECTIONS = [
    {
        "name": "atmospheres/ck04models",
        "source": "Castelli & Kurucz (2004) ATLAS9 grid, STScI CDBS/TRDS grid/ck04models",
        "url": "https://archive.stsci.edu/hlsps/reference-atlases/cdbs/grid/ck04models/",
    },
    {
        "name": "atmospheres/bandflux",
        "source": "band fluxes of the CK04, Kurucz, PHOENIX v2 and SPHINX grids from the "
        "astroARIADNE project (Vines & Jenkins 2022, MIT licence), "
        "https://github.com/jvines/astroARIADNE, as CSV",
        "url": None,
    },
    {
        "name": "real/yso/IC348",
        "source": "Luhman, Esplin & Loutrel (2016), ApJ 827, 52, machine-readable tables "
        "(https://doi.org/10.3847/0004-637X/827/1/52); Luhman (1998) via VizieR",
        "url": None,
    },
    {
        "name": "real/yso/NGC1333",
        "source": "Luhman, Esplin & Loutrel (2016), ApJ 827, 52; Rebull et al. (2015), AJ 150, "
        "17 (VizieR J/AJ/150/17); Scholz et al. (2012), ApJ 744, 6 and 756, 24 (VizieR)",
        "url": None,
    },
    {
        "name": "real/yso/CrA",
        "source": "a random half (by name) of the Corona Australis members of Esplin & Luhman "
        "(2022), AJ 163, 64, Table 1, joined with Gaia DR3, 2MASS, AllWISE and Spitzer c2d",
        "url": None,
    },
    {
        "name": "real/yso/BHAC15_iso.ukidss",
        "source": "Baraffe et al. (2015) isochrones, UKIDSS magnitudes",
        "url": "http://perso.ens-lyon.fr/isabelle.baraffe/BHAC15dir/BHAC15_iso.ukidss",
    },
    {
        "name": "real/yso/TeffSpT_relations.csv",
        "source": "spectral type - T_eff relations of young stars (Luhman et al. 2003; "
        "Herczeg & Hillenbrand 2014; Pecaut & Mamajek 2013; others), compiled",
        "url": None,
    },
    {
        "name": "real/gaia_xp/gaiaxpy_tests",
        "source": "Gaia DR3 XP continuous spectra of the GaiaXPy test suite (BSD-3), "
        "https://github.com/gaia-dpci/GaiaXPy",
        "url": None,
        "urls": {
            "xp_continuous/XP_CONTINUOUS_RAW.csv": _gx(
                "5188bb3f925207b07d14767182cc821454578517", "XP_CONTINUOUS_RAW.csv"
            ),
            "xp_continuous/XP_CONTINUOUS_RAW.fits": _gx(
                "5188bb3f925207b07d14767182cc821454578517", "XP_CONTINUOUS_RAW.fits"
            ),
            "xp_continuous/XP_CONTINUOUS_RAW_with_missing_BP.csv": _gx(
                "1b7aec3b119afb5254fa98246a25d6058f08ecfc", "XP_CONTINUOUS_RAW_with_missing_BP.csv"
            ),
            "xp_continuous/XP_CONTINUOUS_RAW_missing_BP_dr3int6.csv": _gx(
                "037cba7e84562edb00571da8ccbbdf43a7fa3cc2",
                "XP_CONTINUOUS_RAW_missing_BP_dr3int6.csv",
            ),
            "xp_continuous/XP_CONTINUOUS_RAW_colour_eq_dr3int6.csv": _gx(
                "7b1043935ba7486cd06f13485012ed72077365c7",
                "XP_CONTINUOUS_RAW_colour_eq_dr3int6.csv",
            ),
        },
    },
    {
        "name": "real/gaia_xp/GaiaXP_Spectra_Analysis",
        "source": "2,815 Gaia DR3 sources with 55+55 XP coefficients, from "
        "https://github.com/KristupasPr/GaiaXP_Spectra_Analysis",
        "url": None,
        "urls": {
            "gaia_dr3_xp_c110_binary.npz": "https://raw.githubusercontent.com/KristupasPr/"
            "GaiaXP_Spectra_Analysis/61ff319e6bc6a5ac2586d5a74f52e1a41904da72/"
            "Truncation_Experiment/out_data/gaia_dr3_xp_c110_binary.npz",
        },
    },
]


def main(root: Path) -> None:
    out = []
    for c in COLLECTIONS:
        base = root / c["name"]
        if not base.exists():
            raise SystemExit(f"{base} is missing: the registry needs a complete data folder")
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        files = {}
        for p in paths:
            rel = "" if p == base else p.relative_to(base).as_posix()
            files[rel] = {"sha256": sha256(p), "size": p.stat().st_size}
            url = c.get("urls", {}).get(rel)
            if url:
                files[rel]["url"] = url
        out.append({k: v for k, v in c.items() if k != "urls"} | {"files": files})
    dest = Path(__file__).resolve().parents[1] / "simulators" / "data_registry.json"
    dest.write_text(json.dumps({"collections": out}, indent=1) + "\n")
    print(f"wrote {dest}: {sum(len(c['files']) for c in out)} files")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))

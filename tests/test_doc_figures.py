"""Figures in the README and docs are bound to the benchmark JSON that backs them: each
binding says which text must appear in which document and which JSON value, formatted,
gives that text. A rerun benchmark that changes a value fails here until the docs follow.

Key paths step through the JSON: a dict key, a list index, or ``field=value`` to pick the
list entry whose ``field`` equals ``value``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pct(v: float) -> str:
    return f"{round(100 * v):d}%"


def _mb(v: float) -> str:
    return f"{int(v + 0.5)} MB"  # half up, as the docs round (884.5 → 885)


def _signed_k(v: float) -> str:
    return f"{v:+.0f} K".replace("-", "−")


def _signed0(v: float) -> str:
    return f"{v:+.0f}".replace("-", "−")


def _k(v: float) -> str:
    return f"{v:.0f} K"


def _signed2(v: float) -> str:
    return f"{v:+.2f}".replace("-", "−")


def _f2(v: float) -> str:
    return f"{v:.2f}"


def _f3(v: float) -> str:
    return f"{v:.3f}"


def _xp_row(path: str) -> str:
    """The XP memory table's row of one run (each of its cells is bound to its JSON key)."""
    st, wh = json.loads((ROOT / path).read_text())["results"]
    n = st["rows"]
    return (
        f"| {n:,} | {st['file_mb']:,.0f} MB | {st['in_memory_inputs_mb']:.0f} MB | "
        f"**{st['peak_rss_mb']:,.0f} MB** | {wh['peak_rss_mb']:,.0f} MB | "
        f"{st['seconds']:.0f} / {wh['seconds']:.0f} |"
    )


def _row(st: dict) -> str:
    """A yso-real table row: T_eff bias, σ, coverage, Δlog T bias, A_V bias, σ, coverage."""
    t, g, a = st["teff_K"], st["log10_teff"], st["av_mag"]
    cells = [
        f"{t['bias']:+,.0f} K",
        f"{t['robust_sigma']:,.0f} K",
        f"{t['in_p16_p84']:.2f}",
        f"{g['bias']:+.3f}",
        f"{a['bias']:+.2f}",
        f"{a['robust_sigma']:.2f}",
        f"{a['in_p16_p84']:.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


CRA = "docs/bench/yso_real_cra.json"
CRA4 = "docs/bench/yso_real_cra_logg4.json"
IC4 = "docs/bench/yso_real_ic348_ngc1333_logg4.json"
CRA_K56 = ["results", "variant=phoenix/young", "real", "K5-M6"]
IC = "docs/bench/yso_real_ic348_ngc1333.json"
IC_K56 = ["results", "variant=phoenix/young", "real", "K5-M6"]
CRAP = "docs/bench/yso_real_cra_pm13.json"
ICP = "docs/bench/yso_real_ic348_ngc1333_pm13.json"
CRA1 = "docs/bench/yso_real_cra_pm13_seed1.json"
DA = "docs/bench/domain_adapt.json"
DAX = "docs/bench/domain_adapt_xp.json"
XPR = "docs/bench/xp_real.json"
MEM = "docs/bench/memory.json"
MEMQ = "docs/bench/memory_quick.json"
MXP = "docs/bench/memory_xp.json"
DEF = "docs/bench/sbibm_1e4_two_moons_defaults_candidate.json"
MXP10 = "docs/bench/memory_xp_10k.json"
XPS, XPW = "command=XP spectra, streamed (infer)", "command=XP spectra, whole file"
PHOT = "docs/bench/photospheres.json"

AL = "docs/bench/yso_align_ic348_ngc1333.json"
ALC = "docs/bench/yso_align_cra.json"
MATCHED = "docs/bench/yso_real_matched.json"


def _al(variant: str, *keys: Any) -> list[Any]:
    return ["results", f"variant={variant}", "real", "K5-M6", *keys]


def _pm13_row(rng: str, k: int) -> str:
    """The row of the calibration table in docs/benchmarks.md up to its k-th figure."""
    text = (ROOT / "docs/benchmarks.md").read_text()
    rows = [x for x in text.splitlines() if x.startswith(f"| {rng} | ") and x.count(" | ") == 8]
    (line,) = rows
    cells = line.split(" | ")
    return " | ".join(cells[: k + 2]) + (" |" if k + 2 < len(cells) else "")


def _minus(fmt: Any) -> Any:
    return lambda v: fmt(v).replace("-", "−")


#: (document, text before the figure, JSON file, key path, format)
BINDINGS: list[tuple[str, str, str, list[Any], Any]] = [
    # bench domain-adapt with XP on both sides
    *[
        ("docs/benchmarks.md", text, DAX, ["results", f"variant={v}", key], fmt)
        for v, key, text, fmt in (
            ("none", "real_nrmse", "| none | 0.2376 | 0.2408 |", lambda v: f"{v:.4f}"),
            (
                "RS@rope",
                "real_nrmse",
                "| RS@rope | 0.2376 | 0.2482 | −2.3 |",
                lambda v: f"{v:.4f}",
            ),
            (
                "RS@rope",
                "gap_closed",
                "| RS@rope | 0.2376 | 0.2482 | −2.3 |",
                _minus(lambda v: f"{v:.1f}"),
            ),
            (
                "C+RS@rope",
                "gap_closed",
                "| C+RS@rope | 0.2376 | 0.2552 | −4.5 |",
                _minus(lambda v: f"{v:.1f}"),
            ),
            (
                "OT@rope",
                "gap_closed",
                "| OT@rope | 0.2376 | 0.2702 | −9.2 |",
                _minus(lambda v: f"{v:.1f}"),
            ),
            ("OT@rope", "real_coverage_error", "| **0.113** |", _f3),
            ("RS@rope", "gap_closed_av", "| 0.73 | 0.30 |", _f2),
            (
                "none",
                "real_nrmse_av",
                "Only A_V has a gap worth the name (0.2747",
                lambda v: f"{v:.4f}",
            ),
            ("none", "sim_nrmse_av", "against 0.2443);", lambda v: f"{v:.4f}"),
        )
    ],
    ("docs/benchmarks.md", "(`simulate_s` 64.9 s,", DAX, ["simulate_s"], lambda v: f"{v:.1f}"),
    # bench xp-real
    *[
        ("docs/benchmarks.md", f"| {v} | {row} |", XPR, ["results", f"variant={v}", key], fmt)
        for v, row, key, fmt in (
            ("none", "15.58 | 0.950 | 16.4", "real_ppc_chi2_median", _f2),
            ("none", "15.58 | 0.950 | 16.4", "sim_ppc_chi2_median", _f3),
            ("none", "15.58 | 0.950 | 16.4", "ppc_ratio", lambda v: f"{v:.1f}"),
            ("none", "15.58 | 0.950 | 16.4 | 1.00 | 0.80 | 0.659 | 0.028", "embedding_c2st", _f2),
            (
                "none",
                "15.58 | 0.950 | 16.4 | 1.00 | 0.80 | 0.659 | 0.028",
                "sim_coverage_error",
                _f3,
            ),
            ("C", "15.78 | 0.952 | 16.6 | 1.00 | 0.91", "embedding_c2st", _f2),
            ("OT", "15.88 | 0.952 | 16.7 | 1.00 | 0.93", "embedding_c2st", _f2),
            ("C+OT", "15.97 | 0.953 | 16.8 | 1.00 | 0.97", "embedding_c2st", _f2),
            ("C+OT", "15.97 | 0.953 | 16.8 | 1.00", "data_c2st", _f2),
        )
    ],
    (
        "docs/benchmarks.md",
        "their median χ²_ν is 15.6 (84th percentile 33.6)",
        XPR,
        ["results", "variant=none", "real_ppc_chi2_p84"],
        lambda v: f"{v:.1f}",
    ),
    (
        "docs/benchmarks.md",
        "G 11.3 / 15.2 / 17.1.",
        XPR,
        ["real_G_p1_p50_p99", 1],
        lambda v: f"{v:.1f}",
    ),
    (
        "docs/benchmarks.md",
        "BP−RP −0.53 / −0.34 /",
        XPR,
        ["real_bp_rp_p1_p50_p99", 0],
        _minus(_f2),
    ),
    (
        "docs/benchmarks.md",
        "(median distance 0.03 of the real stars' spread",
        XPR,
        ["match_distance_median"],
        _f2,
    ),
    # bench yso-align: cross-validated pairs on IC 348 / NGC 1333, and the matched joint model
    *[
        ("docs/benchmarks.md", f"| {v} {row} |", AL, _al(v), _row)
        for v, row in (
            ("none", "| +65 K | 218 K | 0.66 | +0.009 | -0.37 | 0.73 | 0.39"),
            ("RS@rope", "| -92 K | 245 K | 0.61 | -0.012 | +0.72 | 2.34 | 0.32"),
            ("C+RS@rope", "| -175 K | 249 K | 0.53 | -0.023 | +1.31 | 2.48 | 0.25"),
            ("OT@rope", "| -210 K | 225 K | 0.47 | -0.029 | +3.69 | 3.00 | 0.18"),
        )
    ],
    *[
        ("docs/benchmarks.md", f"| {v} {row} |", ALC, _al(v), _row)
        for v, row in (
            ("none", "| +203 K | 168 K | 0.51 | +0.025 | +0.48 | 0.35 | 0.33"),
            ("RS@rope", "| +21 K | 252 K | 0.55 | +0.003 | +0.81 | 1.21 | 0.17"),
        )
    ],
    (
        "docs/benchmarks.md",
        "and T_eff is +203 K (+76 K on the Luhman 2003",
        ALC,
        _al("none", "teff_K_luhman2003", "bias"),
        _signed_k,
    ),
    (
        "docs/benchmarks.md",
        "| 0.33 | 1.03 |",
        ALC,
        ["results", "variant=none", "models", 0, "sim_test_2800-4400K", "av_mag", "robust_sigma"],
        _f2,
    ),
    (
        "docs/benchmarks.md",
        "| 0.39 | 0.79 |",
        AL,
        ["results", "variant=none", "models", 0, "sim_test_2800-4400K", "av_mag", "robust_sigma"],
        _f2,
    ),
    (
        "docs/benchmarks.md",
        "(3.67, 5.76)",
        AL,
        [
            "results",
            "variant=RS@rope",
            "models",
            0,
            "sim_test_real_encoders_2800-4400K",
            "av_mag",
            "robust_sigma",
        ],
        _f2,
    ),
    (
        "docs/benchmarks.md",
        "| joint Simformer | -361 K | 186 K | 0.08 | -0.051 | +0.27 | 2.29 | 0.78 |",
        MATCHED,
        ["results", "set=ic348_ngc1333", "real", "K5-M6"],
        _row,
    ),
    (
        "docs/benchmarks.md",
        "| 0.78 | 1.56 |",
        MATCHED,
        ["results", "set=ic348_ngc1333", "sim_test", "2800-4400K", "av_mag", "robust_sigma"],
        _f2,
    ),
    (
        "docs/benchmarks.md",
        "joint Simformer gives T_eff −232 K and A_V −2.58 mag (σ 3.13)",
        MATCHED,
        ["results", "set=ngc1333_rebull", "real", "K5-M6", "av_mag", "bias"],
        _signed2,
    ),
    (
        "docs/benchmarks.md",
        "joint Simformer gives T_eff −232 K and A_V −2.58 mag (σ 3.13)",
        MATCHED,
        ["results", "set=ngc1333_rebull", "real", "K5-M6", "teff_K", "bias"],
        _signed_k,
    ),
    (
        "docs/benchmarks.md",
        "(Δlog T +0.009 dex with robust σ 0.028 dex",
        AL,
        _al("none", "log10_teff", "robust_sigma"),
        _f3,
    ),
    ("README.md", "A_V −0.37 mag (σ 0.73 mag)", AL, _al("none", "av_mag", "bias"), _signed2),
    ("README.md", "A_V −0.37 mag (σ 0.73 mag)", AL, _al("none", "av_mag", "robust_sigma"), _f2),
    ("README.md", "T_eff +65 K (robust σ\n218 K)", AL, _al("none", "teff_K", "robust_sigma"), _k),
    ("README.md", "scatter to\n2.34 mag", AL, _al("RS@rope", "av_mag", "robust_sigma"), _f2),
    (
        "README.md",
        "contrastive term to 2.48 mag",
        AL,
        _al("C+RS@rope", "av_mag", "robust_sigma"),
        _f2,
    ),
    ("README.md", "and OT to 3.00 mag", AL, _al("OT@rope", "av_mag", "robust_sigma"), _f2),
    ("README.md", "from 0.35 to 1.21 mag", ALC, _al("none", "av_mag", "robust_sigma"), _f2),
    ("README.md", "from 0.35 to 1.21 mag", ALC, _al("RS@rope", "av_mag", "robust_sigma"), _f2),
    (
        "README.md",
        "A_V scatter of 2.29 mag and T_eff −361 K",
        MATCHED,
        ["results", "set=ic348_ngc1333", "real", "K5-M6", "teff_K", "bias"],
        _signed_k,
    ),
    # README: memory (the issue found the infer figure said to cover the whole catalogue)
    (
        "README.md",
        "885 MB for `simulate`",
        MEM,
        ["results", "command=dasbi simulate", "peak_rss_mb"],
        _mb,
    ),
    (
        "README.md",
        "618 MB for `train`",
        MEM,
        ["results", "command=dasbi train (streamed)", "peak_rss_mb"],
        _mb,
    ),
    (
        "README.md",
        "459 MB for `infer`",
        MEM,
        ["results", "command=dasbi infer", "peak_rss_mb"],
        _mb,
    ),
    ("README.md", "samples 4\n  chunks", MEM, ["settings", "infer_chunks"], str),
    # docs/benchmarks.md: the candidate defaults on two_moons
    *(
        ("docs/benchmarks.md", text, DEF, ["summary", f"method={m}", key], fmt)
        for m, text in (
            (
                "dasbi",
                "| dasbi, candidate defaults, dpm2m_sde-50 | **0.510** | 0.521 | 5,092 | 551 |",
            ),
            (
                "dasbi[heun-25]",
                "| dasbi, candidate defaults, heun-25 | 0.521 | 0.525 | 5,092 | 520 |",
            ),
            ("npe", "| sbi NPE (MAF) | 0.671 | 0.666 | 108 | 149,655 |"),
        )
        for key, fmt in (
            ("c2st_rf", _f3),
            ("c2st_mlp", lambda v: f"| {v:.3f} |"),
            ("train_s", lambda v: f"| {v:,.0f} |"),
            ("samples_per_s", lambda v: f"| {v:,.0f} |"),
        )
    ),
    (
        "docs/benchmarks.md",
        "(3 × rows = 28,500 steps",
        DEF,
        ["results", 0, "steps"],
        lambda v: f"{v:,}",
    ),
    (
        "docs/benchmarks.md",
        "and 0.161 below NPE",
        DEF,
        ["summary", "method=npe", "c2st_rf"],
        lambda v: f"{v - 0.51:.3f}",
    ),
    # README and docs/benchmarks.md: XP spectra streamed in infer
    ("README.md", "510 MB at 10⁴", MXP10, ["results", XPS, "peak_rss_mb"], _mb),
    (
        "README.md",
        "and at 4×10⁴ XP sources",
        MXP,
        ["settings", "xp_sources"],
        lambda v: f"{v // 10**4}×10⁴",
    ),
    ("README.md", "510 MB at 10⁴", MXP, ["results", XPS, "peak_rss_mb"], _mb),
    ("README.md", "took 7,073 MB", MXP, ["results", XPW, "peak_rss_mb"], lambda v: f"{v:,.0f} MB"),
    *(
        ("docs/benchmarks.md", _xp_row(path), path, ["results", rec, key], fmt)
        for path in (MXP10, MXP)
        for rec, key, fmt in (
            (XPS, "rows", lambda v: f"| {v:,} |"),
            (XPS, "file_mb", lambda v: f"| {v:,.0f} MB |"),
            (XPS, "in_memory_inputs_mb", lambda v: f"| {v:.0f} MB |"),
            (XPS, "peak_rss_mb", lambda v: f"**{v:,.0f} MB**"),
            (XPW, "peak_rss_mb", lambda v: f"| {v:,.0f} MB |"),
            (XPS, "seconds", lambda v: f"| {v:.0f} /"),
            (XPW, "seconds", lambda v: f"/ {v:.0f} |"),
        )
    ),
    # docs/benchmarks.md: memory at 2×10⁵ rows (--quick)
    (
        "docs/benchmarks.md",
        "gives 298, 577 and 480 MB",
        MEMQ,
        ["results", "command=dasbi simulate", "peak_rss_mb"],
        lambda v: f"{int(v + 0.5)},",
    ),
    (
        "docs/benchmarks.md",
        "gives 298, 577 and 480 MB",
        MEMQ,
        ["results", "command=dasbi train (streamed)", "peak_rss_mb"],
        lambda v: f" {int(v + 0.5)} and",
    ),
    (
        "docs/benchmarks.md",
        "gives 298, 577 and 480 MB",
        MEMQ,
        ["results", "command=dasbi infer", "peak_rss_mb"],
        _mb,
    ),
    # README: domain adaptation (OT alone against OT on the RoPE schedule)
    (
        "README.md",
        "closes 104% of the gap",
        DA,
        ["results", "variant=RS@rope", "gap_closed"],
        _pct,
    ),
    ("README.md", "closes 7% of the gap", DA, ["results", "variant=OT", "gap_closed"], _pct),
    (
        "README.md",
        "and 62% on the RoPE schedule",
        DA,
        ["results", "variant=OT@rope", "gap_closed"],
        _pct,
    ),
    (
        "README.md",
        "(coverage error\n0.058)",
        DA,
        ["results", "variant=OT@rope", "real_coverage_error"],
        _f3,
    ),
    # docs/benchmarks.md: yso-real on Corona Australis
    (
        "docs/benchmarks.md",
        "| **phoenix/young** | **+93 K**",
        CRA,
        [*CRA_K56, "teff_K", "bias"],
        _signed_k,
    ),
    ("docs/benchmarks.md", "**121 K**", CRA, [*CRA_K56, "teff_K", "robust_sigma"], _k),
    ("docs/benchmarks.md", "**0.80** | +0.013", CRA, [*CRA_K56, "teff_K", "in_p16_p84"], _f2),
    ("docs/benchmarks.md", "| **−0.12** | 1.38 |", CRA, [*CRA_K56, "av_mag", "bias"], _signed2),
    ("docs/benchmarks.md", "| **−0.12** | 1.38 |", CRA, [*CRA_K56, "av_mag", "robust_sigma"], _f2),
    ("docs/benchmarks.md", "| 1.38 | **0.55** |", CRA, [*CRA_K56, "av_mag", "in_p16_p84"], _f2),
    (
        "docs/benchmarks.md",
        "the T_eff bias is\n+18 K",
        CRA,
        [*CRA_K56, "teff_K_luhman2003", "bias"],
        _signed_k,
    ),
    (
        "docs/benchmarks.md",
        "robust σ 81 K",
        CRA,
        [*CRA_K56, "teff_K_luhman2003", "robust_sigma"],
        _k,
    ),
    # docs/benchmarks.md: the other rows of the CrA table, whole
    (
        "docs/benchmarks.md",
        "| planck/r17 | +1,934 K | 1,490 K | 0.53 | +0.201 | +2.25 | 0.97 | 0.10 |",
        CRA,
        ["results", "variant=planck/r17", "real", "K5-M6"],
        _row,
    ),
    (
        "docs/benchmarks.md",
        "| phoenix/young, log g 4 | +181 K | 113 K | 0.61 | +0.025 | +0.18 | 0.96 | 0.59 |",
        CRA4,
        ["results", "variant=phoenix/young", "real", "K5-M6"],
        _row,
    ),
    (
        "docs/benchmarks.md",
        "| phoenix/young, simulated test (all 300) "
        "| +3 K | 213 K | 0.59 | +0.000 | +0.04 | 1.19 | 0.70 |",
        CRA,
        ["results", "variant=phoenix/young", "sim_test", "all"],
        _row,
    ),
    # docs/benchmarks.md: yso-real on IC 348 + NGC 1333 at log g 4
    (
        "docs/benchmarks.md",
        "(Δlog T −0.035,\nσ 0.024)",
        IC4,
        ["results", 0, "real", "K5-M6", "log10_teff", "bias"],
        lambda v: f"{v:+.3f}".replace("-", "−"),
    ),
    (
        "docs/benchmarks.md",
        "A_V −2.66 mag (σ 2.14)",
        IC4,
        ["results", 0, "real", "K5-M6", "av_mag", "bias"],
        _signed2,
    ),
    (
        "docs/benchmarks.md",
        "A_V −2.66 mag (σ 2.14)",
        IC4,
        ["results", 0, "real", "K5-M6", "av_mag", "robust_sigma"],
        _f2,
    ),
    # docs/benchmarks.md: yso-real on IC 348 + NGC 1333
    (
        "docs/benchmarks.md",
        "T_eff −202 K, robust σ 175 K",
        IC,
        [*IC_K56, "teff_K", "bias"],
        _signed_k,
    ),
    (
        "docs/benchmarks.md",
        "T_eff −202 K, robust σ 175 K",
        IC,
        [*IC_K56, "teff_K", "robust_sigma"],
        _k,
    ),
    (
        "docs/benchmarks.md",
        "Δlog T −0.029 dex",
        IC,
        [*IC_K56, "log10_teff", "bias"],
        lambda v: f"{v:+.3f}".replace("-", "−"),
    ),
    (
        "docs/benchmarks.md",
        "A_V −2.10 mag, robust σ 2.13 mag",
        IC,
        [*IC_K56, "av_mag", "bias"],
        _signed2,
    ),
    (
        "docs/benchmarks.md",
        "A_V −2.10 mag, robust σ 2.13 mag",
        IC,
        [*IC_K56, "av_mag", "robust_sigma"],
        _f2,
    ),
    # docs/benchmarks.md: photospheres, the SED shape of the CrA discless members
    *[
        (
            "docs/benchmarks.md",
            row,
            PHOT,
            [
                "results",
                "check=cra_sed_shape",
                f"teff_scale={scale}",
                f"band={band}",
                "median",
            ],
            lambda v: f"{v:+.3f}".replace("-", "−"),
        )
        for scale, row in (
            (
                "+0 K",
                "| spectral type (HH14) | −0.082 | −0.133 | −0.092 | −0.036 | +0.060 | +0.096 |",
            ),
            ("+100 K", "| HH14 + 100 K | +0.142 | −0.055 | +0.023 | −0.049 | +0.029 | +0.040 |"),
            ("+200 K", "| HH14 + 200 K | +0.359 | +0.019 | +0.133 | −0.066 | +0.004 | −0.015 |"),
            (
                "luhman2003",
                "| Luhman 2003 | +0.145 | −0.067 | +0.035 | −0.049 | +0.032 | +0.039 |",
            ),
        )
        for band in (
            "gaia_BP",
            "gaia_RP",
            "gaia_G",
            "2mass_J",
            "wise_W1",
            "wise_W2",
        )
    ],
    (
        "docs/benchmarks.md",
        "The SED shape of those members, band by band** (`cra_sed_shape` records): the 53",
        PHOT,
        ["results", "check=cra_sed_shape", "teff_scale=+0 K", "band=gaia_BP", "n"],
        lambda v: f"the {v}",
    ),
    # docs/benchmarks.md: the CrA A_V labels clipped to 0
    (
        "docs/benchmarks.md",
        "34% of the published A_V of these 150 members are",
        ALC,
        _al("none", "av_label_zero_fraction"),
        lambda v: f"{v:.0%}",
    ),
    *[
        ("docs/benchmarks.md", text, ALC, _al(v, "av_mag_label_above_0", *k), fmt)
        for v, text, k, fmt in (
            ("none", "Over the 99 labels above 0", ["n"], lambda x: f"{x} labels"),
            ("none", "the bias is +0.33 mag, σ 0.31 mag", ["bias"], lambda x: f"{x:+.2f} mag"),
            (
                "none",
                "the bias is +0.33 mag, σ 0.31 mag",
                ["robust_sigma"],
                lambda x: f"σ {x:.2f}",
            ),
            ("none", "and 50% of the truths are inside", ["in_p16_p84"], lambda x: f"{x:.0%}"),
            ("RS@rope", "(RS@rope: +0.61, 1.15, 25%)", ["bias"], lambda x: f"{x:+.2f}"),
            ("RS@rope", "(RS@rope: +0.61, 1.15, 25%)", ["robust_sigma"], lambda x: f"{x:.2f}"),
            ("RS@rope", "(RS@rope: +0.61, 1.15, 25%)", ["in_p16_p84"], lambda x: f"{x:.0%}"),
        )
    ],
    # docs/benchmarks.md: photospheres, IC 348 / NGC 1333 members
    (
        "docs/benchmarks.md",
        "members are\n0.071 mag bluer in J−H",
        PHOT,
        [
            "results",
            "check=luhman_members",
            "disc=III",
            "av_range=[0.0, 40.0]",
            "colour=J-H",
            "median",
        ],
        lambda v: f"{-v:.3f} mag",
    ),
    (
        "docs/benchmarks.md",
        "A_V of a class III member 0.70 mag\nlower",
        PHOT,
        ["results", "check=luhman_av_from_jh", "median"],
        lambda v: f"{-v:.2f} mag",
    ),
    # docs/benchmarks.md: yso-real, phoenix against phoenix_pm13 in one run (and seed 1)
    *[
        (
            "docs/benchmarks.md",
            text,
            src,
            ["results", f"variant={v}", "real", split, *keys],
            fmt,
        )
        for text, src, v, split, keys, fmt in (
            *[
                (text, CRAP, v, "K5-M6", keys, fmt)
                for v in ("phoenix/young", "phoenix_pm13/young")
                for text, keys, fmt in (
                    ("A_V scatter 0.59 → 0.43 mag", ["av_mag", "robust_sigma"], _f2),
                    ("coverage 0.31 → 0.45", ["av_mag", "in_p16_p84"], _f2),
                    (
                        "labels do not count, 0.47 → 0.68)",
                        ["av_mag_label_above_0", "in_p16_p84"],
                        _f2,
                    ),
                    ("cost: +156 → +183 K", ["teff_K", "bias"], _signed0),
                    ("Luhman 2003 scale +59 → +114 K", ["teff_K_luhman2003", "bias"], _signed0),
                )
            ],
            *[
                (text, CRA1, v, "K5-M6", keys, fmt)
                for v in ("phoenix/young", "phoenix_pm13/young")
                for text, keys, fmt in (
                    ("and +149 → +182 K", ["teff_K", "bias"], _signed0),
                    ("+47 → +91 K", ["teff_K_luhman2003", "bias"], _signed0),
                )
            ],
            *[
                ("A_V bias +1.95 → +1.22 mag", CRAP, v, "M6-M9", ["av_mag", "bias"], _signed2)
                for v in ("phoenix/young", "phoenix_pm13/young")
            ],
            *[
                (text, CRA1, v, "K5-M6", ["av_mag", key], fmt)
                for v, text in (
                    ("phoenix/young", "alone gives A_V +0.20 mag, σ 0.39, coverage 0.61"),
                    (
                        "phoenix_pm13/young",
                        "`phoenix_pm13/young` +0.46 mag, σ 0.49, coverage 0.51",
                    ),
                )
                for key, fmt in (("bias", _signed2), ("robust_sigma", _f2), ("in_p16_p84", _f2))
            ],
            ("(−2.10 → −1.95)", ICP, "phoenix/young", "K5-M6", ["av_mag", "bias"], _signed2),
            ("(−2.10 → −1.95)", ICP, "phoenix_pm13/young", "K5-M6", ["av_mag", "bias"], _signed2),
            (
                "but +156 K and A_V +0.25 mag with σ 0.59",
                CRAP,
                "phoenix/young",
                "K5-M6",
                ["av_mag", "robust_sigma"],
                _f2,
            ),
        )
    ],
    # docs/benchmarks.md: photospheres, the dwarf-colour calibration on the CrA members
    *[
        (
            "docs/benchmarks.md",
            _pm13_row(rng, k),
            PHOT,
            [
                "results",
                "check=cra_discless",
                f"library={lib}@bhac15",
                f"teff_range=[{lo:.1f}, {hi:.1f}]",
                f"colour={colour}",
                "median",
            ],
            lambda v: f"{v:+.3f}".replace("-", "−"),
        )
        for rng, (lo, hi) in (
            ("2,300-3,000 (39)", (2300, 3000)),
            ("3,000-3,300 (29)", (3000, 3300)),
            ("3,300-3,600 (20)", (3300, 3600)),
            ("3,900-4,500 (7)", (3900, 4500)),
        )
        for k, (colour, lib) in enumerate(
            (c, lib)
            for c in ("BP-RP", "G-J", "J-H", "H-Ks")
            for lib in ("phoenix", "phoenix_pm13")
        )
    ],
    # docs/benchmarks.md: photospheres, the gravity column
    (
        "docs/benchmarks.md",
        "| 2,300-3,000 (39) | BP−RP | +0.413 | +0.381 |",
        PHOT,
        [
            "results",
            "check=cra_discless",
            "library=phoenix@bhac15",
            "teff_range=[2300.0, 3000.0]",
            "colour=BP-RP",
            "median",
        ],
        lambda v: f"{v:+.3f}",
    ),
]


def _step(node: Any, step: Any) -> Any:
    if isinstance(step, int):
        return node[step]
    if isinstance(step, str) and "=" in step and isinstance(node, list):
        field, want = step.split("=", 1)
        hits = [x for x in node if isinstance(x, dict) and str(x.get(field)) == want]
        if not hits:
            raise KeyError(f"no entry with {field} = {want!r}")
        return hits
    if isinstance(node, list):  # a filtered list: narrow it further, or take its one entry
        if len(node) != 1:
            raise KeyError(f"{len(node)} entries match before {step!r}")
        node = node[0]
    return node[step]


def _value(path: str, keys: list[Any]) -> Any:
    node: Any = json.loads((ROOT / path).read_text())
    for k in keys:
        node = _step(node, k)
    if isinstance(node, list):
        assert len(node) == 1, f"{len(node)} JSON entries match {keys}"
        node = node[0]
    return node


@pytest.mark.parametrize(("doc", "text", "src", "keys", "fmt"), BINDINGS)
def test_doc_figure_comes_from_its_json(doc, text, src, keys, fmt):
    body = (ROOT / doc).read_text()
    assert text in body, f"{doc} no longer says {text!r}; update the binding with the text"
    figure = fmt(_value(src, keys))
    assert figure in text, f"{doc}: {text!r} should show {figure} ({src} {keys})"


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("docs/bench/yso_real_cra_pm13.json", "CrA"),
        ("docs/bench/yso_real_cra_pm13_seed1.json", "CrA, seed 1"),
        ("docs/bench/yso_real_ic348_ngc1333_pm13.json", "IC 348 + NGC 1333"),
    ],
)
def test_pm13_table_rows_come_from_their_json(path, label):
    """The phoenix / phoenix_pm13 comparison table in docs/benchmarks.md: every row is its
    JSON's K5-M6 figures."""
    body = (ROOT / "docs/benchmarks.md").read_text()
    for rec in json.loads((ROOT / path).read_text())["results"]:
        row = f"| {label} | {rec['variant']} " + _row(rec["real"]["K5-M6"]).replace("-", "−")
        assert row in body, f"docs/benchmarks.md lacks the row {row!r} ({path})"

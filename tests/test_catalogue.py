"""Catalogue ingestion: formats, column maps, units, limits, sentinels and the report."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import MaskedColumn, Table, vstack

from dasbi.catalogue import load_column_map, map_catalogue, read_catalogue
from dasbi.errors import ConfigError, DataError
from dasbi.nodes import Node

NODES = [
    Node(name="2mass_Ks", kind="observable", modality="photometry", unit="mag"),
    Node(name="irac_1", kind="observable", modality="photometry", unit="mag"),
    Node(name="mips_24", kind="observable", modality="photometry", unit="mag"),
    Node(name="parallax", kind="observable", modality="astrometry", unit="mas"),
]

MAP = """
name: test
catalogue:
  id: src
  sentinels: [99.99]
  columns:
    2mass_Ks: {value: K, error: eK}
    irac_1: {value: F36, error: eF36, unit: mJy, limit: lF36}
    mips_24: {value: F24, error: 0.1, unit: Jy, zero_point: 7.17}
    parallax: {value: plx, error: eplx, unit: arcsec}
"""


def _table() -> Table:
    t = Table()
    t["src"] = ["a", "b", "c", "d", "e", "f", "b"]
    t["K"] = [10.0, 99.99, np.nan, 12.0, 50.0, 11.0, 9.0]
    t["eK"] = [0.02, 0.02, 0.02, -0.1, 0.02, 0.02, 0.02]
    t["F36"] = MaskedColumn(
        [100.0, 5.0, 1.0, -3.0, 2.0, 0.0, 1.0],
        mask=[False, False, False, False, False, True, False],
    )
    t["eF36"] = [1.0, 0.5, 0.1, 0.5, 0.2, 0.1, 0.1]
    t["lF36"] = ["", "", "<", "", "", "", ""]
    t["F24"] = [0.0717, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan]
    t["plx"] = [0.001, 0.002, np.nan, np.nan, np.nan, np.nan, 0.003]
    t["eplx"] = [1e-4, 1e-4, np.nan, np.nan, np.nan, np.nan, 1e-4]
    return t


@pytest.fixture
def cmap(tmp_path):
    p = tmp_path / "test.yaml"
    p.write_text(MAP)
    return load_column_map(p)


def test_units_fluxes_limits_sentinels_and_report(cmap):
    from simulators.bandpasses import vega_zero_point_jy

    m = map_catalogue(_table(), cmap, NODES)
    # 'd' has nothing usable (negative error, negative flux): rejected; the second 'b' is a
    # duplicate; 'e' keeps its flux although its magnitude 50 is ignored
    assert list(m.ids) == ["a", "b", "c", "e", "f"]
    k = m.values["2mass_Ks"]
    assert k[0] == 10.0 and np.isnan(k[1])  # 99.99 is a sentinel
    assert np.isnan(k[3]) and np.isfinite(m.values["irac_1"][3])
    f36 = m.values["irac_1"]
    zp = vega_zero_point_jy("irac_1")
    assert f36[0] == pytest.approx(-2.5 * np.log10(0.1 / zp))
    assert m.errors["irac_1"][0] == pytest.approx(1.0857 * 1.0 / 100.0)
    assert m.upper_limits["irac_1"][2] and not m.upper_limits["irac_1"][0]
    assert np.isnan(f36[4])  # masked
    # the survey's own zero point: 0.0717 Jy = 7.17 Jy × 10^-2 → 5 mag
    assert m.values["mips_24"][0] == pytest.approx(5.0)
    assert m.values["parallax"][0] == pytest.approx(1.0)  # arcsec → mas
    assert m.errors["parallax"][0] == pytest.approx(0.1)
    rep = m.report.table()
    reasons = set(zip(rep["id"], rep["reason"], strict=True))
    assert ("d", "missing or negative error") in reasons
    assert ("d", "non-positive flux") in reasons
    assert ("e", "magnitude outside [-5.0, 35.0]") in reasons
    assert ("b", "duplicate id") in reasons
    assert m.n_input == 7 and len(m) + sum(a == "row rejected" for a in rep["action"]) == 7


def test_every_format_reads_the_same(cmap, tmp_path):
    t = _table()
    t["lF36"] = np.array([s == "<" for s in t["lF36"]])  # bool flags: portable everywhere
    t["F36"] = np.asarray(t["F36"].filled(np.nan))
    ref = map_catalogue(t, cmap, NODES)
    for ext, fmt in [
        (".fits", "fits"),
        (".csv", "ascii.csv"),
        (".ecsv", "ascii.ecsv"),
        (".vot", "votable"),
        (".h5", "hdf5"),
        (".parquet", "parquet"),
    ]:
        p = tmp_path / f"cat{ext}"
        kw = {"path": "data"} if fmt == "hdf5" else {}
        t.write(p, format=fmt, **kw)
        got = map_catalogue(read_catalogue(p), cmap, NODES)
        assert list(got.ids) == list(ref.ids), ext
        for k in ref.values:
            np.testing.assert_allclose(got.values[k], ref.values[k], equal_nan=True, err_msg=ext)
            assert (got.upper_limits[k] == ref.upper_limits[k]).all(), ext


@pytest.mark.parametrize(
    "ext", [".fits", ".fits.gz", ".h5", ".parquet", ".csv", ".ecsv", ".csv.gz"]
)
def test_block_readers_equal_whole_file_reads(cmap, tmp_path, ext):
    """`dasbi infer` reads FITS, HDF5, Parquet, CSV and ECSV block by block; every block,
    every gathered column and the column map over blocks equal the whole-file read."""
    import gzip
    import warnings

    from dasbi.catalogue import catalogue_ids, id_problems, open_catalogue, required_columns

    rng = np.random.default_rng(2)
    t = vstack([_table()] * 40)
    n = len(t)  # 280 rows
    t["src"] = [f"s{i}" if i % 50 else "s1" for i in range(n)]  # duplicates across blocks
    t["lF36"] = np.array([s == "<" for s in t["lF36"]])
    t["K"] = rng.normal(11, 2, n)
    t["K"].unit = "mag"
    t["F36"] = MaskedColumn(rng.uniform(-1, 50, n), mask=rng.random(n) < 0.2, unit="mJy")
    t["n"] = MaskedColumn(rng.integers(0, 9, n).astype(np.int32), mask=rng.random(n) < 0.3)
    t["extra"] = np.zeros(n)  # not mapped: never read
    p = tmp_path / f"cat{ext}"
    plain = tmp_path / f"plain{ext.removesuffix('.gz')}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t.write(plain, **({"path": "data", "serialize_meta": True} if ext == ".h5" else {}))
    p.write_bytes(gzip.compress(plain.read_bytes()) if ext.endswith(".gz") else plain.read_bytes())
    if ext == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(pq.read_table(p), p, row_group_size=64)  # 5 row groups
    whole = read_catalogue(p)
    blocks = open_catalogue(p, columns=[*required_columns(cmap), "n"])
    assert len(blocks) == n and "extra" not in blocks.colnames
    blocks.block_rows = 37
    assert (blocks["src"].astype(str) == np.asarray(whole["src"]).astype(str)).all()
    for a, b in [(0, 30), (30, 101), (250, 280), (7, 7)]:
        got = blocks[a:b]
        assert len(got) == b - a
        if not ext.startswith(".csv"):  # CSV has no units
            assert got["F36"].unit == "mJy" and got["K"].unit == "mag"
        for name in ("K", "F36", "n"):
            g = np.ma.filled(np.ma.asarray(got[name], float), np.nan)
            w = np.ma.filled(np.ma.asarray(whole[name][a:b], float), np.nan)
            np.testing.assert_array_equal(g, w, err_msg=f"{ext} {name} rows {a}:{b}")
    ref = map_catalogue(whole, cmap, NODES)
    ids = catalogue_ids(blocks, cmap)
    status = id_problems(ids)
    rows, reasons = [], []
    for a in range(0, n, 60):
        m = map_catalogue(
            blocks[a : a + 60],
            cmap,
            NODES,
            ids=ids[a : a + 60],
            id_status=status[a : a + 60],
            offset=a,
        )
        rows.extend(m.rows)
        reasons.extend(zip(m.report.rows, m.report.reasons, strict=True))
    np.testing.assert_array_equal(rows, ref.rows)
    assert sorted(reasons) == sorted(zip(ref.report.rows, ref.report.reasons, strict=True))
    assert "duplicate id" in {r for _, r in reasons}


def test_csv_with_fields_spanning_lines_is_a_clear_error(tmp_path):
    from dasbi.catalogue import open_catalogue

    p = tmp_path / "cat.csv"
    p.write_text('src,K,note\na,10.0,"two\nlines"\nb,11.0,ok\n')
    with pytest.raises(DataError, match="spanning lines|could not be read"):
        open_catalogue(p)[0:2]


def test_truncated_fits_catalogue_is_a_clear_error(tmp_path):
    from dasbi.catalogue import open_catalogue

    p = tmp_path / "cat.fits"
    _table().write(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 2880])
    with pytest.raises(DataError, match="truncated"):
        open_catalogue(p)


def test_mrt_catalogue_with_limit_flags(shared_data):
    from dasbi.catalogue import read_catalogue

    nodes = [
        Node(name=b, kind="observable", modality="photometry", unit="mag")
        for b in (
            "2mass_J",
            "2mass_H",
            "2mass_Ks",
            "irac_1",
            "irac_2",
            "irac_3",
            "irac_4",
            "mips_24",
        )
    ]
    t = read_catalogue(shared_data / "real/yso/NGC1333/Rebull_2015AJ_150_17R_table1.fit")
    m = map_catalogue(t, load_column_map("rebull2015_ngc1333"), nodes)
    assert m.n_input == 6881 and len(m) > 6700
    assert m.upper_limits["mips_24"].sum() > 1000  # "<" flags of the real table
    lum = read_catalogue(shared_data / "real/yso/IC348/Luhman2016_Table1_apjaa2cabt1_mrt.txt")
    m = map_catalogue(lum, load_column_map("luhman2016"), nodes)
    assert len(m) > 450 and np.nanmedian(m.errors["2mass_Ks"]) > 0


def test_bad_maps_and_catalogues(cmap, tmp_path):
    t = _table()
    del t["eK"]
    with pytest.raises(DataError, match="column 'eK' is not in the catalogue"):
        map_catalogue(t, cmap, NODES)
    with pytest.raises(ConfigError, match="not observables of the model"):
        map_catalogue(_table(), cmap, NODES[:2])
    bad = tmp_path / "bad.yaml"
    bad.write_text("catalogue:\n  columns:\n    irac_1: {value: F36, colour: red}\n")
    with pytest.raises(ConfigError, match="unknown keys \\['colour'\\]"):
        load_column_map(bad)
    bad.write_text("name: x\nsimulation: {}\n")
    with pytest.raises(ConfigError, match="no 'catalogue:' section"):
        load_column_map(bad)
    bad.write_text("catalogue:\n  columns:\n    irac_1: {value: F36, unit: furlongs}\n")
    with pytest.raises(ConfigError, match="unknown unit 'furlongs'"):
        map_catalogue(_table(), load_column_map(bad), NODES)
    with pytest.raises(DataError, match="does not exist"):
        read_catalogue(tmp_path / "nope.fits")
    (tmp_path / "cat.xyz").write_text("1,2\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        read_catalogue(tmp_path / "cat.xyz")
    (tmp_path / "broken.fits").write_bytes(b"not a fits file at all")
    with pytest.raises(DataError, match="could not be read as fits"):
        read_catalogue(tmp_path / "broken.fits")


def test_vega_zero_points_match_published_values():
    from simulators.bandpasses import vega_zero_point_jy

    # Cohen et al. 2003 (2MASS), Reach et al. 2005 (IRAC), Engelbracht et al. 2007 (MIPS);
    # every band is checked in test_bandpasses
    assert vega_zero_point_jy("2mass_Ks") == pytest.approx(666.7, rel=0.005)
    assert vega_zero_point_jy("irac_4") == pytest.approx(64.13, rel=0.005)
    assert vega_zero_point_jy("mips_24") == pytest.approx(7.17, rel=0.005)


@pytest.mark.parametrize("kind", ["S", "U"])
def test_id_index_equals_the_in_memory_check_in_bounded_buckets(tmp_path, kind):
    """IdIndex (streamed, bucketed by hash) flags exactly the rows id_problems flags: the
    first occurrence kept, repeats across blocks of different widths, missing ids; with
    many buckets and a forced hash collision that must not reject anything."""
    from dasbi.catalogue import (
        ColumnMap,
        ColumnSpec,
        IdIndex,
        catalogue_ids,
        hash_ids,
        id_problems,
        open_catalogue,
    )

    rng = np.random.default_rng(3)
    n = 5000
    base = np.array([f"J{int(v):07d}" for v in rng.integers(0, 4000, n)], "U40")  # repeats
    base[rng.choice(n, 40, replace=False)] = ""
    base[[7, 8]] = ["--", "nan"]
    base[100] = "a-much-longer-identifier-0001"
    base[4000] = "a-much-longer-identifier-0001"  # repeat in a later, wider block
    t = Table({"id": base.astype(kind), "v": np.zeros(n)})
    t.write(tmp_path / "c.fits")
    cmap = ColumnMap({"x": ColumnSpec("v")}, id="id")
    want = id_problems(catalogue_ids(Table.read(tmp_path / "c.fits"), cmap))
    for table in (Table.read(tmp_path / "c.fits"), open_catalogue(tmp_path / "c.fits")):
        index = IdIndex(table, cmap, block_rows=333, bucket_rows=200)  # 25 buckets
        got = np.concatenate(
            [
                index.status(a, min(a + 333, n), index.ids(a, min(a + 333, n)))
                for a in range(0, n, 333)
            ]
        )
        np.testing.assert_array_equal(got, want)
        assert index.width == len("a-much-longer-identifier-0001")
        assert (got == "duplicate id").sum() > 500 and got[4000] == "duplicate id"
    # hashes depend on the bytes only, not the array width
    assert hash_ids(np.array(["abc"], "S3"))[0] == hash_ids(np.array(["abc"], "S9"))[0]
    assert hash_ids(np.array(["abc"]))[0] == hash_ids(np.array([b"abc"]))[0]
    # a collision (same hash, different ids) must not reject either row
    index = IdIndex(Table({"id": ["p", "q"], "v": [0.0, 0.0]}), cmap)
    index.duplicates = index._confirm(np.array([0, 1]))
    assert len(index.duplicates) == 0

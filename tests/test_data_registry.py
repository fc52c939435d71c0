"""`dasbi data`: the registry of real data files, their hashes, and fetching them."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import pytest

from dasbi.cli import main
from simulators import data

USED = [  # every file the code reads through find_data
    "atmospheres/bandflux/CK04_DF.csv",
    "atmospheres/bandflux/Kurucz_DF.csv",
    "atmospheres/bandflux/Phoenixv2_DF.csv",
    "atmospheres/bandflux/SPHINX_DF.csv",
    "atmospheres/ck04models/catalog.fits",
    "real/yso/CrA/cra_members_dev.csv",
    "real/yso/TeffSpT_relations.csv",
    "real/yso/IC348/Luhman2016_Table1_apjaa2cabt1_mrt.txt",
    "real/yso/NGC1333/Luhman2016_Table2_apjaa2cabt1_mrt.txt",
    "real/yso/NGC1333/Rebull_2015AJ_150_17R_table1.fit",
    "real/yso/BHAC15_iso.ukidss",
]


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No data folder, and an empty download cache."""
    monkeypatch.setattr(data, "_candidates", lambda: [tmp_path / "none"])
    monkeypatch.setenv("DASBI_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over a folder (the --mirror of the tests)."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_registry_names_every_file_the_code_reads_with_a_source():
    reg = data.registry()
    assert set(USED) <= set(reg)
    for f in reg.values():
        assert len(f.sha256) == 64 and f.size > 0 and f.source
        assert f.url is None or f.url.startswith(("https://", "http://"))
    assert reg["atmospheres/ck04models/ckp00/ckp00_5000.fits"].url == (
        "https://archive.stsci.edu/hlsps/reference-atlases/cdbs/grid/ck04models/ckp00/"
        "ckp00_5000.fits"
    )


def test_shared_data_matches_the_registry(shared_data, monkeypatch):
    monkeypatch.setenv("DASBI_DATA", str(shared_data))
    for name in USED:
        path, state = data.locate(data.registry()[name])
        assert state == "ok", (name, path)


def test_a_missing_file_says_the_fetch_command(nowhere):
    with pytest.raises(data.MissingDataError, match="dasbi data fetch real/yso/BHAC15_iso"):
        data.find_data("real/yso/BHAC15_iso.ukidss")
    # no public download of this exact file: the message names the source and the place
    with pytest.raises(data.MissingDataError, match=r"Esplin & Luhman .*put it at .*cache"):
        data.find_data("real/yso/CrA/cra_members_dev.csv")
    with pytest.raises(data.MissingDataError, match="no public download"):
        data.fetch("real/yso/CrA", progress=False)
    with pytest.raises(KeyError, match="not a registered"):
        data.fetch("real/yso/Taurus", progress=False)


def test_fetch_downloads_checks_the_hash_and_then_finds_the_file(shared_data, nowhere, server):
    root, url = server
    name = "real/yso/BHAC15_iso.ukidss"
    (root / "real/yso").mkdir(parents=True)
    shutil.copy(shared_data / name, root / name)
    (path,) = data.fetch(name, mirror=url, progress=False)
    assert path == nowhere / name and data.sha256(path) == data.registry()[name].sha256
    assert data.find_data(name) == path  # the cache is searched
    assert data.fetch(name, progress=False) == [path]  # a good copy is not downloaded again
    # a mirror serving another file: the hash check refuses it
    (root / name).write_text("not the isochrones\n")
    with pytest.raises(ValueError, match="SHA-256"):
        data.fetch(name, mirror=url, force=True, progress=False)
    assert not path.exists()  # nothing bad is left in the cache


def test_fetch_a_folder_gets_every_file_in_it(shared_data, nowhere, server):
    root, url = server
    src = shared_data / "real/gaia_xp/gaiaxpy_tests"
    shutil.copytree(src, root / "real/gaia_xp/gaiaxpy_tests")
    paths = data.fetch("real/gaia_xp/gaiaxpy_tests", mirror=url, progress=False)
    assert len(paths) == len([p for p in src.rglob("*") if p.is_file()]) == 7
    assert all(p.is_relative_to(nowhere) for p in paths)


def test_cli_data(nowhere, capsys, shared_data, server):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "atmospheres/ck04models" in out and "650" in out
    assert main(["data", "path", "real/yso/BHAC15_iso.ukidss"]) == 2
    err = capsys.readouterr().err
    assert "dasbi data fetch real/yso/BHAC15_iso.ukidss" in err and "Traceback" not in err
    assert main(["data", "verify", "real/yso"]) == 1
    assert "missing" in capsys.readouterr().out
    assert main(["data", "fetch", "real/yso/Taurus"]) == 2
    assert "not a registered" in capsys.readouterr().err
    root, url = server
    (root / "real/yso").mkdir(parents=True)
    shutil.copy(shared_data / "real/yso/BHAC15_iso.ukidss", root / "real/yso")
    assert main(["data", "fetch", "real/yso/BHAC15_iso.ukidss", "--mirror", url, "--quiet"]) == 0
    assert main(["data", "path", "real/yso/BHAC15_iso.ukidss"]) == 0
    assert str(nowhere) in capsys.readouterr().out

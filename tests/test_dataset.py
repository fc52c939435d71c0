from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from dasbi.dataset import FIELDS, Block, Dataset, DatasetWriter
from dasbi.errors import DataError, ResumeError, SchemaError
from dasbi.nodes import Node, NodeSet


def make_nodes() -> NodeSet:
    return NodeSet(
        [
            Node("teff", "parameter", "theta", unit="K", transform="log10", low=3000, high=9000),
            Node("av", "parameter", "theta", unit="mag"),
            Node("G", "observable", "phot", unit="mag"),
            Node("J", "observable", "phot", unit="mag"),
            Node("xp", "observable", "xp", unit="erg/s/cm2/AA", role="context", size=5),
        ]
    )


def make_blocks(rng, n: int) -> dict[str, Block]:
    theta = Block.exact(rng.normal(size=(n, 2)))
    phot_vals = rng.normal(size=(n, 2)).astype(np.float32)
    observed = rng.random((n, 2)) > 0.3
    upper = observed & (rng.random((n, 2)) > 0.8)
    phot = Block(np.where(observed, phot_vals, np.nan), np.full((n, 2), 0.05), observed, upper)
    xp = Block.exact(rng.normal(size=(n, 5)))
    return {"theta": theta, "phot": phot, "xp": xp}


def assert_blocks_equal(a: dict[str, Block], b: dict[str, Block]) -> None:
    assert set(a) == set(b)
    for g in a:
        for f in FIELDS:
            np.testing.assert_array_equal(getattr(a[g], f), getattr(b[g], f), err_msg=f"{g}/{f}")


def test_round_trip_metadata_and_compression(tmp_path, rng):
    nodes = make_nodes()
    blocks = make_blocks(rng, 50)
    path = DatasetWriter.write(
        tmp_path / "d.h5",
        nodes,
        blocks,
        attrs={"config": "a: 1\n", "seed": 7},
        group_attrs={"xp": {"wavelength_nm": np.linspace(400, 900, 5)}},
        edges=[("teff", "G"), ("av", "G")],
    )
    with Dataset(path) as ds:
        assert ds.num_rows == 50 and len(ds) == 50
        assert ds.nodes == nodes
        assert ds.edges == [("teff", "G"), ("av", "G")]
        assert ds.attrs["seed"] == 7 and ds.config == "a: 1\n"
        assert ds.attrs["schema_version"] == 1
        np.testing.assert_allclose(ds.group_attrs("xp")["wavelength_nm"][-1], 900)
        assert_blocks_equal(ds.read(), blocks)
    with h5py.File(path) as f:
        dset = f["x/phot/values"]
        assert dset.compression == "gzip" and dset.chunks is not None and dset.shuffle
        assert json.loads(f.attrs["nodes"])[0]["unit"] == "K"


@pytest.mark.parametrize("shuffle", [False, True])
def test_streaming_visits_every_row_once(tmp_path, rng, shuffle):
    nodes = make_nodes()
    n = 1037
    blocks = make_blocks(rng, n)
    blocks["theta"].values[:, 0] = np.arange(n)
    path = DatasetWriter.write(tmp_path / "d.h5", nodes, blocks)
    with Dataset(path) as ds:
        seen = []
        sizes = []
        for batch in ds.iter_batches(64, shuffle=shuffle, seed=3, block_rows=200):
            seen.append(batch["theta"].values[:, 0])
            sizes.append(len(batch["xp"]))
        seen = np.concatenate(seen)
    assert sorted(seen.astype(int).tolist()) == list(range(n))
    assert all(s == 64 for s in sizes[:-1]) and sizes[-1] == n % 64
    assert (not shuffle) == bool(np.all(np.diff(seen) > 0))


def test_chunked_writer_resumes_and_matches_single_shot(tmp_path, rng):
    nodes = make_nodes()
    blocks = make_blocks(rng, 100)
    ref = DatasetWriter.write(tmp_path / "ref.h5", nodes, blocks, fingerprint="f")
    # the one-shot file uses a single chunk; rewrite it with chunks of 30 rows in two sessions
    out = tmp_path / "out.h5"
    w = DatasetWriter(out, nodes, 100, 30, fingerprint="f")
    for i in (0, 2):
        s, e = w.chunk_range(i)
        w.write_chunk(i, {g: b.take(slice(s, e)) for g, b in blocks.items()})
    del w  # "crash"
    w = DatasetWriter(out, nodes, 100, 30, fingerprint="f")
    assert w.pending() == [1, 3]
    for i in w.pending():
        s, e = w.chunk_range(i)
        w.write_chunk(i, {g: b.take(slice(s, e)) for g, b in blocks.items()})
    w.finalize()
    assert not (tmp_path / "out.h5.parts").exists()
    with Dataset(out) as a, Dataset(ref) as b:
        assert_blocks_equal(a.read(), b.read())
    # a rerun with the same fingerprint sees a complete file
    assert DatasetWriter(out, nodes, 100, 30, fingerprint="f").already_complete
    # a run killed after the final rename but before removing its parts: the rerun cleans up
    (tmp_path / "out.h5.parts").mkdir()
    (tmp_path / "out.h5.parts" / "chunk_0000001.h5").write_bytes(b"left over")
    assert DatasetWriter(out, nodes, 100, 30, fingerprint="f").already_complete
    assert not (tmp_path / "out.h5.parts").exists()


def test_other_arguments_refuse_to_resume(tmp_path, rng):
    nodes = make_nodes()
    w = DatasetWriter(tmp_path / "o.h5", nodes, 100, 30, fingerprint="a")
    w.write_chunk(0, {g: b.take(slice(0, 30)) for g, b in make_blocks(rng, 30).items()})
    with pytest.raises(ResumeError, match="partial run with other arguments"):
        DatasetWriter(tmp_path / "o.h5", nodes, 100, 30, fingerprint="b")
    w2 = DatasetWriter(tmp_path / "o.h5", nodes, 100, 30, fingerprint="b", overwrite=True)
    assert w2.pending() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("group", "mutate", "fragment"),
    [
        ("theta", lambda b: b.values.__setitem__((3, 1), np.nan), "node 'av' at row 3"),
        ("theta", lambda b: b.observed.__setitem__((2, 0), False), "fully observed"),
        (
            "phot",
            lambda b: (b.observed.__setitem__((4, 1), True), b.values.__setitem__((4, 1), np.inf)),
            "NaN or inf",
        ),
        (
            "phot",
            lambda b: (
                b.observed.__setitem__((5, 0), True),
                b.values.__setitem__((5, 0), 1.0),
                b.errors.__setitem__((5, 0), -0.1),
            ),
            "must be finite and >= 0",
        ),
        (
            "phot",
            lambda b: (
                b.observed.__setitem__((6, 0), False),
                b.upper_limit.__setitem__((6, 0), True),
            ),
            "upper limit flagged",
        ),
    ],
)
def test_invalid_values_are_rejected_with_node_and_row(tmp_path, rng, group, mutate, fragment):
    nodes = make_nodes()
    blocks = make_blocks(rng, 10)
    mutate(blocks[group])
    with pytest.raises(DataError, match=fragment):
        DatasetWriter.write(tmp_path / "bad.h5", nodes, blocks)
    assert not (tmp_path / "bad.h5").exists()


def test_wrong_shapes_and_groups(tmp_path, rng):
    nodes = make_nodes()
    blocks = make_blocks(rng, 10)
    bad = dict(blocks, phot=Block.exact(np.zeros((10, 3))))
    with pytest.raises(DataError, match=r"phot/values: expected shape \(10, 2\)"):
        DatasetWriter.write(tmp_path / "a.h5", nodes, bad)
    with pytest.raises(DataError, match="missing \\['xp'\\]"):
        DatasetWriter.write(tmp_path / "a.h5", nodes, {k: blocks[k] for k in ("theta", "phot")})


def test_unreadable_files(tmp_path, rng):
    with pytest.raises(DataError, match="does not exist"):
        Dataset(tmp_path / "nope.h5")
    (tmp_path / "empty.h5").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        Dataset(tmp_path / "empty.h5")
    path = DatasetWriter.write(tmp_path / "good.h5", make_nodes(), make_blocks(rng, 2000))
    raw = path.read_bytes()
    (tmp_path / "trunc.h5").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DataError, match="corrupt or truncated"):
        Dataset(tmp_path / "trunc.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(DataError, match="corrupt or truncated"):
        Dataset(tmp_path / "text.h5")


def test_foreign_or_future_schema(tmp_path, rng):
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["a"] = np.arange(3)
    with pytest.raises(SchemaError, match="not a dasbi dataset"):
        Dataset(tmp_path / "foreign.h5")
    path = DatasetWriter.write(tmp_path / "d.h5", make_nodes(), make_blocks(rng, 5))
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(SchemaError, match="schema version 99"):
        Dataset(path)


def test_node_validation():
    with pytest.raises(DataError, match="duplicate node names"):
        NodeSet([Node("a", "parameter", "theta"), Node("a", "observable", "x")])
    with pytest.raises(DataError, match="modality 'theta'"):
        Node("a", "parameter", "phot")
    with pytest.raises(DataError, match="size 1"):
        Node("a", "observable", "phot", size=3)
    with pytest.raises(DataError, match="invalid"):
        Node("bad name!", "observable", "phot")
    nodes = make_nodes()
    with pytest.raises(DataError, match="unknown node 'K'"):
        nodes.check_edges([("teff", "K")])
    assert NodeSet.from_json(nodes.to_json()) == nodes
    assert [n.name for n in nodes.diffuse] == ["teff", "av", "G", "J"]
    assert nodes.group_width("xp") == 5

from __future__ import annotations

import json
import pickle

import pytest
import torch

from dasbi.checkpoint import load_checkpoint, read_meta, save_checkpoint
from dasbi.errors import CheckpointError


def make(tmp_path):
    net = torch.nn.Linear(3, 2)
    path = save_checkpoint(
        tmp_path / "ckpt",
        tensors={"weights": net.state_dict(), "ema": {"w": torch.ones(2)}},
        config="a: 1\n",
        meta={"nodes": [{"name": "a"}], "standardisation": {"mean": [0.5]}},
        train_state={"step": 7, "opt": {"lr": torch.tensor(0.1)}},
    )
    return net, path


def test_round_trip_is_a_copy(tmp_path):
    net, path = make(tmp_path)
    before = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)  # training continues after the save
    ck = load_checkpoint(path, train_state=True)
    torch.testing.assert_close(ck.tensors["weights"]["weight"], before)
    torch.testing.assert_close(ck.tensors["ema"]["w"], torch.ones(2))
    assert ck.config == "a: 1\n"
    assert ck.meta["standardisation"] == {"mean": [0.5]}
    assert ck.meta["schema_version"] == 1 and "dasbi_version" in ck.meta
    assert ck.train_state["step"] == 7


def test_save_replaces_atomically(tmp_path):
    _, path = make(tmp_path)
    save_checkpoint(path, tensors={"weights": {"x": torch.zeros(1)}}, config="", meta={})
    ck = load_checkpoint(path)
    assert set(ck.tensors) == {"weights"}
    assert not list(tmp_path.glob(".ckpt.*"))


def test_corrupt_and_incompatible(tmp_path):
    _, path = make(tmp_path)
    raw = (path / "weights.safetensors").read_bytes()
    (path / "weights.safetensors").write_bytes(raw[:-8])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
    (path / "weights.safetensors").unlink()
    with pytest.raises(CheckpointError, match="weights.safetensors is missing"):
        load_checkpoint(path)
    meta = json.loads((path / "meta.json").read_text())
    meta["schema_version"] = 42
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="schema version 42"):
        read_meta(path)
    (path / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        read_meta(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="not a folder"):
        load_checkpoint(tmp_path / "file")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(CheckpointError, match="meta.json is missing"):
        load_checkpoint(tmp_path / "emptydir")


class Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_train_state_is_never_unpickled(tmp_path, capsys):
    _, path = make(tmp_path)
    (path / "train_state.pt").write_bytes(pickle.dumps({"x": Evil()}))
    meta = json.loads((path / "meta.json").read_text())
    import hashlib

    meta["files"]["train_state.pt"] = hashlib.sha256(
        (path / "train_state.pt").read_bytes()
    ).hexdigest()
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="cannot read training state"):
        load_checkpoint(path, train_state=True)
    assert "code ran" not in capsys.readouterr().out

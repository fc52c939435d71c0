from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml

from dasbi.config import (
    apply_overrides,
    fingerprint,
    from_dict,
    load_config,
    param,
    save_config,
    to_dict,
)
from dasbi.errors import ConfigError


@dataclass
class Optim:
    lr: float = param(1e-3, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["cosine", "constant"] = "cosine"


@dataclass
class Run:
    steps: int = param(100, ge=1)
    name: str = "run"
    out: Path | None = None
    flag: bool = False
    optim: Optim = field(default_factory=Optim)
    tags: list[str] = field(default_factory=list)


def test_defaults_and_nested_override():
    cfg = from_dict(Run, {"steps": 5, "optim": {"lr": 0.1}})
    assert cfg.steps == 5 and cfg.optim.lr == 0.1 and cfg.optim.schedule == "cosine"
    assert cfg.optim.betas == (0.9, 0.999)


def test_unknown_key_names_it_and_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        from_dict(Run, {"optim": {"lrr": 1.0}})
    msg = str(err.value)
    assert "optim.lrr" in msg and "unknown key 'lrr'" in msg
    assert "did you mean 'lr'" in msg
    assert "valid keys are: lr, betas, schedule" in msg


@pytest.mark.parametrize(
    ("data", "field_name", "fragment"),
    [
        ({"steps": "many"}, "steps", "expected int"),
        ({"steps": 1.5}, "steps", "expected an integer"),
        ({"steps": 0}, "steps", "must be >= 1"),
        ({"flag": "maybe"}, "flag", "expected true or false"),
        ({"optim": {"lr": -1.0}}, "optim.lr", "must be > 0.0"),
        ({"optim": {"schedule": "linear"}}, "optim.schedule", "expected one of 'cosine'"),
        ({"optim": {"betas": [0.9]}}, "optim.betas", "expected a list of 2 items"),
        ({"optim": 3}, "optim", "expected a mapping"),
        ({"tags": "a"}, "tags", "expected a list"),
        ({"name": 3}, "name", "expected a string"),
        ({"optim": {"lr": float("nan")}}, "optim.lr", "NaN"),
    ],
)
def test_wrong_type_or_range_names_the_field(data, field_name, fragment):
    with pytest.raises(ConfigError) as err:
        from_dict(Run, data)
    assert str(err.value).startswith(f"{field_name}:")
    assert fragment in str(err.value)


def test_numeric_strings_are_accepted():
    cfg = from_dict(Run, {"steps": "1e4", "optim": {"lr": "1e-4"}})
    assert cfg.steps == 10_000 and cfg.optim.lr == pytest.approx(1e-4)


def test_overrides_parse_yaml_scalars():
    data = apply_overrides({}, ["optim.lr=0.5", "flag=true", "tags=[a, b]", "out=runs/x"])
    cfg = from_dict(Run, data)
    assert cfg.optim.lr == 0.5 and cfg.flag is True and cfg.tags == ["a", "b"]
    assert cfg.out == Path("runs/x")


@pytest.mark.parametrize("bad", ["noequals", "=3", "a..b=1"])
def test_bad_override_syntax(bad):
    with pytest.raises(ConfigError, match="--set"):
        apply_overrides({}, [bad])


def test_yaml_file_then_set_then_updates(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 7\noptim:\n  lr: 0.2\n")
    cfg = load_config(Run, f, ["optim.lr=0.3"], {"steps": 9})
    assert cfg.steps == 9 and cfg.optim.lr == 0.3


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("steps: [1\n", "not valid YAML"), ("- 1\n- 2\n", "must hold a mapping")],
)
def test_bad_yaml_files(tmp_path, text, fragment):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(Run, f)


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Run, "/nonexistent/c.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Run, f)


def test_resolved_config_round_trip(tmp_path):
    cfg = from_dict(Run, {"steps": 3, "out": "a/b", "tags": ["x"]})
    path = save_config(cfg, tmp_path / "resolved.yaml")
    again = from_dict(Run, yaml.safe_load(path.read_text()))
    assert again == cfg
    assert to_dict(again)["out"] == "a/b"
    assert fingerprint(cfg) == fingerprint(again)
    assert fingerprint(cfg) != fingerprint(from_dict(Run, {"steps": 4}))


def test_shipped_simulate_configs_validate():
    from dasbi.simulate import SimulateConfig, resolve_simulator

    root = Path(__file__).resolve().parents[1] / "configs" / "simulate"
    files = sorted(root.glob("*.yaml"))
    assert files, "configs/simulate/ holds no YAML files"
    for f in files:
        cfg = load_config(SimulateConfig, f)
        resolve_simulator(cfg.simulator)


def test_nested_overrides_merge_into_mapping_defaults():
    """`--set real.library_path=X` sets one key of the bench's `real` block; the block's
    other defaults (extinction law, R(V) spread, zero points, error scale) stay."""
    from dasbi.bench.domain_adapt import DomainAdaptBenchConfig

    cfg = from_dict(
        DomainAdaptBenchConfig,
        apply_overrides({}, ["real.library_path=/x/table.csv", "sampler.steps=9"]),
    )
    assert cfg.real["library_path"] == "/x/table.csv"
    assert cfg.real["extinction_law"] == "F99" and cfg.real["error_scale"] == 2.0
    assert cfg.real["zero_point_offsets"]["gaia_BP"] == 0.04
    assert cfg.sampler == {"method": "dpm2m", "steps": 9}
    # deeper keys merge too, and a whole new mapping is still accepted
    cfg = from_dict(DomainAdaptBenchConfig, {"real": {"zero_point_offsets": {"wise_W1": 0.1}}})
    assert cfg.real["zero_point_offsets"] == {
        "gaia_BP": 0.04,
        "gaia_RP": -0.03,
        "2mass_J": 0.03,
        "2mass_Ks": 0.05,
        "wise_W1": 0.1,
    }


def test_configs_by_preset_name(tmp_path, monkeypatch):
    from dasbi.config import presets, resolve_config

    monkeypatch.chdir(tmp_path)
    assert {"field_stars", "two_moons", "yso"} <= set(presets("simulate"))
    assert resolve_config("two_moons", "simulate").name == "two_moons.yaml"
    assert resolve_config("two_moons.yaml", "simulate").name == "two_moons.yaml"
    (tmp_path / "configs" / "simulate").mkdir(parents=True)
    mine = tmp_path / "configs" / "simulate" / "two_moons.yaml"
    mine.write_text("num: 5\n")
    assert resolve_config("two_moons", "simulate").resolve() == mine.resolve()  # local first
    with pytest.raises(ConfigError, match="neither a file nor a preset.*field_stars"):
        resolve_config("fieldstars", "simulate")
    with pytest.raises(ConfigError, match="config file 'some/missing.yaml' does not exist"):
        resolve_config("some/missing.yaml", "simulate")

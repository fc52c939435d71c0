from __future__ import annotations

import json

import pytest

from dasbi.cli import main

COMMANDS = ["simulate", "train", "infer", "evaluate", "bench", "info"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert f"dasbi {command}" in out
    if command != "info":
        assert "--config FILE" in out and "--set KEY=VALUE" in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["simulate", "--set", "nmu=3"], "unknown key 'nmu' (did you mean 'num'?)"),
        (["simulate", "--num", "0"], "num: must be >= 1, got 0"),
        (["simulate", "--set", "seed=abc"], "seed: expected int, got string 'abc'"),
        (["simulate", "--simulator", "nope"], "unknown simulator 'nope'"),
        (["simulate", "--config", "/no/such.yaml"], "does not exist"),
        (
            ["simulate", "--set", "simulator.dim=0", "--simulator", "gaussian_linear"],
            "simulator.dim: must be >= 1",
        ),
        (["bench", "nope"], "unknown benchmark 'nope'"),
        (["info", "/no/such/file.h5"], "does not exist"),
        (
            [
                "simulate",
                "--simulator",
                "field_stars",
                "--set",
                "simulator.library=planck",
                "--set",
                "simulator.dust_map=/no/such/map.h5",
            ],
            "dust map /no/such/map.h5 does not exist",
        ),
        (
            ["simulate", "--simulator", "field_stars", "--set", "simulator.surveys=[gaia_dr9]"],
            "unknown survey 'gaia_dr9'; known surveys:",
        ),
        (
            ["simulate", "--simulator", "field_stars", "--set", "simulator.surveys=[2mass]"],
            "bands must include gaia_G",
        ),
        (
            ["simulate", "--simulator", "yso", "--set", "simulator.model_set=spubhmx"],
            "unknown YSO model set 'spubhmx'",
        ),
        (
            ["simulate", "--simulator", "yso", "--set", "simulator.grid=/no/such/grid"],
            "YSO model grid folder /no/such/grid not found",
        ),
    ],
)
def test_user_errors_are_one_line_without_traceback(argv, fragment, tmp_path, capsys):
    if argv[0] == "simulate":
        argv = [*argv, "--out", str(tmp_path / "s.h5")]
    code = main([*argv, "--quiet"] if argv[0] != "info" else argv)
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err
    assert err.strip().count("\n") == 0
    assert err.startswith(f"dasbi {argv[0]}: error:")


def test_subprocess_exit_codes(cli, tmp_path):
    ok = cli("simulate", "--num", "50", "--out", str(tmp_path / "s.h5"))
    assert ok.returncode == 0, ok.stderr
    assert "wrote 50 simulations" in ok.stdout
    bad = cli("simulate", "--set", "chunk_size=-1", "--out", str(tmp_path / "t.h5"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "chunk_size: must be >= 1" in bad.stderr
    assert not (tmp_path / "t.h5").exists()


def test_config_file_flags_and_info(tmp_path, capsys):
    conf = tmp_path / "c.yaml"
    conf.write_text("simulator:\n  name: gaussian_linear\n  dim: 2\nnum: 30\n")
    out = tmp_path / "g.h5"
    assert (
        main(
            [
                "simulate",
                "--config",
                str(conf),
                "--set",
                "seed=4",
                "--num",
                "40",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 40 and info["seed"] == 4
    assert [n["name"] for n in info["nodes"]] == ["theta_1", "theta_2", "x_1", "x_2"]
    assert main(["info", "--schema", "simulate"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {r["key"] for r in schema} >= {"num", "seed", "chunk_size", "simulator"}
    assert main(["info"]) == 0
    system = json.loads(capsys.readouterr().out)
    assert "two_moons" in system["simulators"] and "field_stars" in system["simulators"]
    assert "gaia_dr3" in system["surveys"] and "irac_1" in system["filters"]


def test_train_cli_end_to_end_and_errors(cli, tmp_path):
    sims = tmp_path / "s.h5"
    assert cli("simulate", "--num", "300", "--out", str(sims)).returncode == 0
    ok = cli(
        "train",
        "--data",
        str(sims),
        "--out",
        str(tmp_path / "m"),
        "--max-steps",
        "20",
        "--set",
        "network.dim=16",
        "--set",
        "network.heads=2",
        "--set",
        "val_every=10",
    )
    assert ok.returncode == 0, ok.stderr
    assert "trained 20 steps" in ok.stdout
    assert (tmp_path / "m" / "meta.json").exists() and (tmp_path / "m" / "config.yaml").exists()
    again = cli("train", "--data", str(sims), "--out", str(tmp_path / "m"), "--max-steps", "20")
    assert again.returncode == 2 and "--resume" in again.stderr
    for argv, fragment in [
        (["train"], "needs --data"),
        (["train", "--data", str(tmp_path / "nope.h5")], "does not exist"),
        (["train", "--data", str(sims), "--set", "network.dimm=3"], "unknown key 'dimm'"),
        (["train", "--data", str(sims), "--set", "attention=sparse"], "attention: expected one"),
        (["train", "--data", str(sims), "--real", "r.h5"], "need --domain-adapt"),
    ]:
        res = cli(*argv, "--out", str(tmp_path / "x"))
        assert res.returncode == 2, (argv, res.stderr)
        assert fragment in res.stderr and "Traceback" not in res.stderr


def test_steps_flags_say_what_they_count(tmp_path, capsys):
    """Training steps are --max-steps (train); solver steps are sampler_steps (infer,
    evaluate), and the old ambiguous infer key is explained; a device the machine lacks is a
    one-line error."""
    import torch

    code = main(["infer", "--set", "steps=10", "--out", str(tmp_path / "p.h5"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "'steps' is now 'sampler_steps'" in err
    if not torch.cuda.is_available():
        code = main(["evaluate", "--model", "m", "--data", "d.h5", "--device", "cuda", "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and "no CUDA GPU is available" in err
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--max-steps" in capsys.readouterr().out

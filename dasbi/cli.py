"""The `dasbi` command line: a thin layer that parses flags, loads configs and calls the library.

Each subcommand accepts ``--config FILE`` (YAML overriding the embedded defaults) and any
number of ``--set key.sub=value`` overrides; explicit flags such as ``--num`` win over both.
User errors print one line (``dasbi <command>: error: …``) and exit with status 2; pass
``--debug`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._version import __version__
from .errors import DasbiError

__all__ = ["build_parser", "main"]

EXIT_USER_ERROR = 2


def _common(p: argparse.ArgumentParser, config: bool = True) -> None:
    if config:
        p.add_argument(
            "--config",
            metavar="FILE",
            help="YAML config overriding the defaults: a path, or a preset's name "
            "(dasbi simulate --config field_stars; `dasbi info` lists the presets)",
        )
        p.add_argument(
            "--set",
            metavar="KEY=VALUE",
            action="append",
            default=[],
            dest="overrides",
            help="override one config key (repeatable), e.g. --set train.lr=1e-3",
        )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _updates(args: argparse.Namespace, mapping: dict[str, str]) -> dict[str, Any]:
    """Turn explicitly given flags into a nested config update."""
    out: dict[str, Any] = {}
    for flag, key in mapping.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


# -- simulate ------------------------------------------------------------------------------
def _cmd_simulate(args: argparse.Namespace) -> int:
    from .config import apply_overrides, from_dict, merge, read_yaml, resolve_config
    from .simulate import SimulateConfig, run_simulate

    data = read_yaml(resolve_config(args.config, "simulate")) if args.config else {}
    data = apply_overrides(data, args.overrides)
    if args.simulator:
        current = data.get("simulator") or {}
        if current.get("name", args.simulator) != args.simulator:
            current = {}  # another simulator: its options start from its own defaults
        data["simulator"] = {**current, "name": args.simulator}
    data = merge(
        data,
        _updates(
            args,
            {
                "num": "num",
                "seed": "seed",
                "chunk_size": "chunk_size",
                "workers": "workers",
                "backend": "backend",
            },
        ),
    )
    cfg = from_dict(SimulateConfig, data)
    path = run_simulate(cfg, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {cfg.num} simulations to {path}")
    return 0


def _add_simulate(sub: Any) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate a dataset (θ, x) to HDF5",
        description="Draw θ from the prior, run the simulator, and write a chunked, "
        "compressed HDF5 dataset. Rerunning an interrupted command resumes it.",
    )
    _common(p)
    p.add_argument("--simulator", help="simulator name (see `dasbi info`)")
    p.add_argument("--num", type=int, help="number of simulations")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--chunk-size", type=int, help="rows per chunk")
    p.add_argument("--workers", type=int, help="parallel processes / Ray tasks")
    p.add_argument("--backend", choices=["local", "ray"], help="execution backend")
    p.add_argument("--out", default="runs/sims.h5", help="output .h5 file (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output")
    p.set_defaults(func=_cmd_simulate)


# -- train -----------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    """`dasbi train`: plain, or with --domain-adapt."""
    from .config import load_config
    from .errors import ConfigError
    from .train import TrainConfig, train

    if (args.real or args.pairs) and not args.domain_adapt:
        raise ConfigError("--real and --pairs need --domain-adapt")
    if not args.data:
        raise ConfigError("dasbi train needs --data FILE (a dataset from `dasbi simulate`)")
    updates: dict[str, Any] = {}
    if args.steps is not None:
        updates["max_steps"] = args.steps
    if args.seed is not None:
        updates["seed"] = args.seed
    if args.domain_adapt:
        from .adapt import DomainAdaptConfig, train_domain_adapt

        if not args.real:
            raise ConfigError("--domain-adapt needs --real FILE (a dataset of real objects)")
        da_cfg = load_config(DomainAdaptConfig, args.config, args.overrides, updates)
        post, history = train_domain_adapt(
            args.data,
            args.real,
            da_cfg,
            pairs=tuple(args.pairs) if args.pairs else None,
            out=args.out,
            overwrite=args.overwrite,
            resume=args.resume,
            progress=not args.quiet,
        )
        last = history[-1] if history else {}
        terms = ", ".join(
            f"{k} {v:.4g}" for k, v in last.items() if k not in ("step", "lr") and v is not None
        )
        steps = post.meta["training"]["steps"]
        print(f"trained {steps} steps ({terms}); checkpoint in {args.out}")
        return 0
    cfg = load_config(TrainConfig, args.config, args.overrides, updates)
    result = train(
        args.data,
        cfg,
        out=args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    best = result.posterior.meta["training"]["best_val_loss"]
    print(
        f"trained {result.steps} steps in {result.train_seconds:.1f} s"
        + (f" (best validation loss {best:.4g})" if best is not None else "")
        + f"; checkpoint in {args.out}"
    )
    return 0


def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a Simformer on a dataset",
        description="Train the score model over the joint (θ, x) of a simulated dataset; "
        "with --domain-adapt, also align simulated and real data.",
    )
    _common(p)
    p.add_argument("--data", help="simulated dataset (.h5)")
    p.add_argument("--out", default="runs/model", help="checkpoint folder (default %(default)s)")
    p.add_argument("--domain-adapt", action="store_true", help="add the alignment losses")
    p.add_argument("--real", help="real dataset (.h5) for --domain-adapt")
    p.add_argument(
        "--pairs",
        nargs=2,
        metavar=("SIM", "REAL"),
        help="sim-real pairs for --domain-adapt: two datasets whose rows are the same objects",
    )
    p.add_argument(
        "--max-steps", dest="steps", type=int, help="maximum optimisation (training) steps"
    )
    p.add_argument("--steps", dest="steps", type=int, help=argparse.SUPPRESS)  # old name
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint")
    p.set_defaults(func=_cmd_train)


# -- infer -----------------------------------------------------------------------------------
def _cmd_infer(args: argparse.Namespace) -> int:
    from .infer import run_infer_cli

    return run_infer_cli(args)


def _add_infer(sub: Any) -> None:
    p = sub.add_parser(
        "infer",
        help="posteriors for every object of a catalogue",
        description="Sample posteriors for a catalogue in resumable chunks and write "
        "summaries (median, 16/84 percentiles, mean, std) to HDF5 and FITS.",
    )
    _common(p)
    p.add_argument("--model", help="checkpoint folder")
    p.add_argument("--catalogue", help="catalogue (FITS, CSV, MRT, VOTable, HDF5, Parquet)")
    p.add_argument("--survey", help="survey column map (configs/surveys/*.yaml)")
    p.add_argument("--out", default="runs/posteriors.h5", help="output .h5 (default %(default)s)")
    p.add_argument("--num-samples", type=int, help="posterior samples per object")
    p.add_argument("--sampler-steps", type=int, help="sampler (solver) steps")
    p.add_argument("--device", help="torch device of the model (cpu, cuda, cuda:1, mps)")
    p.add_argument(
        "--spectra",
        action="append",
        metavar="NODE=FILE",
        help="spectra of a spectrum node, e.g. xp_spectrum=xp.csv (Gaia XP coefficients, "
        "matched to the catalogue by id; models trained with --domain-adapt on spectra)",
    )
    p.add_argument("--backend", choices=["local", "ray"], help="execution backend")
    p.add_argument("--overwrite", action="store_true", help="replace existing output")
    p.set_defaults(func=_cmd_infer)


# -- ingest ----------------------------------------------------------------------------------
def _cmd_ingest(args: argparse.Namespace) -> int:
    from .catalogue import catalogue_to_dataset, parse_spectra

    spectra = parse_spectra(args.spectra)
    path, report = catalogue_to_dataset(
        args.catalogue,
        args.survey,
        args.like,
        args.out,
        overwrite=args.overwrite,
        spectra=spectra or None,
    )
    counts = report.counts()
    rejected = sum(v for k, v in counts.items() if k.startswith("row rejected"))
    print(
        f"wrote {path} ({rejected} rows rejected, {len(report.rows) - rejected} values "
        f"ignored; see {path.stem}.rejected.ecsv)"
    )
    return 0


def _add_ingest(sub: Any) -> None:
    p = sub.add_parser(
        "ingest",
        help="a real catalogue as a dataset (--real of train --domain-adapt)",
        description="Apply a survey column map to a catalogue and write its observables "
        "as a dasbi dataset with the nodes of a simulated dataset or model.",
    )
    _common(p, config=False)
    p.add_argument("--catalogue", required=True, help="catalogue (FITS, CSV, MRT, VOTable, …)")
    p.add_argument("--survey", required=True, help="survey column map (configs/surveys/*.yaml)")
    p.add_argument("--like", required=True, help="simulated dataset (.h5) or model folder")
    p.add_argument("--out", required=True, help="output dataset (.h5)")
    p.add_argument(
        "--spectra",
        action="append",
        metavar="NODE=FILE",
        help="spectra of a spectrum node, e.g. xp_spectrum=xp.csv: Gaia XP coefficients in "
        "the archive's layout (CSV, FITS, ECSV, VOTable) or an .npz with source_id and X, "
        "matched to the catalogue by its id (overrides the column map's spectra:)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output")
    p.set_defaults(func=_cmd_ingest)


# -- pairs -----------------------------------------------------------------------------------
def _cmd_pairs(args: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .pairs import pairs_from_catalogue

    labels = {}
    for item in args.labels:
        name, sep, col = item.partition("=")
        if not sep or not name or not col:
            raise ConfigError(f"--labels takes PARAMETER=COLUMN, got {item!r}")
        labels[name] = col
    p_sim, p_real, n = pairs_from_catalogue(
        args.catalogue,
        args.survey,
        args.like,
        labels,
        args.out_sim,
        args.out_real,
        seed=args.seed,
    )
    print(f"wrote {n} pairs: simulated twins in {p_sim}, real objects in {p_real}")
    return 0


def _add_pairs(sub: Any) -> None:
    p = sub.add_parser(
        "pairs",
        help="labelled real objects and their simulated twins (--pairs of train)",
        description="For every catalogue object with labelled parameters (e.g. a "
        "spectroscopic T_eff and A_V), simulate a twin at those labels with the other "
        "parameters drawn from the prior given them, and write both sides as datasets whose "
        "rows are the same objects.",
    )
    _common(p, config=False)
    p.add_argument("--catalogue", required=True, help="catalogue with the label columns")
    p.add_argument("--survey", required=True, help="survey column map (configs/surveys/*.yaml)")
    p.add_argument("--like", required=True, help="the simulated training dataset (.h5)")
    p.add_argument(
        "--labels",
        required=True,
        nargs="+",
        metavar="PARAMETER=COLUMN",
        help="e.g. star.temperature=teff_spt av=a_v",
    )
    p.add_argument("--out-sim", required=True, help="output dataset of the twins (.h5)")
    p.add_argument("--out-real", required=True, help="output dataset of the real objects (.h5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the twins' nuisances and noise")
    p.set_defaults(func=_cmd_pairs)


# -- evaluate --------------------------------------------------------------------------------
def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import run_evaluate_cli

    return run_evaluate_cli(args)


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="calibration and recovery diagnostics",
        description="Posterior diagnostics on held-out simulations: SBC ranks, expected "
        "coverage, TARP and parameter recovery, written as PNG + JSON.",
    )
    _common(p)
    p.add_argument("--model", help="checkpoint folder")
    p.add_argument("--data", help="held-out simulated dataset (.h5)")
    p.add_argument("--out", default="runs/evaluation", help="output folder (default %(default)s)")
    p.add_argument("--num-objects", type=int, help="number of test objects")
    p.add_argument("--num-samples", type=int, help="posterior samples per object")
    p.add_argument("--sampler-steps", type=int, help="sampler (solver) steps")
    p.add_argument("--device", help="torch device of the model (cpu, cuda, cuda:1, mps)")
    p.set_defaults(func=_cmd_evaluate)


# -- bench -----------------------------------------------------------------------------------
def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    path = run_bench(
        args.name,
        out=args.out,
        quick=args.quick,
        config=args.config,
        overrides=args.overrides,
        progress=not args.quiet,
    )
    print(f"wrote benchmark results to {path}")
    return 0


def _add_bench(sub: Any) -> None:
    from .bench import BENCHMARKS

    p = sub.add_parser(
        "bench",
        help="benchmarks writing JSON (machine, versions, settings, results)",
        description="Run a benchmark and write one JSON file. --quick runs a tiny version.",
    )
    _common(p)
    p.add_argument("name", help=f"benchmark: {', '.join(sorted(BENCHMARKS))}")
    p.add_argument("--out", help="JSON output (default runs/bench/<name>.json)")
    p.add_argument("--quick", action="store_true", help="tiny settings (about a minute)")
    p.set_defaults(func=_cmd_bench)


# -- info ------------------------------------------------------------------------------------
def _cmd_info(args: argparse.Namespace) -> int:
    from .info import describe_path, describe_system

    text = describe_path(Path(args.path)) if args.path else describe_system(args.schema)
    print(json.dumps(text, indent=2, default=str) if not isinstance(text, str) else text)
    return 0


def _add_info(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="versions, simulators, config keys, or describe a file",
        description="Without arguments: versions, machine and registered simulators. With a "
        "path: describe a dataset (.h5) or checkpoint folder.",
    )
    _common(p, config=False)
    p.add_argument("path", nargs="?", help="dataset file or checkpoint folder to describe")
    p.add_argument(
        "--schema",
        choices=["simulate", "train", "infer", "evaluate"],
        help="list the config keys of a command with defaults and help",
    )
    p.set_defaults(func=_cmd_info)


# -- data ------------------------------------------------------------------------------------
def _cmd_data(args: argparse.Namespace) -> int:
    from simulators import data

    from .errors import ConfigError, DataError

    reg = data.registry()
    if args.action in ("path", "fetch") and not args.name:
        raise ConfigError(f"dasbi data {args.action} needs a NAME; `dasbi data list` shows them")
    if args.action == "fetch":
        try:
            paths = data.fetch(
                args.name, mirror=args.mirror, force=args.force, progress=not args.quiet
            )
        except KeyError as err:
            raise ConfigError(str(err.args[0])) from None
        except ValueError as err:
            raise DataError(str(err)) from None
        print(f"{len(paths)} file(s) of {args.name} available, e.g. {paths[0]}")
        return 0
    if args.action == "path":
        print(data.find_data(args.name))
        return 0
    names = sorted(reg) if not args.name else sorted(f.name for f in data.matching(args.name))
    if args.name and not names:
        raise ConfigError(f"{args.name!r} is not a registered data file or folder")
    rows = [data.describe(reg[n]) for n in names]
    bad = [r for r in rows if r["state"] != "ok"]
    if args.action == "verify":
        for r in bad:
            print(f"{r['state']:>13}  {r['name']}" + (f"  ({r['path']})" if r["path"] else ""))
        print(f"{len(rows) - len(bad)} of {len(rows)} files present with the registered SHA-256")
        return 1 if bad else 0
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(reg[r["name"]].collection, []).append(r)
    print(f"{'name':<42} {'files':>5} {'MB':>7}  {'present':>7}  download  source")
    for coll, rs in by.items():
        ok = sum(r["state"] == "ok" for r in rs)
        n_dl = sum(r["download"] for r in rs)
        dl = "yes" if n_dl == len(rs) else ("no" if not n_dl else f"{n_dl}/{len(rs)}")
        mb = sum(r["size"] for r in rs) / 1e6
        print(f"{coll:<42} {len(rs):>5} {mb:>7.1f}  {ok:>7}  {dl:<8}  {rs[0]['source'][:60]}")
    roots = dict.fromkeys(str(p.resolve()) for p in data.data_roots())
    print(f"searched, in order: {', '.join(roots)}")
    return 0


def _add_data(sub: Any) -> None:
    p = sub.add_parser(
        "data",
        help="real data and model grids: list, fetch, path, verify",
        description="The registry of real data files and model grids: each file's public "
        "source and SHA-256. Data folders (DASBI_DATA, ../shared/data) act as a pre-filled "
        "cache; downloads go to DASBI_CACHE or the user cache folder.",
    )
    _common(p, config=False)
    p.add_argument("action", choices=["list", "fetch", "path", "verify"])
    p.add_argument("name", nargs="?", help="a registered file or folder (see `dasbi data list`)")
    p.add_argument("--mirror", help="base URL of a copy of the data folder's layout")
    p.add_argument("--force", action="store_true", help="download even where a copy exists")
    p.set_defaults(func=_cmd_data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dasbi",
        description="Domain-adaptive simulation-based inference for astronomy.",
    )
    parser.add_argument("--version", action="version", version=f"dasbi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    adders = (
        _add_simulate,
        _add_train,
        _add_ingest,
        _add_pairs,
        _add_infer,
        _add_evaluate,
        _add_bench,
    )
    for add in (*adders, _add_data, _add_info):
        add(sub)
    return parser


def _os_error(err: OSError) -> str:
    import errno

    hints = {
        errno.ENOSPC: "the disk is full: free space, then rerun the same command to resume",
        errno.EDQUOT: "the disk quota is exceeded: free space, then rerun the same command",
        errno.EACCES: "permission denied: choose a folder you can write to",
        errno.EPERM: "permission denied: choose a folder you can write to",
        errno.EROFS: "the file system is read-only: choose another folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
        errno.EEXIST: "a file is in the way of a folder: check the path",
        errno.ENOENT: "no such file or folder (or it cannot be created there): check the path",
    }
    hint = hints.get(err.errno or 0, "check the path")
    return f"{err.strerror or err} for {err.filename!s}; {hint}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dasbi` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args) or 0)
    except DasbiError as err:
        if args.debug:
            raise
        msg = " ".join(str(err).split())
        print(f"dasbi {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USER_ERROR
    except FileNotFoundError as err:
        from simulators.data import MissingDataError

        if args.debug or not isinstance(err, MissingDataError):
            if err.filename is None or args.debug:
                raise
            print(f"dasbi {args.command}: error: {_os_error(err)}", file=sys.stderr)
            return EXIT_USER_ERROR
        print(f"dasbi {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:
        # a path the file system refuses (not a folder, permissions, disk full): the
        # user's environment, not a bug in dasbi; other OS errors keep their traceback
        if args.debug or err.filename is None:
            raise
        print(f"dasbi {args.command}: error: {_os_error(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(
            f"dasbi {args.command}: interrupted; rerun the same command to resume", file=sys.stderr
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""`dasbi infer`: posteriors for every object of a real catalogue, in resumable chunks.

Steps: load the model (:class:`dasbi.Posterior`; one trained with --domain-adapt samples
with its real-data encoders), read
the catalogue with astropy, apply the survey's column map (:mod:`dasbi.catalogue`: units,
fluxes → magnitudes, limits, missing values; every rejected row and ignored value goes to
``<out>.rejected.ecsv``), then sample ``num_samples`` posterior draws per object chunk by
chunk. Chunk ``i`` uses the random seed ``(seed, i)`` and ``threads`` torch threads, so the
result does not depend on the backend, on the number of workers, or on whether the run was
interrupted: each finished chunk is written atomically to ``<out>.parts/`` and a rerun
skips it.

Output ``<out>`` (HDF5): ``/summary`` with one row per accepted object — ``id``, ``row``
(its row in the input), ``<param>_median``, ``_p16``, ``_p84``, ``_mean``, ``_std``,
``n_observed`` and ``flags`` — optionally ``/samples`` (N, S, P), gzip-compressed, and the
attributes ``model_sha256``, ``config`` (resolved YAML), ``parameters``, ``n_input``,
``n_rejected``. The same summary is written as FITS next to it (``<out stem>.fits``).

Flags (bits): 1 fewer than 3 observed values (fewer than all, for models with fewer
observables); 2 upper limits used; 4 some samples not
finite.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .config import (
    apply_overrides,
    check_device,
    dumps,
    fingerprint,
    from_dict,
    param,
    read_yaml,
    resolve_config,
    to_dict,
)
from .errors import ConfigError, DataError, ResumeError
from .fileio import atomic_path, recover
from .raybackend import ray_imap

__all__ = ["FLAGS", "InferConfig", "read_posteriors", "run_infer", "run_infer_cli"]

FLAGS = {"few_observed": 1, "upper_limits": 2, "nonfinite_samples": 4}


@dataclass
class InferConfig:
    """Settings of `dasbi infer` (YAML or ``--set``; flags win)."""

    model: str | None = param(None, help="checkpoint folder written by `dasbi train`")
    catalogue: str | None = param(
        None, help="catalogue file (FITS, CSV, MRT, VOTable, HDF5, Parquet)"
    )
    survey: str | None = param(None, help="survey YAML with a catalogue: column map")
    format: str | None = param(None, help="astropy format of the catalogue (default: extension)")
    num_samples: int = param(100, ge=1, help="posterior samples per object")
    chunk_size: int = param(1000, ge=1, help="objects per chunk (unit of resume and parallelism)")
    seed: int = param(0, ge=0, help="random seed")
    sampler: str | None = param(None, help="sampler, e.g. heun or dpm2m (default: the model's)")
    sampler_steps: int | None = param(
        None, ge=1, help="sampler (solver) steps (default: the model's)"
    )
    precision: Literal["float32", "bfloat16"] | None = param(
        None, help="network arithmetic while sampling (default: the model's, float32)"
    )
    sigma_knee: float | None = param(
        None,
        ge=0.0,
        help="dpm2m noise grid: one step from the top down to this σ, then log-uniform "
        "(default: the sampler's, 3; 0 for log-uniform from the top)",
    )
    sigma_end: float | None = param(
        None,
        gt=0.0,
        help="heun/dpm2m noise grids: the last σ before the final denoising step (default: "
        "the SDE's σ_min, 1e-3). With 8-12 dpm2m steps, 0.01 is more accurate on sbibm "
        "two_moons, but it narrows posteriors whose standardised width is near it",
    )
    threads: int = param(2, ge=1, help="torch threads per chunk (fixed so results repeat)")
    device: str = param(
        "cpu", help="torch device of the model: cpu, cuda, cuda:1, mps (local backend)"
    )
    spectra: dict[str, str] = param(
        default_factory=dict,
        help="spectrum node → Gaia XP coefficients (archive layout or .npz), matched to the "
        "catalogue by id; adds to the column map's spectra: (models with encoders only)",
    )
    save_samples: bool = param(False, help="store the (N, S, P) samples in /samples")
    samples_dtype: Literal["float32", "float16"] = param("float32", help="dtype of /samples")
    fits: bool = param(True, help="also write the summary as <out stem>.fits")
    backend: Literal["local", "ray"] = param("local", help="local process or Ray")
    workers: int = param(1, ge=1, le=1024, help="Ray tasks in flight")
    ray_address: str | None = param(None, help="Ray cluster address (default: local Ray)")


# -- one chunk ------------------------------------------------------------------------------
_POSTERIORS: dict[str, Any] = {}


def _posterior(path: str, device: str = "cpu") -> Any:
    from .posterior import Posterior

    key = f"{path}@{device}"
    if key not in _POSTERIORS:
        _POSTERIORS.clear()
        # one loader for both kinds: with modality encoders (dasbi train --domain-adapt),
        # sample() reads x through the real-data encoders
        _POSTERIORS[key] = Posterior.load(path, device=device)
    return _POSTERIORS[key]


def _infer_chunk(
    model: str,
    index: int,
    given: dict[str, np.ndarray],
    errors: dict[str, np.ndarray],
    limits: dict[str, np.ndarray],
    opts: dict[str, Any],
    spectra: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, np.ndarray]:
    """Summaries (and samples) of one chunk; top level so Ray can ship it."""
    import torch

    torch.set_num_threads(opts["threads"])
    post = _posterior(model, opts.get("device", "cpu"))
    seed = (
        int.from_bytes(hashlib.sha256(f"{opts['seed']}-{index}".encode()).digest()[:4], "little")
        & 0x7FFFFFFF
    )
    sampler = {
        k: opts[k]
        for k in ("method", "steps", "precision", "sigma_knee", "sigma_end")
        if opts.get(k) is not None
    }
    kw = {"sampler": sampler} if sampler else {}
    with torch.no_grad():  # not inference_mode: limit guidance re-enables gradients
        s = post.sample(
            (opts["num_samples"],),
            x=given,
            errors=errors,
            upper_limits=limits,
            seed=seed,
            **({"spectra": spectra} if spectra else {}),
            **kw,
        ).numpy()  # (S, B, P)
    finite = np.all(np.isfinite(s), axis=(0, 2))
    # numpy's nan-aware percentile loops over every (object, parameter) in Python: use it
    # only when some sample is not finite
    nan = not bool(finite.all())
    percentile, mean, std = (
        (np.nanpercentile, np.nanmean, np.nanstd) if nan else (np.percentile, np.mean, np.std)
    )
    with np.errstate(all="ignore"):
        q = percentile(s, [50, 16, 84], axis=0)
        out = {"median": q[0], "p16": q[1], "p84": q[2], "mean": mean(s, 0), "std": std(s, 0)}
    n_obs = np.sum([np.isfinite(v) for v in given.values()], axis=0)
    lim = np.any([v for v in limits.values()], axis=0) if limits else np.zeros(len(n_obs), bool)
    flags = (
        (n_obs < min(3, len(given))) * FLAGS["few_observed"]
        + lim * FLAGS["upper_limits"]
        + (~finite) * FLAGS["nonfinite_samples"]
    )
    out = {k: v.astype(np.float32) for k, v in out.items()}
    out["n_observed"] = n_obs.astype(np.int32)
    out["flags"] = flags.astype(np.int32)
    if opts["save_samples"]:
        out["samples"] = np.moveaxis(s, 0, 1).astype(opts["samples_dtype"])
    return out


# -- driver ---------------------------------------------------------------------------------
def _model_sha256(path: Path) -> str:
    from .checkpoint import read_meta

    meta = read_meta(path)
    blob = json.dumps(meta.get("files", {}), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def _file_stamp(path: Path) -> dict[str, Any]:
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
    return {"size": st.st_size, "head_sha256": h.hexdigest()}


def _atomic_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def run_infer(
    cfg: InferConfig,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Run `dasbi infer` (see the module docstring); returns the output path.

    Memory: FITS, HDF5, Parquet, CSV and ECSV catalogues are read block by block
    (:class:`~dasbi.catalogue.Blocks`), and the column map, sampling and every output (HDF5,
    FITS summary, report) run one chunk of catalogue rows at a time, and the duplicate-id check
    works bucket by bucket (:class:`~dasbi.catalogue.IdIndex`), so memory does not grow
    with the catalogue (MRT and VOTable are read whole).
    """
    from .catalogue import (
        IdIndex,
        catalogue_ids,
        load_column_map,
        map_catalogue,
        open_catalogue,
        required_columns,
    )
    from .catalogue.xp import SampledXP
    from .progress import progress_bar

    for key in ("model", "catalogue", "survey"):
        if not getattr(cfg, key):
            raise ConfigError(f"dasbi infer needs --{key} (or {key}: in the config)")
    out = Path(out)
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise ConfigError(f"--out must end in .h5 or .hdf5, got {out.name}")
    model = Path(cfg.model).expanduser()
    model_sha = _model_sha256(model)
    check_device(cfg.device)
    post = _posterior(str(model), cfg.device)
    cmap = load_column_map(cfg.survey)
    table = open_catalogue(cfg.catalogue, cfg.format, required_columns(cmap))
    observables = post.observable_nodes
    needs = set(post.meta.get("needs_errors", []))
    n_input = len(table)
    if n_input == 0:
        raise DataError(f"catalogue {cfg.catalogue} has no rows")
    # a bad map (missing column, unknown unit) fails here, before any chunk runs
    head = table[:1]
    first = catalogue_ids(head, cmap) if cmap.id else None
    map_catalogue(head, cmap, observables, ids=first, id_status=np.array([""] * len(head), object))
    params = post.parameter_names
    spectrum_files = _spectrum_files(post, cmap, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover(out)  # a killed run's temporary copies
    fp = fingerprint(
        {
            "config": {
                k: v
                for k, v in to_dict(cfg).items()
                if k not in ("backend", "workers", "ray_address", "fits")
            },
            "model": model_sha,
            "catalogue": _file_stamp(Path(cfg.catalogue)),
            "map": Path(cmap.source).read_text() if cmap.source else "",
            "spectra": {k: _file_stamp(v) for k, v in spectrum_files.items()},
        }
    )
    if out.exists() and not overwrite:
        if _run_fingerprint(out) == fp:
            # this run has finished: rerunning changes nothing but the parts a run killed
            # between the final rename and their removal left behind
            shutil.rmtree(out.with_name(out.name + ".parts"), ignore_errors=True)
            return out
        raise ResumeError(
            f"{out} exists and was written by another run; pass --overwrite to replace it"
        )
    parts = out.with_name(out.name + ".parts")
    manifest = parts / "manifest.json"
    if parts.exists():
        try:
            old = json.loads(manifest.read_text()) if manifest.exists() else {}
        except (OSError, ValueError):
            old = {"fingerprint": fp} if not any(parts.glob("chunk_*.npz")) else {}
        if old.get("fingerprint") != fp:
            if not overwrite:
                raise ResumeError(
                    f"{parts} holds chunks of a different run (config, model or catalogue "
                    "changed); pass --overwrite to start again"
                )
            shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    with atomic_path(manifest) as tmp:
        tmp.write_text(json.dumps({"fingerprint": fp, "n": n_input}))
    starts = list(range(0, n_input, cfg.chunk_size))
    todo = [i for i, _ in enumerate(starts) if not (parts / f"chunk_{i:06d}.npz").exists()]
    # sampled once into the parts folder, a chunk at a time; each chunk reads its own rows
    spectra = {
        node: SampledXP.load(path, node, store=parts / f"xp_{node}.h5", progress=progress)
        for node, path in (spectrum_files.items() if todo else ())
    }
    opts = {
        "num_samples": cfg.num_samples,
        "seed": cfg.seed,
        "method": cfg.sampler,
        "steps": cfg.sampler_steps,
        "device": cfg.device,
        "precision": cfg.precision,
        "sigma_knee": cfg.sigma_knee,
        "sigma_end": cfg.sigma_end,
        "threads": cfg.threads,
        "save_samples": cfg.save_samples,
        "samples_dtype": cfg.samples_dtype,
    }

    index = IdIndex(table, cmap, progress=progress)  # missing and duplicate ids, bounded

    def mapped_chunk(i: int) -> Any:
        a, b = starts[i], min(starts[i] + cfg.chunk_size, n_input)
        block = table[a:b]
        ids = catalogue_ids(block, cmap) if cmap.id else None
        status = index.status(a, b, ids if ids is not None else index.ids(a, b))
        m = map_catalogue(
            block, cmap, observables, ids=ids, id_status=status, offset=a, needs_errors=needs
        )
        for sp in spectra.values():
            sp.report_into(m.report, m.ids, m.rows)
        return m

    def chunk_spectra(m: Any) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
        return {k: sp.rows(m.ids) for k, sp in spectra.items()} or None

    def finish(i: int, m: Any, res: dict[str, np.ndarray] | None) -> None:
        if res is None:  # no accepted row in this chunk
            res = _empty_result(len(params), opts)
        res.update(ids=m.ids.astype(np.str_), rows=m.rows.astype(np.int64))
        res.update(m.report.to_arrays())
        _atomic_npz(parts / f"chunk_{i:06d}.npz", res)
        bar.update(min(cfg.chunk_size, n_input - starts[i]))

    done = n_input - sum(min(cfg.chunk_size, n_input - starts[i]) for i in todo)
    bar = progress_bar(total=n_input, initial=done, desc="infer", unit="obj", disable=not progress)
    with bar:
        if cfg.backend == "ray":
            pending: dict[int, Any] = {}

            def jobs() -> Any:
                for i in todo:
                    m = pending[i] = mapped_chunk(i)
                    if len(m):
                        yield (
                            i,
                            (
                                str(model),
                                i,
                                m.values,
                                m.errors,
                                m.upper_limits,
                                opts,
                                chunk_spectra(m),
                            ),
                        )
                    else:
                        finish(i, pending.pop(i), None)

            for i, res in ray_imap(
                _infer_chunk,
                jobs(),
                workers=cfg.workers,
                address=cfg.ray_address,
                cpus_per_task=cfg.threads,
            ):
                finish(i, pending.pop(i), res)
        else:
            for i in todo:
                m = mapped_chunk(i)
                res = (
                    _infer_chunk(
                        str(model), i, m.values, m.errors, m.upper_limits, opts, chunk_spectra(m)
                    )
                    if len(m)
                    else None
                )
                finish(i, m, res)
    return _assemble(cfg, out, parts, len(starts), n_input, index.width, params, model_sha, fp)


def _spectrum_files(post: Any, cmap: Any, cfg: InferConfig) -> dict[str, Path]:
    """The spectrum files of the column map's ``spectra:`` and ``cfg.spectra``, by node."""
    from .catalogue import spectrum_file

    sources = {
        k: spectrum_file(f, cfg.catalogue or "", cmap) for k, (_, f) in cmap.spectra.items()
    }
    sources.update({k: Path(v) for k, v in cfg.spectra.items()})
    if not sources:
        return {}
    nodes = {
        n
        for sp in (getattr(post, "specs", None) or [])
        if sp["kind"] == "spectrum"
        for n in sp["nodes"]
    }
    unknown = sorted(set(sources) - nodes)
    if unknown:
        raise ConfigError(
            f"spectra for {unknown}, but the model reads "
            + (
                f"the spectrum nodes {sorted(nodes)}"
                if nodes
                else "no spectra (train with --domain-adapt on a dataset with spectra)"
            )
        )
    missing = {k: str(v) for k, v in sources.items() if not Path(v).is_file()}
    if missing:
        raise DataError(f"spectrum files not found: {missing}")
    return {k: Path(v) for k, v in sources.items()}


def _run_fingerprint(path: Path) -> str | None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get("run_fingerprint")
    except OSError:
        return None
    return value.decode() if isinstance(value, bytes) else value


def _empty_result(p: int, opts: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {k: np.zeros((0, p), np.float32) for k in ("median", "p16", "p84", "mean", "std")}
    out["n_observed"] = np.zeros(0, np.int32)
    out["flags"] = np.zeros(0, np.int32)
    if opts["save_samples"]:
        out["samples"] = np.zeros((0, opts["num_samples"], p), opts["samples_dtype"])
    return out


def _assemble(
    cfg: InferConfig,
    out: Path,
    parts: Path,
    n_chunks: int,
    n_input: int,
    id_width: int,
    params: list[str],
    model_sha: str,
    run_fp: str = "",
) -> Path:
    """Copy the chunk files into the output one chunk at a time (memory ∝ chunk size)."""
    import h5py

    from .catalogue import Report, ReportWriter

    stats = ("median", "p16", "p84", "mean", "std")
    dtype = np.dtype(
        [("id", f"S{id_width}"), ("row", np.int64)]
        + [(f"{p}_{st}", np.float32) for p in params for st in stats]
        + [("n_observed", np.int32), ("flags", np.int32)]
    )
    files = [parts / f"chunk_{i:06d}.npz" for i in range(n_chunks)]
    counts = []
    for path in files:
        with np.load(path) as z:
            counts.append(len(z["flags"]))
    n = sum(counts)
    if n == 0:
        total = Report()
        for path in files:
            with np.load(path) as z:
                total.extend(Report.from_arrays(z))
        shutil.rmtree(parts)
        raise DataError(
            f"no usable row in {cfg.catalogue}: all {n_input} rows were rejected "
            f"({total.counts()}); check the column map against the catalogue's columns, "
            "units and sentinels"
        )
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fits_path = out.with_suffix(".fits")
    with contextlib.ExitStack() as stack:
        f = stack.enter_context(h5py.File(tmp, "w"))
        report = stack.enter_context(ReportWriter(out.with_name(out.stem + ".rejected.ecsv")))
        fits_out = (
            stack.enter_context(_FitsSummaryWriter(fits_path, dtype, n, model_sha, n_input))
            if cfg.fits
            else None
        )
        summ = (
            f.create_dataset(
                "summary",
                shape=(n,),
                dtype=dtype,
                chunks=(max(1, min(n, 65536)),),
                compression="gzip",
            )
            if n
            else f.create_dataset("summary", shape=(0,), dtype=dtype)
        )
        samples = None
        if cfg.save_samples and n:
            samples = f.create_dataset(
                "samples",
                shape=(n, cfg.num_samples, len(params)),
                dtype=cfg.samples_dtype,
                chunks=(max(1, min(n, 1024)), cfg.num_samples, len(params)),
                compression="gzip",
            )
            samples.attrs["parameters"] = json.dumps(params)
        a = 0
        for path, count in zip(files, counts, strict=True):
            with np.load(path) as z:
                report.write(Report.from_arrays(z))
                if not count:
                    continue
                b = a + count
                rec = np.zeros(count, dtype)
                rec["id"] = np.char.encode(z["ids"])
                rec["row"] = z["rows"]
                for st in stats:
                    for j, p in enumerate(params):
                        rec[f"{p}_{st}"] = z[st][:, j]
                rec["n_observed"], rec["flags"] = z["n_observed"], z["flags"]
                summ[a:b] = rec
                if fits_out is not None:
                    fits_out.write(rec)
                if samples is not None:
                    samples[a:b] = z["samples"]
                a = b
        f.attrs["format"] = "dasbi-posteriors"
        f.attrs["schema_version"] = 1
        f.attrs["model_sha256"] = model_sha
        f.attrs["run_fingerprint"] = run_fp
        f.attrs["config"] = dumps(cfg)
        f.attrs["parameters"] = json.dumps(params)
        f.attrs["n_input"] = n_input
        f.attrs["n_rejected"] = n_input - n
        f.attrs["flags"] = json.dumps(FLAGS)
    os.replace(tmp, out)
    shutil.rmtree(parts)
    return out


class _FitsSummaryWriter:
    """The FITS copy of ``/summary``, streamed chunk by chunk (astropy's StreamingHDU):
    memory ∝ one chunk; written to a temporary name and renamed when complete."""

    def __init__(self, path: Path, dtype: np.dtype, n: int, model_sha: str, n_input: int) -> None:
        from astropy.io import fits

        self.path = path
        self._tmp = path.with_name(path.name + ".tmp")
        self._tmp.unlink(missing_ok=True)
        self._disk = np.dtype(dtype).newbyteorder(">")
        header = fits.BinTableHDU(np.zeros(0, dtype)).header
        header["NAXIS2"] = n
        header["MODELSHA"] = model_sha[:64]
        header["NINPUT"] = n_input
        self._n, self._written = n, 0
        self._hdu = fits.StreamingHDU(str(self._tmp), header)

    def write(self, rec: np.ndarray) -> None:
        self._hdu.write(np.ascontiguousarray(rec.astype(self._disk)).view(np.uint8))
        self._written += len(rec)

    def __enter__(self) -> _FitsSummaryWriter:
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        self._hdu.close()
        if kind is None and self._written == self._n:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def read_posteriors(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """The ``/summary`` table and the file attributes of a `dasbi infer` output."""
    import h5py
    from astropy.table import Table

    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != "dasbi-posteriors":
            from .errors import DataError

            raise DataError(f"{path} is not a `dasbi infer` output")
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        table = Table(f["summary"][:])
    table["id"] = np.char.decode(np.asarray(table["id"]), "utf-8")
    return table, attrs


def _renamed(data: dict[str, Any]) -> None:
    if "steps" in data:
        raise ConfigError(
            "infer: 'steps' is now 'sampler_steps' (the sampler's solver steps; training steps "
            "are `dasbi train --max-steps`)"
        )


def run_infer_cli(args: argparse.Namespace) -> int:
    data = read_yaml(resolve_config(args.config, "infer")) if args.config else {}
    data = apply_overrides(data, args.overrides)
    for key in ("model", "catalogue", "survey", "backend"):
        if getattr(args, key, None) is not None:
            data[key] = getattr(args, key)
    if getattr(args, "num_samples", None) is not None:
        data["num_samples"] = args.num_samples
    if getattr(args, "sampler_steps", None) is not None:
        data["sampler_steps"] = args.sampler_steps
    if getattr(args, "device", None) is not None:
        data["device"] = args.device
    from .catalogue import parse_spectra

    spectra = parse_spectra(getattr(args, "spectra", None))
    if spectra:
        data["spectra"] = {**data.get("spectra", {}), **spectra}
    _renamed(data)
    cfg = from_dict(InferConfig, data)
    path = run_infer(cfg, args.out, overwrite=args.overwrite, progress=not args.quiet)
    from .config import save_config

    save_config(cfg, path.with_name(path.stem + ".config.yaml"))
    also = f"summary also in {path.with_suffix('.fits').name}; " if cfg.fits else ""
    print(f"wrote posteriors to {path} ({also}rejected rows in {path.stem}.rejected.ecsv)")
    return 0

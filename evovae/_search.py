"""``evovae.search``: a search of data held in memory (or on disk), from Python, in this process or on local
workers, in a run directory that makes it resumable; and :class:`SearchResult`, what it found.

The same lifecycle as ``evovae search`` (evo/head/search_run.py): the options become a
:class:`~evo.search_config.SearchConfig` (checked as the strategy takes them), the data a file in the run
directory fingerprinted into the training spec (evovae/_data.py), the run a
:class:`~evo.head.search_run.SearchRun` - created, or opened again when the run directory holds the same search
(``SearchRun.named``) - replayed, run and finished.
"""
from __future__ import annotations

import argparse
import os
import re
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from evo.evaluation import Evaluation
from evo.genotype import Genotype, GenotypeError, parse_genotype
from evo.head.cache import ResultCache
from evo.head.journal import JournalError, RunJournal
from evo.head.search_run import OtherSettings, RunDirLocked, SearchRun, StorageError, default_run_dir
from evo.multifidelity import parse_fidelities
from evo.search_config import SearchConfig
from evo.selection import rank
from evo.space import SPACE_FIELDS, SearchSpace, space_for
from evo.spec import TrainSpec
from evo.strategies import OptionError, StrategyOptions
from evo.strategy import Report

from ._data import Staged, stage
from ._quiet import library_logging, pythonic, run_logs

if TYPE_CHECKING:
    from evo.cmdline.log_setup import RunLogs
    from gpuworker.inference import Model

__all__ = ["SearchResult", "search"]

log = structlog.get_logger(__name__)

#: the TrainSpec fields a caller names as parameters of :func:`search` (an error about one names it)
_SPEC_PARAMETERS = ("epochs", "batch_size", "lr", "seed", "train_subset", "val_size", "split_seed", "likelihood",
                    "columns", "image_size", "missing")


def _whole(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise OptionError(name, f"must be an integer >= {low}, got {value!r}")
    return value


def _check_types(image_size: object, fidelities: object, initial: object, run_dir: object, cache: object,
                 on_report: object) -> None:
    """OptionError naming the parameter for a value of the wrong kind that would otherwise surface as a
    TypeError or AttributeError from deep inside (``image_size=28``, ``fidelities=3``, ``run_dir=1``)."""
    def ints(value: object) -> bool:
        return (isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str)
                and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value))

    if image_size is not None and not isinstance(image_size, str) and not ints(image_size):
        raise OptionError("image_size", f"must be (H, W) or 'H,W', e.g. (28, 28), got {image_size!r}")
    if fidelities is not None and not isinstance(fidelities, str) and not ints(fidelities):
        raise OptionError("fidelities", f"must be increasing whole epochs, e.g. (1, 3, 9) or '1,3,9', got "
                                        f"{fidelities!r}")
    if (isinstance(initial, str) or not isinstance(initial, Sequence)
            or not all(isinstance(g, (str, Genotype)) for g in initial)):
        raise OptionError("initial", f"must be a sequence of genotypes, e.g. ['850|20|1000'], got {initial!r}")
    for name, path in (("run_dir", run_dir), ("cache", cache)):
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise OptionError(name, f"must be a path (str or pathlib.Path), got {path!r}")
    if on_report is not None and not callable(on_report):
        raise OptionError("on_report", f"must be a function taking a Report, or None, got {on_report!r}")


def search(data: Any, *,
           budget_epochs: int | None = None, generations: int | None = None,
           strategy: str | None = None, mode: str | None = None, epochs: int = 2,
           fidelities: Sequence[int] | str | None = None, eta: int = 3, brackets: int | None = None,
           rung_agreement: float | None = None, random_fraction: float = 0.0, noise_level: float | None = None,
           population: int = 10, offspring: int = 10, tournament_size: int = 3, startup_trials: int = 10,
           crossover_rate: float = 0.5, mutation_rate: float = 0.8, operators: str = "paper",
           continue_promotions: bool = True, initial: Sequence[str | Genotype] = (),
           space: SearchSpace | None = None, min_layers: int | None = None, max_layers: int | None = None,
           width_min: int | None = None, width_max: int | None = None, width_step: int | None = None,
           latent_min: int | None = None, latent_max: int | None = None, latent_step: int | None = None,
           columns: str | Sequence[str] | None = None, image_size: str | Sequence[int] | None = None,
           likelihood: str | None = None, missing: str = "error", val_size: int | None = None, split_seed: int = 0,
           train_subset: int = 0, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
           run_dir: str | os.PathLike[str] | None = None, workers: int = 0, device: str | None = None,
           threads: int = 0, cache: str | os.PathLike[str] | None = None,
           on_report: Callable[[Report], None] | None = None, verbose: bool = False) -> SearchResult:
    """Search VAE architectures for ``data`` and return what was found (docs/api.md).

    ``data``: a NumPy array or torch tensor ``[N, ...]`` (uint8 pixels, or numbers), a pandas DataFrame of
    numeric columns (``columns`` chooses some), or the path of a file or folder evovae reads. An array or a
    DataFrame is written once into the run directory (``data.npy``, ``data.csv``) and identified by its SHA-256.

    The search: ``strategy`` (``tpe`` by default, ``evolution``, ``regularized``, ``random``), ``mode``,
    ``fidelities``, ``eta``, ``brackets`` and the rest as ``evovae search`` takes them (``StrategyOptions``;
    with neither ``strategy`` nor ``mode``: TPE under asynchronous Hyperband, rungs epochs/9, epochs/3, epochs);
    an end: ``budget_epochs`` (training epochs in all) and/or ``generations`` (5 when neither is given).
    The space: ``min_layers``, ``max_layers``, ``width_min``, ``width_max``, ``width_step``, ``latent_min``,
    ``latent_max``, ``latent_step`` (not given: the paper's, the latent kept below the data's input dimension
    unless ``latent_max`` is given), or ``space=SearchSpace(...)`` exactly. Training: ``epochs`` per evaluation,
    ``batch_size``, ``lr``, ``seed``; the split: ``val_size`` (default a fifth of the examples, at most 10,000),
    ``split_seed``; ``likelihood`` (default: ``bernoulli`` for values in [0, 1], ``gaussian`` for tables and other
    numbers); ``missing``: ``error`` (the default), ``drop`` or ``mean`` for missing values (NaN, NA).

    ``run_dir`` (default ``runs/search-TIME-PID``): a new or empty directory, or one holding this same search,
    which then resumes where it stopped (what was evaluated is not evaluated again; a finished search returns
    its result at once). ``workers``: 0 trains in this process, N starts N local worker processes.
    ``on_report`` is called with each progress report; ``verbose`` prints progress lines on stdout and logs at
    info level on stderr (otherwise only warnings reach stderr, and nothing stdout).

    Refusals are :class:`~evo.strategies.OptionError` (a ValueError) naming the parameter.
    """
    with library_logging(verbose):
        _check_types(image_size, fidelities, initial, run_dir, cache, on_report)
        _whole("workers", workers, 0)
        _whole("threads", threads, 0)
        _whole("epochs", epochs, 1)
        _whole("eta", eta, 2)
        given_space = dict(min_layers=min_layers, max_layers=max_layers, width_min=width_min, width_max=width_max,
                           width_step=width_step, latent_min=latent_min, latent_max=latent_max,
                           latent_step=latent_step)
        for name, value in given_space.items():
            if value is not None:
                _whole(name, value, 1)
        if space is not None and not isinstance(space, SearchSpace):
            raise OptionError("space", f"must be an evo.space.SearchSpace, got {type(space).__name__}")
        named = [name for name, value in given_space.items() if value is not None]
        if space is not None and named:
            raise OptionError(named[0], "give the space's bounds or space=SearchSpace(...), not both")
        if device is not None:
            _check_device(device)
        run_path = Path(run_dir).expanduser() if run_dir is not None else default_run_dir()
        resuming = (run_path / RunJournal.FILE).is_file()
        if run_path.exists() and not run_path.is_dir():
            raise OptionError("run_dir", f"{run_path} is a file; give a new or empty directory")
        if not resuming and run_path.exists() and any(run_path.iterdir()):
            raise OptionError("run_dir", f"{run_path} is not empty, and holds no search; give a new or empty "
                                         "directory (or the run directory of a search to resume)")
        staged = stage(data, columns, missing)
        spec, input_dim = _spec(staged, run_path, image_size=image_size, likelihood=likelihood, missing=missing,
                                val_size=val_size, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                                train_subset=train_subset, split_seed=split_seed)
        space = space if space is not None else _space(given_space, input_dim)
        options = _options(dict(
            strategy=strategy, mode=mode, generations=generations, budget_epochs=budget_epochs, epochs=epochs,
            fidelities=fidelities, eta=eta, brackets=brackets, rung_agreement=rung_agreement, population=population,
            offspring=offspring, random_fraction=random_fraction, noise_level=noise_level,
            tournament_size=tournament_size, startup_trials=startup_trials, crossover_rate=crossover_rate,
            mutation_rate=mutation_rate, operators=operators, continue_promotions=continue_promotions,
            initial=initial, seed=seed), space)
        config = SearchConfig(options, spec, space)
        return _run(config, staged, run_path, workers=workers, device=device, threads=threads,
                    cache=cache, on_report=on_report, verbose=verbose)


def _space(given: dict[str, int | None], input_dim: int) -> SearchSpace:
    """The space of the bounds given (None: the paper's), the latent kept below ``input_dim`` unless
    ``latent_max`` is given (:func:`evo.space.space_for`, as ``evovae search`` makes it)."""
    try:
        space, note = space_for(given, input_dim)
    except ValueError as exc:
        text = str(exc)
        first = text.split(" ", 1)[0]
        raise OptionError(first if first in SPACE_FIELDS else "space", text) from None
    if note:
        log.info("search.space", note=note)
    return space


def _options(given: dict[str, Any], space: SearchSpace) -> StrategyOptions:
    """The strategy's options, the defaults ``evovae search`` fills in filled in the same way
    (evo.cli.search_options.default_strategy: TPE under asynchronous Hyperband when neither strategy nor mode
    is given; evolution with mode steady-state or initial genotypes; asha's rungs)."""
    from evo.cli.search_options import default_strategy

    try:
        initial = tuple(space.validate(parse_genotype(g) if isinstance(g, str) else g) for g in given["initial"])
    except (GenotypeError, TypeError) as exc:
        raise OptionError("initial", str(exc)) from None
    fidelities = given["fidelities"]
    if isinstance(fidelities, str):
        try:
            fidelities = parse_fidelities(fidelities)
        except ValueError as exc:
            raise OptionError("fidelities", str(exc).removeprefix("fidelities ")) from None
    args = argparse.Namespace(**{**given, "initial": [str(g) for g in initial],
                                 "fidelities": list(fidelities) if fidelities else None})
    default_strategy(args)
    values = {**given, "strategy": args.strategy, "mode": args.mode, "brackets": args.brackets,
              "rung_agreement": args.rung_agreement, "noise_level": args.noise_level,
              "generations": args.generations, "initial": initial, "fidelities": tuple(args.fidelities or ())}
    return StrategyOptions(**{f.name: values[f.name] for f in fields(StrategyOptions)})


def _check_device(device: str) -> None:
    from gpuworker.train import check_device

    try:
        check_device(device)
    except ValueError as exc:
        rest = pythonic(str(exc).split(": ", 1)[-1])
        raise OptionError("device", rest.replace("leave the option out", "device=None")) from None


def _spec_error(exc: Exception, probe: Path | None) -> OptionError:
    names = {str(probe): "data"} if probe is not None else {}
    text = pythonic(str(exc), names=names)
    first = text.split(" ", 1)[0].rstrip(":")
    if first in _SPEC_PARAMETERS:
        return OptionError(first, text[len(first):].lstrip(": ").strip())
    text = text.removeprefix("data: ")
    if text.startswith("no column "):  # a table file without a column given in columns=
        return OptionError("columns", text)
    named = [name for name in re.findall(r"\b([a-z_]+)=", text) if name in _SPEC_PARAMETERS]
    return OptionError(named[0] if named else "data", text)  # e.g. too few rows: "pass val_size=40"


def _spec(staged: Staged, run_dir: Path, *, image_size: str | Sequence[int] | None, likelihood: str | None,
          missing: str, val_size: int | None, **training: Any) -> tuple[TrainSpec, int]:
    """The training spec of a search of ``staged`` in ``run_dir``: the data read (from a temporary copy when it
    is to be written into the run directory), fingerprinted and split as every worker will, before anything is
    created; and the data's input dimension (values per example). OptionError naming the parameter for anything
    wrong."""
    from gpuworker.data import DataError, read_own
    from gpuworker.data.own import usable_examples
    from gpuworker.data_options import DataOptionError, check_split, default_val_size

    size = image_size if image_size is None or isinstance(image_size, str) else ",".join(str(v) for v in image_size)
    final = staged.path_in(run_dir)
    with tempfile.TemporaryDirectory(prefix="evovae-data-") as tmp:
        probe = final
        if staged.payload is not None:
            probe = Path(tmp) / staged.name
            probe.write_bytes(staged.payload)
        try:
            checked = TrainSpec(dataset=str(final), data_sha256="0" * 64, columns=staged.columns,
                                image_size=size or "", missing=missing)  # the format options, before data is read
            raw = read_own(probe, checked.columns, checked.image_size)
        except (DataError, ValueError) as exc:
            raise _spec_error(exc, probe) from None
        if val_size is None:
            val_size = default_val_size(usable_examples(raw, missing))
        try:
            spec = TrainSpec(dataset=str(final), data_sha256=raw.sha256, columns=checked.columns,
                             image_size=checked.image_size, likelihood=likelihood or raw.default_likelihood,
                             missing=missing, val_size=val_size, **training)
            check_split(spec)  # split (and standardised) as every worker will: too few rows, values outside [0, 1]
        except (DataOptionError, ValueError) as exc:
            raise _spec_error(exc, probe) from None
    return spec, int(np.prod(raw.shape))


def _differences(old: SearchConfig, new: SearchConfig) -> str:
    """What differs between two configurations, as ``name: old then, new now``."""
    def flat(config: SearchConfig) -> dict[str, Any]:
        d = config.to_dict()
        return {**d["options"], **{k: v for k, v in d["spec"].items() if k != "trainer"}, "space": d["space"]}

    a, b = flat(old), flat(new)
    names = {"data_sha256": "data (SHA-256)"}
    parts = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            before, after = a.get(key), b.get(key)
            if key == "data_sha256":
                before, after = f"{str(before)[:12]}...", f"{str(after)[:12]}..."
            parts.append(f"{names.get(key, key)}: {before!r} then, {after!r} now")
    return "; ".join(parts[:6]) or "the stored configuration"


def _open(run_dir: Path, config: SearchConfig, cache: ResultCache | None) -> SearchRun:
    try:
        return SearchRun.named(run_dir, config, cache=cache)
    except RunDirLocked as exc:
        raise OptionError("run_dir", str(exc)) from None
    except OtherSettings:
        pass  # said below, with what differs
    except JournalError as exc:
        raise OptionError("run_dir", pythonic(str(exc), names={"--run-dir": "run_dir"})) from None
    journal = RunJournal.open(run_dir, readonly=True)
    try:
        stored = SearchConfig.from_dict(journal.config)
    finally:
        journal.close()
    raise OptionError("run_dir", f"{run_dir} holds a search started with other settings ({_differences(stored, config)}"
                                 "); give the same settings and data to resume it, or a new run_dir")


def _write_data(staged: Staged, spec: TrainSpec) -> bool:
    """Write the staged data into the run directory unless it is there already; whether it was written."""
    if staged.payload is None:
        return False
    from gpuworker.data.fingerprint import digest

    target = Path(spec.dataset)
    if target.is_file() and digest(target.read_bytes()) == spec.data_sha256:
        return False
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(staged.payload)
    os.replace(partial, target)  # a kill leaves no half-written data under the name the workers read
    return True


def _run(config: SearchConfig, staged: Staged, run_dir: Path, *, workers: int, device: str | None, threads: int,
         cache: str | os.PathLike[str] | None, on_report: Callable[[Report], None] | None,
         verbose: bool) -> SearchResult:
    import evo.adapters
    from evo.cli.dashboard import attach_mirror

    evo.adapters.register_all()
    result_cache = None
    if cache is not None:
        try:
            result_cache = ResultCache(Path(cache).expanduser())
        except (JournalError, OSError) as exc:
            raise OptionError("cache", f"{cache}: cannot open or create the cache ({exc})") from None
    try:
        created = not (run_dir / RunJournal.FILE).is_file()
        run = _open(run_dir, config, result_cache)
        wrote = False
        failed = True
        logs = run_logs(run.run_dir, verbose)  # RUN_DIR/logs: head.log, worker-localN.log (a resume appends)
        try:
            wrote = _write_data(staged, config.spec)
            attach_mirror(run)  # RUN_DIR/optuna-journal.log: every evaluation, for evovae dashboard
            try:
                run.replay()
            except JournalError as exc:
                raise OptionError("run_dir", str(exc)) from None
            report = _reporter(on_report, verbose)
            if workers:
                _on_workers(run, workers, device, threads, logs, report)
            else:
                _in_process(run, device, threads, report)
            summary = run.finish()
            failed = False
        except StorageError as exc:
            raise RuntimeError(f"{exc}; the search stopped with what it had journaled: fix that, then call search "
                               f"again with run_dir={str(run.run_dir)!r} to resume") from None
        finally:
            nothing = failed and not run.evaluated
            logs.close()
            run.close(refused=failed)
            if nothing:
                logs.close(remove=True)  # a refused start leaves nothing behind
            if nothing and created and wrote and run.run_dir.exists():
                Path(config.spec.dataset).unlink(missing_ok=True)
    finally:
        if result_cache is not None:
            result_cache.close()
    return SearchResult.of(run, summary)


def _reporter(on_report: Callable[[Report], None] | None, verbose: bool) -> Callable[[Report], None] | None:
    if not verbose:
        return on_report
    from evo.head.progress import format_report

    def report(r: Report) -> None:
        print(format_report(r), flush=True)
        if on_report is not None:
            on_report(r)

    return report


def _in_process(run: SearchRun, device: str | None, threads: int, report: Callable[[Report], None] | None) -> None:
    from evo.cli.in_process import in_process_evaluator

    run.run(in_process_evaluator(run.checkpoints, device=device, threads=threads or None), lambda: 1,
            on_report=report)


def _on_workers(run: SearchRun, workers: int, device: str | None, threads: int, logs: RunLogs,
                report: Callable[[Report], None] | None) -> None:
    """The search on ``workers`` local worker processes; they log at info into ``logs`` (their files), which
    lets through to the terminal what the call's level does."""
    from evo.cli.distribution import for_run
    from evo.head.cluster import Cluster, ClusterError, ClusterOptions

    options = for_run(ClusterOptions(bind="tcp://127.0.0.1:*", local_workers=workers, threads=threads, device=device),
                      run.config.spec, run.checkpoints, log_level="info")
    try:
        with Cluster(options, worker_output=logs.workers) as cluster:
            run.run(cluster.evaluator(stop=threading.Event()), cluster.capacity, on_report=report)
    except ClusterError as exc:
        raise RuntimeError(pythonic(str(exc).replace("--local-workers", "--workers"))) from None


@dataclass(frozen=True)
class SearchResult:
    """What a search found. ``best``: the best evaluation at the final fidelity; ``population``: the strategy's
    final population, best first; ``evaluations``: every evaluation, in the order told; ``history``: one
    :class:`~evo.strategy.Report` per generation (or window of evaluations); ``stop_reason``: ``budget``,
    ``generations``, ``evaluations`` or ``space exhausted``; ``summary``: the run directory's ``result.json``."""

    run_dir: Path
    config: SearchConfig
    stop_reason: str | None
    best: Evaluation | None
    population: tuple[Evaluation, ...]
    evaluations: tuple[Evaluation, ...]
    history: tuple[Report, ...]
    final_epochs: int
    summary: dict[str, Any]

    @classmethod
    def of(cls, run: SearchRun, summary: dict[str, Any]) -> SearchResult:
        s = run.strategy
        return cls(run.run_dir, run.config, summary.get("stop_reason"), s.best, tuple(s.population),
                   tuple(s.evaluations), tuple(s.history), s.final_epochs, summary)

    @property
    def spec(self) -> TrainSpec:
        """How every candidate was trained (the data's path, fingerprint and split included)."""
        return self.config.spec

    @property
    def best_genotypes(self) -> list[str]:
        """The genotypes that succeeded at the final fidelity, best first (each once); the best of any
        fidelity when none reached it."""
        final = [e for e in self.evaluations if e.epochs == self.final_epochs]
        seen: list[str] = []
        for e in rank(final) or rank(self.evaluations):
            if str(e.genotype) not in seen:
                seen.append(str(e.genotype))
        return seen

    @property
    def best_loss(self) -> float | None:
        """The best validation loss (negative ELBO, nats per example) at the final fidelity."""
        return self.best.loss if self.best is not None else None

    def __repr__(self) -> str:
        best = f"{self.best.genotype} ({self.best.loss:.2f} nats)" if self.best and self.best.loss else "none"
        return (f"<SearchResult {len(self.evaluations)} evaluations, best {best}, stopped: {self.stop_reason}, "
                f"run_dir {self.run_dir}>")

    def export(self, out: str | os.PathLike[str] | None = None, *, top: int = 3, epochs: int = 20,
               iw_samples: int = 0, device: str | None = None, processes: int = 1,
               verbose: bool = False) -> list[Model]:
        """Retrain the ``top`` best genotypes ``epochs`` epochs each on the search's data, split and settings,
        save each as ``OUT/rank-N/`` (default OUT: ``RUN_DIR/models``) as ``evovae export`` does, and return them
        loaded, best first. ``iw_samples`` = k > 0 also measures the test split's importance-weighted bound."""
        from gpuworker.data import DataError
        from gpuworker.export import export_best
        from gpuworker.inference import Model

        with library_logging(verbose):
            _whole("top", top, 1)
            _whole("epochs", epochs, 1)
            _whole("iw_samples", iw_samples, 0)
            _whole("processes", processes, 1)
            if device is not None:
                _check_device(device)
            genotypes = self.best_genotypes[:top]
            if not genotypes:
                raise RuntimeError(f"the search in {self.run_dir} has no successful evaluation to export")
            target = Path(out).expanduser() if out is not None else self.run_dir / "models"
            spec = self.spec.replace(report_test=iw_samples > 0, iw_samples=iw_samples)
            try:
                export_best(genotypes, spec, target, epochs, device=device, processes=processes)
            except DataError as exc:
                raise RuntimeError(pythonic(str(exc))) from None
            return [Model.load(target / f"rank-{n}", device or "cpu") for n in range(1, len(genotypes) + 1)]

    def train_best(self, out: str | os.PathLike[str] | None = None, *, epochs: int = 20, iw_samples: int = 0,
                   device: str | None = None, verbose: bool = False) -> Model:
        """Retrain the best genotype and return it as a :class:`~gpuworker.inference.Model` (saved as
        ``OUT/rank-1/``, default OUT ``RUN_DIR/models``): :meth:`export` with ``top=1``."""
        return self.export(out, top=1, epochs=epochs, iw_samples=iw_samples, device=device, verbose=verbose)[0]

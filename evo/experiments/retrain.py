"""Retraining an experiment's chosen genotypes, resumably.

A :class:`Retraining` names a role (``evolution-2ep/best``), a genotype and the spec to retrain it with, and
whether a figure needs its weights. Those that need only numbers go to the workers as tasks (with
``report_test``, so the worker also measures the test split), journaled under ``RUN_DIR/tasks/NAME/`` and
cached: a finished one is never trained again. Those that need weights are trained here, one model directory
each under ``RUN_DIR/models/`` (:func:`gpuworker.export.train_and_save`); a directory that already holds a
valid model of that genotype and spec is reused. Both give the same :func:`record` of what was measured.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from ..evaluation import Evaluation
from ..genotype import parse_genotype
from ..head.evaluators import SearchStopped
from ..spec import TrainSpec
from .searches import SearchBench

__all__ = ["Retraining", "retrain_numbers", "train_models"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Retraining:
    """One retraining an experiment wants: ``genotype`` trained as ``spec`` says, for ``role``."""

    role: str
    genotype: str
    spec: TrainSpec
    weights: bool = False  # a figure draws from the trained model: train it here and keep its directory

    @property
    def key(self) -> tuple[str, str]:
        return self.genotype, self.spec.canonical


def _record(genotype: str, spec: TrainSpec, model_dir: str | None, trained_by: str, *, ok: bool, error: str,
            parameters: int, seconds: float, validation: dict, curve: list, train_curve: list,
            test: dict) -> dict[str, Any]:
    return {"genotype": genotype, "model_dir": model_dir, "trained_by": trained_by, "epochs": spec.epochs,
            "parameters": parameters, "ok": ok, "error": error, "seconds": seconds, "validation": validation,
            "validation_curve": curve, "train_curve": train_curve, "test": test}


def _of_evaluation(job: Retraining, e: Evaluation) -> dict[str, Any]:
    m = e.measurement
    test = {k: v for k, v in m.test.items() if k != "iw_loss"}
    return _record(job.genotype, job.spec, None, "worker", ok=e.ok, error=e.error, parameters=m.params,
                   seconds=e.seconds, validation={"loss": e.loss, "recon": m.recon, "kl": m.kl},
                   curve=list(m.curve), train_curve=list(m.train_curve), test=test)


def _of_model(job: Retraining, info: dict[str, Any], model_dir: str) -> dict[str, Any]:
    losses = info["losses"]
    test = {k: v for k, v in losses["test"].items() if k in ("loss", "recon", "kl") and v is not None}
    return _record(job.genotype, job.spec, model_dir, "head", ok=info["ok"], error=info["error"],
                   parameters=info["parameters"], seconds=info["seconds"], validation=losses["validation"],
                   curve=losses["validation_curve"], train_curve=losses["train_curve"], test=test)


def _weighted_keys(jobs: Sequence[Retraining]) -> set[tuple[str, str]]:
    """Every (genotype, spec) some role needs the weights of: trained once, here, for all its roles."""
    return {j.key for j in jobs if j.weights}


def retrain_numbers(bench: SearchBench, name: str, jobs: Sequence[Retraining]) -> dict[str, dict[str, Any]]:
    """The records of the jobs that need no weights, trained by the workers as tasks ``tasks/NAME``."""
    weighted = _weighted_keys(jobs)
    numeric = [j for j in jobs if j.key not in weighted]
    if not numeric:
        return {}
    evaluations = bench.tasks(name, [(parse_genotype(j.genotype), j.spec.replace(report_test=True)) for j in numeric])
    return {j.role: _of_evaluation(j, e) for j, e in zip(numeric, evaluations, strict=True)}


def _reusable(path: Path, job: Retraining) -> dict[str, Any] | None:
    """The model.json in ``path`` if it is a valid model of exactly this retraining, else None."""
    from gpuworker.export import ModelDirError, load_model

    if not (path / "model.json").is_file():
        return None
    try:
        _, info = load_model(path)
    except ModelDirError as exc:
        log.warning("experiment.model_invalid", path=str(path), error=str(exc))
        return None
    if info["genotype"] != job.genotype or TrainSpec.from_dict(info["spec"]) != job.spec:
        log.warning("experiment.model_foreign", path=str(path), genotype=info["genotype"])
        return None
    return info


def _init_process(threads: int, log_format: str, log_level: str) -> None:
    """A retraining process, first thing: die with the head (a kill -9 of the head leaves no retraining behind:
    a pool process would otherwise wait on its queue forever), log like it, use ``threads`` torch threads."""
    from gpuworker.train import set_threads

    from ..cmdline.log_setup import configure
    from ..head.local_workers import die_with_parent

    die_with_parent()
    configure(log_format, log_level, role="retrain")
    set_threads(threads)


def _train_here(todo: Sequence[tuple[str, TrainSpec, Path]], *, processes: int, threads_each: int,
                device: str | None, data_root: str | None, download: bool, log_format: str,
                log_level: str, stop: threading.Event) -> list[dict[str, Any]]:
    """:func:`gpuworker.export.train_and_save` for each ``(genotype, spec, directory)``, in ``processes`` fresh
    processes (in this one when a single process is asked for); the infos in the order of ``todo``. When
    ``stop`` is set the processes are terminated and SearchStopped raised (in this process, after the
    model it is training)."""
    from gpuworker.export import train_and_save

    kwargs: dict[str, Any] = {"device": device, "data_root": data_root, "download": download}
    if processes <= 1 or len(todo) <= 1:
        from gpuworker.train import set_threads

        set_threads(threads_each)
        infos: list[dict[str, Any]] = []
        for g, spec, path in todo:
            if stop.is_set():
                raise SearchStopped(f"stopped with {len(todo) - len(infos)} models untrained")
            infos.append(train_and_save(g, spec, path, **kwargs))
        return infos
    import multiprocessing

    pool = multiprocessing.get_context("spawn").Pool(processes, _init_process, (threads_each, log_format, log_level))
    try:
        pending = [pool.apply_async(train_and_save, (g, spec, str(path)), kwargs) for g, spec, path in todo]
        while not all(p.ready() for p in pending):
            if stop.wait(0.2):
                raise SearchStopped(f"stopped with {sum(not p.ready() for p in pending)} models untrained")
        return [p.get() for p in pending]
    finally:
        pool.terminate()
        pool.join()


def train_models(run: Path, jobs: Sequence[Retraining], *, processes: int, threads_each: int,
                 device: str | None = None, data_root: str | None = None, download: bool = False,
                 log_format: str = "json", log_level: str = "warning",
                 stop: threading.Event | None = None) -> tuple[dict[str, dict[str, Any]], int]:
    """The records of the jobs whose weights are needed (and of every job sharing their genotype and spec),
    each model trained here unless ``run/models/`` holds it already. Returns (records, models trained now)."""
    weighted = _weighted_keys(jobs)
    dirs: dict[tuple[str, str], str] = {}
    for j in jobs:
        if j.key in weighted and j.key not in dirs:
            dirs[j.key] = f"models/{j.role.replace('/', '-')}"
    first = {j.key: j for j in reversed(jobs)}
    reusable = {key: _reusable(run / d, first[key]) for key, d in dirs.items()}
    infos = {key: info for key, info in reusable.items() if info is not None}
    todo = [key for key, info in reusable.items() if info is None]
    if todo:
        trained = _train_here([(first[k].genotype, first[k].spec, run / dirs[k]) for k in todo], processes=processes,
                              threads_each=threads_each, device=device, data_root=data_root, download=download,
                              log_format=log_format, log_level=log_level, stop=stop or threading.Event())
        infos.update(zip(todo, trained, strict=True))
    records = {j.role: _of_model(j, infos[j.key], dirs[j.key]) for j in jobs if j.key in weighted}
    return records, len(todo)

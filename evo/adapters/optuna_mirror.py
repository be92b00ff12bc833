"""Every evaluation of a search as a trial of an Optuna study, for optuna-dashboard (``evovae dashboard RUN_DIR``),
Optuna's importance evaluators and anything else that reads Optuna storage.

:class:`OptunaMirror` is an observer of the head's runner (``SearchRun.observe(mirror)``): after every tell it
appends one finished trial to an Optuna journal file in the run directory, ``RUN_DIR/optuna-journal.log``
(:data:`FILE`; ``optuna.storages.JournalStorage`` on a ``JournalFileBackend``: one JSON line per trial, readable
while the search writes it). One trial per evaluation, numbered in the order the strategy was told them:

- parameters: the genotype on the search space's grids, with the names Optuna's TPE uses here
  (:func:`distributions`): ``encoder_layers``, ``encoder_0`` ... (one width per existing layer: a conditional
  space), ``latent``, ``decoder_layers``, ``decoder_0`` ...;
- intermediate values: the per-epoch validation curve, step = epoch number (1 = after the first epoch);
- state: COMPLETE for a result at the search's final fidelity, PRUNED for one at a lower rung (a multi-fidelity
  search's candidate that was measured at fewer epochs), FAIL for a failed or lost evaluation;
- value: the validation loss (negative ELBO, nats per example; None when it failed);
- user attributes: ``genotype`` (its text), ``epochs`` (the fidelity), ``epochs_trained``, ``seconds``,
  ``params`` (the model's parameter count, when measured), ``worker`` (the CURVE key of the worker that sent it,
  when known), ``task_id`` (with a spec), ``state`` (ok / failed / lost), ``error``, ``replayed``.

No trial is written twice across resumes: a resumed search replays its tells to the observers in the order they
were first told, so the mirror skips as many observed evaluations as its study already holds, and writes the
rest (also the replayed ones a kill kept it from writing before). A trial is one line, appended after the head
journaled the tell (handed to the kernel, not fsynced: as durable as the head's journal, :class:`_FlushedBackend`);
a line torn by a kill is cut off when the mirror is opened again. A failure to write (a full disk) never stops
the search: it is reported once (a warning) and mirroring stops.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.trial import FrozenTrial, TrialState

try:
    from optuna.storages.journal import JournalFileBackend
except ImportError:  # optuna 3: the same file format, under its old name
    from optuna.storages import JournalFileStorage as JournalFileBackend  # type: ignore[attr-defined,no-redef,unused-ignore]

from ..evaluation import Candidate, EvalState, Evaluation
from ..genotype import Genotype
from ..search_config import SearchConfig
from ..space import SearchSpace
from ..spec import TrainSpec, task_id

__all__ = ["FILE", "METRIC", "OptunaMirror", "distributions", "genotype_params", "open_storage", "trial_of"]

#: the mirror's file in a run directory
FILE = "optuna-journal.log"
#: the name of the study's objective
METRIC = "validation loss (nats)"

log = logging.getLogger(__name__)


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """Every parameter a genotype of ``space`` may have, with its Optuna distribution: the layer counts, one
    width per possible layer (``encoder_0`` .. ``encoder_{max_layers - 1}``; a genotype has only those of its
    depth) and the latent, each an ``IntDistribution`` on the space's grid."""
    out: dict[str, BaseDistribution] = {}
    for net in ("encoder", "decoder"):
        out[f"{net}_layers"] = IntDistribution(space.min_layers, space.max_layers)
        for i in range(space.max_layers):
            out[f"{net}_{i}"] = IntDistribution(space.width_min, space.width_max, step=space.width_step)
        if net == "encoder":
            out["latent"] = IntDistribution(space.latent_min, space.latent_max, step=space.latent_step)
    return out


def genotype_params(genotype: Genotype) -> dict[str, int]:
    """The parameters of ``genotype``, named as :func:`distributions` names them."""
    params: dict[str, int] = {"encoder_layers": len(genotype.encoder)}
    params.update({f"encoder_{i}": width for i, width in enumerate(genotype.encoder)})
    params["latent"] = genotype.latent
    params["decoder_layers"] = len(genotype.decoder)
    params.update({f"decoder_{i}": width for i, width in enumerate(genotype.decoder)})
    return params


def _curve(evaluation: Evaluation) -> dict[int, float]:
    """The validation curve by epoch number. The trainer reports the whole curve from epoch 1, also of a run
    continued from a checkpoint; a worker that reports only the epochs it trained after ``resumed_from`` has
    them numbered from there."""
    m = evaluation.measurement
    curve = m.curve
    first = 1
    if m.resumed_from and m.epochs and len(curve) == m.epochs - m.resumed_from:
        first = m.resumed_from + 1
    return {first + i: value for i, value in enumerate(curve)}


def trial_of(number: int, evaluation: Evaluation, space: SearchSpace, *, final_epochs: int | None = None,
             worker: str | None = None, task: str | None = None, replayed: bool = False,
             now: datetime.datetime | None = None) -> FrozenTrial:
    """Trial ``number`` of the mirror: ``evaluation`` as a finished trial (see the module's docstring). It is
    PRUNED when it succeeded below ``final_epochs`` (None: every success is COMPLETE). A parameter outside
    ``space`` (a genotype the space does not hold) is left out of the parameters; the genotype text keeps it."""
    if evaluation.state is not EvalState.OK:
        state = TrialState.FAIL
    elif final_epochs is not None and evaluation.epochs < final_epochs:
        state = TrialState.PRUNED
    else:
        state = TrialState.COMPLETE
    known = distributions(space)
    params: dict[str, Any] = {}
    dists: dict[str, BaseDistribution] = {}
    for name, value in genotype_params(evaluation.genotype).items():
        dist = known.get(name)
        if dist is not None and dist._contains(dist.to_internal_repr(value)):
            params[name], dists[name] = value, dist
    m = evaluation.measurement
    attrs: dict[str, Any] = {"genotype": str(evaluation.genotype), "epochs": evaluation.epochs,
                             "epochs_trained": evaluation.epochs_trained, "seconds": round(m.seconds, 3),
                             "state": evaluation.state.value}
    if m.params:
        attrs["params"] = m.params
    if m.resumed_from:
        attrs["resumed_from"] = m.resumed_from
    if worker:
        attrs["worker"] = worker
    if task:
        attrs["task_id"] = task
    if evaluation.error:
        attrs["error"] = evaluation.error[:500]
    if replayed:
        attrs["replayed"] = True
    completed = now or datetime.datetime.now(datetime.timezone.utc)
    return FrozenTrial(number=number, trial_id=number, state=state,
                       value=evaluation.loss if state is not TrialState.FAIL else None, values=None,
                       datetime_start=completed - datetime.timedelta(seconds=m.seconds), datetime_complete=completed,
                       params=params, distributions=dists, user_attrs=attrs, system_attrs={},
                       intermediate_values=_curve(evaluation))


def _cut_torn_line(path: Path) -> None:
    """Cut a last line a kill left without its newline (Optuna's reader skips it, but a line appended after it
    would join it and break the file)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if not size:
        return
    with open(path, "rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)
        f.flush()
        os.fsync(f.fileno())


#: a lock of the journal file older than this is a dead writer's (a write holds it for a millisecond)
STALE_LOCK_S = 5.0


def _remove_stale_lock(path: Path) -> None:
    """Remove the lock a writer killed in the middle of an append left (``PATH.lock``, optuna's symlink lock):
    optuna would wait out its 30 s grace period at the first write, stalling the head on its resume. The head
    is the mirror's only writer of trials (its run directory is locked); a lock held now (the dashboard writing a
    note) is younger than :data:`STALE_LOCK_S`."""
    lock = Path(f"{path}.lock")
    try:
        if time.time() - lock.lstat().st_mtime > STALE_LOCK_S:
            lock.unlink()
    except FileNotFoundError:
        pass


def open_storage(path: str | os.PathLike[str]) -> JournalStorage:
    """The Optuna journal storage of the mirror file ``path`` (made if missing), as any reader opens it."""
    return JournalStorage(JournalFileBackend(str(path)))


class _FlushedBackend(JournalFileBackend):
    """Optuna's journal file whose appends are handed to the kernel but not fsynced: like the head's own journal
    (SQLite in WAL mode, synchronous=NORMAL) the mirror survives the death of the process, not a power cut, and a
    trial costs the head about a millisecond, not the 4 ms of a disk flush (measured on this project's machine),
    which a head telling hundreds of results a second would feel. What a power cut loses of it is written again
    on the resume."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        lock, path = getattr(self, "_lock", None), getattr(self, "_file_path", None)
        if lock is None or path is None:  # an optuna whose file backend is made otherwise: its own append
            super().append_logs(logs)
            return
        data = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in logs).encode("utf-8")
        lock.acquire()  # the dashboard may append too (notes): one writer at a time, as optuna's own append
        try:
            with open(path, "ab") as f:
                f.write(data)
        finally:
            lock.release()


class OptunaMirror:
    """An observer of a search (``SearchRun.observe(mirror)``, before ``replay()``) that writes one Optuna trial per
    evaluation to the journal file ``path`` in study ``study_name`` (minimize). ``final_epochs``: the search's
    final fidelity (below it, a success is PRUNED); ``spec``: the search's training spec, to name each trial's
    task id. Never raises from a call: a failure to write ends the mirroring (``failed`` says why) and is
    reported once, to ``on_failure(path, why)`` (default: a warning on the ``logging`` logger of this module; the
    composition layer passes its structlog logger). A new study is given ``study_attrs`` as its user attributes
    (what the search is) and its objective the name :data:`METRIC`."""

    def __init__(self, path: str | os.PathLike[str], space: SearchSpace, final_epochs: int, study_name: str, *,
                 spec: TrainSpec | None = None, on_failure: Callable[[Path, str], None] | None = None,
                 study_attrs: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.study_attrs = dict(study_attrs or {})
        self.space = space
        self.final_epochs = final_epochs
        self.study_name = study_name
        self.spec = spec
        self.on_failure = on_failure or _warn
        self.failed: str | None = None
        self.written = 0   # trials written by this mirror object
        self.skipped = 0   # observed evaluations the study already held (replayed on resume)
        self._study: optuna.study.Study | None = None
        self._held = 0     # trials the study held when opened
        self._observed = 0

    @classmethod
    def of(cls, run_dir: str | os.PathLike[str], config: SearchConfig, study_name: str | None = None, *,
           on_failure: Callable[[Path, str], None] | None = None) -> OptunaMirror:
        """The mirror of the search ``config`` in ``run_dir`` (``RUN_DIR/optuna-journal.log``; the study named
        after the run directory unless ``study_name`` is given)."""
        run_dir = Path(run_dir)
        o, sp = config.options, config.space
        attrs = {"strategy": o.strategy, "mode": o.mode, "final_epochs": o.final_epochs, "seed": o.seed,
                 "dataset": config.spec.dataset,
                 "space": f"{sp.min_layers}..{sp.max_layers} layers, widths {sp.width_min}..{sp.width_max} step "
                          f"{sp.width_step}, latent {sp.latent_min}..{sp.latent_max} step {sp.latent_step}"}
        if o.fidelities:
            attrs["fidelities"] = ",".join(map(str, o.fidelities))
        return cls(run_dir / FILE, config.space, o.final_epochs, study_name or run_dir.resolve().name,
                   spec=config.spec, on_failure=on_failure, study_attrs=attrs)

    def _open(self) -> optuna.study.Study:
        if self._study is None:
            optuna.logging.set_verbosity(optuna.logging.WARNING)  # no per-trial chatter on stderr
            _cut_torn_line(self.path)
            _remove_stale_lock(self.path)
            study = optuna.create_study(storage=JournalStorage(_FlushedBackend(str(self.path))),
                                        study_name=self.study_name,
                                        direction="minimize", load_if_exists=True)
            self._held = len(study.get_trials(deepcopy=False))
            if not self._held and study.metric_names is None:  # a new study: say what it is
                with warnings.catch_warnings():  # set_metric_names is marked experimental
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names([METRIC])
                for key, value in self.study_attrs.items():
                    study.set_user_attr(key, value)
            self._study = study
        return self._study

    def __call__(self, candidate: Candidate, evaluation: Evaluation, worker_key: str | None, replayed: bool) -> None:
        if self.failed is not None:
            return
        try:
            study = self._open()
            number = self._observed
            self._observed += 1
            if number < self._held:  # written before a restart
                self.skipped += 1
                return
            spec = self.spec
            if spec is not None and candidate.epochs != spec.epochs:
                spec = spec.replace(epochs=candidate.epochs)
            task = task_id(candidate.genotype, spec) if spec is not None else None
            study.add_trial(trial_of(number, evaluation, self.space, final_epochs=self.final_epochs,
                                     worker=worker_key, task=task, replayed=replayed))
            self.written += 1
        except Exception as exc:  # a mirror that cannot be written must not stop the search
            self.failed = f"{type(exc).__name__}: {exc}"
            try:
                self.on_failure(self.path, self.failed)
            except Exception:  # reporting the failure must not fail the search either
                pass


def _warn(path: Path, why: str) -> None:
    log.warning("the dashboard mirror %s stopped: %s (the search goes on without it)", path, why)

"""The peer arms of ``evovae experiment compare``: what a user would pick instead of evovae, each driven by its
own library's optimizer, evaluated through the comparison's evaluator (the same trainer, data, split, seeds,
workers and cache as every other arm) and charged the same training epochs.

- ``dehb``: DEHB (Awad et al. 2021, the ``dehb`` package: differential evolution inside Hyperband brackets)
  through its ``ask``/``tell`` interface, the space as a ConfigSpace with conditions (a width exists only for
  the layers a network has). Each configuration at a fidelity is trained from scratch (DEHB's promotions are
  new runs at the higher fidelity) and charged its epochs.
- ``optuna-hyperband``: Optuna's TPESampler with its HyperbandPruner, as an Optuna user writes it: an objective
  that reports the validation loss after every epoch with ``trial.report`` and stops when
  ``trial.should_prune()``. Each epoch is one task at that many epochs, which a worker continues from the
  previous epoch's checkpoint (gpuworker/checkpoints.py: bit for bit the from-scratch result), so each step
  is charged one epoch. The workers need the checkpoint store (compare.CONTINUING). Its evaluations are these
  epoch steps; its trials (what the report counts) are the configurations it trained.
- ``smac``: SMAC3's multi-fidelity facade (``smac.MultiFidelityFacade``: a random-forest surrogate with its
  Hyperband intensifier, budgets in epochs from the lowest asha rung to the final fidelity, spaced by eta)
  through its ``ask``/``tell`` interface, over the same conditional ConfigSpace as DEHB. A trial at budget b
  trains round(b) epochs from scratch (SMAC's promotions are new trials at the higher budget) and is charged
  those epochs; SMAC is told the validation loss as the trial's cost.

A peer is an evovae :class:`~evo.strategy.Strategy` only at its edge: each question the library asks (a DEHB
job, the next epoch of an Optuna trial) becomes a candidate; its result is told back to the library. A question
whose candidate was already answered (a configuration that maps to a genotype trained before at those epochs)
is answered at once from that result, not trained or charged again; one whose candidate is being trained
waits for that result.

Resuming: the search's journal (evo/head/journal.py, through SearchBench.peer) holds every ask (the
candidates and how many were asked for) and every result, in order. A resumed arm builds the library's
optimizer afresh with the same seed and re-feeds the journaled asks and results in the journaled order; the
library then makes exactly the decisions it made before (its random draws come from its seeded generators,
its model from the same data), which the replay checks candidate by candidate, and the search goes on. No
library's own checkpoint files are used.
"""
from __future__ import annotations

import logging
import math
import warnings
from abc import abstractmethod
from collections import deque
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..evaluation import Candidate, Evaluation
from ..genotype import Genotype
from ..selection import select_survivors
from ..space import SearchSpace
from ..strategy import Strategy, WindowedStrategy

if TYPE_CHECKING:  # imported when used: an optional dependency each (the ``compare`` extra)
    import optuna
    from ConfigSpace import Configuration, ConfigurationSpace

__all__ = ["PEERS", "PEER_CONTINUING", "DEHBPeer", "OptunaHyperbandPeer", "SMACPeer", "configuration_space",
           "genotype_of", "make_peer", "peer_config"]

#: peer arm -> what it is
PEERS = {
    "dehb": "DEHB (the dehb package: differential evolution + Hyperband) through its ask/tell interface over a "
            "conditional ConfigSpace; every configuration at a fidelity trained from scratch",
    "optuna-hyperband": "Optuna's TPESampler with its HyperbandPruner: the objective reports every epoch "
                        "(trial.report) and stops when trial.should_prune(); epochs continue from checkpoints",
    "smac": "SMAC3's MultiFidelityFacade (random-forest surrogate, Hyperband intensifier, budgets in epochs) "
            "through its ask/tell interface over the conditional ConfigSpace; every trial at its budget trained "
            "from scratch",
}

#: the peer arms whose tasks continue from checkpoints (their workers need a checkpoint store)
PEER_CONTINUING = ("optuna-hyperband",)


class _Peer(WindowedStrategy):
    """A library's optimizer behind the ask/tell contract: ``_question()`` takes the library's next question
    (a candidate and the library's handle for it), ``_answer(handle, evaluation)`` tells the library its
    result. Answered questions come from ``_known``; reports every ``report_every`` evaluations."""

    #: questions one ask may answer from known results before the space counts as exhausted for the peer
    max_questions = 1000

    def __init__(self, space: SearchSpace, *, mu: int, seed: int, epochs: int, budget_epochs: int | None,
                 report_every: int, min_cost: int) -> None:
        super().__init__(space, mu=mu, seed=seed, epochs=epochs, budget_epochs=budget_epochs,
                         report_every=report_every)
        self.min_cost = min_cost
        self.answered_duplicates = 0
        self._known: dict[Candidate, Evaluation] = {}
        self._waiting: dict[Candidate, list[Any]] = {}  # candidate -> the library's questions waiting for it

    @abstractmethod
    def _question(self) -> tuple[Candidate, Any]:
        """The library's next question: a candidate and the library's handle for it."""

    @abstractmethod
    def _answer(self, handle: Any, evaluation: Evaluation) -> None:
        """Tell the library the result of the question ``handle``."""

    def _ask(self, n: int | None) -> list[Candidate]:
        out: list[Candidate] = []
        answered = 0
        while len(out) < (1 if n is None else n) and not self._finished():
            candidate, handle = self._question()
            known = self._known.get(candidate)
            if known is not None or candidate in self._outstanding or candidate in out:
                self.answered_duplicates += 1
                self._duplicates += 1
                if known is not None:
                    self._answer(handle, known)
                else:
                    self._waiting[candidate].append(handle)
                answered += 1
                if answered >= self.max_questions:
                    self.exhausted = True
                continue
            if not self._fits_budget(sum(self.cost(c) for c in out) + self.cost(candidate)):
                self._budget_hit = True  # the library's next question does not fit: the search ends here
                break
            self._waiting[candidate] = [handle]
            out.append(candidate)
        self._close_window_at_end(out)
        return out

    def _tell(self, evaluation: Evaluation) -> None:
        self._known[evaluation.candidate] = evaluation
        for handle in self._waiting.pop(evaluation.candidate, []):
            self._answer(handle, evaluation)
        if evaluation.epochs == self.final_epochs:
            self.population = select_survivors(self.population, [evaluation], self.mu)
        self._record(evaluation)

    def _finished(self) -> bool:
        return self.exhausted or self._budget_hit or (
            self.budget_epochs is not None and self.asked_epochs + self.min_cost > self.budget_epochs)


# -- Optuna: TPE + HyperbandPruner ---------------------------------------------------------------------------

class OptunaHyperbandPeer(_Peer):
    """Optuna's ``TPESampler`` (seeded, ``multivariate=True, group=True`` as the tpe arm: the conditional widths)
    with ``HyperbandPruner(min_resource, max_resource=epochs, reduction_factor=eta)``, through ask-and-tell:
    :meth:`objective` is the objective an Optuna user writes, with the training of each epoch handed to the
    evaluator (``yield``). Trials whose next epoch is ready go before new trials."""

    def __init__(self, space: SearchSpace = SearchSpace(), *, mu: int = 10, seed: int = 0, epochs: int = 10,
                 min_epochs: int = 1, eta: int = 3, budget_epochs: int | None = None, startup_trials: int = 10,
                 report_every: int = 10) -> None:
        import optuna

        super().__init__(space, mu=mu, seed=seed, epochs=epochs, budget_epochs=budget_epochs,
                         report_every=report_every, min_cost=1)
        logging.getLogger("optuna").setLevel(logging.WARNING)
        with warnings.catch_warnings():  # group=True is marked experimental; conditional spaces need it
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, multivariate=True,
                                                 group=True)
        pruner = optuna.pruners.HyperbandPruner(min_resource=min_epochs, max_resource=epochs, reduction_factor=eta)
        # named: the pruner puts a trial in its bracket by a hash of the study's name and the trial's number, and
        # an unnamed study gets a random name, so a resumed study would sort trials into other brackets
        self.study = optuna.create_study(study_name=f"optuna-hyperband-seed{seed}", direction="minimize",
                                         sampler=sampler, pruner=pruner)
        self._ready: deque[tuple[Candidate, Any]] = deque()  # trials whose next epoch is to be trained

    def objective(self, trial: optuna.trial.Trial) -> Generator[Candidate, float, float]:
        """The objective: the genotype the trial suggests, trained one epoch at a time (each ``yield`` is the
        task at that many epochs and receives its validation loss), reported after every epoch; pruned when
        the pruner says so."""
        import optuna

        from ..adapters.tpe import suggest_genotype

        genotype = suggest_genotype(trial, self.space)
        loss = math.inf
        for epoch in range(1, self.final_epochs + 1):
            loss = yield Candidate(genotype, epoch)
            trial.report(loss, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return loss

    def cost(self, candidate: Candidate) -> int:
        """One epoch: each step continues the trial's previous epoch from its checkpoint."""
        return 1

    def _question(self) -> tuple[Candidate, Any]:
        if self._ready:
            return self._ready.popleft()
        trial = self.study.ask()
        steps = self.objective(trial)
        return next(steps), (trial, steps)

    def _answer(self, handle: Any, evaluation: Evaluation) -> None:
        import optuna

        trial, steps = handle
        if evaluation.loss is None:  # failed or lost: the trial fails, as a raising objective would
            steps.close()
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        try:
            following = steps.send(evaluation.loss)
        except StopIteration as finished:
            self.study.tell(trial, finished.value)
        except optuna.TrialPruned:
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self._ready.append((following, handle))


# -- DEHB ----------------------------------------------------------------------------------------------------

def configuration_space(space: SearchSpace, seed: int) -> ConfigurationSpace:
    """The search space as a ConfigSpace: per network the number of layers (an integer), then one width per
    layer (ordinal over the space's grid), the ``i``-th active only when the network has more than ``i``
    layers; and the latent size (ordinal)."""
    from ConfigSpace import (
        ConfigurationSpace,
        GreaterThanCondition,
        OrdinalHyperparameter,
        UniformIntegerHyperparameter,
    )

    cs = ConfigurationSpace(seed=seed)
    widths = list(range(space.width_min, space.width_max + 1, space.width_step))
    latents = list(range(space.latent_min, space.latent_max + 1, space.latent_step))
    for network in ("encoder", "decoder"):
        layers = UniformIntegerHyperparameter(f"{network}_layers", space.min_layers, space.max_layers)
        cs.add(layers)
        for i in range(space.max_layers):
            width = OrdinalHyperparameter(f"{network}_{i}", widths)
            cs.add(width)
            if i >= space.min_layers:
                cs.add(GreaterThanCondition(width, layers, i))
        if network == "encoder":
            cs.add(OrdinalHyperparameter("latent", latents))
    return cs


def genotype_of(config: Configuration | dict[str, Any]) -> Genotype:
    """The genotype a configuration of :func:`configuration_space` describes."""
    def network(name: str) -> tuple[int, ...]:
        return tuple(int(config[f"{name}_{i}"]) for i in range(int(config[f"{name}_layers"])))

    return Genotype(network("encoder"), int(config["latent"]), network("decoder"))


class DEHBPeer(_Peer):
    """DEHB (``dehb.DEHB``, one worker: no Dask) through ``ask``/``tell``, with fidelities from ``min_epochs``
    to ``epochs`` spaced by ``eta`` (DEHB's, rounded to whole epochs). DEHB's files (its log) go to
    ``output_path``; it saves no state of its own (``save_freq="end"``, and ``run`` is never called)."""

    def __init__(self, space: SearchSpace = SearchSpace(), *, mu: int = 10, seed: int = 0, epochs: int = 10,
                 min_epochs: int = 1, eta: int = 3, budget_epochs: int | None = None, report_every: int = 10,
                 output_path: Path) -> None:
        super().__init__(space, mu=mu, seed=seed, epochs=epochs, budget_epochs=budget_epochs,
                         report_every=report_every, min_cost=min_epochs)
        self.dehb = _quiet(lambda: _make_dehb(configuration_space(space, seed), min_epochs, epochs, eta, seed,
                                              output_path))

    def _question(self) -> tuple[Candidate, Any]:
        with warnings.catch_warnings():  # DEHB 0.1.1 calls ConfigSpace's older names (deprecated, still there)
            warnings.simplefilter("ignore", DeprecationWarning)
            job = self.dehb.ask()
        epochs = max(1, round(float(job["fidelity"])))
        return Candidate(genotype_of(job["config"]), epochs), job

    def _answer(self, handle: Any, evaluation: Evaluation) -> None:
        fitness = evaluation.loss if evaluation.loss is not None else math.inf
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.dehb.tell(handle, {"fitness": fitness, "cost": float(evaluation.epochs)})


def _make_dehb(cs: ConfigurationSpace, min_epochs: int, epochs: int, eta: int, seed: int, output_path: Path) -> Any:
    from dehb import DEHB  # type: ignore[import-untyped, unused-ignore]

    output_path.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # DEHB 0.1.1 calls ConfigSpace's older names (deprecated, still there)
        warnings.simplefilter("ignore", DeprecationWarning)
        return DEHB(cs=cs, min_fidelity=min_epochs, max_fidelity=epochs, eta=eta, n_workers=1, seed=seed,
                    output_path=str(output_path), save_freq="end")


def _quiet(make: Callable[[], Any]) -> Any:
    """``make()`` with DEHB's loguru output off: its messages disabled, and the log-file sink each DEHB adds
    removed again (loguru numbers its sinks in order: those added meanwhile lie between two probes)."""
    from loguru import logger

    logger.disable("dehb")
    before = logger.add(lambda message: None)
    logger.remove(before)
    try:
        return make()
    finally:
        after = logger.add(lambda message: None)
        logger.remove(after)
        for sink in range(before + 1, after):
            try:
                logger.remove(sink)
            except ValueError:
                pass  # not a sink any more


# -- SMAC3 ---------------------------------------------------------------------------------------------------

class SMACPeer(_Peer):
    """SMAC3's ``MultiFidelityFacade`` (one worker in SMAC's terms: ``ask``/``tell``, never ``optimize``) with
    its Hyperband intensifier (``eta``) over budgets from ``min_epochs`` to ``epochs`` and a random initial
    design of ``startup_trials`` configurations (as the TPE arms' start-up trials). A trial's budget is rounded
    to whole epochs (with the cpu preset's 1..10 and eta 3, SMAC's 1.11, 3.33 and 10 become 1, 3 and 10).
    SMAC's files (its run history) go to ``output_path``; a fresh facade overwrites them (a resume re-feeds the
    journal, never SMAC's own files). A failed task is told as crashed with the highest cost told so far (SMAC's
    random forest cannot fit an infinite cost)."""

    def __init__(self, space: SearchSpace = SearchSpace(), *, mu: int = 10, seed: int = 0, epochs: int = 10,
                 min_epochs: int = 1, eta: int = 3, budget_epochs: int | None = None, startup_trials: int = 10,
                 report_every: int = 10, output_path: Path) -> None:
        super().__init__(space, mu=mu, seed=seed, epochs=epochs, budget_epochs=budget_epochs,
                         report_every=report_every, min_cost=min_epochs)
        logging.getLogger("smac").setLevel(logging.WARNING)
        trials = max(1, (budget_epochs or 1000 * epochs) // min_epochs)  # at most this many trials fit the budget
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "mean of empty slice" inside SMAC
            self.smac = _make_smac(configuration_space(space, seed), min_epochs=min_epochs, epochs=epochs, eta=eta,
                                   seed=seed, trials=trials, startup_trials=startup_trials, output_path=output_path)
        self._worst: float | None = None

    def _question(self) -> tuple[Candidate, Any]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            info = self.smac.ask()
        epochs = max(1, round(float(info.budget)))
        return Candidate(genotype_of(info.config), epochs), info

    def _answer(self, handle: Any, evaluation: Evaluation) -> None:
        from smac.runhistory.dataclasses import TrialValue
        from smac.runhistory.enumerations import StatusType

        if evaluation.loss is None:
            value = TrialValue(cost=self._worst if self._worst is not None else 1e9, status=StatusType.CRASHED)
        else:
            self._worst = evaluation.loss if self._worst is None else max(self._worst, evaluation.loss)
            value = TrialValue(cost=evaluation.loss)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            self.smac.tell(handle, value)


def _make_smac(cs: ConfigurationSpace, *, min_epochs: int, epochs: int, eta: int, seed: int, trials: int,
               startup_trials: int, output_path: Path) -> Any:
    from smac import MultiFidelityFacade, Scenario

    output_path.mkdir(parents=True, exist_ok=True)
    scenario = Scenario(cs, name=f"smac-seed{seed}", output_directory=output_path, deterministic=True,
                        n_trials=trials, min_budget=min_epochs, max_budget=epochs, seed=seed)
    initial = MultiFidelityFacade.get_initial_design(scenario, n_configs=startup_trials)
    intensifier = MultiFidelityFacade.get_intensifier(scenario, eta=eta)
    maximizer = MultiFidelityFacade.get_acquisition_maximizer(scenario)
    _order_start_points(maximizer)
    return MultiFidelityFacade(scenario, _never_called, initial_design=initial, intensifier=intensifier,
                               acquisition_maximizer=maximizer, overwrite=True, logging_level=False)


def _order_start_points(maximizer: Any) -> None:
    """Make SMAC's local search independent of Python's hash seed, so a resumed arm replays (SMAC 2.4.1 takes
    its local-search start points as ``list(set(configurations))``, and a Configuration hashes its repr: the
    order, and so every later random draw, changed with PYTHONHASHSEED; a search started in one process could
    not be replayed in another). The start points are the same set, put in the order of their text."""
    local: Any = getattr(maximizer, "_local_search", None)
    unordered = getattr(local, "_get_initial_points", None)
    if unordered is None:
        raise RuntimeError("this SMAC's acquisition maximizer has no _local_search._get_initial_points (written "
                           "for smac 2.4.1): install the version setup.cfg's compare extra names")
    local._get_initial_points = lambda *args, **kwargs: sorted(unordered(*args, **kwargs), key=repr)


def _never_called(config: Any, seed: int = 0, budget: float | None = None) -> float:
    """The target function SMAC's facade requires; ``ask``/``tell`` never calls it (the evaluator trains)."""
    raise RuntimeError("SMAC's target function is not called in ask/tell use")


# -- building ------------------------------------------------------------------------------------------------

def peer_config(arm: str, *, seed: int, epochs: int, min_epochs: int, eta: int, budget_epochs: int,
                population: int, startup_trials: int, report_every: int) -> dict[str, Any]:
    """What defines peer arm ``arm``'s search (journaled: a resume must find the same)."""
    if arm not in PEERS:
        raise ValueError(f"unknown peer {arm!r}; choose from {', '.join(PEERS)}")
    config: dict[str, Any] = {"arm": arm, "seed": seed, "epochs": epochs, "min_epochs": min_epochs, "eta": eta,
                              "budget_epochs": budget_epochs, "population": population, "report_every": report_every}
    if arm in ("optuna-hyperband", "smac"):
        config["startup_trials"] = startup_trials
    return config


def make_peer(config: dict[str, Any], directory: Path, space: SearchSpace = SearchSpace()) -> Strategy:
    """The fresh strategy of the peer search ``config`` (:func:`peer_config`) kept in ``directory``."""
    c = config
    common = {"mu": c["population"], "seed": c["seed"], "epochs": c["epochs"], "min_epochs": c["min_epochs"],
              "eta": c["eta"], "budget_epochs": c["budget_epochs"], "report_every": c["report_every"]}
    if c["arm"] == "dehb":
        return DEHBPeer(space, output_path=directory / "dehb", **common)
    if c["arm"] == "optuna-hyperband":
        return OptunaHyperbandPeer(space, startup_trials=c["startup_trials"], **common)
    if c["arm"] == "smac":
        return SMACPeer(space, startup_trials=c["startup_trials"], output_path=directory / "smac", **common)
    raise ValueError(f"unknown peer {c['arm']!r}; choose from {', '.join(PEERS)}")

"""The report of one search (``evovae report RUN_DIR``): ``report.md`` with its PNGs, for any run directory -
finished, stopped, killed, resumed, still running, or made by an older evovae - read without writing anything
into it but the report folder (``RUN_DIR/report`` unless told another).

Sections: a header (strategy and options, data, budget, evaluations, epochs, why it stopped, the best), the
anytime curve (best so far at the final fidelity against epochs charged and against the clock), the top 10,
the learning curves of the best, loss against parameter count with the Pareto front, the parameters'
importance (Optuna's evaluator on the run's trials at the final fidelity), and the workers' busy and idle
timeline from the run's logs. A section the run has no data for says so in one line instead of a figure.
"""
from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..strategies import StrategyOptions
from . import run_figures as figures
from .run_reading import ReportError, RunRecord, Timeline, Told, read_run, read_timeline

__all__ = ["FIGURES", "MIN_IMPORTANCE_TRIALS", "Importance", "ReportError", "importance_of", "write_report"]

#: every figure a report may hold (a rerun removes those it no longer draws)
FIGURES = ("anytime.png", "curves.png", "params.png", "importance.png", "workers.png")
#: trials at the final fidelity the importance needs, at least
MIN_IMPORTANCE_TRIALS = 10
#: the options the header always names (any other only where it differs from the default)
_MAIN_OPTIONS = ("strategy", "mode", "population", "offspring", "generations", "budget_epochs", "epochs", "seed")


def write_report(run_dir: str | Path, out: str | Path | None = None, *, top: int = 8) -> Path:
    """Read the run in ``run_dir``, draw its figures and write ``report.md`` into ``out`` (default
    ``RUN_DIR/report``); returns its path. ReportError (one line) for what is not a run directory or holds
    nothing to report; OSError when ``out`` cannot be written."""
    record = read_run(run_dir)
    folder = Path(out) if out is not None else record.run_dir / "report"
    folder.mkdir(parents=True, exist_ok=True)
    drawn: list[str] = []
    sections = [_header(record), _anytime(record, folder, drawn), _top_table(record),
                _curves(record, folder, drawn, top), _size(record, folder, drawn),
                _importance(record, folder, drawn), _workers(record, folder, drawn), _notes(record)]
    for name in FIGURES:  # a figure of an earlier report that this one does not draw
        if name not in drawn:
            (folder / name).unlink(missing_ok=True)
    path = folder / "report.md"
    partial = folder / "report.md.partial"
    partial.write_text("\n".join(line for section in sections for line in section) + "\n")
    partial.replace(path)
    return path


# -- numbers --------------------------------------------------------------------------------------------

def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _code(text: Any) -> str:
    """Text in a Markdown table cell: code, with its pipes escaped."""
    return "`" + str(text).replace("|", "\\|") + "`"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def _count(t: Told) -> str:
    return f"{t.evaluation.measurement.params:,}" if t.evaluation.measurement.params else "n/a"


# -- the header -----------------------------------------------------------------------------------------

def _options(record: RunRecord) -> str:
    if record.search is None:
        return _code(record.config)
    options = asdict(record.search.options)
    defaults = asdict(StrategyOptions())
    shown = [key for key in _MAIN_OPTIONS if options.get(key) is not None]
    shown += [key for key in options if key not in _MAIN_OPTIONS and options[key] != defaults.get(key)]

    def value(key: str) -> str:
        found = options[key]
        if isinstance(found, (list, tuple)):
            return ",".join(map(str, found)) or "-"
        return str(found)

    return ", ".join(f"{key} {value(key)}" for key in shown)


def _data(record: RunRecord) -> str:
    if record.search is None:
        return "n/a"
    spec = record.search.spec
    parts = [_code(spec.dataset)]
    if spec.data_sha256:
        parts.append(f"SHA-256 `{spec.data_sha256[:16]}...`")
    if spec.columns:
        parts.append(f"columns {_code(spec.columns)}")
    parts.append(f"likelihood {spec.likelihood}")
    parts.append(f"validation {spec.val_size:,} examples (split seed {spec.split_seed})")
    parts.append(f"training {'all the rest' if not spec.train_subset else f'the first {spec.train_subset:,}'}")
    return "; ".join(parts)


def _budget(record: RunRecord) -> str:
    if record.search is None:
        return "n/a"
    o = record.search.options
    parts = []
    if o.generations is not None:
        parts.append(f"{o.generations} generations" + (" (or as many evaluations for an asynchronous strategy)"
                                                       if o.mode != "generational" else ""))
    if o.budget_epochs is not None:
        parts.append(f"{o.budget_epochs:,} training epochs")
    return " or ".join(parts) + " (whichever comes first)" if len(parts) > 1 else parts[0]


def _epochs(record: RunRecord, trained: int) -> str:
    asked = int(record.summary.get("epochs_total", 0))
    told = int(record.summary["anytime"][-1][0]) if record.summary.get("anytime") else 0
    out = f"{asked:,} charged by the strategy (its budget's account)"
    if asked != told:
        out += f", {asked - told:,} of them for evaluations asked but not told"
    return out + f"; {trained:,} trained by the evaluations told"


def _status(record: RunRecord) -> str:
    if record.stop_reason is None and record.source == "journal":
        return "unknown: the journal does not replay with this code and no result.json covers it (see the notes)"
    if record.stop_reason is None:
        return (f"not finished: no result.json covers the journal, and the replayed search is not done (it was "
                f"stopped or killed, or is still running); resume it with `evovae search --resume {record.run_dir}`")
    where = {"result.json": "", "replay": " (as the replayed journal says)",
             "journal": " (as result.json says)"}[record.source]
    return f"finished: {record.stop_reason}{where}"


def _header(record: RunRecord) -> list[str]:
    told = [t.evaluation for t in record.told]
    ok = sum(e.ok for e in told)
    failed = sum(e.state.value == "failed" for e in told)
    lost = len(told) - ok - failed
    cached = sum(t.source == "cache" for t in record.told)
    final = record.final
    best = record.summary.get("best")
    best_told = next((t for t in final if best and str(t.evaluation.genotype) == best["genotype"]
                      and t.evaluation.loss == best["loss"]), None)
    trained = sum(e.epochs_trained for e in told)
    pauses = sum(length for _, length in record.pauses)
    clock = record.clock[-1] if record.clock else 0.0
    rows = [
        ("run directory", f"`{record.run_dir}` (created {record.created or 'n/a'}"
                          + (f"; resumed, last at {record.reopened}" if record.reopened else "") + ")"),
        ("strategy", f"{record.summary.get('strategy', 'n/a')}: {_options(record)}"),
        ("search space", ", ".join(f"{k} {v}" for k, v in asdict(record.search.space).items())
         if record.search else "n/a"),
        ("data set", _data(record)),
        ("training", f"{record.search.spec.epochs} epochs at the final fidelity, mini-batch "
                     f"{record.search.spec.batch_size}, Adam lr {record.search.spec.lr}, seed {record.search.spec.seed}"
         if record.search else "n/a"),
        ("budget", _budget(record)),
        ("evaluations", f"{len(told)} ({ok} ok, {failed} failed, {lost} lost; {cached} from the cache); "
                        f"{len(final)} ok at the final fidelity of {record.final_epochs} epochs"),
        ("epochs", _epochs(record, trained)),
        ("time", f"{_duration(sum(e.seconds for e in told))} of training; {_duration(clock)} of {record.clock_kind}"
                 + (f" ({len(record.pauses)} pause(s) of {_duration(pauses)} with nothing journaled left out)"
                    if record.pauses else "")),
        ("status", _status(record)),
        ("best", f"{_code(best['genotype'])}: validation loss {_f(best['loss'])} at {best['epochs']} epochs"
                 + (f", {_count(best_told)} parameters" if best_told and best_told.evaluation.measurement.params
                    else "") if best else "none yet"),
    ]
    source = {"result.json": "and its `result.json`",
              "replay": "replayed through a fresh strategy in memory (no `result.json` covers it)",
              "journal": "alone (it does not replay with this code: see the notes)"}[record.source]
    return [f"# Search report: {record.run_dir.name}", "",
            f"Generated by `evovae report` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from the run's "
            f"journal (read-only) {source}. Losses are validation negative ELBOs in nats per example; lower is "
            "better.", "",
            "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows), ""]


# -- the sections ---------------------------------------------------------------------------------------

def _figure(name: str, alt: str, caption: str) -> list[str]:
    return [f"![{alt}]({name})", "", caption, ""]


def _anytime(record: RunRecord, folder: Path, drawn: list[str]) -> list[str]:
    lines = ["## Best so far", ""]
    if not record.final:
        return [*lines, f"No evaluation at the final fidelity ({record.final_epochs} epochs) succeeded yet: no "
                        "curve to draw.", ""]
    figures.draw_anytime(record, folder / "anytime.png")
    drawn.append("anytime.png")
    clock = ("the simulated clock the run kept (results delivered as that many workers would)"
             if record.clock_kind.startswith("simulated") else
             "the wall clock of the journal's tells" + (" with the pauses cut out (dotted lines)" if record.pauses
                                                        else ""))
    return [*lines, *_figure("anytime.png", "best so far", (
        f"The best validation loss at the final fidelity ({record.final_epochs} epochs) after each evaluation, "
        f"against the training epochs the strategy was charged (left; a promotion continued from a checkpoint is "
        f"charged only the epochs after it) and against {clock} (right). Dots: each evaluation at the final "
        "fidelity; evaluations at lower fidelities count their epochs but their losses are not comparable."))]


def _top_table(record: RunRecord, count: int = 10) -> list[str]:
    final = record.final[:count]
    lines = [f"## Top {count} at the final fidelity", ""]
    if not final:
        return [*lines, "None yet.", ""]
    lines += ["| rank | genotype | validation loss | recon | KL | parameters | training | told |",
              "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for rank, t in enumerate(final, 1):
        m = t.evaluation.measurement
        lines.append(f"| {rank} | {_code(t.evaluation.genotype)} | {_f(t.evaluation.loss)} | {_f(m.recon)} | "
                     f"{_f(m.kl)} | {_count(t)} | {_duration(t.evaluation.seconds)} | #{t.order} |")
    return [*lines, "", "*told*: the evaluation's place in the order the strategy was told its results.", ""]


def _curves(record: RunRecord, folder: Path, drawn: list[str], top: int) -> list[str]:
    ranked = [t for t in record.final if t.evaluation.measurement.curve][:top]
    lines = [f"## Learning curves of the {top} best", ""]
    if not ranked:
        return [*lines, "No evaluation at the final fidelity kept its validation curve.", ""]
    figures.draw_curves(ranked, folder / "curves.png")
    drawn.append("curves.png")
    return [*lines, *_figure("curves.png", "learning curves", (
        f"Validation loss after each epoch of the {len(ranked)} best evaluations at {record.final_epochs} epochs "
        "(a promotion continued from a checkpoint shows the epochs before it too). Of curves longer than 4 "
        "epochs the first epoch may lie above the frame, which shows the later ones."))]


def _size(record: RunRecord, folder: Path, drawn: list[str]) -> list[str]:
    lines = ["## Loss against parameters", ""]
    final = record.final
    points = [(t.evaluation.measurement.params, float(t.evaluation.loss or 0.0), t) for t in final
              if t.evaluation.measurement.params]
    if not final:
        return [*lines, "No evaluation at the final fidelity succeeded yet.", ""]
    if not points:
        return [*lines, "This run's evaluations carry no parameter counts (made by a fake worker, or by a worker "
                        "older than the count), so this figure is not drawn.", ""]
    front = figures.pareto_front(points)
    figures.draw_params(points, front, record.final_epochs, folder / "params.png")
    drawn.append("params.png")
    missing = len(final) - len(points)
    lines += _figure("params.png", "loss against parameters", (
        f"Validation loss at {record.final_epochs} epochs against the model's parameter count (log scale) of "
        f"{len(points)} evaluations" + (f" ({missing} without a count left out)" if missing else "") +
        "; red: the Pareto front, where no other model has both fewer parameters and a lower loss."))
    lines += ["| parameters | validation loss | genotype |", "|---:|---:|---|"]
    lines += [f"| {params:,} | {_f(loss)} | {_code(t.evaluation.genotype)} |" for params, loss, t in front]
    return [*lines, ""]


@dataclass(frozen=True)
class Importance:
    """The parameters' importance for the final loss, or why there is none (``importances`` empty)."""

    importances: dict[str, float] = field(default_factory=dict)
    evaluator: str = ""
    trials: int = 0
    study: str = ""  # where the trials came from
    why_not: str = ""


def importance_of(record: RunRecord) -> Importance:
    """Optuna's parameter importance (``get_param_importances``: fANOVA, seeded; PED-ANOVA where scikit-learn,
    which fANOVA needs, is not installed) over the run's complete trials at the final fidelity: those of the
    run's Optuna mirror (``RUN_DIR/optuna-journal.log``) when it holds every evaluation, else trials made
    from the journal's evaluations as the mirror makes them (``evo.adapters.optuna_mirror.trial_of``)."""
    import optuna
    from optuna.trial import TrialState

    trials, study = _trials(record)
    if not trials:
        return Importance(why_not=study)
    final = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("epochs") == record.final_epochs]
    if len(final) < MIN_IMPORTANCE_TRIALS:
        return Importance(trials=len(final), study=study, why_not=(
            f"Too few trials for the importance: {len(final)} complete at the final fidelity of "
            f"{record.final_epochs} epochs, it needs at least {MIN_IMPORTANCE_TRIALS}."))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scratch = optuna.create_study(direction="minimize")
    scratch.add_trials(final)
    name, evaluator = _evaluator()
    try:
        with warnings.catch_warnings():  # e.g. PED-ANOVA's "some regimes have less than 2 trials"
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(scratch, evaluator=evaluator)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. every trial has the same loss
        return Importance(trials=len(final), study=study, why_not=f"Optuna's {name} found no importance ({exc}).")
    if not found:
        return Importance(trials=len(final), study=study, why_not=(
            "No parameter varies over the trials at the final fidelity: nothing to rank."))
    return Importance({key: float(value) for key, value in found.items()}, name, len(final), study)


def _evaluator() -> tuple[str, Any]:
    import importlib.util

    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    if importlib.util.find_spec("sklearn") is None:  # the forest of Optuna's fANOVA
        return "PED-ANOVA (scikit-learn, which fANOVA needs, is not installed)", PedAnovaImportanceEvaluator()
    return "fANOVA", FanovaImportanceEvaluator(seed=0)


def _trials(record: RunRecord) -> tuple[list[Any], str]:
    """The run's trials and where they came from; ([], why) when there are none."""
    import optuna

    from ..adapters import optuna_mirror

    mirror = record.run_dir / optuna_mirror.FILE
    if mirror.is_file():
        with tempfile.TemporaryDirectory(prefix="evovae-report-") as scratch:  # read a copy: nothing written there
            copy = Path(scratch) / mirror.name
            shutil.copyfile(mirror, copy)
            storage = optuna_mirror.open_storage(copy)
            names = optuna.get_all_study_names(storage)
            trials = optuna.load_study(study_name=names[0], storage=storage).get_trials() if len(names) == 1 else []
        if len(trials) == len(record.told):
            return trials, f"the run's Optuna mirror (`{mirror.name}`)"
        record_note = f"the mirror `{mirror.name}` holds {len(trials)} trials, the journal {len(record.told)}"
    else:
        record_note = "the run has no Optuna mirror"
    if record.search is None:
        return [], "No trials: the run's configuration is not one this code reads, so its search space is unknown."
    trials = [optuna_mirror.trial_of(t.order - 1, t.evaluation, record.search.space,
                                     final_epochs=record.final_epochs, worker=t.worker_key, task=t.task_id)
              for t in record.told]
    return trials, f"trials made from the journal's evaluations ({record_note})"


def _importance(record: RunRecord, folder: Path, drawn: list[str]) -> list[str]:
    lines = ["## Parameter importance", ""]
    found = importance_of(record)
    if not found.importances:
        return [*lines, found.why_not, ""]
    figures.draw_importance(found.importances, found.evaluator, found.trials, folder / "importance.png")
    drawn.append("importance.png")
    return [*lines, *_figure("importance.png", "parameter importance", (
        f"How much of the variation of the final loss each parameter explains ({found.evaluator}, "
        f"`optuna.importance.get_param_importances`) over the {found.trials} complete trials at "
        f"{record.final_epochs} epochs of {found.study}; parameters every trial has (a width of a layer that only "
        "deeper networks have is left out)."))]


def _workers(record: RunRecord, folder: Path, drawn: list[str]) -> list[str]:
    lines = ["## Workers", ""]
    timeline = read_timeline(record)
    if timeline is None:
        return [*lines, "No logs kept with this run (no `RUN_DIR/logs/*.log`), so there is no timeline of the workers.",
                ""]
    names = ", ".join(f"`{Path(f).name}`" for f in timeline.files) + f" in `{Path(timeline.files[0]).parent}`"
    if timeline.source == "unreadable":
        return [*lines, f"The run's logs ({names}) could not be read, so there is no timeline of the workers.", ""]
    if not timeline.busy:
        return [*lines, f"The run's logs ({names}) name no task of this search handed to a worker (a search that "
                        "trained in its own process, `--in-process`, has no workers), so there is no timeline of the "
                        "workers.", ""]
    figures.draw_timeline(timeline, folder / "workers.png")
    drawn.append("workers.png")
    source = ("the head's hand-outs (`task.dispatched`) to the results it received" if timeline.source == "head"
              else "each worker's own `task.received` to `task.finished`")
    lines += _figure("workers.png", "workers' timeline", (
        f"Each worker's attempts from {source}, coloured by how they ended (ok, failed in training, lost: re-sent "
        "or given up, late: a result no longer needed, open: still running when its head stopped or the logs "
        f"end), over the time the head knew it (grey); dotted: a head (re)started. From {names}."))
    return [*lines, *_worker_table(timeline), ""]


def _worker_table(timeline: Timeline) -> list[str]:
    outcomes = ("ok", "failed", "lost", "late", "open")
    rows = ["| worker | attempts | " + " | ".join(outcomes) + " | busy | alive | busy share |",
            "|---|" + "---:|" * (len(outcomes) + 4)]
    total_busy = total_alive = 0.0
    for worker in timeline.workers:
        mine = [b for b in timeline.busy if b.worker == worker]
        busy = sum(b.end - b.start for b in mine)
        first, last = timeline.alive.get(worker, (min(b.start for b in mine), max(b.end for b in mine)))
        alive = max(last - first, busy)
        total_busy, total_alive = total_busy + busy, total_alive + alive
        share = f"{100 * busy / alive:.0f}%" if alive else "n/a"
        counts = " | ".join(str(sum(b.outcome == outcome for b in mine)) for outcome in outcomes)
        rows.append(f"| `{worker}` | {len(mine)} | {counts} | {_duration(busy)} | {_duration(alive)} | {share} |")
    if total_alive:
        counts = " | ".join(str(sum(b.outcome == outcome for b in timeline.busy)) for outcome in outcomes)
        rows.append(f"| all | {len(timeline.busy)} | {counts} | {_duration(total_busy)} | {_duration(total_alive)} | "
                    f"{100 * total_busy / total_alive:.0f}% |")
    return rows


def _notes(record: RunRecord) -> list[str]:
    if not record.notes:
        return []
    return ["## Notes", "", *(f"- {note}" for note in record.notes), ""]

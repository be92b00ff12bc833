"""What a person sees while a search or an experiment runs.

On a terminal, one live progress display (rich's ``Live``): the phase, a bar of epochs spent of the budget (or
genotypes of the evaluations given, or tasks of a batch) with the time left at the rate so far, the best loss
with its genotype, the workers busy of those alive, resends and lost tasks, the evaluations; above it only
warnings and errors (evo.cmdline.log_setup.quiet_terminal: the run's log files keep every line). Elsewhere
(systemd, CI, a pipe) nothing is drawn: the commands print their plain progress lines, each with the same
``progress DONE/TOTAL UNIT  eta T``.

The display is refreshed by rich's thread from immutable views the head's thread hands it
(:meth:`LiveDisplay.show`), so nothing the search owns is read from another thread.
"""
from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ..cmdline.log_setup import quiet_terminal, terminal_is_tty
from ..head.progress import ProgressView, SearchProgress, TaskProgress, format_duration, format_report

if TYPE_CHECKING:
    from ..head.cluster import Cluster
    from ..head.runner import Runner
    from ..head.tasks import Finished
    from ..strategy import Report, Strategy

__all__ = ["ExperimentWatch", "LiveDisplay", "WorkersView", "quiet_logs", "workers_of"]

#: an experiment's progress line of a search: ``[NAME] gen ...``
_REPORT = re.compile(r"^\[[^\]]+\] gen ")


@dataclass(frozen=True)
class WorkersView:
    """The workers at one moment: alive (connected, heard from), busy (running a task), the broker's resends
    and lost tasks (given up after their attempts), and the local workers restarted."""

    alive: int
    busy: int
    resends: int = 0
    lost: int = 0
    restarts: int = 0

    def text(self) -> str:
        restarted = f"  restarted {self.restarts}" if self.restarts else ""
        return f"workers {self.busy} busy / {self.alive} alive  resends {self.resends}  lost {self.lost}{restarted}"


def workers_of(cluster: Cluster) -> WorkersView:
    """The workers of a started cluster (from its broker; call it from the head's thread)."""
    broker = cluster.live_broker
    workers = broker.workers()
    restarts = cluster.workers.restarts if cluster.workers is not None else 0
    return WorkersView(len(workers), sum(w["state"] == "busy" for w in workers.values()), broker.stats.resends,
                       broker.stats.failures, restarts)


def _drawable(console: Console) -> bool:
    return console.is_terminal and not console.is_dumb_terminal


def quiet_logs(console: Console | None = None) -> contextlib.AbstractContextManager[None]:
    """Where a live display will be drawn and the log lines go to the same terminal: only warnings and errors
    reach it while inside (the run's log files keep every line); elsewhere nothing changes. A command enters
    it once it keeps its logs, for all of its run."""
    if _drawable(console or Console()) and terminal_is_tty():
        return quiet_terminal()
    return contextlib.nullcontext()


class LiveDisplay:
    """The live display on a terminal (``active``), or nothing: then :meth:`echo` prints plain lines.
    ``enabled``: force it on or off (default: on when standard output is a terminal rich can draw on)."""

    def __init__(self, title: str = "evovae search", *, console: Console | None = None,
                 enabled: bool | None = None) -> None:
        self.title = title
        self.console = console or Console()
        self.active = _drawable(self.console) if enabled is None else enabled
        self._view: ProgressView | None = None
        self._workers: WorkersView | None = None
        self._phase = ""
        self._last = ""
        self._live: Live | None = None
        self._quiet: contextlib.ExitStack | None = None

    # -- lifetime ----------------------------------------------------------------------------
    def __enter__(self) -> LiveDisplay:
        if self.active:
            self._quiet = contextlib.ExitStack()
            shared = terminal_is_tty()  # the log lines share this terminal: warnings and errors, above the display
            if shared:
                self._quiet.enter_context(quiet_terminal())
            self._live = Live(console=self.console, get_renderable=self.renderable, refresh_per_second=2,
                              redirect_stdout=True, redirect_stderr=shared)  # 2> FILE stays the file's
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()  # the last state stays on the screen
            self._live = None
        if self._quiet is not None:
            self._quiet.close()
            self._quiet = None

    # -- what the head's thread tells it -----------------------------------------------------
    def show(self, view: ProgressView | None = None, *, workers: WorkersView | None = None,
             phase: str | None = None, last: str | None = None) -> None:
        """Replace what is shown (each argument given replaces its part)."""
        if view is not None:
            self._view = view
        if workers is not None:
            self._workers = workers
        if phase is not None:
            self._phase = phase
        if last is not None:
            self._last = last

    def echo(self, line: str) -> None:
        """A line above the display (on a terminal), or a plain line on standard output."""
        if self._live is not None:
            self._live.refresh()  # the display under the line as it is now, not as at the last refresh
            self.console.print(Text(line), soft_wrap=True)
        else:
            print(line, flush=True)

    # -- drawing (rich's refresh thread) -----------------------------------------------------------
    def renderable(self) -> Any:
        """What the display shows now (rich renderables)."""
        rows: list[Any] = []
        view, now = self._view, time.monotonic()
        head = Text(self.title, style="bold")
        if self._phase:
            head.append(f"  {self._phase}")
        rows.append(head)
        if view is not None:
            bar = Table.grid(padding=(0, 2))
            fraction = view.fraction
            of = f"/{view.total}" if view.total is not None else ""
            bar.add_row(ProgressBar(total=view.total, completed=min(view.done, view.total or view.done), width=36),
                        Text(f"{view.done}{of} {view.unit}"),
                        Text(f"{fraction:.0%}" if fraction is not None else ""),
                        Text(f"ETA {format_duration(view.eta_at(now))}"),
                        Text(f"elapsed {format_duration(view.elapsed_s + (now - view.at))}", style="dim"))
            rows.append(bar)
            if view.best_loss is not None:
                rows.append(Text(f"best {view.best_loss:.2f}  {view.best}"))
            failed = f" ({view.failed} failed)" if view.failed else ""
            rows.append(Text(f"evaluations {view.evaluations}{failed}"
                             + (f"  {self._workers.text()}" if self._workers else "")))
        elif self._workers is not None:
            rows.append(Text(self._workers.text()))
        if self._last:
            rows.append(Text(self._last, style="dim", overflow="ellipsis", no_wrap=True))
        return Group(*rows)


class ExperimentWatch:
    """An experiment's searches and task batches (evo.experiments.searches.BenchWatch) on a
    :class:`LiveDisplay`: the phase (fidelity study N/30, search NAME k of n, retrain), its progress and the
    workers (``workers``: sampled after the evaluator's polls, at most every half second). Without an active
    display, each finished task of a batch is one plain line."""

    def __init__(self, display: LiveDisplay, plan: Sequence[str] = (),
                 workers: Callable[[], WorkersView] | None = None,
                 titles: dict[str, str] | None = None) -> None:
        self.display = display
        self.plan = list(plan)
        self.workers = workers
        self.titles = {"fidelity": "fidelity study", "retrain": "retrain", **(titles or {})}
        self._search: SearchProgress | None = None
        self._tasks: TaskProgress | None = None
        self._sampled = 0.0

    def _phase_of(self, name: str) -> str:
        if name in self.plan:
            return f"search {name} ({self.plan.index(name) + 1} of {len(self.plan)})"
        return f"search {name}"

    def search(self, name: str, strategy: Strategy, runner: Runner, max_evaluations: int | None) -> None:
        progress = SearchProgress(strategy, max_evaluations=max_evaluations, title=name)
        self._search, self._tasks = progress, None

        def observed(*told: Any) -> None:
            progress.observe(*told)
            self.display.show(progress.view())

        runner.observers.append(observed)
        self.display.show(progress.view(), phase=self._phase_of(name), last="")

    def tasks(self, name: str, total: int, known: int) -> None:
        title = self.titles.get(name, name)
        self._search, self._tasks = None, TaskProgress(title, total, known)
        self.display.show(self._tasks.view(), phase=title, last="")
        if not self.display.active:
            self.display.echo(f"{title}: {known}/{total} tasks done before, {total - known} to run")

    def polled(self, finished: list[Finished]) -> None:
        search, tasks = self._search, self._tasks
        if search is not None and not search.started:
            search.start()  # the search runs (its replay is over): the rate counts from here
        if tasks is not None and finished:
            tasks.finished(finished)
            view = tasks.view()
            self.display.show(view)
            if not self.display.active:
                self.display.echo(f"{tasks.title}: {view.line()}" + (f"  failed {view.failed}" if view.failed else ""))
        now = time.monotonic()
        if self.workers is not None and now - self._sampled >= 0.5:
            self._sampled = now
            self.display.show(workers=self.workers())
        if search is not None:
            self.display.show(search.view())

    def line(self, text: str) -> None:
        """A line the experiment prints (its ``echo``): a search's progress report (``[NAME] gen ...``) is shown
        below the display on a terminal, or printed with the search's progress and time left; any other line
        is printed (above the display)."""
        search = self._search
        if _REPORT.match(text):
            if self.display.active:
                self.display.show(last=text)
            else:
                self.display.echo(f"{text}  {search.view().line()}" if search is not None else text)
            return
        self.display.echo(text)

    def report(self, name: str, report: Report, extra: str = "") -> None:
        """``on_report`` of a bench: the report as a line (:meth:`line`)."""
        self.line(f"[{name}] " + format_report(report, extra))

"""What a person sees while a search runs: the progress of a search or a task batch (evo.head.progress), the
live display on a terminal (evo.cli.live, rich), and - run for real in a pseudo-terminal and through a pipe -
``evovae search``'s screen: one display and few lines on a terminal, the plain progress lines elsewhere."""
from __future__ import annotations

import io
import json
import os
import re
import select
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from evo.cli.live import ExperimentWatch, LiveDisplay, WorkersView
from evo.evaluation import Evaluation
from evo.head.evaluators import InProcessEvaluator
from evo.head.progress import ProgressView, SearchProgress, TaskProgress, format_duration
from evo.head.runner import Runner
from evo.head.tasks import Finished
from evo.spec import TrainSpec
from evo_helpers import ALL, OPTIONS, build, train

REPO = Path(__file__).resolve().parents[1]
SPEC = TrainSpec(dataset="synthetic", epochs=2)


class Clock:
    """A clock the test moves (no timing in the assertions)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _search(name: str, clock: Clock, replay_first: int = 0, **changes) -> tuple[SearchProgress, object]:
    """Strategy ``name`` run in process with a SearchProgress observing it; the first ``replay_first``
    evaluations told as replayed (a resumed search's journal)."""
    options = replace(OPTIONS[name], **changes)
    strategy = build(name, **changes)
    progress = SearchProgress(strategy, max_evaluations=options.max_evaluations, clock=clock)
    told = [0]

    def observe(candidate, evaluation, key, replayed):
        told[0] += 1
        progress.observe(candidate, evaluation, key, replayed or told[0] <= replay_first)

    runner = Runner(SPEC.replace(epochs=strategy.final_epochs), poll_s=0.0)
    runner.observers.append(observe)
    clock.now = 100.0
    progress.start()
    runner.run(strategy, InProcessEvaluator(train), capacity=lambda: 3)
    clock.now = 110.0
    return progress, strategy


def test_format_duration():
    assert [format_duration(s) for s in (None, float("nan"), 0, 12.4, 65, 3599, 3600, 7325, 86400 + 4 * 3600)] == [
        "-", "-", "0s", "12s", "1m05s", "59m59s", "1h00m", "2h02m", "1d04h"]


@pytest.mark.parametrize("name", ALL)
def test_a_search_with_an_epoch_budget_counts_the_epochs_it_was_charged(name):
    clock = Clock()
    progress, strategy = _search(name, clock, budget_epochs=30, generations=None)
    view = progress.view()
    assert (view.unit, view.total) == ("epochs", 30)
    assert view.done == strategy.asked_epochs <= 30  # every evaluation told: what was asked is what was spent
    assert view.evaluations == strategy.evaluation_count
    assert view.elapsed_s == 10.0 and view.rate == view.done / 10.0
    assert view.eta_s == pytest.approx((30 - view.done) / view.rate)
    assert view.eta_at(clock.now + 1.0) == pytest.approx(max(0.0, view.eta_s - 1.0))
    best = strategy.best
    assert (view.best_loss, view.best) == ((best.loss, str(best.genotype)) if best else (None, None))
    assert view.line() == f"progress {view.done}/30 epochs  eta {format_duration(view.eta_s)}"


@pytest.mark.parametrize("name", ALL)
def test_without_a_budget_the_end_is_the_genotypes_of_the_evaluations_given(name):
    progress, strategy = _search(name, Clock())
    view = progress.view()
    assert (view.unit, view.total) == ("genotypes", OPTIONS[name].max_evaluations)
    assert view.done == len({e.genotype for e in strategy.evaluations}) <= view.total


def test_replayed_results_count_as_done_but_not_in_the_rate():
    clock = Clock()
    progress, strategy = _search("evolution", clock, replay_first=4, budget_epochs=20, generations=None)
    view = progress.view()
    replayed_epochs = sum(strategy.cost(e.candidate) for e in strategy.evaluations[:4])
    assert view.done == strategy.asked_epochs
    assert view.rate == (view.done - replayed_epochs) / 10.0


def test_a_task_batch_counts_its_tasks_from_those_known_before():
    clock = Clock()
    tasks = TaskProgress("fidelity study", total=5, known=2, clock=clock)
    assert tasks.view().rate is None and tasks.view().eta_s is None
    clock.now = 4.0
    done = Evaluation.failed(build("evolution").ask()[0].genotype, "diverged", epochs=2)
    tasks.finished([Finished("a", done), Finished("b", done)])
    view = tasks.view()
    assert (view.done, view.total, view.failed, view.unit) == (4, 5, 2, "tasks")
    assert view.rate == 0.5 and view.eta_s == 2.0 and view.line() == "progress 4/5 tasks  eta 2s"


def _terminal(width: int = 140) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=width, color_system=None), out


def test_the_display_shows_the_budget_the_eta_the_best_and_the_workers():
    console, out = _terminal()
    display = LiveDisplay("evovae search", console=console)
    assert display.active  # a terminal rich can draw on
    now = time.monotonic()
    display.show(ProgressView("search", "epochs", 96, 240, 40, 1, now, 60.0, 1.6, 115.5, "50,300|20|450"),
                 workers=WorkersView(alive=2, busy=1, resends=3, lost=1), phase="runs/s1", last="gen   4  best ...")
    console.print(display.renderable())
    text = out.getvalue()
    assert "evovae search  runs/s1" in text
    assert "96/240 epochs" in text and "40%" in text and re.search(r"ETA 1m(30|29)s", text)  # (240 - 96) / 1.6 s
    assert "best 115.50  50,300|20|450" in text
    assert "evaluations 40 (1 failed)  workers 1 busy / 2 alive  resends 3  lost 1" in text
    assert "gen   4  best ..." in text


def test_no_display_where_the_output_is_no_terminal(capsys):
    display = LiveDisplay(console=Console(file=io.StringIO()))
    assert not display.active
    with display:
        display.show(ProgressView("search", "epochs", 1, 2, 1, 0, 0.0, 1.0))
        display.echo("a plain line")
    assert capsys.readouterr().out == "a plain line\n"


def test_an_experiment_without_a_terminal_prints_its_task_batches_and_its_searches_progress(capsys):
    display = LiveDisplay(console=Console(file=io.StringIO()))
    watch = ExperimentWatch(display, ["random-seed0", "tpe-seed0"])
    watch.tasks("fidelity", 3, 1)
    ok = Evaluation.of(build("evolution").ask()[0], True, train(build("evolution").ask()[0].genotype, SPEC).measurement)
    watch.polled([Finished("t1", ok)])
    watch.polled([])  # nothing finished: nothing printed
    strategy = build("evolution", budget_epochs=20, generations=None)
    runner = Runner(SPEC)
    watch.search("tpe-seed0", strategy, runner, None)
    assert watch._phase_of("tpe-seed0") == "search tpe-seed0 (2 of 2)"
    watch.line("[tpe-seed0] gen   0  best   100.00 50|10|50")
    watch.line("retraining 2 best genotypes")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "fidelity study: 1/3 tasks done before, 2 to run"
    assert lines[1].startswith("fidelity study: progress 2/3 tasks  eta ")
    assert lines[2] == "[tpe-seed0] gen   0  best   100.00 50|10|50  progress 0/20 epochs  eta -"
    assert lines[3] == "retraining 2 best genotypes" and len(lines) == 4


# ------------------------------------------------------------------------------------ evovae search, for real

def _search_argv(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "evo.cli", "search", "--dataset", "synthetic", "--local-workers", "2",
            "--worker-arg=--fake", "--worker-arg=--fake-sleep=0.2", "--population", "4", "--offspring", "4",
            "--budget-epochs", "20", "--epochs", "2", "--strategy", "evolution", "--bind", "tcp://127.0.0.1:*",
            "--run-dir", str(run_dir)]


def _in_a_terminal(argv: list[str], cwd: Path, timeout: float = 120.0) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal (120 x 40) as its standard input, output and error; returns its exit
    status and everything it wrote."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "40"}
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(name, None)
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal (Linux: EIO)
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        status = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return status, b"".join(chunks).decode("utf-8", errors="replace")


_CONTROL = re.compile(r"(\x1b\[[0-9;?]*[A-Za-z]|\r|\n)")


def screen(output: str) -> list[str]:
    """The lines a terminal holds (scrolled-off ones included) after ``output``: text, carriage returns, line
    feeds, and the cursor-up (``ESC[nA``) and erase-line (``ESC[2K``) codes rich's live display redraws with;
    other codes (colours, the cursor shown or hidden) change no text."""
    lines, row, col = [""], 0, 0
    for token in _CONTROL.split(output):
        if not token:
            continue
        if token == "\n":
            row += 1
            col = 0
            if row == len(lines):
                lines.append("")
        elif token == "\r":
            col = 0
        elif token.startswith("\x1b["):
            code, arg = token[-1], token[2:-1]
            if code == "A":
                row = max(0, row - int(arg or 1))
            elif code == "K" and arg == "2":
                lines[row] = ""
        else:
            line = lines[row].ljust(col)
            lines[row] = line[:col] + token + line[col + len(token):]
            col += len(token)
    return [line.rstrip() for line in lines if line.strip()]


@pytest.mark.slow
def test_a_search_in_a_terminal_shows_one_display_and_few_lines(tmp_path):
    run = tmp_path / "run"
    status, output = _in_a_terminal(_search_argv(run), tmp_path)
    lines = screen(output)
    assert status == 0, output
    shown = "\n".join(lines)
    assert "Traceback" not in shown and "[info" not in shown and '"level"' not in shown, shown  # no info lines
    display = [i for i, line in enumerate(lines) if line.startswith("evovae search")]
    assert len(display) == 1, shown  # one display, redrawn in place
    bar = lines[display[0] + 1]
    assert re.search(r"\b\d+/20 epochs\b", bar) and "ETA" in bar and "elapsed" in bar, shown
    assert any(re.match(r"best \d+\.\d\d  \S+\|\d+\|\S+", line) for line in lines), shown
    assert any("workers" in line and "alive" in line and "resends" in line for line in lines), shown
    assert lines[0] == f"run directory {run}" and lines[-1].startswith("stopped: budget"), shown
    result = json.loads((run / "result.json").read_text())
    # the run directory and endpoints lines, the display (4 or 5), the final population (a title and 4), stopped
    assert len(lines) <= 2 + 5 + 5 + 1, shown
    assert len(result["evaluations"]) >= 8  # ... for a search of this many evaluations
    reports = [i for i, line in enumerate(lines) if line.startswith("gen ")]
    assert reports in ([], [display[0] + 4]), shown  # the latest report is the display's last line: no other
    assert (run / "logs" / "head.log").is_file()  # every line is kept there


@pytest.mark.slow
def test_the_same_search_through_a_pipe_prints_the_plain_progress_lines(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run(_search_argv(run), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout  # nothing drawn
    progress = [line for line in done.stdout.splitlines() if line.startswith("gen ")]
    assert progress, done.stdout
    for line in progress:
        assert re.search(r"  epochs \d+  progress \d+/20 epochs  eta (-|\d+[smhd])", line), line
        assert "workers 2" in line or "workers 1" in line or "workers 0" in line, line
    assert re.search(r"progress (\d+)/20 epochs", progress[-1])
    assert done.stderr.strip()  # the log lines go on to stderr, as JSON (no terminal) ...
    assert all(line.startswith("{") for line in done.stderr.splitlines()), done.stderr
    assert any('"role": "worker"' in line for line in done.stderr.splitlines())  # ... the local workers' too

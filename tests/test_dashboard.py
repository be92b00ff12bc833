"""``evovae dashboard RUN_DIR``: optuna-dashboard on a search's Optuna mirror, as a person uses it - a real search
(fake workers), the command started as a process, and the page loaded in headless Chromium (Debian's package;
bin/setup installs it), whose rendered DOM must show the search's trials. Also: the mirror of a search killed
and resumed holds no trial twice, and the page follows a running search."""
import json
import re
import shutil
import subprocess
import sys
import urllib.request
from html import unescape
from pathlib import Path

import optuna
import pytest

from distributed_helpers import Process, free_port_pair, wait_until
from evo.adapters.optuna_mirror import FILE, METRIC, open_storage
from evo.cli.dashboard import main as dashboard_main
from evo.head.search_run import SearchRun
from evo.search_config import SearchConfig
from evo.spec import TrainSpec
from evo.strategies import StrategyOptions

SEARCH = ["--dataset", "synthetic", "--population", "4", "--offspring", "4", "--epochs", "3", "--seed", "1",
          "--log-format", "json", "--log-level", "warning"]


def _fake(sleep: float) -> list[str]:
    return ["--local-workers", "2", "--worker-arg=--fake", f"--worker-arg=--fake-sleep={sleep}"]


def _search_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "evo.cli", "search", "--bind", f"tcp://127.0.0.1:{free_port_pair()}", *args]


def _search(run_dir: Path, *args: str) -> dict:
    out = subprocess.run(_search_argv(*SEARCH, *_fake(0.02), "--run-dir", str(run_dir), *args), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((run_dir / "result.json").read_text())


def _trials(run_dir: Path) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(run_dir / FILE)
    return optuna.load_study(study_name=run_dir.name, storage=storage).get_trials(deepcopy=False)


def _dashboard_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evo.cli", "dashboard", *args], capture_output=True, text=True,
                          timeout=60)


class Dashboard(Process):
    """``evovae dashboard RUN_DIR --port P``, a real process, up once it printed its address."""

    def __init__(self, run_dir: Path, directory: Path) -> None:
        self.port = free_port_pair()
        super().__init__("dashboard", [sys.executable, "-m", "evo.cli", "dashboard", str(run_dir), "--port",
                                       str(self.port)], directory)
        wait_until(lambda: "http://" in self.stdout() or not self.alive(), 60, "the dashboard's address",
                   fail=self.describe)
        assert self.alive(), self.describe()
        self.url = re.search(r"http://\S+", self.stdout()).group(0)
        assert self.url == f"http://127.0.0.1:{self.port}/dashboard/studies/0"

    def api_trials(self) -> int:
        """The trials the dashboard serves its page (its own JSON API, which the page polls)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/studies/0", timeout=30) as response:
            return len(json.load(response)["trials"])

    def stop(self) -> None:
        if self.alive():
            self.signal(15)
            assert self.wait(30) == 0, self.describe()


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium here (bin/setup installs Debian's chromium package when it runs as root with apt-get)")


def _browse(url: str, profile: Path, *extra: str) -> str:
    """The DOM of ``url`` after headless Chromium ran its scripts (the dashboard is a single-page app)."""
    out = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync",
                          "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=15000", *extra, url],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _page_text(url: str, profile: Path) -> str:
    dom = _browse(url, profile, "--dump-dom")
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", text)))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, dict]:
    """A small finished search (the default strategy: TPE climbing rungs 1 and 3) and its result.json."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    return run_dir, _search(run_dir, "--generations", "3")


@pytest.fixture(scope="module")
def served(finished, tmp_path_factory):
    """``evovae dashboard`` of the finished search, running."""
    dashboard = Dashboard(finished[0], tmp_path_factory.mktemp("served"))
    yield dashboard
    dashboard.stop()


# -- one-line refusals -------------------------------------------------------------------------------

def test_a_directory_that_holds_no_search_is_refused(tmp_path):
    out = _dashboard_cli(str(tmp_path))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "is not the run directory of a search" in out.stderr


def test_an_experiment_directory_names_its_searches(tmp_path):
    (tmp_path / "searches" / "tpe-seed0").mkdir(parents=True)
    (tmp_path / "searches" / "tpe-seed0" / "journal.sqlite").write_bytes(b"")
    out = _dashboard_cli(str(tmp_path))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "an experiment's directory" in out.stderr and str(tmp_path / "searches" / "tpe-seed0") in out.stderr


def test_a_remote_bind_needs_its_flag(tmp_path):
    out = _dashboard_cli(str(tmp_path), "--host", "0.0.0.0")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "--allow-remote" in out.stderr


def test_a_missing_optuna_dashboard_says_what_to_install(tmp_path, monkeypatch, capsys):
    (tmp_path / "journal.sqlite").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # as if not installed: importing it fails
    assert dashboard_main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "optuna-dashboard is not installed" in err and "pip install optuna-dashboard" in err


def test_a_running_search_without_a_mirror_yet_is_told_to_wait(tmp_path):
    config = SearchConfig(StrategyOptions(), TrainSpec(dataset="synthetic"))
    with SearchRun.create(tmp_path / "run", config):  # started, nothing told yet: it holds the run directory
        out = _dashboard_cli(str(tmp_path / "run"))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "no dashboard mirror yet" in out.stderr and "try again in a moment" in out.stderr


@pytest.mark.slow  # the dashboard server and a second one
def test_a_port_in_use_is_one_line(finished, served):
    out = _dashboard_cli(str(finished[0]), "--port", str(served.port))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert f"cannot listen on 127.0.0.1:{served.port}" in out.stderr


# -- the mirror of a real search ---------------------------------------------------------------------

def test_every_evaluation_is_a_trial_in_tell_order(finished):
    run_dir, result = finished
    study = optuna.load_study(study_name=run_dir.name, storage=open_storage(run_dir / FILE))
    assert (study.user_attrs["strategy"], study.user_attrs["dataset"], study.metric_names) == (
        "tpe", "synthetic", [METRIC])
    trials = _trials(run_dir)
    assert [(t.user_attrs["genotype"], t.user_attrs["epochs"]) for t in trials] == [
        (e["genotype"], e["epochs"]) for e in result["evaluations"]]
    assert {t.state.name for t in trials} == {"COMPLETE", "PRUNED"}  # the default search climbs rungs 1 and 3
    assert [t.value for t in trials] == [e["loss"] for e in result["evaluations"]]


@pytest.mark.slow  # a search killed and resumed: two heads, four workers
def test_a_search_killed_and_resumed_has_no_trial_twice(tmp_path):
    run_dir = tmp_path / "run"
    # generational: a generation at a time keeps the search running while the page is looked at (the default's
    # 1-epoch first rung finishes a search this size before Chromium has drawn it)
    head = Process("head", _search_argv(*SEARCH, *_fake(0.3), "--mode", "generational", "--generations", "6",
                                        "--run-dir", str(run_dir)), tmp_path)
    try:
        wait_until(lambda: (run_dir / FILE).is_file() and len(_trials(run_dir)) >= 6, 120, "six trials mirrored",
                   fail=head.describe)
    finally:
        head.kill_group()  # kill -9, between any two writes
    before = len(_trials(run_dir))
    out = subprocess.run(_search_argv("--resume", str(run_dir), *_fake(0.02), "--log-format", "json",
                                      "--log-level", "warning"), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    trials = _trials(run_dir)
    assert len(trials) > before
    assert [t.number for t in trials] == list(range(len(result["evaluations"])))
    assert [(t.user_attrs["genotype"], t.user_attrs["epochs"]) for t in trials] == [
        (e["genotype"], e["epochs"]) for e in result["evaluations"]]


# -- in the browser ----------------------------------------------------------------------------------

@pytest.mark.slow  # a search, the dashboard server and a headless Chromium
def test_chromium_shows_the_trials_of_a_finished_search(tmp_path, finished, served):
    _chromium()
    text = _page_text(served.url + "/trials", tmp_path / "profile")
    evaluations = finished[1]["evaluations"]
    assert f"{len(evaluations)} Trials" in text, text[:2000]
    assert f"genotype {evaluations[0]['genotype']}" in text  # the first trial's user attributes are shown
    assert "Pruned" in text and "Complete" in text


@pytest.mark.slow  # a running search, the dashboard server and a headless Chromium
def test_the_dashboard_follows_a_running_search(tmp_path):
    _chromium()
    run_dir = tmp_path / "run"
    # generational: a generation at a time keeps the search running while the page is looked at (the default's
    # 1-epoch first rung finishes a search this size before Chromium has drawn it)
    head = Process("head", _search_argv(*SEARCH, *_fake(0.3), "--mode", "generational", "--generations", "6",
                                        "--run-dir", str(run_dir)), tmp_path)
    dashboard = None
    try:
        wait_until(lambda: (run_dir / FILE).is_file() or not head.alive(), 120, "the mirror", fail=head.describe)
        assert head.alive(), head.describe()
        dashboard = Dashboard(run_dir, tmp_path)
        first = dashboard.api_trials()
        text = _page_text(dashboard.url + "/trials", tmp_path / "profile")
        shown = int(re.search(r"(\d+) Trials", text).group(1))
        assert shown >= first >= 1
        assert head.alive(), "the search ended before the dashboard was looked at; give it more to do"
        wait_until(lambda: dashboard.api_trials() > shown, 120, "more trials on the dashboard", interval=0.5,
                   fail=head.describe)
        assert head.wait(120) == 0, head.describe()
        total = len(json.loads((run_dir / "result.json").read_text())["evaluations"])
        wait_until(lambda: dashboard.api_trials() == total, 60, "every trial on the dashboard", interval=0.5)
    finally:
        head.kill_group()
        if dashboard is not None:
            dashboard.stop()


@pytest.mark.slow  # a search, then the dashboard server
def test_a_run_without_a_mirror_gets_one_from_its_journal(tmp_path):
    run_dir = tmp_path / "run"
    result = _search(run_dir, "--generations", "2", "--no-dashboard-mirror")
    assert not (run_dir / FILE).exists()
    dashboard = Dashboard(run_dir, tmp_path)
    try:
        assert "from the journal" in dashboard.stderr_path.read_text()
        assert dashboard.api_trials() == len(result["evaluations"])
    finally:
        dashboard.stop()
    assert [t.user_attrs["genotype"] for t in _trials(run_dir)] == [e["genotype"] for e in result["evaluations"]]

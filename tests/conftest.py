"""Suite-wide pytest hooks: every test starts from the same logging set-up, and the fast lane stays fast.

Logging: ``evo.cmdline.log_setup.configure`` (run in-process by every test that calls a command's ``main``)
configures structlog for the whole process, writing to the ``sys.stderr`` of that moment (pytest's capture of
that one test) and caching each logger on first use. Left alone, every later test would log through it: into
a closed capture file (``ValueError: I/O operation on closed file``), at that test's level, and past
``structlog.testing.capture_logs``. So in a test run structlog never caches a logger, and after each test structlog
is back to its defaults.

``bin/test --fast`` (``-m "not slow"``) leaves out the tests marked ``slow``: those that
train on real data or start several processes. A test without the mark that takes longer
than FAST_LANE_LIMIT_S (setup, call and teardown together) is named at the end of the run,
with what to do about it, so the fast lane stays under a minute as tests are added.
"""
from __future__ import annotations

import pytest
import structlog

FAST_LANE_LIMIT_S = 5.0


class FastLaneWatch:
    """Adds up each unmarked test's phases and reports the ones over the limit."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.took: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if "slow" not in report.keywords:
            self.took[report.nodeid] = self.took.get(report.nodeid, 0.0) + report.duration

    def pytest_terminal_summary(self, terminalreporter) -> None:
        over = sorted(((s, n) for n, s in self.took.items() if s > self.limit_s), reverse=True)
        if not over:
            return
        terminalreporter.section("too slow for the fast lane")
        for seconds, nodeid in over:
            terminalreporter.write_line(f"{seconds:6.1f} s  {nodeid}")
        terminalreporter.write_line(
            f"each took over {self.limit_s:g} s without @pytest.mark.slow: mark it slow if it trains on real data "
            "or starts several processes, otherwise make it cheaper")


def _never_caching(configure):
    def configure_without_cache(**settings) -> None:
        configure(**{**settings, "cache_logger_on_first_use": False})

    configure_without_cache.wrapped = configure
    return configure_without_cache


@pytest.fixture(autouse=True)
def _structlog_per_test():
    """structlog as every test found it: its defaults, whatever the test configured."""
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def pytest_configure(config: pytest.Config) -> None:
    structlog.configure = _never_caching(structlog.configure)  # for the session, module fixtures included
    config.pluginmanager.register(FastLaneWatch(FAST_LANE_LIMIT_S), "evovae-fast-lane-watch")


def pytest_unconfigure(config: pytest.Config) -> None:
    structlog.configure = getattr(structlog.configure, "wrapped", structlog.configure)

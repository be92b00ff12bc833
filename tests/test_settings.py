"""Settings files (TOML) for searches and workers; flags override them."""
import subprocess
import sys

import pytest

from evo.cli.app import _parser
from evo.cmdline.settings import SettingsError, apply_settings


def _search_parser():
    import argparse

    parser = _parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["search"]


def test_file_sets_defaults_and_flags_win(tmp_path):
    path = tmp_path / "evovae.toml"
    path.write_text('[search]\npopulation = 20\nlocal-workers = 3\nworker_arg = ["--fake"]\nmode = "steady-state"\n')
    parser = _search_parser()
    argv = ["--config", str(path), "--population", "7"]
    apply_settings(parser, argv, "search")
    args = parser.parse_args(argv)
    assert (args.population, args.local_workers, args.worker_arg, args.mode) == (7, 3, ["--fake"], "steady-state")


@pytest.mark.parametrize("text, message", [
    ("[search]\npopulaton = 3\n", "unknown option(s) in [search]: populaton"),
    ("[search]\nmode = 'sideways'\n", "choose from"),
    ("[search]\npopulation = 'many'\n", "is not valid"),
    ("[search]\nin-process = 'yes'\n", "must be true or false"),
    ("[search\n", "is not valid TOML"),
])
def test_bad_files_are_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        apply_settings(_search_parser(), ["--config", str(path)], "search")


def test_cli_reports_a_bad_file_in_one_line_with_status_2(tmp_path):
    for command in ("search", "worker"):
        out = subprocess.run([sys.executable, "-m", "evo.cli", command, "--config", str(tmp_path / "missing.toml")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out.stderr
        assert out.stderr.strip().endswith("missing.toml does not exist") and len(out.stderr.splitlines()) == 1


def test_worker_takes_its_head_from_the_file(tmp_path):
    from gpuworker.cli import build_parser

    path = tmp_path / "worker.toml"
    path.write_text('[worker]\nconnect = "tcp://head:5557"\nheartbeat = 0.5\nfake = true\n')
    parser = build_parser()
    argv = ["--config", str(path)]
    apply_settings(parser, argv, "worker")
    args = parser.parse_args(argv)
    assert (args.connect, args.heartbeat, args.fake) == ("tcp://head:5557", 0.5, True)

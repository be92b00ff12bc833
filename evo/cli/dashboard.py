"""``evovae dashboard RUN_DIR``: optuna-dashboard on a search's Optuna mirror (docs/dashboard.md), and
:func:`attach_mirror`, which every search of the composition layer uses to write that mirror.

Every search mirrors its evaluations into ``RUN_DIR/optuna-journal.log`` (evo/adapters/optuna_mirror.py: one
Optuna trial per evaluation). This command serves optuna-dashboard (the ``dashboard`` extra) on that file; the
dashboard reads the file again as it grows, so it follows a running search. It binds the loopback interface
unless told otherwise: a non-loopback ``--host`` needs ``--allow-remote`` (the dashboard has no login, and may
write notes into the study). A stopped search that has no mirror (run before mirrors existed, or with
``--no-dashboard-mirror``) gets one first, written from its journal as a resume would replay it.
"""
from __future__ import annotations

import argparse
import ipaddress
import signal
import socket
import socketserver
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog

from ..cmdline import validate as v

if TYPE_CHECKING:
    from ..adapters.optuna_mirror import OptunaMirror
    from ..head.runner import Runner
    from ..head.search_run import SearchRun
    from ..space import SearchSpace
    from ..spec import TrainSpec

__all__ = ["attach_mirror", "main", "mirror_into"]

log = structlog.get_logger(__name__)

#: what to run when optuna-dashboard is missing
INSTALL = "pip install optuna-dashboard (or the project's extra: pip install -e '.[dashboard]')"


def _mirror_failed(path: Path, why: str) -> None:
    log.warning("dashboard_mirror.stopped", path=str(path), error=why,
                note="the search goes on; evovae dashboard writes the mirror again from the journal once it stops "
                     "(remove the file first)")


def attach_mirror(run: SearchRun) -> OptunaMirror:
    """Mirror every evaluation of ``run`` into ``RUN_DIR/optuna-journal.log``, the study named after the run
    directory (call it before ``run.replay()``: a resume then writes only what the mirror lacks)."""
    from ..adapters.optuna_mirror import OptunaMirror

    mirror = OptunaMirror.of(run.run_dir, run.config, on_failure=_mirror_failed)  # with what the search is
    run.observe(mirror)
    return mirror


def mirror_into(runner: Runner, run_dir: Path, space: SearchSpace, final_epochs: int,
                spec: TrainSpec) -> OptunaMirror:
    """:func:`attach_mirror` for a search driven by ``runner`` without a SearchRun (an experiment's peer arm)."""
    from ..adapters.optuna_mirror import FILE, OptunaMirror

    mirror = OptunaMirror(Path(run_dir) / FILE, space, final_epochs, Path(run_dir).resolve().name, spec=spec,
                          on_failure=_mirror_failed)
    runner.observers.append(mirror)
    return mirror


# -- the command ----------------------------------------------------------------------------------

class _UsageError(Exception):
    """One line on stderr, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    p = v.OneLineParser(prog="evovae dashboard",
                        description="Serve optuna-dashboard on a search's evaluations (RUN_DIR/optuna-journal.log); "
                                    "it follows a running search. Stop it with Ctrl-C.")
    p.add_argument("run_dir", metavar="RUN_DIR", type=v.existing_dir, help="the run directory of a search")
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to listen on (default 127.0.0.1: this machine only; another needs "
                        "--allow-remote)")
    p.add_argument("--port", type=v.whole(1, 65535), default=8080, help="the port to listen on (default 8080)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a --host that other machines reach: the dashboard has no login, so anyone who "
                        "reaches the port sees the search (and may write notes into the mirror)")
    return p


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_run_dir(run_dir: Path) -> None:
    from ..head.journal import RunJournal

    if (run_dir / RunJournal.FILE).is_file():
        return
    searches = sorted(p.name for p in (run_dir / "searches").glob("*") if (p / RunJournal.FILE).is_file())
    if searches:
        shown = ", ".join(searches[:6]) + (", ..." if len(searches) > 6 else "")
        raise _UsageError(f"{run_dir} is an experiment's directory: give one of its searches, "
                          f"{run_dir / 'searches' / searches[0]} (its searches: {shown})")
    raise _UsageError(f"{run_dir} is not the run directory of a search (it has no {RunJournal.FILE})")


def _write_mirror(run_dir: Path, mirror_file: Path) -> None:
    """The mirror of a stopped search that has none, written from its journal (as a resume replays it)."""
    from ..adapters import register_all
    from ..head.journal import JournalError
    from ..head.search_run import RunDirLocked, SearchRun

    register_all()
    try:
        run = SearchRun.open(run_dir)
    except RunDirLocked:
        raise _UsageError(f"{run_dir} has no dashboard mirror yet ({mirror_file.name}): the search writes it from "
                          "its first result on (unless it runs with --no-dashboard-mirror); try again in a "
                          "moment") from None
    except JournalError as exc:
        raise _UsageError(f"{run_dir} has no dashboard mirror ({mirror_file.name}), and it cannot be written from "
                          f"the journal: {exc}") from None
    with run:
        mirror = attach_mirror(run)
        try:
            run.replay()
        except JournalError as exc:
            raise _UsageError(f"{run_dir} has no dashboard mirror ({mirror_file.name}), and the journal does not "
                              f"replay: {exc}") from None
    if mirror.failed:
        raise _UsageError(f"cannot write the dashboard mirror {mirror_file}: {mirror.failed}")
    if not mirror_file.is_file():
        raise _UsageError(f"{run_dir} has no dashboard mirror yet: nothing was evaluated in it")
    print(f"evovae dashboard: wrote {mirror_file} from the journal ({mirror.written} trials)", file=sys.stderr,
          flush=True)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # no line per request


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per request: the dashboard's page asks for several things at once."""

    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def main(argv: Sequence[str] | None = None) -> int:
    """``evovae dashboard RUN_DIR [--host H] [--port P] [--allow-remote]``."""
    args = v.parse_args(_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        return _serve(args)
    except _UsageError as exc:
        print(f"evovae dashboard: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def _serve(args: argparse.Namespace) -> int:
    if not _loopback(args.host) and not args.allow_remote:
        raise _UsageError(f"--host {args.host} is reachable from other machines and the dashboard has no login; "
                          "add --allow-remote to serve it there anyway (or use an SSH tunnel to 127.0.0.1)")
    run_dir = Path(args.run_dir).expanduser()
    _check_run_dir(run_dir)
    try:
        import optuna_dashboard  # type: ignore[import-untyped]
    except ImportError:
        raise _UsageError(f"optuna-dashboard is not installed; install it with: {INSTALL}") from None
    import optuna

    from ..adapters.optuna_mirror import FILE, open_storage

    # optuna's notes on what it computes for the page (e.g. an importance from few trials) are not for this terminal
    warnings.simplefilter("ignore", UserWarning)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    mirror_file = run_dir / FILE
    if not mirror_file.is_file():
        _write_mirror(run_dir, mirror_file)
    app = optuna_dashboard.wsgi(open_storage(mirror_file))
    try:
        server = make_server(args.host.strip("[]"), args.port, app,
                             server_class=_Server6 if ":" in args.host else _Server, handler_class=_QuietHandler)
    except OSError as exc:
        raise _UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"optuna-dashboard of {run_dir}: http://{shown}:{server.server_port}/dashboard/studies/0 "
          "(Ctrl-C to stop)", flush=True)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt

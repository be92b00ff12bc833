"""``evovae logs summarize`` on log lines written the way every evovae process writes them.

The lines come from structlog configured by evo.cmdline.log_setup.configure (JSON, ISO UTC timestamps,
``role`` bound), with the events and fields the head and the workers log, the counters from the real
``BrokerStats``: a head killed with kill -9 (``broker.counters`` but no ``broker.closed``), a resumed
head, a sender of garbage frames, a forged result, refused handshakes. Fast: no processes, no sockets.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import structlog

from evo.cmdline.log_setup import configure
from evo.logs import read_logs, summarize
from evo.logs.accounting import HEAD_HANDLERS
from evo.logs.command import main as logs_main
from evo.logs.workers import OWN_LINE_HANDLERS
from transport import BrokerStats

REPO = Path(__file__).resolve().parents[1]
GARBAGE = "00b8c4a1f2"  # a ventilator routing id (hex), as the broker logs the sender of a bad frame
WORKER_IDENTITY = "006b8b4567"


class Writer:
    """A process's log: structlog set up as every evovae process sets it up, into a file."""

    def __init__(self, path, role: str) -> None:
        self.path = path
        self.stream = io.StringIO()
        configure("json", "debug", stream=self.stream, role=role)
        self.log = structlog.get_logger("test")

    def __getattr__(self, level: str):
        return getattr(self.log, level)

    def as_worker(self, worker_id: str):
        return self.log.bind(role="worker", worker_id=worker_id)

    def save(self) -> str:
        self.path.write_text(self.stream.getvalue())
        return str(self.path)


@pytest.fixture
def head(tmp_path):
    writer = Writer(tmp_path / "head.log", role="search")
    yield writer
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def stats(**counts: int) -> dict:
    return BrokerStats(**counts).as_dict()


def one_task(head: Writer, worker_id: str, task_id: str, genotype: str = "850|20|1000") -> None:
    """What the head and the worker log for one task that goes well."""
    worker = head.as_worker(worker_id)
    head.info("task.dispatched", task_id=task_id, attempt=1, worker_id=worker_id, genotype=genotype, lease_s=3600.0)
    worker.info("task.received", task_id=task_id, attempt=1, genotype=genotype)
    worker.info("result.sent", task_id=task_id, attempt=1, ok=True)
    worker.info("task.finished", task_id=task_id, attempt=1, genotype=genotype, ok=True, loss=122.5, seconds=0.05)
    head.info("result.accepted", task_id=task_id, attempt=1, worker_id=worker_id, ok=True, error="",
              current_attempt=1, total_s=0.06)
    head.info("task.completed", task_id=task_id, genotype=genotype, attempt=1, worker_id=worker_id, ok=True,
              loss=122.5, error="")


def start(head: Writer, *worker_ids: str) -> None:
    head.info("broker.started", ventilator="tcp://127.0.0.1:5557", sink="tcp://127.0.0.1:5558", heartbeat_s=1.0,
              liveness=3, lease_s=3600.0, max_attempts=3, max_message_bytes=1 << 20)
    for wid in worker_ids:
        head.as_worker(wid).info("channel.connected", ventilator="tcp://127.0.0.1:5557",
                                 sink="tcp://127.0.0.1:5558", heartbeat_s=1.0, curve=False, public_key=None)
        head.info("worker.seen", worker_id=wid, identity=WORKER_IDENTITY if wid == "w0" else "00" + wid.encode().hex(),
                  returning=False)


def summary(path: str) -> dict:
    return summarize(read_logs([path]))


def text(path: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    assert logs_main(["summarize", path], stdout=out, stderr=err) == 0, err.getvalue()
    return out.getvalue()


# ------------------------------------------------------------------ the broker's own counters

def test_a_head_killed_with_kill_9_reports_its_last_broker_counters(head):
    start(head, "w0")
    head.info("broker.counters", **stats(submitted=4, dispatched=1), workers_alive=1, pending=4)
    one_task(head, "w0", "a" * 24)
    last = stats(submitted=4, dispatched=2, completed=1, heartbeats=7)
    head.info("broker.counters", **last, workers_alive=1, pending=3)
    head.info("task.dispatched", task_id="b" * 24, attempt=1, worker_id="w0", genotype="50|10|50", lease_s=3600.0)
    path = head.save()  # and then kill -9: no broker.closed line

    s = summary(path)
    h = s["head"]
    assert h["broker_stats"] == {**last, "workers_alive": 1, "pending": 3}
    assert h["broker_stats_from"] == "broker.counters"
    assert h["broker_stats_at"] is not None
    assert [run["closed"] for run in s["broker_runs"]] == [False]
    shown = text(path)
    assert "from its last broker.counters line" in shown and "no broker.closed" in shown
    assert "workers_alive=1" in shown and "heartbeats=7" in shown


def test_broker_closed_wins_over_the_counters_before_it(head):
    start(head, "w0")
    head.info("broker.counters", **stats(submitted=1), workers_alive=1, pending=1)
    one_task(head, "w0", "a" * 24)
    closed = stats(submitted=1, dispatched=1, completed=1, workers_seen=1)
    head.info("broker.closed", pending=0, **closed)
    s = summary(head.save())
    assert s["head"]["broker_stats"] == {"pending": 0, **closed}
    assert s["head"]["broker_stats_from"] == "broker.closed"
    assert "(last run, from broker.closed at" in text(head.path.as_posix())


def test_a_resumed_head_reports_its_own_run_not_the_one_before(head):
    start(head, "w0")
    head.info("broker.closed", pending=2, **stats(submitted=4, dispatched=2, completed=2))
    start(head, "w0")  # the resumed head: a fresh broker, counting from 0
    second = stats(submitted=2, dispatched=1)
    head.info("broker.counters", **second, workers_alive=1, pending=2)
    s = summary(head.save())
    assert s["head"]["runs"] == 2
    assert s["head"]["broker_stats"] == {**second, "workers_alive": 1, "pending": 2}
    assert [(r["stats_from"], r["closed"]) for r in s["broker_runs"]] == [("broker.closed", True),
                                                                         ("broker.counters", False)]


def test_a_head_killed_before_its_first_counters_says_it_has_none(head):
    start(head, "w0")
    head.info("broker.closed", pending=0, **stats(submitted=1, dispatched=1, completed=1))
    start(head, "w0")  # killed before its first broker.counters line
    path = head.save()
    s = summary(path)
    assert s["head"]["broker_stats"] is None and s["head"]["broker_stats_from"] is None
    assert s["broker_runs"][0]["stats"] is not None and s["broker_runs"][1]["stats"] is None
    assert "broker's own counters: none (no broker.closed or broker.counters line in its run)" in text(path)


# ------------------------------------------------------------------ who is a worker

def test_a_sender_of_garbage_only_is_not_a_worker(head):
    start(head, "w0")
    one_task(head, "w0", "a" * 24)
    for _ in range(5):
        head.warning("frame.rejected", socket="ventilator", sender=GARBAGE, reason="not msgpack: ExtraData")
    head.warning("frame.rejected", socket="ventilator", sender=GARBAGE, reason="unknown message type 'x'")
    head.warning("frame.rejected.suppressed", socket="ventilator", sender=GARBAGE, count=120)
    head.warning("frame.rejected", socket="sink", sender="127.0.0.1", reason="expected 1 frame, got 2")
    head.warning("frame.rejected.suppressed", socket="sink", sender="127.0.0.1", count=30)
    head.warning("frame.rejected.suppressed", socket="ventilator", sender=GARBAGE, count=200)  # a later window
    path = head.save()

    s = summary(path)
    assert [w["worker_id"] for w in s["workers"]] == ["w0"]
    assert s["head"]["bad_frames"] == 6 + 120 + 1 + 30 + 200
    assert s["bad_frames"] == [
        {"socket": "ventilator", "sender": GARBAGE, "worker_id": None, "logged": 6, "suppressed": 320, "total": 326},
        {"socket": "sink", "sender": "127.0.0.1", "worker_id": None, "logged": 1, "suppressed": 30, "total": 31},
    ]
    garbage, sink_peer = s["rejected_senders"]
    assert (garbage["sender"], garbage["kind"], garbage["sockets"]) == (GARBAGE, "peer", ["ventilator"])
    assert (garbage["bad_frames"], garbage["suppressed"], garbage["refused"]) == (326, 320, 0)
    assert garbage["reasons"] == {"not msgpack: ExtraData": 5, "unknown message type 'x'": 1}
    assert (sink_peer["sender"], sink_peer["bad_frames"]) == ("127.0.0.1", 31)
    shown = text(path)
    assert "rejected senders (2; no handshake and no valid message: not counted as workers)" in shown
    assert "workers (1;" in shown and GARBAGE in shown


def test_a_worker_id_only_in_unknown_results_is_a_rejected_sender(head):
    start(head, "w0")
    one_task(head, "w0", "a" * 24)
    for n in range(3):  # a forged result for a task this broker never had, under a made-up id
        head.warning("result.unknown", task_id=f"{n:024x}", attempt=1, worker_id="forged-7")
    s = summary(head.save())
    assert [w["worker_id"] for w in s["workers"]] == ["w0"]
    assert s["head"]["unknown_results"] == 3
    (forged,) = s["rejected_senders"]
    assert (forged["sender"], forged["kind"], forged["other"]) == ("forged-7", "worker_id", {"result.unknown": 3})


def test_bad_frames_from_a_workers_routing_id_stay_with_that_worker(head):
    start(head, "w0")
    head.warning("frame.rejected", socket="ventilator", sender=WORKER_IDENTITY, reason="expected 2 frames")
    one_task(head, "w0", "a" * 24)
    s = summary(head.save())
    assert s["rejected_senders"] == []
    (w0,) = s["workers"]
    assert w0["bad_frames"] == 1
    assert s["bad_frames"][0]["worker_id"] == "w0"


def test_a_worker_that_answers_after_a_head_restart_is_a_worker(head):
    start(head)
    head.warning("result.unknown", task_id="c" * 24, attempt=1, worker_id="w9")  # from before the restart
    head.info("worker.seen", worker_id="w9", identity="0011223344", returning=False)  # then it asks for work
    s = summary(head.save())
    assert [w["worker_id"] for w in s["workers"]] == ["w9"] and s["rejected_senders"] == []


def test_refused_handshakes_are_counted_per_peer_address(head):
    start(head)
    key = "rq:A+V0ARm3Gh#cTIUKc2kjBe^n&K[-1o6(zbN=j"
    for _ in range(2):
        head.warning("auth.key_refused", client_key=key, address="10.0.0.9", reason="key not in the allow-list",
                     refused=1)
    head.warning("auth.key_refused.suppressed", count=17, address="10.0.0.9")
    head.warning("auth.refused", socket="sink", reason="plaintext peer", failures=3, address="10.0.0.8")
    head.warning("auth.refused.suppressed", count=4)  # a line with no address: counted in the head's total only
    s = summary(head.save())
    assert s["head"]["auth_refused"] == 2 + 17 + 1 + 4
    assert s["workers"] == []
    by_sender = {r["sender"]: r for r in s["rejected_senders"]}
    assert by_sender["10.0.0.9"]["refused"] == 19 and by_sender["10.0.0.9"]["keys"] == [key]
    assert by_sender["10.0.0.8"]["refused"] == 1 and by_sender["10.0.0.8"]["sockets"] == ["sink"]


def test_a_forged_result_under_another_workers_id_is_the_senders_not_the_victims(head):
    start(head, "w0")
    one_task(head, "w0", "a" * 24)
    thief = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
    for _ in range(2):  # an allowed key sends a result for w0's task under w0's id
        head.warning("security.identity_mismatch", key=thief, worker_id="w0", address="127.0.0.1", mismatches=1,
                     task_id="a" * 24, attempt=1, message="result", reason="not the key the task was handed to")
    head.warning("security.identity_mismatch.suppressed", key=thief, count=9)
    head.warning("connection.refused", socket="ventilator", address="10.0.0.7:40100", connections=65, cap=64,
                 reason="too many connections from this address")
    head.warning("connection.refused.suppressed", address="10.0.0.7:40100", count=300)
    s = summary(head.save())
    (w0,) = s["workers"]
    assert (w0["dispatched"], w0["results"], w0["accepted"]) == (1, 1, 1)  # untouched by the forgeries
    assert (s["head"]["identity_mismatches"], s["head"]["connections_refused"]) == (11, 301)
    by_sender = {r["sender"]: r for r in s["rejected_senders"]}
    assert (by_sender[thief]["kind"], by_sender[thief]["dropped"], by_sender[thief]["addresses"]) == (
        "key", 11, ["127.0.0.1"])
    assert by_sender["10.0.0.7"]["refused"] == 301  # grouped by host


def test_a_flood_of_connections_from_one_host_is_one_rejected_sender(head):
    start(head, "w0")
    for port in range(40100, 40110):  # the monitor names each connection ip:port
        head.warning("auth.refused", socket="ventilator", address=f"10.0.0.5:{port}", reason="plaintext peer",
                     failures=port - 40099)
    head.warning("auth.refused.suppressed", address="10.0.0.5", count=500)  # held back per host
    head.warning("auth.refused", socket="sink", address="[fd00::7]:5100", reason="plaintext peer", failures=511)
    head.warning("auth.refused", socket="sink", address="?", reason="plaintext peer", failures=512)
    head.error("broker.fd_exhausted", socket="ventilator", error="EMFILE", soft_limit=1024, hard_limit=4096,
               connections=1020, busiest=["10.0.0.5=1010"], reason="out of file descriptors")
    head.warning("broker.fd_exhausted.suppressed", address="", count=12)
    s = summary(head.save())
    assert (s["head"]["auth_refused"], s["head"]["fd_exhausted"]) == (10 + 500 + 2, 13)
    by_sender = {r["sender"]: r for r in s["rejected_senders"]}
    assert set(by_sender) == {"10.0.0.5", "fd00::7"}  # "?": the broker did not know the address
    assert by_sender["10.0.0.5"]["refused"] == 510 and by_sender["10.0.0.5"]["sockets"] == ["ventilator"]
    assert "out of descriptors      13" in text(str(head.path))


def test_suppressed_lines_without_socket_or_sender_still_add_up(head):
    """The form logged before suppressed frames were summarised per sender: count only."""
    start(head, "w0")
    head.warning("frame.rejected.suppressed", count=40, bad_frames=60)
    s = summary(head.save())
    assert s["head"]["bad_frames"] == 40
    assert s["bad_frames"] == [{"socket": None, "sender": None, "worker_id": None, "logged": 0, "suppressed": 40,
                                "total": 40}]


# ------------------------------------------------------------------ the tables and the documentation

def test_every_event_the_tools_read_is_documented():
    doc = (REPO / "docs" / "logging.md").read_text()
    handled = set(HEAD_HANDLERS) | set(OWN_LINE_HANDLERS)
    missing = sorted(event for event in handled if f"`{event}`" not in doc)
    assert not missing, f"docs/logging.md does not describe {missing}"


@pytest.mark.parametrize("args, message", [
    (["summarize", "--bucket", "0", "-"], "argument --bucket: must be a number of seconds > 0, got '0'"),
    (["summarize", "--bucket", "nan", "-"], "argument --bucket: must be a number of seconds > 0, got 'nan'"),
    ([], "the following arguments are required: ACTION"),
    (["summarize"], "the following arguments are required: RUN_DIR|FILE"),
    (["frobnicate", "x"], "argument ACTION: invalid choice: 'frobnicate'"),
])
def test_bad_usage_is_one_line_and_exit_2(capsys, args, message):
    with pytest.raises(SystemExit) as stopped:
        logs_main(args)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_standard_input_twice_is_refused():
    err = io.StringIO()
    assert logs_main(["summarize", "-", "-"], stdout=io.StringIO(), stderr=err, stdin=io.StringIO("")) == 2
    assert err.getvalue() == "evovae logs: error: '-' (standard input) may be given once\n"


def test_json_output_is_the_library_summary(head):
    start(head, "w0")
    one_task(head, "w0", "a" * 24)
    path = head.save()
    out = io.StringIO()
    assert logs_main(["summarize", "--json", path], stdout=out, stderr=io.StringIO()) == 0
    assert json.loads(out.getvalue()) == json.loads(json.dumps(summary(path)))


def test_forged_results_are_counted_whether_their_task_was_in_flight_or_completed(head):
    start(head, "w0")
    one_task(head, "w0", "a" * 24)
    thief = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
    for state in ("running", "completed"):
        head.warning("security.identity_mismatch", key=thief, worker_id="w0", address="10.0.0.66", mismatches=1,
                     task_id="a" * 24, message="result", task_state=state, reason="task handed to another key")
    head.warning("security.identity_mismatch", key=thief, worker_id="w0", address="10.0.0.66", mismatches=3,
                 task_id="a" * 24, message="heartbeat", task_state="running", reason="task handed to another key")
    head.warning("security.identity_mismatch.suppressed", key=thief, message="result", count=7)
    head.warning("security.identity_mismatch.suppressed", key=thief, message="ready", count=2)
    head.warning("security.identity_mismatch.suppressed", key=thief, count=4)  # the older form: no message
    head.warning("ready.stale", worker_id="w0", identity="0080000001", current="0080000002", stale_readies=1,
                 reason="a ready on a connection this worker has replaced: ignored")
    head.warning("ready.stale.suppressed", worker_id="w0", count=5)
    s = summary(head.save())
    h = s["head"]
    assert (h["forged_results"], h["identity_mismatches"], h["duplicates"], h["stale_readies"]) == (9, 16, 0, 6)
    (w0,) = s["workers"]
    assert (w0["results"], w0["accepted"]) == (1, 1)  # the forgeries are not w0's
    by_sender = {r["sender"]: r for r in s["rejected_senders"]}
    assert by_sender[thief]["dropped"] == 16 and by_sender[thief]["addresses"] == ["10.0.0.66"]
    shown = text(head.path.as_posix())
    assert "forged results (CURVE)  9" in shown and "stale readies           6" in shown

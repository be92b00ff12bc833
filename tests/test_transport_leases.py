"""The broker's bookkeeping (transport.leases) on its own: no sockets, a fake clock value."""

from __future__ import annotations

import math

import pytest
import structlog

from transport.leases import Dispatch, Done, Failed, Leases
from transport.outcomes import Sender
from transport.protocol import Heartbeat, ProtocolError, Result

HB = 1.0  # heartbeat_s; liveness 3 -> silent for 3 s is lost; grace = HB
SPEC = {"epochs": 2, "seed": 0}
G = "850|20|1000"


def make(**kwargs) -> Leases:
    kwargs.setdefault("heartbeat_s", HB)
    return Leases(**kwargs)


def ident(worker_id: str) -> bytes:
    return b"id-" + worker_id.encode()


def hand_out(leases: Leases, now: float) -> list[Dispatch]:
    """Make every hand-out the state machine offers, as if every send succeeded."""
    made = []
    while (d := leases.next_dispatch()) is not None:
        leases.dispatched(d, now)
        made.append(d)
    return made


def result(d: Dispatch, ok: bool = True, worker_id: str | None = None, attempt: int | None = None) -> Result:
    return Result(worker_id or d.worker_id, d.task_id, d.attempt if attempt is None else attempt, ok,
                  {"loss": 100.0} if ok else {}, "" if ok else "CUDA out of memory")


# ------------------------------------------------------------------ settings and submit


@pytest.mark.parametrize("kwargs", [{"heartbeat_s": 0}, {"heartbeat_s": math.nan}, {"liveness": True},
                                    {"liveness": 0}, {"lease_s": -1}, {"max_attempts": 0}, {"max_attempts": 1001}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        make(**kwargs)


def test_submit_validates_and_ignores_what_is_pending():
    leases = make()
    with pytest.raises(ProtocolError, match="task_id"):
        leases.submit("no spaces", G, SPEC, 0.0)
    leases.submit("t1", G, SPEC, 0.0)
    leases.submit("t1", G, SPEC, 0.0)
    assert (leases.pending, leases.queued, leases.stats.submitted) == (1, 1, 1)


# ------------------------------------------------------------------ credit


def test_a_task_goes_only_to_a_worker_that_asked_and_one_each():
    leases = make()
    for i in range(3):
        leases.submit(f"t{i}", G, SPEC, 0.0)
    assert leases.next_dispatch() is None  # no credit yet
    leases.ready("wA", 1, ident("wA"), 0.0)
    leases.ready("wB", 1, ident("wB"), 0.1)
    made = hand_out(leases, 0.2)
    assert [(d.task_id, d.worker_id, d.attempt, d.identity) for d in made] == [
        ("t0", "wA", 1, b"id-wA"), ("t1", "wB", 1, b"id-wB")]  # idle longest first
    leases.ready("wA", 1, ident("wA"), 0.5)  # within the grace period: crossed the task on the wire
    assert hand_out(leases, 0.5) == [] and leases.queued == 1
    assert {w: s["state"] for w, s in leases.workers(0.5).items()} == {"wA": "busy", "wB": "busy"}
    assert made[0].wire() == {"task_id": "t0", "attempt": 1, "genotype": G, "spec": SPEC, "lease_s": 3600.0}


def test_a_result_frees_the_worker_for_its_next_ready():
    leases = make()
    leases.submit("t0", G, SPEC, 0.0)
    leases.submit("t1", G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0)
    (d,) = hand_out(leases, 0.0)
    done = leases.result(result(d), 5.0)
    assert done == Done("t0", result(d)) and leases.workers(5.0)["wA"]["state"] == "unknown"
    assert hand_out(leases, 5.0) == []  # a result is not a Ready
    leases.ready("wA", 1, ident("wA"), 5.1)
    assert [d.task_id for d in hand_out(leases, 5.1)] == ["t1"]


def test_an_undeliverable_task_stays_first_with_the_same_attempt():
    leases = make()
    leases.submit("t0", G, SPEC, 0.0)
    leases.ready("gone", 1, ident("gone"), 0.0)
    leases.ready("wB", 1, ident("wB"), 0.0)
    d = leases.next_dispatch()
    assert d.worker_id == "gone"
    leases.undeliverable(d, "task send failed: Host unreachable")
    assert "gone" not in leases.workers(0.0) and leases.stats.workers_lost == 1
    (again,) = hand_out(leases, 0.0)
    assert (again.task_id, again.attempt, again.worker_id) == ("t0", 1, "wB")
    assert leases.stats.dispatched == 1 and leases.stats.resends == 0


# ------------------------------------------------------------------ liveness, leases, give-ups


def test_a_silent_worker_loses_its_attempt_which_goes_first_to_another():
    leases = make()
    leases.submit("t0", G, SPEC, 0.0)
    leases.submit("t1", G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0)
    (_d,) = hand_out(leases, 0.0)
    leases.heartbeat(Heartbeat("wA", "t0", 1, 0.3), 2.0)
    assert leases.workers(2.0)["wA"]["progress"] == 0.3
    assert leases.next_deadline() == 5.0  # silence limit counted from the last heartbeat
    assert leases.expire(4.99) == []
    assert leases.expire(5.0) == []  # resent, not failed
    assert "wA" not in leases.workers(5.0) and leases.stats.resends == 1 and leases.stats.workers_lost == 1
    leases.ready("wB", 1, ident("wB"), 5.0)
    (again,) = hand_out(leases, 5.0)
    assert (again.task_id, again.attempt) == ("t0", 2)  # ahead of t1


def test_the_lease_runs_out_even_for_a_worker_that_heartbeats():
    leases = make(lease_s=10.0, max_attempts=1)
    leases.submit("slow", G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0)
    hand_out(leases, 0.0)
    for t in range(1, 10):
        leases.heartbeat(Heartbeat("wA", "slow", 1, t / 10), float(t))
        assert leases.expire(float(t)) == []
    (failed,) = leases.expire(10.0)
    assert failed.attempts == 1 and "lease of 10 s ran out" in failed.reason
    assert "wA" in leases.workers(10.0)  # alive, only slow


def test_a_per_task_lease_overrides_the_default():
    leases = make()
    leases.submit("final", G, SPEC, 0.0, lease_s=7200)
    leases.ready("wA", 1, ident("wA"), 0.0)
    (d,) = hand_out(leases, 0.0)
    assert d.lease_s == 7200.0


def test_max_attempts_then_failed_naming_each_lost_attempt():
    leases = make(max_attempts=2)
    leases.submit("t0", G, SPEC, 0.0)
    leases.ready("w0", 1, ident("w0"), 0.0)
    hand_out(leases, 0.0)
    assert leases.expire(3.0) == []
    leases.ready("w1", 1, ident("w1"), 3.0)
    (second,) = hand_out(leases, 3.0)
    assert second.attempt == 2
    (failed,) = leases.expire(6.0)
    assert isinstance(failed, Failed) and (failed.task_id, failed.attempts) == ("t0", 2)
    assert "attempt 1 on w0: no heartbeat for 3.00 s" in failed.reason
    assert "attempt 2 on w1: no heartbeat for 3.00 s" in failed.reason
    assert leases.stats.failures == 1 and leases.stats.resends == 1 and leases.pending == 0
    assert leases.result(result(second), 7.0) is None and leases.stats.late_results == 1
    leases.submit("t0", G, SPEC, 8.0)  # a failed id may be submitted again: fresh attempts
    leases.ready("w2", 1, ident("w2"), 8.0)
    assert [d.attempt for d in hand_out(leases, 8.0)] == [1]


def test_an_idle_worker_that_goes_quiet_is_dropped_and_comes_back():
    leases = make()
    leases.ready("wA", 1, ident("wA"), 0.0)
    assert leases.next_deadline() == 3.0
    leases.expire(2.9)
    assert "wA" in leases.workers(2.9)
    leases.expire(3.0)
    assert leases.workers(3.0) == {} and leases.stats.workers_lost == 1
    leases.submit("t0", G, SPEC, 3.0)
    assert leases.next_dispatch() is None
    leases.ready("wA", 1, ident("wA2"), 4.0)  # a reconnected DEALER: a new routing id
    assert leases.stats.workers_seen == 1
    (d,) = hand_out(leases, 4.0)
    assert d.identity == b"id-wA2"


# ------------------------------------------------------------------ a Ready from a busy worker


def test_a_ready_after_the_grace_period_orphans_the_attempt():
    leases = make()
    leases.submit("t0", G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0)
    hand_out(leases, 0.0)
    leases.ready("wA", 1, ident("wA"), 1.5)  # it forgot the task (restarted with the same id)
    assert leases.workers(1.5)["wA"]["state"] == "idle" and leases.next_deadline() == 2.5
    assert leases.expire(2.4) == [] and leases.stats.resends == 0
    assert leases.expire(2.5) == [] and leases.stats.resends == 1
    (again,) = hand_out(leases, 2.5)
    assert (again.task_id, again.attempt, again.worker_id) == ("t0", 2, "wA")


def test_a_result_just_behind_the_ready_completes_the_orphan():
    leases = make()
    leases.submit("t0", G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0)
    (d,) = hand_out(leases, 0.0)
    leases.ready("wA", 1, ident("wA"), 1.5)  # the Ready overtook the Result (different sockets)
    assert leases.result(result(d), 1.8) == Done("t0", result(d))
    assert leases.expire(5.0) == [] and leases.stats.resends == 0 and leases.pending == 0


# ------------------------------------------------------------------ exactly-once


def test_the_first_result_wins_and_every_later_one_is_counted():
    leases = make()
    leases.submit("t0", G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0)
    (d,) = hand_out(leases, 0.0)
    first = result(d)
    assert leases.result(first, 1.0) == Done("t0", first)
    assert leases.result(first, 1.1) is None
    assert leases.result(result(d, worker_id="wZ", attempt=2), 1.2) is None
    assert leases.result(Result("wA", "never-submitted", 1, True, {}), 1.3) is None
    s = leases.stats
    assert (s.completed, s.duplicates, s.unknown_results, s.late_results) == (1, 2, 1, 0)


def test_a_result_from_a_lost_attempt_completes_the_requeued_task():
    leases = make()
    leases.submit("t0", G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0)
    (d,) = hand_out(leases, 0.0)
    leases.expire(3.0)
    assert leases.queued == 1 and leases.stats.resends == 1
    assert leases.result(result(d), 3.5) == Done("t0", result(d))  # attempt 1 came back after all
    assert leases.queued == 0 and leases.pending == 0


def test_ok_false_is_final():
    leases = make()
    leases.submit("oom", G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0)
    (d,) = hand_out(leases, 0.0)
    done = leases.result(result(d, ok=False), 1.0)
    assert done.result.ok is False and leases.stats.task_errors == 1
    assert leases.expire(100.0) == [] and leases.stats.resends == 0


def test_a_completed_task_submitted_again_runs_again():
    leases = make()
    leases.submit("t0", G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0)
    (d,) = hand_out(leases, 0.0)
    leases.result(result(d), 1.0)
    leases.submit("t0", G, SPEC, 2.0)
    leases.ready("wA", 1, ident("wA"), 2.0)
    (again,) = hand_out(leases, 2.0)
    assert again.attempt == 1 and leases.result(result(again), 3.0) == Done("t0", result(again))
    assert leases.stats.completed == 2


def test_heartbeats_count_only_for_the_running_attempt_on_its_worker():
    leases = make()
    leases.submit("t0", G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0)
    hand_out(leases, 0.0)
    for beat in (Heartbeat("wA", "ghost", 1, 0.5), Heartbeat("wA", "t0", 2, 0.5), Heartbeat("wB", "t0", 1, 0.5)):
        leases.heartbeat(beat, 1.0)
    leases.heartbeat(Heartbeat("wA", "t0", 1, 0.5), 1.0)
    assert (leases.stats.stale_heartbeats, leases.stats.heartbeats) == (3, 1)
    assert leases.workers(1.0) == {"wA": {"state": "busy", "task_id": "t0", "attempt": 1, "progress": 0.5,
                                          "seen_s_ago": 0.0}}


# ------------------------------------------------------------------ identity (CURVE keys)

K1, K2, K3 = (Sender(key=k, address=f"10.0.0.{i}") for i, k in enumerate(("K1" * 20, "K2" * 20, "K3" * 20), 1))


def curve_leases(**kwargs) -> Leases:
    return make(bind_keys=True, **kwargs)


def test_with_keys_only_a_key_handed_the_task_may_complete_it():
    leases = curve_leases()
    leases.submit("t0", G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0, K1)
    leases.ready("wB", 1, ident("wB"), 0.0, K2)
    (d, _) = [*hand_out(leases, 0.0), None]
    forged = Result("wA", "t0", 1, True, {"loss": 0.001}, "")  # wB's key claims wA's task
    assert leases.result(forged, 0.5, K2) is None
    leases.heartbeat(Heartbeat("wA", "t0", 1, 0.9), 0.5, K2)  # nor keep it alive
    assert leases.stats.identity_mismatches == 2 and leases.pending == 1 and leases.stats.heartbeats == 0
    assert leases.workers(0.5)["wA"]["progress"] == 0.0
    genuine = result(d)
    assert leases.result(genuine, 1.0, K1) == Done("t0", genuine, peer_key=K1.key)


def test_with_keys_any_holder_of_an_attempt_may_complete_it():
    leases = curve_leases()
    leases.submit("t0", G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0, K1)
    (first,) = hand_out(leases, 0.0)
    leases.expire(3.0)  # attempt 1 lost
    leases.ready("wB", 1, ident("wB"), 3.0, K2)
    (_second,) = hand_out(leases, 3.0)
    leases.heartbeat(Heartbeat("wB", "t0", 1, 0.5), 3.5, K1)  # an old holder's heartbeat: stale, not forged
    assert leases.stats.stale_heartbeats == 1 and leases.stats.identity_mismatches == 0
    done = leases.result(result(first), 4.0, K1)  # the first attempt came back after all
    assert done.peer_key == K1.key and leases.stats.identity_mismatches == 0


def test_with_keys_a_task_not_handed_out_yet_takes_no_result():
    leases = curve_leases()
    leases.submit("t0", G, SPEC, 0.0)
    assert leases.result(Result("wZ", "t0", 1, True, {"loss": 1.0}), 1.0, K3) is None
    assert leases.stats.identity_mismatches == 1 and leases.pending == 1


def test_with_keys_a_worker_id_belongs_to_its_first_key():
    leases = curve_leases()
    leases.submit("t0", G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0, K1)
    leases.ready("wA", 1, ident("thief"), 0.5, K2)  # takes no credit and no routing id
    (d,) = hand_out(leases, 0.5)
    assert d.identity == b"id-wA" and leases.stats.identity_mismatches == 1
    leases.heartbeat(Heartbeat("wA", "t0", 1, 0.5), 2.9, K2)  # does not keep wA alive either
    assert leases.expire(3.5) == [] and leases.stats.resends == 1 and "wA" not in leases.workers(3.5)
    leases.ready("wA", 1, ident("wA2"), 3.5, K2)  # once wA is gone its id is free
    assert leases.workers(3.5)["wA"]["state"] == "idle"


def test_in_plain_mode_any_result_completes_a_pending_task():
    leases = make()
    leases.submit("t0", G, SPEC, 0.0)
    res = Result("someone", "t0", 1, True, {"loss": 1.0})  # e.g. queued for a head that restarted
    assert leases.result(res, 1.0) == Done("t0", res, peer_key=None)


def test_revoking_a_key_drops_its_workers_and_resends_their_attempts():
    leases = curve_leases(max_attempts=2)
    for tid in ("t0", "t1"):
        leases.submit(tid, G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0, K1)
    leases.ready("wB", 1, ident("wB"), 0.0, K2)
    d_a, d_b = hand_out(leases, 0.0)
    assert leases.revoke(K1.key, 1.0) == []
    assert set(leases.workers(1.0)) == {"wB"} and leases.stats.resends == 1 and leases.queued == 1
    assert leases.result(result(d_a), 1.5, K1) is None  # its result is no longer taken
    leases.ready("wC", 1, ident("wC"), 2.0, K3)
    (again,) = hand_out(leases, 2.0)
    assert (again.task_id, again.attempt) == ("t0", 2)
    (failed,) = leases.revoke(K3.key, 2.5)  # the last attempt: given up, each cause named
    assert "attempt 2 on wC: the worker's key was removed from the allow-list" in failed.reason
    assert leases.result(result(d_b), 3.0, K2).task_id == "t1"


def test_the_workers_view_follows_liveness():
    leases = make()
    leases.ready("wA", 1, ident("wA"), 0.0)
    leases.ready("wB", 1, ident("wB"), 2.0)
    assert set(leases.workers(2.9)) == {"wA", "wB"}
    assert set(leases.workers(3.0)) == {"wB"}  # wA's liveness expired, whether or not expire() ran


# ------------------------------------------------------------------ forged results for finished tasks (issue 18.4)


def test_with_keys_a_result_for_a_completed_task_from_another_key_is_forged_not_a_duplicate():
    leases = curve_leases()
    leases.submit("t0", G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0, K1)
    (d,) = hand_out(leases, 0.0)
    assert leases.result(result(d), 1.0, K1) is not None
    with structlog.testing.capture_logs() as logs:
        assert leases.result(result(d), 2.0, K2) is None  # K2 was never handed t0: forged, though t0 is done
        leases.heartbeat(Heartbeat("wA", "t0", 1, 0.5), 2.0, K2)
        assert leases.result(result(d), 2.5, K1) is None  # its holder's second copy: a duplicate
    assert (leases.stats.identity_mismatches, leases.stats.duplicates, leases.stats.completed) == (2, 1, 1)
    forged, forged_beat, duplicate = logs
    assert forged["event"] == "security.identity_mismatch" and forged["log_level"] == "warning"
    assert (forged["key"], forged["address"], forged["worker_id"], forged["message"]) == (K2.key, K2.address, "wA",
                                                                                        "result")
    assert (forged["task_id"], forged["task_state"]) == ("t0", "completed") and "completed" in forged["reason"]
    assert (forged_beat["event"], forged_beat["message"]) == ("security.identity_mismatch", "heartbeat")
    assert duplicate["event"] == "result.duplicate"
    assert (duplicate["key"], duplicate["address"], duplicate["worker_id"]) == (K1.key, K1.address, "wA")


def test_with_keys_a_result_for_a_task_given_up_from_another_key_is_forged():
    leases = curve_leases(max_attempts=1)
    leases.submit("t0", G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0, K1)
    (d,) = hand_out(leases, 0.0)
    assert len(leases.expire(3.0)) == 1  # given up
    with structlog.testing.capture_logs() as logs:
        assert leases.result(result(d), 4.0, K2) is None
        assert leases.result(result(d), 4.0, K1) is None  # the holder's: late
    assert [(e["event"], e.get("task_state")) for e in logs] == [("security.identity_mismatch", "failed"),
                                                                 ("result.late", None)]
    assert (leases.stats.identity_mismatches, leases.stats.late_results) == (1, 1)


def test_a_revoked_key_is_no_holder_of_a_finished_task_either():
    leases = curve_leases()
    leases.submit("t0", G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0, K1)
    (d,) = hand_out(leases, 0.0)
    leases.result(result(d), 1.0, K1)
    leases.revoke(K1.key, 2.0)
    assert leases.result(result(d), 3.0, K1) is None and leases.stats.identity_mismatches == 1


def test_in_plain_mode_a_second_result_is_a_duplicate_whoever_sends_it():
    leases = make()
    leases.submit("t0", G, SPEC, 0.0)
    leases.ready("wA", 1, ident("wA"), 0.0)
    (d,) = hand_out(leases, 0.0)
    leases.result(result(d), 1.0, Sender(None, "10.0.0.1"))
    assert leases.result(result(d, worker_id="wB"), 2.0, Sender(None, "10.0.0.2")) is None
    assert (leases.stats.duplicates, leases.stats.identity_mismatches) == (1, 0)


# ------------------------------------------------------------------ replaced connections (issue 18.6)


def test_a_ready_on_a_replaced_connection_changes_nothing():
    leases = make()
    leases.ready("wA", 1, b"old", 0.0)
    leases.ready("wA", 1, b"new", 0.5)  # the worker reconnected: a new routing id
    leases.submit("t0", G, SPEC, 0.5)
    (d,) = hand_out(leases, 0.5)
    assert d.identity == b"new"
    leases.heartbeat(Heartbeat("wA", "t0", 1, 0.3), 2.0)
    with structlog.testing.capture_logs() as logs:
        for now in (2.5, 2.6, 2.7):  # what the old connection still delivers, long after the hand-out
            leases.ready("wA", 1, b"old", now)
    assert leases.stats.stale_readies == 3
    assert [e["event"] for e in logs] == ["ready.stale"]  # one line per worker every 10 s
    assert (logs[0]["identity"], logs[0]["current"]) == (b"old".hex(), b"new".hex())
    assert leases.expire(2.9) == [] and leases.stats.resends == 0  # not orphaned
    assert leases.workers(2.9)["wA"]["state"] == "busy"
    with structlog.testing.capture_logs() as logs:
        leases.flush_logs(20.0)
    assert [(e["event"], e["worker_id"], e["count"]) for e in logs] == [("ready.stale.suppressed", "wA", 2)]
    assert leases.result(result(d), 3.0) is not None
    leases.ready("wA", 1, b"new", 3.1)
    leases.submit("t1", G, SPEC, 3.1)
    (again,) = hand_out(leases, 3.1)
    assert again.identity == b"new"


def test_a_replaced_connection_stays_replaced_after_the_worker_was_dropped():
    leases = make()
    leases.ready("wA", 1, b"old", 0.0)
    leases.expire(5.0)  # silent: dropped (a partition)
    assert leases.workers(5.0) == {}
    leases.ready("wA", 1, b"new", 6.0)  # back on a new connection
    leases.submit("t0", G, SPEC, 6.0)
    (d,) = hand_out(leases, 6.0)
    leases.ready("wA", 1, b"old", 8.0)  # the kernel delivers the old connection's Ready at last
    assert leases.stats.stale_readies == 1 and leases.expire(8.5) == [] and leases.stats.resends == 0
    assert d.identity == b"new" and leases.workers(8.5)["wA"]["task_id"] == "t0"


def test_a_ready_on_the_current_connection_still_reports_a_lost_task():
    leases = make()
    leases.ready("wA", 1, b"c1", 0.0)
    leases.submit("t0", G, SPEC, 0.0)
    hand_out(leases, 0.0)
    leases.ready("wA", 1, b"c2", 2.0)  # it restarted (a new connection) and asks for work: it lost t0
    assert leases.expire(3.5) == [] and leases.stats.resends == 1  # orphaned, then re-sent after the grace period
    assert leases.stats.stale_readies == 0

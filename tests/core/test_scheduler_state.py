"""Pure tests of the scheduler state machine: stimuli in, messages out, no network, no loop."""
import pickle

import pytest

from jobqueue.core.errors import KilledWorker
from jobqueue.core.scheduler_state import WANTED, InvalidTransition, SchedulerState

A, B, C = "tcp://a:1", "tcp://b:1", "tcp://c:1"


@pytest.fixture
def s():
    state = SchedulerState(allowed_failures=1)
    state.add_client("c1")
    yield state
    state.validate()


def task(key, deps=(), fid="f", restrictions=None, retries=0, args=b"args"):
    return [key, key.split("-")[0], fid, args, list(deps), restrictions, retries]


def submit(s, *tasks, functions=None):
    s.update_graph("c1", list(tasks), functions if functions is not None else {"f": b"FN"})
    s.validate()
    return s.take()


def ops(msgs):
    return [(m["op"], m.get("key", m.get("keys"))) for m in msgs]


def finish(s, worker, key, nbytes=10, start=0.0, stop=0.001):
    s.task_finished(worker, key, nbytes, "int", start, stop)
    s.validate()
    return s.take()


def test_one_task_lifecycle(s):
    s.add_worker(A, "a", 1, 0)
    wout, cout = submit(s, task("inc-1"))
    assert ops(wout[A]) == [("compute", "inc-1")]
    msg = wout[A][0]
    assert msg["func"] == b"FN" and msg["args"] == b"args" and msg["want"] is True
    assert s.tasks["inc-1"].state == "processing"
    wout, cout = finish(s, A, "inc-1")
    assert ops(cout["c1"]) == [("key-in-memory", "inc-1")]
    assert s.tasks["inc-1"].state == "memory" and s.workers[A].nbytes == 10
    s.release_keys("c1", ["inc-1"])
    wout, cout = s.take()
    assert ops(wout[A]) == [("free-keys", ["inc-1"])]
    assert "inc-1" not in s.tasks
    assert [t[1:3] for t in s.story("inc-1")] == [
        ("released", "queued"), ("queued", "processing"), ("processing", "memory"),
        ("memory", "forgotten")]


def test_function_sent_once_per_worker(s):
    s.add_worker(A, "a", 2, 0)
    wout, _ = submit(s, task("x-1"), task("x-2"))
    assert [("func" in m) for m in wout[A]] == [True, False]


def test_inline_result_forwarded_not_kept(s):
    s.add_worker(A, "a", 1, 0)
    submit(s, task("x-1"))
    s.task_finished(A, "x-1", 3, "int", 0, 1, data=b"PICKLE")
    _, cout = s.take()
    assert cout["c1"][0]["data"] == b"PICKLE"
    assert not hasattr(s.tasks["x-1"], "data")


def test_root_tasks_queue_on_scheduler(s):
    s.add_worker(A, "a", 1, 0)
    wout, _ = submit(s, *[task(f"x-{i}") for i in range(20)])
    sent = len(wout[A])
    assert sent == s._capacity(s.workers[A]) == 2  # 1 thread + 1 extra before durations are known
    assert sum(t.state == "queued" for t in s.tasks.values()) == 20 - sent
    wout, _ = finish(s, A, "x-0", stop=10.0)  # a long task: no deeper pipeline
    assert ops(wout[A]) == [("compute", "x-2")]
    s.add_worker(B, "b", 1, 0)  # a late worker gets queued work at once
    wout, _ = s.take()
    assert len(wout[B]) == 2


def test_idle_threads_first_then_pipelines(s):
    """Two tasks, two idle one-thread workers: one each, not both on the first (whose pipeline
    has room for two); a third and fourth then fill the pipelines."""
    s.add_worker(A, "a", 1, 0)
    s.add_worker(B, "b", 1, 0)
    wout, _ = submit(s, task("x-0"), task("x-1"))
    assert ops(wout[A]) == [("compute", "x-0")] and ops(wout[B]) == [("compute", "x-1")]
    wout, _ = submit(s, task("x-2"), task("x-3"), task("x-4"))
    assert len(wout[A]) == len(wout[B]) == 1
    assert [t.state for t in (s.tasks["x-4"],)] == ["queued"]


def test_pipeline_deepens_for_short_tasks(s):
    s.add_worker(A, "a", 1, 0)
    submit(s, *[task(f"x-{i}") for i in range(200)])
    for i in range(2):
        finish(s, A, f"x-{i}", start=0.0, stop=0.0001)
    assert len(s.workers[A].processing) > 10


def test_locality_chooses_worker_with_most_bytes(s):
    s.add_worker(A, "a", 1, 0)
    s.add_worker(B, "b", 1, 0)
    submit(s, task("x-1", restrictions=[A]), task("y-1", restrictions=[B]))
    finish(s, A, "x-1", nbytes=1000)
    finish(s, B, "y-1", nbytes=10)
    wout, _ = submit(s, task("z-1", deps=["x-1", "y-1"]))
    assert ops(wout[A]) == [("compute", "z-1")] and B not in wout
    assert wout[A][0]["deps"] == {"x-1": [A], "y-1": [B]}


def test_dependents_wait_and_inputs_are_released(s):
    s.add_worker(A, "a", 1, 0)
    submit(s, task("x-1"), task("y-1", deps=["x-1"]))
    assert s.tasks["y-1"].state == "waiting"
    s.release_keys("c1", ["x-1"])  # the client dropped x; y still needs it
    assert s.tasks["x-1"].state == "processing"
    wout, _ = finish(s, A, "x-1")
    assert ops(wout[A]) == [("compute", "y-1")]
    wout, _ = finish(s, A, "y-1")
    assert ("free-keys", ["x-1"]) in ops(wout[A])
    assert s.tasks["x-1"].state == "released"  # kept (without data) for lineage


def test_restrictions_by_name_and_no_worker(s):
    s.add_worker(A, "a", 1, 0)
    submit(s, task("x-1", restrictions=["b"]))
    assert s.tasks["x-1"].state == "no-worker"
    s.add_worker(B, "b", 1, 0)
    wout, _ = s.take()
    assert ops(wout[B]) == [("compute", "x-1")]


def test_lost_worker_reschedules_and_recomputes_from_lineage(s):
    s.add_worker(A, "a", 1, 0)
    s.add_worker(B, "b", 1, 0)
    submit(s, task("x-1", restrictions=[A]), task("y-1", deps=["x-1"]))
    s.release_keys("c1", ["x-1"])
    finish(s, A, "x-1")
    assert s.tasks["y-1"].processing_on.address == A
    finish(s, A, "y-1")           # x is now released (no data), y in memory on A
    submit(s, task("z-1", deps=["y-1"], restrictions=[B]))
    s.take()
    s.remove_worker(A)            # y's only copy is gone, and z still needs it
    s.validate()
    assert s.tasks["z-1"].state == "waiting"
    assert s.tasks["y-1"].state == "waiting"      # recomputed from x, which is recomputed
    assert s.tasks["x-1"].state == "no-worker"    # x was pinned to A
    s.add_worker(A, "a", 1, 0)
    wout, _ = s.take()
    assert ops(wout[A]) == [("compute", "x-1")]


def test_killed_worker_after_allowed_failures(s):
    s.add_worker(A, "a", 1, 0)
    submit(s, task("bad-1"), task("after-1", deps=["bad-1"]))
    s.remove_worker(A)
    assert s.tasks["bad-1"].state == "queued"  # 1 failure allowed
    s.add_worker(B, "b", 1, 0)
    s.take()
    s.remove_worker(B)
    _, cout = s.take()
    assert ops(cout["c1"]) == [("task-erred", "bad-1"), ("task-erred", "after-1")]
    exc = pickle.loads(cout["c1"][0]["exception"])
    assert isinstance(exc, KilledWorker) and exc.workers == [A, B]
    assert "bad-1" in str(exc)


def test_error_propagates_and_retries(s):
    s.add_worker(A, "a", 1, 0)
    submit(s, task("r-1", retries=1), task("d-1", deps=["r-1"]))
    s.task_erred(A, "r-1", b"EXC", "tb")
    wout, cout = s.take()
    assert ops(wout[A]) == [("compute", "r-1")] and not cout  # retried
    s.task_erred(A, "r-1", b"EXC", "tb")
    _, cout = s.take()
    assert ops(cout["c1"]) == [("task-erred", "r-1"), ("task-erred", "d-1")]
    assert cout["c1"][1]["exception"] == b"EXC" and cout["c1"][1]["traceback"] == "tb"
    s.validate()
    wout, cout = submit(s, task("e-1", deps=["r-1"]))  # new dependents of an erred task err
    assert ops(cout["c1"]) == [("task-erred", "e-1")]


def test_cancel_cancels_dependents(s):
    s.add_worker(A, "a", 1, 0)
    submit(s, task("x-1"), task("y-1", deps=["x-1"]))
    s.cancel("c1", ["x-1"])
    wout, cout = s.take()
    assert sorted(ops(cout["c1"])) == [("cancelled", "x-1"), ("cancelled", "y-1")]
    assert ops(wout[A]) == [("free-keys", ["x-1"])]
    assert not s.tasks and not s.workers[A].processing
    s.task_finished(A, "x-1", 1, "int")  # the late result of a cancelled task is discarded
    wout, cout = s.take()
    assert ops(wout[A]) == [("free-keys", ["x-1"])] and not cout


def test_unknown_dependency_errs(s):
    s.add_worker(A, "a", 1, 0)
    _, cout = submit(s, task("y-1", deps=["nope"]))
    assert "does not know" in str(pickle.loads(cout["c1"][0]["exception"]))


def test_missing_data_refetches_or_recomputes(s):
    s.add_worker(A, "a", 1, 0)
    s.add_worker(B, "b", 1, 0)
    submit(s, task("x-1", restrictions=[A]), task("y-1", deps=["x-1"], restrictions=[B]))
    finish(s, A, "x-1")
    s.missing_data(B, "y-1", "x-1", [A])  # B could not reach A: x is lost, recompute it
    s.validate()
    assert s.tasks["x-1"].state == "processing" and s.tasks["y-1"].state == "waiting"


def test_paused_worker_gets_no_new_tasks(s):
    s.add_worker(A, "a", 1, 0)
    s.worker_status(A, "paused")
    wout, _ = submit(s, task("x-1"))
    assert A not in wout and s.tasks["x-1"].state == "queued"
    s.worker_status(A, "running")
    wout, _ = s.take()
    assert ops(wout[A]) == [("compute", "x-1")]


def test_remove_client_releases_everything(s):
    s.add_worker(A, "a", 1, 0)
    submit(s, task("x-1"), task("y-1", deps=["x-1"]))
    finish(s, A, "x-1")
    s.remove_client("c1")
    s.validate()
    assert not s.tasks


def test_heartbeat_ttl(s):
    s.add_worker(A, "a", 1, 0, now=0.0)
    s.add_worker(B, "b", 1, 0, now=0.0)
    s.heartbeat(A, 50.0)
    assert s.stale_workers(70.0, ttl=60) == [B]


def test_duplicate_worker_name_refused(s):
    s.add_worker(A, "a", 1, 0)
    assert "already connected" in s.add_worker(B, "a", 1, 0)


def test_illegal_transition_is_caught(s):
    s.add_worker(A, "a", 1, 0)
    submit(s, task("x-1"))
    with pytest.raises(InvalidTransition):
        s._set(s.tasks["x-1"], "queued")
    s.tasks["x-1"].state = "processing"


def graph_row(key, deps=(), position=0, wanted=False):
    return task(key, deps) + [position, WANTED if wanted else 0]


def errors(cout):
    return {m["key"]: str(pickle.loads(m["exception"])) for m in cout if m["op"] == "task-erred"}


@pytest.mark.parametrize("how", ["cancel", "release"])
def test_graph_over_keys_the_scheduler_dropped_names_the_dropped_key(s, how):
    """A client persists x, cancels (or releases) it, and before the scheduler's answer arrives
    sends a graph that assumes it still holds x: y's row refers to x and z (wanted) to y. z
    fails with an error naming x, the key that is gone, not y (dropped on the way)."""
    s.add_worker(A, "a", 1, 0)
    submit(s, task("x-1"))
    finish(s, A, "x-1")
    if how == "cancel":
        s.cancel("c1", ["x-1"])
    else:
        s.release_keys("c1", ["x-1"])
    s.take()
    s.update_graph("c1", [graph_row("y-1", ["x-1"], 0), graph_row("y-2", ["x-1"], 1),
                          graph_row("z-1", ["y-2", "y-1"], 2, wanted=True)],
                   {"f": b"FN"}, graph=3)
    s.validate()
    wout, cout = s.take()
    assert errors(cout["c1"]) == {
        "z-1": "task 'y-2' depends on 'x-1', which the scheduler does not know (released, "
               "cancelled or lost)"}
    assert not wout and not s.tasks  # nothing of the graph runs, nothing is left behind
    s.release_keys("c1", ["z-1"])
    # the same keys in a later graph that sends x again: computed afresh
    s.update_graph("c1", [graph_row("x-1", (), 0), graph_row("y-1", ["x-1"], 1),
                          graph_row("z-1", ["y-1"], 2, wanted=True)], {"f": b"FN"}, graph=3)
    s.validate()
    wout, _ = s.take()
    assert ops(wout[A]) == [("compute", "x-1")]
    finish(s, A, "x-1")
    _, cout = finish(s, A, "y-1")
    _, cout = finish(s, A, "z-1")
    assert ops(cout["c1"]) == [("key-in-memory", "z-1")]


def test_retry_of_a_task_that_never_could_run_fails_again(s):
    s.add_worker(A, "a", 1, 0)
    _, cout = submit(s, task("y-1", deps=["gone"]))
    first = errors(cout["c1"])
    s.retry("c1", ["y-1"])
    wout, cout = s.take()
    assert errors(cout["c1"]) == first == {
        "y-1": "task 'y-1' depends on 'gone', which the scheduler does not know (released, "
               "cancelled or lost)"}
    assert not wout and not s.tasks

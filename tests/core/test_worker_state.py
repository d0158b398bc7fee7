"""Pure tests of the worker state machine: stimuli in, the whole list of instructions out.
No loop, no socket, no thread; validate_state() after every step and at the end of each test."""
import pickle
import random
import subprocess
import sys

import pytest

from jobqueue.core.worker_state import (
    LEGAL, AcquireReplicas, ComputeTask, Execute, ExecuteFailure, ExecuteSuccess, FetchDone,
    FetchFailed, FreeKeys, Gather, InvalidTransition, Pause, Reset, Send, Unpause, WorkerState)

A, B, C = "tcp://a:1", "tcp://b:1", "tcp://c:1"  # A is the worker under test


class LastHolder:
    """Stands in for the random choice of the peer to fetch from."""

    def choice(self, holders):
        return holders[-1]


@pytest.fixture
def ws():
    state = WorkerState(A, nthreads=1, prefetch=0, rng=LastHolder())
    yield state
    state.validate_state()


def handle(ws, *stimuli):
    out = ws.handle_stimulus(*stimuli)
    ws.validate_state()
    return out


def compute(key, deps=None, priority=0, want=False, fid="f"):
    return ComputeTask(key=key, fid=fid, args=b"args-" + key.encode(), deps=deps, want=want,
                       priority=priority, stimulus_id=f"compute-{key}")


def execute(key, deps=None, want=False, fid="f"):
    return Execute(key, fid, b"args-" + key.encode(), deps, want)


def success(key, value=1, nbytes=28, data=None):
    return ExecuteSuccess(key=key, value=value, nbytes=nbytes, data=data, start=1.0, stop=2.0,
                          stimulus_id=f"success-{key}")


def finished(key, nbytes=28, type="int", **extra):
    return {"op": "task-finished", "key": key, "nbytes": nbytes, "type": type, "start": 1.0,
            "stop": 2.0, **extra}


def fetched(holder, data, keys=None):
    keys = tuple(keys if keys is not None else data)
    return FetchDone(holder=holder, keys=keys, data=data,
                     nbytes={k: 100 for k in data}, stimulus_id=f"fetch-{holder}")


def missing(key, dep, holders):
    return {"op": "missing-data", "key": key, "dep": dep, "holders": holders}


def added(*keys):
    return {"op": "add-keys", "keys": list(keys)}


def free(*keys):
    return FreeKeys(keys=list(keys), stimulus_id="free-" + "-".join(keys))


# -- computing ------------------------------------------------------------------------------

def test_one_task_lifecycle(ws):
    assert handle(ws, compute("x")) == [execute("x")]
    assert ws.executing == 1
    assert handle(ws, success("x", value=41)) == [Send([finished("x")])]
    assert ws.data == {"x": 41} and ws.nbytes == 28 and ws.executing == 0 and ws.executed == 1
    assert handle(ws, free("x")) == []
    assert ws.data == {} and ws.tasks == {} and ws.nbytes == 0
    assert ws.story("x") == [
        ("x", "released", "ready", "compute-x"), ("x", "ready", "executing", "compute-x"),
        ("x", "executing", "memory", "success-x"), ("x", "memory", "forgotten", "free-x")]


def test_ready_tasks_run_in_priority_order(ws):
    out = handle(ws, compute("c", priority=3), compute("a", priority=1),
                 compute("b", priority=2))
    assert out == [execute("a")]  # one thread, no prefetch: the first by priority
    assert handle(ws, success("a")) == [Send([finished("a")]), execute("b")]
    assert handle(ws, success("b")) == [Send([finished("b")]), execute("c")]
    assert handle(ws, success("c")) == [Send([finished("c")])]


def test_threads_get_their_tasks_and_prefetch_more():
    ws = WorkerState(A, nthreads=2, prefetch=2)
    out = handle(ws, *[compute(f"x{i}", priority=i) for i in range(6)])
    assert out == [execute(f"x{i}") for i in range(4)]
    assert ws.executing == 4 and len(ws.ready) == 2
    assert handle(ws, success("x1"), success("x0")) == [
        Send([finished("x1"), finished("x0")]), execute("x4"), execute("x5")]


def test_small_wanted_result_goes_inline(ws):
    assert handle(ws, compute("x", want=True)) == [execute("x", want=True)]
    assert handle(ws, success("x", data=b"PICKLE")) == [Send([finished("x", data=b"PICKLE")])]


def test_compute_of_a_stored_key_reports_it_again(ws):
    handle(ws, compute("x"))
    handle(ws, success("x", value="abc", nbytes=52))
    assert handle(ws, compute("x")) == [
        Send([{"op": "task-finished", "key": "x", "nbytes": 52, "type": "str"}])]


def test_error_is_reported_and_forgotten(ws):
    handle(ws, compute("x"))
    out = handle(ws, ExecuteFailure(key="x", exception=b"EXC", traceback="TB", start=1.0,
                                    stop=2.0, stimulus_id="failure-x"))
    assert out == [Send([{"op": "task-erred", "key": "x", "exception": b"EXC",
                          "traceback": "TB", "start": 1.0, "stop": 2.0}])]
    assert ws.tasks == {} and ws.executing == 0
    assert [t[1:3] for t in ws.story("x")][-1] == ("executing", "forgotten")


# -- freeing --------------------------------------------------------------------------------

def test_free_keys_drops_queued_tasks(ws):
    assert handle(ws, compute("a", priority=1), compute("b", priority=2)) == [execute("a")]
    assert handle(ws, free("b")) == []
    assert handle(ws, success("a")) == [Send([finished("a")])]  # b is not run
    assert "b" not in ws.tasks


def test_freed_while_executing_drops_the_result(ws):
    handle(ws, compute("x"))
    assert handle(ws, free("x")) == []
    assert ws.tasks["x"].state == "cancelled"
    assert handle(ws, success("x")) == []
    assert ws.tasks == {} and ws.data == {} and ws.executing == 0


def test_computed_again_while_cancelled_reports_the_result(ws):
    handle(ws, compute("x"))
    handle(ws, free("x"))
    assert handle(ws, compute("x", want=True)) == []  # still on its thread: not run twice
    assert handle(ws, success("x")) == [Send([finished("x")])]
    assert [t[2] for t in ws.story("x")] == ["ready", "executing", "cancelled", "executing",
                                             "memory"]


def test_a_cancelled_task_frees_its_thread_for_the_next(ws):
    handle(ws, compute("x", priority=1), compute("y", priority=2))
    handle(ws, free("x"))
    assert handle(ws, success("x")) == [execute("y")]


# -- inputs from peers ----------------------------------------------------------------------

def test_inputs_are_fetched_then_the_task_runs(ws):
    out = handle(ws, compute("z", deps={"x": [B], "y": [C, B]}))
    assert out == [Gather(B, ("x", "y"))]  # one request per peer (LastHolder picks B for y)
    assert ws.tasks["z"].state == "waiting" and ws.tasks["x"].state == "flight"
    out = handle(ws, fetched(B, {"x": 1, "y": 2}))
    assert out == [Send([added("x", "y")]), execute("z", deps={"x": 1, "y": 2})]
    assert handle(ws, success("z")) == [Send([finished("z")])]
    assert ws.nbytes == 228


def test_a_shared_input_is_fetched_once(ws):
    out = handle(ws, compute("s", deps={"x": [B]}, priority=1))
    assert out == [Gather(B, ("x",))]
    assert handle(ws, compute("t", deps={"x": [B]}, priority=2)) == []
    out = handle(ws, fetched(B, {"x": 1}))
    assert out == [Send([added("x")]), execute("s", deps={"x": 1})]
    assert handle(ws, success("s")) == [Send([finished("s")]), execute("t", deps={"x": 1})]
    handle(ws, success("t"))


def test_input_already_here_is_not_fetched(ws):
    handle(ws, compute("x"))
    handle(ws, success("x", value=5))
    assert handle(ws, compute("y", deps={"x": [A]})) == [execute("y", deps={"x": 5})]
    handle(ws, success("y"))


def test_input_computed_here_is_waited_for(ws):
    handle(ws, compute("x"))
    # the scheduler also names a holder: x is waited for here, not fetched
    assert handle(ws, compute("y", deps={"x": [B]})) == []
    assert ws.tasks["y"].state == "waiting"
    assert handle(ws, success("x", value=5)) == [Send([finished("x")]),
                                                 execute("y", deps={"x": 5})]
    handle(ws, success("y"))


def test_peer_without_the_input_means_missing_data(ws):
    handle(ws, compute("y", deps={"x": [B]}))
    out = handle(ws, fetched(B, {}, keys=["x"]))
    assert out == [Send([missing("y", "x", [B])])]
    assert ws.tasks == {}


def test_unreachable_peer_means_missing_data(ws):
    handle(ws, compute("y", deps={"x": [B]}), compute("z", deps={"x": [B]}))
    out = handle(ws, FetchFailed(holder=B, keys=("x",), stimulus_id="fetch-failed"))
    assert out == [Send([missing("y", "x", [B]), missing("z", "x", [B])])]
    assert ws.tasks == {}


def test_no_other_holder_means_missing_data_at_once(ws):
    # the scheduler thinks this worker holds x, which it does not (any longer)
    assert handle(ws, compute("y", deps={"x": [A]})) == [Send([missing("y", "x", [A])])]
    assert ws.tasks == {}
    assert [t[1:3] for t in ws.story("y")] == [("released", "forgotten")]


def test_other_inputs_of_a_failed_task_still_arrive(ws):
    out = handle(ws, compute("z", deps={"x": [B], "y": [C]}))
    assert out == [Gather(B, ("x",)), Gather(C, ("y",))]
    assert handle(ws, fetched(B, {}, keys=["x"])) == [Send([missing("z", "x", [B])])]
    assert handle(ws, fetched(C, {"y": 2})) == [Send([added("y")])]
    assert ws.data == {"y": 2}


def test_unpicklable_input_fails_the_task_clearly(ws):
    handle(ws, compute("y", deps={"x": [B]}))
    out = handle(ws, FetchFailed(holder=B, keys=("x",), unpicklable="the result of 'x' (lock)",
                                 stimulus_id="fetch-failed"))
    (send,) = out
    (msg,) = send.msgs
    exc = pickle.loads(msg.pop("exception"))
    assert msg == {"op": "task-erred", "key": "y", "traceback": "", "start": None, "stop": None}
    assert isinstance(exc, TypeError)
    assert str(exc) == "input of 'y' cannot be sent: the result of 'x' (lock)"
    assert ws.tasks == {}


def test_the_holder_is_chosen_by_the_rng():
    ws = WorkerState(A, rng=random.Random(0))
    picks = set()
    for i in range(20):
        (gather,) = handle(ws, compute(f"t{i}", deps={f"x{i}": [B, C]}))
        picks.add(gather.holder)
    assert picks == {B, C}


def test_freed_input_still_needed_is_fetched_again(ws):
    handle(ws, compute("x"))
    handle(ws, success("x", value=5))
    handle(ws, compute("w"))  # keeps the thread busy: y waits in the ready queue
    assert handle(ws, compute("y", deps={"x": [A, B]})) == []
    assert ws.tasks["y"].state == "ready"
    assert handle(ws, free("x")) == [Gather(B, ("x",))]
    assert ws.tasks["y"].state == "waiting"
    assert handle(ws, success("w")) == [Send([finished("w")])]
    assert handle(ws, fetched(B, {"x": 5})) == [Send([added("x")]), execute("y", deps={"x": 5})]
    handle(ws, success("y"))


def test_freeing_a_task_with_its_input_fetches_nothing(ws):
    handle(ws, compute("x"))
    handle(ws, success("x"))
    handle(ws, compute("w"))
    handle(ws, compute("y", deps={"x": [A, B]}))
    assert handle(ws, free("x", "y")) == []
    assert set(ws.tasks) == {"w"}
    handle(ws, success("w"))


def test_erred_input_computed_here_is_fetched_from_its_holder(ws):
    handle(ws, compute("x"))
    handle(ws, compute("y", deps={"x": [B]}))
    out = handle(ws, ExecuteFailure(key="x", exception=b"E", traceback="", start=None,
                                    stop=None, stimulus_id="failure-x"))
    assert out == [Send([{"op": "task-erred", "key": "x", "exception": b"E", "traceback": "",
                          "start": None, "stop": None}]), Gather(B, ("x",))]
    handle(ws, fetched(B, {"x": 3}))
    handle(ws, success("y"))


def test_input_freed_in_flight_still_arrives_for_its_task(ws):
    handle(ws, compute("y", deps={"x": [B]}))
    assert handle(ws, free("x")) == []  # y still needs it
    assert ws.tasks["x"].state == "flight"
    out = handle(ws, fetched(B, {"x": 1}))
    assert out == [Send([added("x")]), execute("y", deps={"x": 1})]
    handle(ws, success("y"))


# -- replicas -------------------------------------------------------------------------------

def test_acquire_replicas(ws):
    handle(ws, compute("mine"))
    out = handle(ws, AcquireReplicas(keys={"a": [B], "b": [B, C], "c": [C], "mine": [B],
                                           "none": []}, stimulus_id="acquire"))
    assert out == [Gather(B, ("a", "b")), Gather(C, ("c",))]
    out = handle(ws, fetched(B, {"a": 1}, keys=["a", "b"]), fetched(C, {"c": 3}))
    assert out == [Send([added("a"), added("c")])]
    assert sorted(ws.data) == ["a", "c"] and "b" not in ws.tasks
    handle(ws, success("mine"))


def test_replica_freed_in_flight_is_dropped_on_arrival(ws):
    handle(ws, AcquireReplicas(keys={"a": [B]}, stimulus_id="acquire"))
    assert handle(ws, free("a")) == []
    assert handle(ws, fetched(B, {"a": 1})) == []
    assert ws.data == {}


def test_compute_of_a_key_in_flight_reports_it_on_arrival(ws):
    handle(ws, AcquireReplicas(keys={"a": [B]}, stimulus_id="acquire"))
    assert handle(ws, compute("a")) == []
    out = handle(ws, fetched(B, {"a": 1}))
    assert out == [Send([{"op": "task-finished", "key": "a", "nbytes": 100, "type": "int"},
                         added("a")])]


def test_compute_of_a_key_in_flight_runs_it_if_the_fetch_fails(ws):
    handle(ws, AcquireReplicas(keys={"a": [B]}, stimulus_id="acquire"))
    handle(ws, compute("a"))
    out = handle(ws, FetchFailed(holder=B, keys=("a",), stimulus_id="fetch-failed"))
    assert out == [execute("a")]
    assert handle(ws, success("a")) == [Send([finished("a")])]


# -- pause, reset -----------------------------------------------------------------------------

def test_pause_holds_new_tasks(ws):
    assert handle(ws, Pause(stimulus_id="memory-1")) == [
        Send([{"op": "worker-status", "status": "paused"}])]
    assert handle(ws, Pause(stimulus_id="memory-2")) == []
    assert handle(ws, compute("x")) == []
    assert ws.tasks["x"].state == "ready"
    assert handle(ws, Unpause(stimulus_id="memory-3")) == [
        Send([{"op": "worker-status", "status": "running"}]), execute("x")]
    assert handle(ws, Unpause(stimulus_id="memory-4")) == []
    handle(ws, success("x"))


def test_paused_worker_finishes_what_it_runs(ws):
    handle(ws, compute("x", priority=1), compute("y", priority=2))
    handle(ws, Pause(stimulus_id="memory"))
    assert handle(ws, success("x")) == [Send([finished("x")])]
    assert ws.tasks["y"].state == "ready"
    handle(ws, free("y"))


def test_reset_forgets_everything_and_drops_late_results(ws):
    handle(ws, compute("x"), compute("y", priority=1), compute("z", deps={"d": [B]}))
    handle(ws, AcquireReplicas(keys={"r": [C]}, stimulus_id="acquire"))
    handle(ws, Pause(stimulus_id="memory"))
    assert handle(ws, Reset(stimulus_id="reset")) == []
    assert ws.tasks == {} and ws.data == {} and not ws.ready and not ws.paused
    assert ws.executing == 1  # x is still on its thread
    assert ws.story("x")[-1] == ("x", "executing", "forgotten", "reset")
    assert handle(ws, compute("y")) == []  # the thread is still busy with the old x
    assert handle(ws, success("x")) == [execute("y")]  # x's result is dropped
    assert handle(ws, fetched(B, {"d": 1}), fetched(C, {"r": 2})) == []
    assert ws.data == {}
    handle(ws, success("y"))


# -- the machine itself ---------------------------------------------------------------------

def test_the_machine_does_no_io():
    """Importing it (and the package around it) loads no module that talks to the world."""
    io = ("asyncio", "socket", "selectors", "ssl", "threading", "subprocess", "psutil")
    code = (f"import sys, jobqueue.core.worker_state; "
            f"print(' '.join(m for m in {io!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == []


def test_illegal_transition_is_refused(ws):
    handle(ws, compute("x", priority=1), compute("y", priority=2))
    with pytest.raises(InvalidTransition, match="'y': ready -> memory"):
        ws._set(ws.tasks["y"], "memory")
    assert "memory" not in LEGAL["ready"]
    handle(ws, free("y"))


def test_validate_state_finds_a_broken_invariant(ws):
    handle(ws, compute("x"))
    handle(ws, success("x"))
    ws.data["ghost"] = 1
    with pytest.raises(AssertionError):
        ws.validate_state()
    del ws.data["ghost"]


def test_random_stimuli_keep_every_invariant():
    """A shell that answers instructions in a random order, frees and recomputes keys and
    resets the worker: the machine stays valid after every step and runs every task."""
    seen = set()
    for seed in range(30):
        rng = random.Random(seed)
        ws = WorkerState(A, nthreads=2, prefetch=1, rng=rng)
        pending = []  # instructions not answered yet
        keys = [f"k{i}" for i in range(12)]
        for _ in range(200):
            roll = rng.random()
            if roll < 0.35 or not pending:
                key = rng.choice(keys)
                deps = {d: rng.sample([A, B, C], rng.randint(0, 2))
                        for d in rng.sample(keys, rng.randint(0, 2)) if d != key}
                stim = [compute(key, deps=deps or None, priority=rng.randint(0, 5))]
            elif roll < 0.45:
                stim = [free(*rng.sample(keys, 2))]
            elif roll < 0.5:
                stim = [rng.choice([Pause(stimulus_id="p"), Unpause(stimulus_id="u")])]
            elif roll < 0.52:
                stim = [Reset(stimulus_id="reset")]
            elif roll < 0.55:
                stim = [AcquireReplicas(keys={rng.choice(keys): [B]}, stimulus_id="acq")]
            else:
                ins = pending.pop(rng.randrange(len(pending)))
                if isinstance(ins, Execute):
                    stim = [success(ins.key) if rng.random() < 0.8 else ExecuteFailure(
                        key=ins.key, exception=b"E", traceback="", stimulus_id="failed")]
                elif rng.random() < 0.7:
                    got = {k: 1 for k in ins.keys if rng.random() < 0.8}
                    stim = [fetched(ins.holder, got, keys=ins.keys)]
                else:
                    stim = [FetchFailed(holder=ins.holder, keys=ins.keys,
                                        unpicklable=rng.choice(["", "no"]), stimulus_id="ff")]
            out = ws.handle_stimulus(*stim)
            ws.validate_state()
            pending.extend(i for i in out if not isinstance(i, Send))
        # answer everything: every thread comes back, nothing is left running
        pending.extend(i for i in handle(ws, Unpause(stimulus_id="u")) if not isinstance(i, Send))
        while pending:
            ins = pending.pop(0)
            if isinstance(ins, Execute):
                out = handle(ws, success(ins.key))
            else:
                out = handle(ws, fetched(ins.holder, {k: 1 for k in ins.keys}))
            pending.extend(i for i in out if not isinstance(i, Send))
        assert ws.executing == 0, seed
        assert all(ts.state == "memory" for ts in ws.tasks.values()), (seed, ws.tasks)
        seen.update((old, new) for _, old, new, _ in ws.log)
    # every legal transition happens (the table has no dead entry), and only those
    assert seen == {(old, new) for old, news in LEGAL.items() for new in news}

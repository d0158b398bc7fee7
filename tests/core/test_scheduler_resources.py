"""Abstract resources in the pure scheduler state machine: workers declare them, tasks request
them, a worker runs at most as many at once as its amounts allow (placement.py)."""
import pickle

import pytest

from jobqueue.core.placement import (check_resources, format_resources, missing,
                                     parse_resources)
from jobqueue.core.scheduler_state import SchedulerState

A, B, C = "tcp://a:1", "tcp://b:1", "tcp://c:1"


@pytest.fixture
def s():
    state = SchedulerState(allowed_failures=1)
    state.add_client("c1")
    yield state
    state.validate()


def task(key, resources=None, deps=(), workers=None):
    restrictions = {"workers": workers, "resources": resources} if resources else workers
    return [key, key.split("-")[0], "f", b"args", list(deps), restrictions, 0]


def submit(s, *tasks):
    s.update_graph("c1", list(tasks), {"f": b"FN"})
    s.validate()
    return s.take()


def computes(wout, worker):
    return [m["key"] for m in wout.get(worker, []) if m["op"] == "compute"]


def finish(s, worker, key):
    s.task_finished(worker, key, 10, "int", 0.0, 0.001)
    s.validate()
    return s.take()


def states(s, *keys):
    return [s.tasks[k].state for k in keys]


def test_task_runs_only_on_a_worker_that_declares_the_resource(s):
    s.add_worker(A, "cpu", 4, 0)
    s.add_worker(B, "gpu", 4, 0, resources={"GPU": 1})
    wout, _ = submit(s, task("g-1", {"GPU": 1}), task("x-1"), task("x-2"))
    assert computes(wout, B)[:1] == ["g-1"] and "g-1" not in computes(wout, A)
    assert s.workers[B].used == {"GPU": 1}


def test_concurrency_is_limited_by_the_declared_amount(s):
    s.add_worker(A, "gpu", 8, 0, resources={"GPU": 2})
    wout, _ = submit(s, *[task(f"g-{i}", {"GPU": 1}) for i in range(5)])
    assert computes(wout, A) == ["g-0", "g-1"]          # two at once, though 8 threads
    assert states(s, "g-2", "g-3", "g-4") == ["queued"] * 3
    wout, _ = finish(s, A, "g-0")
    assert computes(wout, A) == ["g-2"]                 # the freed GPU goes to the next one
    assert s.workers[A].used == {"GPU": 2}
    for key in ("g-1", "g-2", "g-3", "g-4"):
        if s.tasks[key].state == "processing":
            finish(s, A, key)
    assert states(s, *[f"g-{i}" for i in range(5)]) == ["memory"] * 5
    assert s.workers[A].used == {}


def test_larger_requests_and_several_resources(s):
    s.add_worker(A, "big", 4, 0, resources={"GPU": 4, "MEM": 100})
    wout, _ = submit(s, task("a-1", {"GPU": 3}), task("b-1", {"GPU": 2}),
                     task("c-1", {"GPU": 1, "MEM": 50}))
    assert computes(wout, A) == ["a-1", "c-1"]          # 3 + 1 GPUs; b-1 needs 2 more
    assert s.tasks["b-1"].state == "queued"
    wout, _ = finish(s, A, "a-1")
    assert computes(wout, A) == ["b-1"]


def test_no_worker_until_a_worker_that_declares_it_joins(s):
    s.add_worker(A, "cpu", 2, 0, resources={"FOO": 1})
    wout, _ = submit(s, task("g-1", {"GPU": 1}), task("g-2", {"GPU": 1, "FOO": 1}))
    assert not computes(wout, A)
    assert states(s, "g-1", "g-2") == ["no-worker", "no-worker"]
    assert s.no_worker() == {"resources GPU=1": 1, "resources FOO=1,GPU=1": 1}
    assert missing(s.workers.values(), {"GPU": 1, "FOO": 1}) == {"GPU": 0}
    s.add_worker(B, "gpu", 2, 0, resources={"GPU": 1})
    s.validate()
    wout, _ = s.take()
    assert computes(wout, B) == ["g-1"] and states(s, "g-2") == ["no-worker"]
    assert s.no_worker() == {"resources FOO=1,GPU=1": 1}


def test_busy_capable_worker_queues_instead_of_no_worker(s):
    s.add_worker(A, "gpu", 2, 0, resources={"GPU": 1})
    submit(s, task("g-1", {"GPU": 1}), task("g-2", {"GPU": 1}))
    assert states(s, "g-1", "g-2") == ["processing", "queued"]
    assert s.no_worker() == {}
    s.add_worker(B, "gpu2", 2, 0, resources={"GPU": 1})     # a second GPU worker: g-2 runs
    s.validate()
    wout, _ = s.take()
    assert computes(wout, B) == ["g-2"]


def test_resources_given_back_when_a_task_errs_or_is_released(s):
    s.add_worker(A, "gpu", 2, 0, resources={"GPU": 1})
    submit(s, task("g-1", {"GPU": 1}), task("g-2", {"GPU": 1}), task("g-3", {"GPU": 1}))
    s.task_erred(A, "g-1", pickle.dumps(ValueError("x")), "tb")
    s.validate()
    wout, _ = s.take()
    assert computes(wout, A) == ["g-2"] and s.tasks["g-1"].state == "erred"
    s.release_keys("c1", ["g-2"])        # cancelled while processing: its GPU is free again
    s.validate()
    wout, _ = s.take()
    assert computes(wout, A) == ["g-3"] and s.workers[A].used == {"GPU": 1}


def test_worker_lost_tasks_move_to_another_capable_worker_or_no_worker(s):
    s.add_worker(A, "gpu-a", 1, 0, resources={"GPU": 1})
    s.add_worker(B, "gpu-b", 1, 0, resources={"GPU": 1})
    submit(s, task("g-1", {"GPU": 1}), task("g-2", {"GPU": 1}), task("g-3", {"GPU": 1}))
    on_a = next(k for k in ("g-1", "g-2") if s.tasks[k].processing_on.address == A)
    s.remove_worker(A)
    s.validate()
    assert s.tasks[on_a].state == "queued"            # B still declares a GPU: wait for it
    s.remove_worker(B)
    s.validate()
    assert states(s, "g-1", "g-2", "g-3") == ["no-worker"] * 3
    s.add_worker(C, "gpu-c", 1, 0, resources={"GPU": 1})
    s.validate()
    assert sorted(states(s, "g-1", "g-2", "g-3")) == ["processing", "queued", "queued"]
    assert s.no_worker() == {}


def test_retired_or_paused_only_gpu_worker_sends_waiting_tasks_to_no_worker(s):
    s.add_worker(A, "gpu", 1, 0, resources={"GPU": 1})
    s.add_worker(B, "cpu", 1, 0)
    submit(s, task("g-1", {"GPU": 1}), task("g-2", {"GPU": 1}))
    s.worker_status(A, "paused")
    s.validate()
    assert states(s, "g-1", "g-2") == ["processing", "no-worker"]
    s.worker_status(A, "running")
    s.validate()
    assert states(s, "g-2") == ["queued"]
    s.retire([A])
    s.validate()
    assert states(s, "g-2") == ["no-worker"]
    s.task_finished(A, "g-1", 1, "int", 0.0, 0.1)      # closing: finishes what it has
    s.validate()
    assert states(s, "g-1", "g-2") == ["memory", "no-worker"]


def test_tasks_without_resources_are_not_held_back_by_resource_tasks(s):
    s.add_worker(A, "gpu", 2, 0, resources={"GPU": 1})
    wout, _ = submit(s, task("g-1", {"GPU": 1}), task("g-2", {"GPU": 1}), task("x-1"),
                     task("x-2"))
    assert computes(wout, A) == ["g-1", "x-1", "x-2"]
    assert s.tasks["g-2"].state == "queued"


def test_resource_task_with_inputs_elsewhere_runs_where_the_resource_is(s):
    s.add_worker(A, "cpu", 1, 0)
    s.add_worker(B, "gpu", 1, 0, resources={"GPU": 1})
    submit(s, task("x-1", workers=[A]))
    finish(s, A, "x-1")
    wout, _ = submit(s, task("g-1", {"GPU": 1}, deps=["x-1"]))
    assert computes(wout, B) == ["g-1"]
    assert wout[B][0]["deps"] == {"x-1": [A]}


def test_lost_input_of_a_task_queued_for_resources(s):
    s.add_worker(A, "cpu", 1, 0)
    s.add_worker(B, "gpu", 1, 0, resources={"GPU": 1})
    submit(s, task("g-0", {"GPU": 1}), task("x-1", workers=[A]))
    finish(s, A, "x-1")
    submit(s, task("g-1", {"GPU": 1}, deps=["x-1"]))
    assert states(s, "g-0", "g-1") == ["processing", "queued"]
    s.remove_worker(A)                    # x-1's only copy is gone: g-1 waits for it again
    s.validate()
    assert s.tasks["g-1"].state == "waiting" and s.tasks["x-1"].state == "no-worker"


def test_hard_worker_restriction_and_resources_both_hold(s):
    s.add_worker(A, "cpu", 1, 0)
    s.add_worker(B, "gpu", 1, 0, resources={"GPU": 1})
    submit(s, task("g-1", {"GPU": 1}, workers=["cpu"]), task("g-2", {"GPU": 1}, workers=["gpu"]))
    assert states(s, "g-1", "g-2") == ["no-worker", "processing"]
    assert s.tasks["g-2"].processing_on.address == B


def test_resource_load_for_adaptive(s):
    submit(s, task("g-1", {"GPU": 1}), task("g-2", {"GPU": 1}), task("x-1"))
    assert s.resource_load() == [("g", {"GPU": 1}, 2)]
    s.release_keys("c1", ["g-1", "g-2"])
    assert s.resource_load() == [] and not s.with_resources


def test_parse_and_check_resources():
    assert parse_resources("GPU=2,FOO=1") == {"GPU": 2, "FOO": 1}
    assert parse_resources("GPU=2 MEM=1e9 X=0.5") == {"GPU": 2, "MEM": 1000000000, "X": 0.5}
    assert format_resources({"GPU": 2, "A": 0.5}) == "A=0.5,GPU=2"
    with pytest.raises(ValueError, match="'GPU' is not NAME=AMOUNT"):
        parse_resources("GPU")
    with pytest.raises(ValueError, match="'lots' is not a number"):
        parse_resources("GPU=lots")
    with pytest.raises(ValueError, match="must be a number >= 0"):
        check_resources({"GPU": -1})
    with pytest.raises(ValueError, match="must be a dict"):
        check_resources(["GPU"])

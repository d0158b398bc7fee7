"""Table-driven tests of the pure adaptive policy: snapshot in, decision out."""
import pytest

from jobqueue.deploy.adaptive import (AdaptState, JobLoad, Policy, Snapshot, decide,
                                      target_jobs)


def snap(tasks=None, durations=None, jobs=(), threads=1, workers_per_job=1, now=1000.0):
    return Snapshot(now, tasks or {}, durations or {}, tuple(jobs), threads, workers_per_job)


def running(name, busy=0, workers=1, ends_at=None):
    return JobLoad(name, "running", tuple(f"{name}-{i}" for i in range(workers)), busy, ends_at)


def pending(name):
    return JobLoad(name, "pending")


CASES = [
    # (description, snapshot, policy, expected decision fields)
    ("burst: 400 tasks of 0.5 s, 5 s target, capped at 4 jobs",
     snap({"f": 400}, {"f": 0.5}), Policy(0, 4), dict(submit=4, target=4)),
    ("burst without known durations uses 0.5 s per task",
     snap({"f": 20}), Policy(0, 50), dict(submit=2, target=2)),
    ("never more threads than tasks",
     snap({"f": 3}, {"f": 60.0}), Policy(0, 50), dict(submit=3, target=3)),
    ("jobs pending in the queue count as capacity: no new submission",
     snap({"f": 400}, {"f": 0.5}, [pending("a"), pending("b"), running("c", 1), running("d", 1)]),
     Policy(0, 4), dict(submit=0, target=4)),
    ("workers not yet arrived (running job, no workers) count as capacity",
     snap({"f": 400}, {"f": 0.5}, [JobLoad("a", "running"), JobLoad("b", "running")]),
     Policy(0, 2), dict(submit=0)),
    ("processes > 1: 8 threads per job",
     snap({"f": 160}, {"f": 1.0}, threads=8, workers_per_job=2), Policy(0, 50),
     dict(submit=4, target=4)),
    ("minimum is kept when idle",
     snap({}, {}, [running("a")]), Policy(1, 4), dict(submit=0, target=1)),
    ("minimum jobs are submitted even without work",
     snap(), Policy(2, 4), dict(submit=2, target=2)),
    ("site cap max-jobs counts queued + running",
     snap({"f": 400}, {"f": 0.5}, [pending("a")]), Policy(0, 50, max_jobs=3),
     dict(submit=2, target=3)),
    ("site cap reached: nothing, and says so",
     snap({"f": 400}, {"f": 0.5}, [pending("a"), pending("b")]), Policy(0, 50, max_jobs=2),
     dict(submit=0, target=2)),
    ("a job near its walltime is not capacity: replaced early",
     snap({"f": 20}, {"f": 0.5}, [running("a", 1, ends_at=1030.0), running("b", 1)]),
     Policy(0, 4, replace_before=60), dict(submit=1, target=2)),
]


@pytest.mark.parametrize("what,s,policy,expected", CASES, ids=[c[0] for c in CASES])
def test_scale_up_and_steady(what, s, policy, expected):
    decision, state = decide(s, policy)
    for k, v in expected.items():
        assert getattr(decision, k) == v, (what, decision)
    assert not decision.cancel and not decision.retire
    assert decision.reason


def test_scale_down_waits_for_agreeing_rounds():
    s = snap({}, {}, [running("a"), running("b"), running("c")])
    policy = Policy(0, 10, wait_count=3)
    state = AdaptState()
    for expected_rounds in (1, 2):
        decision, state = decide(s, policy, state)
        assert decision.nothing and state.down_rounds == expected_rounds
    decision, state = decide(s, policy, state)
    assert set(decision.retire) == {"a", "b", "c"} and state.down_rounds == 0


def test_a_busy_round_resets_the_count():
    idle = snap({}, {}, [running("a"), running("b")])
    busy = snap({"f": 100}, {"f": 1.0}, [running("a", 1), running("b", 1)])
    policy = Policy(0, 2, wait_count=2)
    _, state = decide(idle, policy)
    _, state = decide(busy, policy, state)
    decision, state = decide(idle, policy, state)
    assert decision.nothing  # agreement starts again


def test_scale_down_cancels_pending_first_then_idle_newest_first():
    s = snap({"f": 2}, {"f": 0.5}, [running("old", busy=1), running("idle1"), pending("p1"),
                                     running("idle2"), pending("p2")])
    decision, _ = decide(s, Policy(0, 10, wait_count=1))
    assert decision.target == 1
    assert decision.cancel == ("p2", "p1")
    assert decision.retire == ("idle2", "idle1")
    assert "old" not in decision.retire  # busy


def test_scale_down_never_retires_busy_jobs():
    s = snap({"f": 1}, {"f": 0.1}, [running("a", busy=1), running("b", busy=1)])
    decision, state = decide(s, Policy(0, 10, wait_count=1))
    assert decision.nothing and "busy" in decision.reason


def test_target_jobs_bounds():
    assert target_jobs(snap({"f": 1000}, {"f": 10.0}), Policy(0, 7)) == 7
    assert target_jobs(snap(), Policy(3, 7)) == 3


def test_bad_policy_is_refused():
    with pytest.raises(ValueError, match="minimum"):
        Policy(5, 2)
    with pytest.raises(ValueError):
        Policy(0, 2, target_duration=0)


# -- tasks that request resources ---------------------------------------------------------------

def gpu_snap(worker_resources, resources, jobs=(), threads=4, workers_per_job=1, tasks=None):
    return Snapshot(1000.0, tasks or {}, {"train": 10.0}, tuple(jobs), threads, workers_per_job,
                    tuple(resources), worker_resources)


def test_resource_tasks_scale_up_when_the_workers_declare_them():
    # 6 GPU tasks of 10 s; each worker declares GPU=1 so runs one at a time: 6 jobs
    d, _ = decide(gpu_snap({"GPU": 1}, [("train", {"GPU": 1}, 6)]), Policy(0, 50))
    assert (d.submit, d.unserved) == (6, ())
    # two workers per job, GPU=2 each: four such tasks per job
    d, _ = decide(gpu_snap({"GPU": 2}, [("train", {"GPU": 1}, 6)], workers_per_job=2),
                  Policy(0, 50))
    assert d.submit == 2


def test_resource_tasks_never_scale_up_a_cluster_whose_workers_lack_them():
    d, _ = decide(gpu_snap({}, [("train", {"GPU": 1}, 6)]), Policy(0, 50))
    assert d.submit == 0 and d.target == 0
    (note,) = d.unserved
    assert "6 train tasks request resources GPU=1" in note and "declare none" in note
    assert "worker_extra_args=['--resources', 'GPU=1']" in note
    d, _ = decide(gpu_snap({"GPU": 1}, [("train", {"GPU": 2}, 1)]), Policy(0, 50))
    assert d.submit == 0 and "they declare GPU=1" in d.unserved[0]


def test_plain_tasks_still_count_beside_unservable_resource_tasks():
    d, _ = decide(gpu_snap({}, [("train", {"GPU": 1}, 6)], tasks={"f": 20}), Policy(0, 50))
    assert d.submit == 1 and len(d.unserved) == 1       # 10 s of plain work: 2 threads

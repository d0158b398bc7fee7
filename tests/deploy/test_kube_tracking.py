"""How a KubeCluster tracks its pods, against the in-memory API of _fakekube.py.

The cluster and its scheduler are real; only the Kubernetes API is answered by a fake, so each
test sets the pods up, runs one poll and checks the cluster's conclusion: one list call per
poll whatever the number of pods, states and Kubernetes' reasons, stale marks and back-off
after a failed list, pods deleted from outside, pods that end before their worker connects
(created again, then given up on), pods that can never start (given up on at once). The same
code runs against the real Kubernetes in test_kubernetes.py.
"""
import logging

import pytest

from _fakekube import FakeKube
from jobqueue.deploy.kubernetes import KubeCluster
from jobqueue.deploy.polling import poll_delay

UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available: 1 Insufficient cpu."}


@pytest.fixture
def kube(env, monkeypatch):
    fake = FakeKube()

    async def connect(self):
        return fake
    monkeypatch.setattr(KubeCluster, "_connect", connect)
    cluster = KubeCluster(image="site/worker:1", poll_interval=1)

    async def stop_polling():            # the test polls, one step at a time
        cluster._poller.cancel()
    cluster._sync(stop_polling())
    yield cluster, fake
    cluster.close()
    assert fake.pods == {} and fake.secrets == {}


def poll(cluster) -> float:
    return cluster._sync(cluster._poll_step())


def said(caplog) -> str:
    """The warnings and errors logged so far, one a line."""
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def states(cluster) -> dict:
    return {name: (job.state, job.reason) for name, job in cluster.jobs.items()}


def test_one_list_call_per_poll_for_all_pods(kube):
    cluster, fake = kube
    cluster.scale(5)
    assert fake.calls["create"] == 6                # the Secret, then five pods
    fake.calls.clear()
    names = sorted(cluster.jobs)
    fake.set(names[0], "Running")
    fake.waiting(names[1], "ContainerCreating")
    fake.set(names[2], conditions=[UNSCHEDULABLE])
    assert poll(cluster) == 1
    assert fake.calls == {"list": 1}                # nothing else: no call per pod
    assert states(cluster)[names[0]] == ("running", "")
    assert states(cluster)[names[1]] == ("pending", "ContainerCreating")
    assert states(cluster)[names[2]] == (
        "pending", "Unschedulable: 0/1 nodes are available: 1 Insufficient cpu.")
    assert states(cluster)[names[3]] == ("pending", "waiting to be scheduled")
    poll(cluster)
    assert fake.calls == {"list": 2}
    assert "pods: 5 pending, 0 running" not in repr(cluster)   # one runs


def test_a_failed_list_keeps_the_states_marked_stale_and_backs_off(kube, caplog):
    caplog.set_level(logging.INFO, logger="jobqueue.kubernetes")
    cluster, fake = kube
    cluster.scale(1)
    (name,) = cluster.jobs
    fake.set(name, "Running")
    assert poll(cluster) == 1
    fake.fail_list = ["HTTP 503: the server is currently unable to handle the request"] * 3
    assert [poll(cluster) for _ in range(3)] == [poll_delay(1, n) for n in (1, 2, 3)] == [2, 4, 8]
    job = cluster.jobs[name]
    assert job.state == "running" and job.stale
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "HTTP 503" in warnings[0]     # said once, not per poll
    assert poll(cluster) == 1 and not job.stale
    assert any("current again" in r.getMessage() for r in caplog.records)


def test_a_pod_deleted_from_outside_is_not_replaced(kube, caplog):
    cluster, fake = kube
    cluster.scale(3)
    gone = sorted(cluster.jobs)[1]
    del fake.pods[gone]                            # kubectl delete pod
    poll(cluster)
    assert cluster.jobs[gone].state == "pending"   # not listed once: may be a race
    poll(cluster)
    assert "a pod was deleted outside jobqueue; keeping 2 pods, not 3" in said(caplog)
    assert states(cluster)[gone] == ("cancelled", "deleted, not by this cluster")
    assert len(fake.pods) == 2 and cluster._target == 2 and cluster.pods_created == 3


def test_pods_that_end_before_their_worker_are_created_again_then_given_up(kube, caplog):
    cluster, fake = kube
    cluster.scale(2)
    for attempt in range(cluster.start_retries):
        live = [j.name for j in cluster.live_jobs()]
        assert len(live) == 2
        for name in live:
            fake.exited(name, 127)
        poll(cluster)
        assert f"pod {live[0]} failed (Error, exit code 127); last 1 log lines" in said(caplog)
        assert not set(live) & set(fake.pods)      # removed from the API once reported
    assert cluster.pods_created == 2 * cluster.start_retries and cluster.replacements == 4
    assert cluster.failure.startswith("no more pods are created: 3 submissions in a row")
    assert "failed (Error, exit code 127)" in cluster.failure
    poll(cluster)
    assert cluster.pods_created == 6                # given up: nothing more is created
    with pytest.raises(RuntimeError, match="waiting for 2 workers, 0 connected, but no more "
                       "pods are created") as e:
        cluster.wait_for_workers(2)
    assert "last 1 log lines" in str(e.value)       # the pods' logs, read once they ended


def test_a_pod_that_can_never_start_is_given_up_at_once_and_deleted(kube, caplog):
    cluster, fake = kube
    cluster.scale(2)
    names = sorted(cluster.jobs)
    for name in names:
        fake.waiting(name, "ErrImagePull", 'pull access denied for local/none')
    poll(cluster)
    assert "no more pods are created: its jobs can never start as submitted: pod " in said(caplog)
    assert fake.pods == {}                          # deleted, at once (no grace period)
    assert ("delete_collection", "pods", cluster._selector(names), 0) in fake.history
    assert {s for s, _ in states(cluster).values()} == {"failed"}
    assert all(r.startswith("cannot start as created: ErrImagePull: pull access denied")
               for _, r in states(cluster).values())
    with pytest.raises(RuntimeError, match="ErrImagePull: pull access denied"):
        cluster.wait_for_workers(1)
    poll(cluster)
    assert cluster.pods_created == 2


def test_an_unschedulable_pod_is_reported_and_kept(kube, caplog):
    """A request no node can hold now may fit later (a node frees up or is added): it is said
    at once and wait_for_workers fails with the reason, but the pod stays, counted as capacity."""
    cluster, fake = kube
    cluster.scale(1)
    (name,) = cluster.jobs
    fake.set(name, conditions=[UNSCHEDULABLE])
    poll(cluster)
    assert "1 Insufficient cpu.): it cannot start" in said(caplog)
    with pytest.raises(RuntimeError, match="(?s)the pods left can bring at most 0.*Unschedulable"):
        cluster.wait_for_workers(1)
    assert not cluster.failure and name in fake.pods and cluster.live_jobs()


def test_scale_down_deletes_pending_pods_first_with_one_call(kube):
    cluster, fake = kube
    cluster.scale(4)
    names = sorted(cluster.jobs)
    fake.set(names[0], "Running")
    poll(cluster)
    fake.calls.clear()
    cluster.scale(1)
    assert fake.calls == {"logs": 3, "delete_collection": 1}
    assert sorted(fake.pods) == [names[0]]          # the newest pending pods went first
    poll(cluster)
    assert {states(cluster)[n] for n in names[1:]} == {("cancelled", "deleted by this cluster")}
    assert cluster.pods_created == 4


def test_a_pod_that_ends_after_its_worker_came_is_replaced(kube, caplog):
    """An evicted pod (its worker here is a real `jobqueue worker` process named as the pod)
    is said with Kubernetes' reason and replaced: scale(n) keeps n pods, as for batch jobs."""
    import os
    import subprocess
    import sys

    cluster, fake = kube
    cluster.scale(1)
    (name,) = cluster.jobs
    worker = subprocess.Popen(
        [sys.executable, "-m", "jobqueue", "worker", cluster.scheduler_address, "--name", name,
         "--nthreads", "1", "--death-timeout", "30"],
        env=dict(os.environ, JOBQUEUE_TOKEN=cluster.token), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        cluster.wait_for_workers(1, timeout=60)
        fake.set(name, "Running")
        poll(cluster)
        assert cluster.jobs[name].state == "running" and cluster.jobs[name].ever_connected
        worker.kill()
        fake.set(name, "Failed", reason="Evicted",
                 message="The node was low on resource: memory.")
        poll(cluster)
    finally:
        worker.kill()
        worker.wait()
    assert states(cluster)[name] == ("failed", "Evicted: The node was low on resource: memory.")
    assert f"pod {name} failed (Evicted: The node was low on resource: memory.)" in said(caplog)
    assert cluster.replacements == 1 and cluster.pods_created == 2 and not cluster.failure
    assert [j.name for j in cluster.live_jobs()] == [f"{cluster.name}-1"]

"""LocalCluster as a cluster: its config section, its logs, what it leaves behind."""
import os
import tempfile

import psutil
import pytest

from conftest import closes_by_itself
from jobqueue import Client, LocalCluster
from jobqueue.core.scheduler_api import InProcess


def worker_processes(cluster) -> list:
    """The worker processes (python -m jobqueue.core.worker) of a cluster's jobs."""
    procs = []
    for job in cluster.jobs.values():
        procs += [p for p in psutil.Process(job.proc.pid).children()
                  if "jobqueue.core.worker" in " ".join(p.cmdline())]
    return procs


def test_local_section_of_the_config_is_honoured(env, monkeypatch):
    monkeypatch.setenv("JOBQUEUE_LOCAL__N_WORKERS", "1")
    monkeypatch.setenv("JOBQUEUE_LOCAL__THREADS_PER_WORKER", "3")
    monkeypatch.setenv("JOBQUEUE_LOCAL__MEMORY_LIMIT", "1GiB")
    monkeypatch.setenv("JOBQUEUE_WORKER__HEARTBEAT_INTERVAL", "250ms")
    with LocalCluster(dashboard_address=None) as cluster:
        (worker,) = cluster.workers.values()
        assert (worker["nthreads"], worker["memory_limit"]) == (3, 2 ** 30)
        # worker.heartbeat-interval reaches the worker process
        (proc,) = worker_processes(cluster)
        argv = proc.cmdline()
        assert argv[argv.index("--heartbeat-interval") + 1] == "0.25"
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        assert len(cluster.workers) == 2         # arguments win over the config


def test_two_clusters_in_one_process_keep_separate_logs():
    with LocalCluster(n_workers=1, dashboard_address=None, name="first") as a, \
            LocalCluster(n_workers=1, dashboard_address=None, name="second") as b:
        with Client(a) as client:
            assert client.submit(sum, [1, 2]).result() == 3
        a.scale(2)
        b.scale(0)
        logs_a, logs_b = a.get_logs()["scheduler"], b.get_logs()["scheduler"]
    assert a.scheduler_address in logs_a and "first-1" in logs_a
    assert b.scheduler_address in logs_b and "second-0" in logs_b
    for mine, theirs, other in ((logs_a, logs_b, b), (logs_b, logs_a, a)):
        assert other.scheduler_address not in mine
        assert f"{other.name}-0" not in mine
    assert "retired 1 workers" in logs_b and "retired" not in logs_a


def test_temporary_directories_are_removed_on_close():
    cluster = LocalCluster(n_workers=1, dashboard_address=None)
    directory = cluster.local_directory
    assert os.path.basename(directory).startswith("jobqueue-local-")
    assert os.path.dirname(directory) == tempfile.gettempdir() and os.path.isdir(directory)
    with Client(cluster) as client:
        client.submit(print, "hello from the worker").result()
    cluster.close()
    assert not os.path.exists(directory)     # (other processes' clusters have their own)
    # the logs of the closed workers are kept
    assert "connected to " + cluster.scheduler_address in cluster.get_logs()[f"{cluster.name}-0"]


def test_a_cluster_that_fails_to_start_leaves_no_temporary_directory(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(ValueError, match="dashboard address 'lots'"):
        LocalCluster(n_workers=1, processes=False, dashboard_address="lots")
    assert list(tmp_path.iterdir()) == []


def test_a_directory_given_is_left_alone(tmp_path):
    with LocalCluster(n_workers=1, dashboard_address=None, local_directory=str(tmp_path)) as c:
        name = f"{c.name}-0"
    assert (tmp_path / f"{name}.log").exists()


def test_the_cluster_talks_to_its_scheduler_through_the_interface():
    with LocalCluster(n_workers=1, dashboard_address=None) as cluster:
        assert isinstance(cluster.scheduler, InProcess)
        (view,) = cluster.scheduler.workers().values()
        assert view.name == f"{cluster.name}-0" and view.address in cluster.workers
        load = cluster._sync(cluster.scheduler.load())
        assert load.tasks == {} and set(load.workers) == {view.name}


def test_idle_timeout_closes_the_scheduler_and_its_cluster():
    # the scheduler is not idle while a client is connected: its worker can take its time
    cluster = LocalCluster(n_workers=0, dashboard_address=None, idle_timeout=1.0)
    with Client(cluster, set_as_default=False):
        cluster.scale(1)
        (job,) = cluster.jobs.values()
    closes_by_itself(cluster)
    job.proc.wait(10)                  # its worker is gone too (no TimeoutExpired)
    assert "no client and no task for 1 s (scheduler.idle-timeout)" in \
        cluster.get_logs()["scheduler"]

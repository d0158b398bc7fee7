"""dask-jobqueue's cluster parameters on the real SLURM of ci/slurm: scheduler_options and
interface=, asynchronous=True, shared_temp_directory, and workers for a scheduler that runs
in another process (scheduler_file=)."""
import asyncio
import os
import socket
import stat
import subprocess
import sys

import pytest

from _realsystem import slurm_running, still_queued, wait_until
from conftest import needs_service
from jobqueue import Client, SLURMCluster, config

pytestmark = pytest.mark.slurm

inc = lambda x: x + 1      # noqa: E731   (a lambda travels by value to the batch workers)


@pytest.fixture(scope="module")
def service():
    needs_service(slurm_running(), "SLURM (ci/slurm/start.sh)")


@pytest.fixture
def settings(service, tmp_path):
    return {"cores": 1, "memory": "500MB", "walltime": "00:10:00",
            "log_directory": str(tmp_path / "logs"), "poll_interval": 0.5}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gone_from_queue(cluster, ids):
    wait_until(lambda: not still_queued(cluster, ids), 30, f"jobs {ids} should leave the queue")


def test_scheduler_options_and_interface(settings):
    port = free_port()
    with SLURMCluster(**settings, interface="lo",
                      scheduler_options={"port": port, "dashboard_address": None}) as cluster:
        assert cluster.scheduler_address == f"tcp://127.0.0.1:{port}"
        assert cluster.dashboard_link is None
        assert "--interface lo" in cluster.job_script()
        cluster.scale(jobs=1)
        cluster.wait_for_workers(1, timeout=60)
        assert all(a.startswith("tcp://127.0.0.1:") for a in cluster.workers)
        with Client(cluster) as client:
            assert client.submit(inc, 1).result(timeout=60) == 2


def test_bad_scheduler_options_key_and_interface_are_refused(settings):
    with pytest.raises(ValueError) as e:
        SLURMCluster(**settings, scheduler_options={"dashboard": ":8787"})
    assert "SLURMCluster scheduler_options: unknown key 'dashboard'; accepted: host, " \
           "interface, port, dashboard_address, protocol, security" in str(e.value)
    with pytest.raises(ValueError) as e:
        SLURMCluster(**settings, interface="ib7")
    assert "SLURMCluster interface='ib7': no network interface 'ib7'" in str(e.value)
    assert "it has: " in str(e.value) and "lo" in str(e.value)


def test_asynchronous_slurm_cluster_and_client(settings):
    async def main():
        async with SLURMCluster(**settings, asynchronous=True) as cluster:
            assert cluster.status == "running"
            await cluster.scale(jobs=2)
            await cluster.wait_for_workers(2)
            async with Client(cluster, asynchronous=True) as client:
                assert await client.gather(client.map(inc, range(100))) == \
                    list(range(1, 101))
                assert await client.submit(inc, 41) == 42
            ids = list(cluster.jobs)
            await cluster.close()
            assert cluster.status == "closed"
        return cluster, ids

    cluster, ids = asyncio.run(asyncio.wait_for(main(), 180))
    assert len(ids) == 2
    assert {str(j.state) for j in cluster.jobs.values()} == {"cancelled"}
    gone_from_queue(cluster, ids)


def test_shared_temp_directory_holds_the_tls_certificates_and_token(settings, tmp_path,
                                                                    monkeypatch):
    shared = tmp_path / "shared"
    monkeypatch.setenv("JOBQUEUE_SECURITY__PROTOCOL", "tls")
    config.refresh()
    try:
        with SLURMCluster(**settings, shared_temp_directory=str(shared)) as cluster:
            (ours,) = shared.iterdir()
            assert stat.S_IMODE(ours.stat().st_mode) == 0o700
            assert cluster.token_file.startswith(str(ours) + os.sep)
            assert stat.S_IMODE(os.stat(cluster.token_file).st_mode) == 0o600
            script = cluster.job_script()
            assert f"JOBQUEUE_SECURITY__TLS_CERT={ours}{os.sep}" in script
            cluster.scale(jobs=1)
            cluster.wait_for_workers(1, timeout=120)
            with Client(cluster) as client:
                assert all(w.startswith("tls://") for w in client.scheduler_info()["workers"])
                assert client.submit(inc, 1).result(timeout=60) == 2
        assert list(shared.iterdir()) == []          # removed at close
    finally:
        monkeypatch.delenv("JOBQUEUE_SECURITY__PROTOCOL")
        config.refresh()


@pytest.fixture
def scheduler_process(service, tmp_path):
    """`jobqueue scheduler` in a process of its own, as a user starts it on the login node."""
    path = tmp_path / "private" / "scheduler.json"
    path.parent.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k != "JOBQUEUE_TOKEN"}
    log = tmp_path / "scheduler.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "jobqueue", "scheduler", "--port", "0",
                                 "--scheduler-file", str(path)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "scheduler at " in log.read_text() or proc.poll() is not None, 30,
                   "the scheduler should say where it listens")
        assert proc.poll() is None, log.read_text()
        yield proc, str(path)
    finally:
        proc.terminate()
        proc.wait(30)


def test_workers_for_a_scheduler_started_elsewhere(settings, scheduler_process):
    proc, path = scheduler_process
    with SLURMCluster(**settings, processes=1, scheduler_file=path) as cluster:
        with Client(scheduler_file=path) as client:
            assert cluster.scheduler_address == client.address
            cluster.scale(jobs=2)
            cluster.wait_for_workers(2, timeout=60)
            assert len(client.scheduler_info()["workers"]) == 2
            assert client.gather(client.map(inc, range(50))) == list(range(1, 51))
            cluster.scale(jobs=1)                   # retire one job's worker, cancel the job
            wait_until(lambda: len(client.scheduler_info()["workers"]) == 1, 30,
                       "the retired worker should leave the scheduler")
            cluster.adapt(minimum_jobs=0, maximum_jobs=1, interval="0.5s", wait_count=2)
            wait_until(lambda: not client.scheduler_info()["workers"], 60,
                       "adapt(minimum_jobs=0) should retire the idle worker")
            ids = list(cluster.jobs)
    gone_from_queue(cluster, ids)
    assert proc.poll() is None                      # the scheduler is not the cluster's
    with Client(scheduler_file=path) as client:     # and still serves
        assert client.scheduler_info()["workers"] == {}


def test_scheduler_file_that_cannot_be_read_says_so(settings, tmp_path):
    with pytest.raises(ValueError) as e:
        SLURMCluster(**settings, scheduler_file=str(tmp_path / "nope.json"))
    assert f"scheduler_file={str(tmp_path / 'nope.json')!r}: cannot read a scheduler's " \
           "address and token from it" in str(e.value)

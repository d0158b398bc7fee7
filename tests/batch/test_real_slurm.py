"""SLURMCluster against the real SLURM that ci/slurm/start.sh runs."""

import pytest

from _realsystem import RealSystemTests, slurm_running, wait_until
from conftest import needs_service
from jobqueue import Client, SLURMCluster
from jobqueue.batch.slurm import Slurm

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def service():
    needs_service(slurm_running(), "SLURM (ci/slurm/start.sh)")


class TestSLURM(RealSystemTests):
    cluster_cls = SLURMCluster
    cancel_command = "scancel"
    bad_queue = "nosuch"
    bad_queue_says = "invalid partition specified: nosuch"
    never_says = "PartitionConfig"

    def test_job_that_can_never_start_is_reported_and_cancelled(self, make, caplog):
        self.check_never_starts(make, caplog)

    def test_failed_poll_keeps_states_marked_stale(self, make):
        cluster = make()
        cluster.scale(jobs=1)
        cluster.wait_for_workers(1, timeout=60)
        job = list(cluster.jobs.values())[0]
        wait_until(lambda: job.state == "running" and not job.stale, 10, "job should run")

        class Broken(Slurm):
            def status_argv(self, job_ids):
                return ["squeue", "--no-such-option"]

        cluster.system = Broken()
        wait_until(lambda: job.stale, 10, "a failed poll should mark the state stale")
        assert job.state == "running" and "(stale)" in repr(job)
        del cluster.system                       # back to the class's adapter
        wait_until(lambda: not job.stale, 70, "a good poll should clear stale")


    def test_processes_and_interface(self, make):
        cluster = make(cores=2, memory="1GB", processes=2, interface="lo")
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        cluster.scale(jobs=1)
        cluster.wait_for_workers(2, timeout=60)
        job = list(cluster.jobs.values())[0]
        assert job.workers == {f"{job.name}-0", f"{job.name}-1"}
        assert all(a.startswith("tcp://127.0.0.1:") for a in cluster.workers)
        assert "--interface lo" in cluster.job_script()

    def test_adapt_submits_for_the_load_and_cancels_idle_jobs(self, make):
        cluster = make()
        cluster.adapt(minimum_jobs=0, maximum_jobs=3, interval="0.5s", wait_count=2,
                      target_duration="1s")
        with Client(cluster) as client:
            slow = lambda x: (__import__("time").sleep(0.5), x)[1]     # noqa: E731
            assert sum(client.gather(client.map(slow, range(30)))) == sum(range(30))
        assert cluster.runner.calls["sbatch"] >= 1
        wait_until(lambda: not cluster.live_jobs(), 30, "idle jobs should be cancelled")
        wait_until(lambda: not cluster.workers, 30, "their workers should leave")
        assert all(j.cancel_requested for j in cluster.jobs.values())

    def test_worker_extra_args_resources_end_to_end(self, make):
        """worker_extra_args=["--resources", "GPU=1"]: the tasks that request a GPU wait in
        no-worker, adapt() submits a job for them because its workers will declare GPU=1, and
        they run there, one per worker at a time."""
        cluster = make(cores=2, memory="1GB", processes=2,
                       worker_extra_args=["--resources", "GPU=1"])
        assert cluster.worker_resources == {"GPU": 1}
        with Client(cluster) as client:
            futures = client.map(_gpu_task, range(6), resources={"GPU": 1}, pure=False)
            wait_until(lambda: client.scheduler_info()["no_worker"] == {"resources GPU=1": 6},
                       30, "the GPU tasks reported in no-worker")
            cluster.adapt(minimum_jobs=0, maximum_jobs=1, interval="0.5s")
            done = client.gather(futures)
            workers = client.scheduler_info()["workers"].values()
        assert [w["resources"] for w in workers] == [{"GPU": 1}, {"GPU": 1}]
        pids = {w["pid"] for w in workers}
        assert {pid for pid, _ in done} <= pids and cluster.runner.calls["sbatch"] == 1
        for pid in pids:                        # never two at once on one worker
            spans = sorted(span for p, span in done if p == pid)
            assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))

    def test_adapt_adds_no_jobs_for_resources_its_workers_lack(self, make, caplog):
        cluster = make()
        with Client(cluster) as client, caplog.at_level("WARNING", "jobqueue.adaptive"):
            future = client.submit(_gpu_task, 0, resources={"GPU": 1})
            cluster.adapt(minimum_jobs=0, maximum_jobs=2, interval="0.2s")
            adaptive = cluster._adaptive
            wait_until(lambda: adaptive.rounds >= 10, 30, "ten adaptive rounds")
            notes = [r.getMessage() for r in caplog.records if "request resources" in r.message]
            assert len(notes) == 1 and "_gpu_task tasks request resources GPU=1" in notes[0]
            assert "worker_extra_args=['--resources', 'GPU=1']" in notes[0]
            assert cluster.runner.calls.get("sbatch", 0) == 0 and not cluster.jobs
            assert future.status == "pending"
            client.cancel([future])


def _gpu_task_by_value():
    def _gpu_task(i):
        """(worker process id, (start, end)) of a task that holds its GPU for a moment."""
        import os
        import time

        start = time.monotonic()
        time.sleep(0.3)
        return os.getpid(), (start, time.monotonic())
    return _gpu_task     # a nested function: pickled by value (job workers cannot import tests)


_gpu_task = _gpu_task_by_value()


def test_tls_cluster_on_real_slurm(service, tmp_path, monkeypatch):
    """security.protocol tls: the scheduler and the batch workers speak TLS (a temporary
    certificate for the cluster, its paths exported by the job script, no key material in it)."""
    from jobqueue import config

    monkeypatch.setenv("JOBQUEUE_SECURITY__PROTOCOL", "tls")
    config.refresh()
    try:
        with SLURMCluster(cores=2, memory="1GB", processes=2, walltime="00:10:00",
                          log_directory=str(tmp_path / "logs"), poll_interval=0.5) as cluster:
            assert cluster.scheduler_address.startswith("tls://")
            cluster.scale(jobs=1)
            script = cluster.job_script()
            assert "JOBQUEUE_SECURITY__TLS_CERT" in script and "PRIVATE KEY" not in script
            cluster.wait_for_workers(2, timeout=120)
            with Client(cluster) as client:
                workers = sorted(client.scheduler_info()["workers"])
                assert all(w.startswith("tls://") for w in workers)
                big = client.submit(lambda: bytes(3_000_000), workers=[workers[0]])
                n = client.submit(len, big, workers=[workers[1]])
                assert n.result(timeout=60) == 3_000_000
                assert client.gather(client.map(lambda x: x + 1, range(50))) == \
                    list(range(1, 51))
    finally:
        monkeypatch.delenv("JOBQUEUE_SECURITY__PROTOCOL")
        config.refresh()

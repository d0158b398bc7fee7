"""Adaptive scaling and walltime on the real SLURM that ci/slurm/start.sh runs."""
import json
import subprocess
import time

import pytest

from _realsystem import slurm_running
from conftest import needs_service
from jobqueue import Client, KilledWorker, SLURMCluster, wait
from jobqueue.batch.status import JobState

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def service():
    needs_service(slurm_running(), "SLURM (ci/slurm/start.sh)")


def left_in_queue(cluster, timeout=30):
    """The cluster's jobs that squeue still lists (cancelled ones may linger as completing)."""
    ours = set(cluster.jobs)
    deadline = time.time() + timeout
    while True:
        out = subprocess.run(["squeue", "-h", "-o", "%i", "-n", cluster.job_name],
                             capture_output=True, text=True, timeout=30).stdout
        left = ours & set(out.split())
        if not left or time.time() > deadline:
            return left
        time.sleep(0.5)


def test_adapt_burst_scales_up_computes_and_returns_to_zero(service, tmp_path):
    with SLURMCluster(cores=1, memory="500MB", log_directory=str(tmp_path),
                      job_name="jqadapt", poll_interval=0.5) as cluster, \
            Client(cluster) as client:
        adaptive = cluster.adapt(minimum_jobs=0, maximum_jobs=4, interval="0.5s")
        t0 = time.time()
        timeline, most = {}, 0
        futures = client.map(lambda i: time.sleep(0.5) or i, range(400))
        while not all(f.done() for f in futures):
            n = len(cluster.scheduler.workers())
            most = max(most, len(cluster.live_jobs()))
            if n and "first worker" not in timeline:
                timeline["first worker"] = round(time.time() - t0, 1)
            if n == 4 and "full size (4)" not in timeline:
                timeline["full size (4)"] = round(time.time() - t0, 1)
            time.sleep(0.1)
        assert client.gather(futures) == list(range(400))
        timeline["all 400 done"] = round(time.time() - t0, 1)
        deadline = time.time() + 90
        while cluster.live_jobs() or cluster.scheduler.workers():
            assert time.time() < deadline, "adaptive did not return to zero jobs"
            time.sleep(0.2)
        timeline["back to zero"] = round(time.time() - t0, 1)
        assert most <= 4
        assert adaptive.submitted <= 5, f"{adaptive.submitted} jobs submitted"
        timeline["jobs submitted"] = adaptive.submitted
        (tmp_path / "timeline.json").write_text(json.dumps(timeline))
        print("adaptive timeline:", timeline)
        assert not left_in_queue(cluster)


def test_walltime_jobs_are_replaced_before_they_are_killed(service, tmp_path):
    with SLURMCluster(cores=1, memory="500MB", walltime="00:02:00", log_directory=str(tmp_path),
                      job_name="jqwall", poll_interval=0.5) as cluster, \
            Client(cluster) as client:
        adaptive = cluster.adapt(minimum_jobs=2, maximum_jobs=2, interval="0.5s")
        futures = client.map(lambda i: time.sleep(1.0) or i, range(480))  # ~4 min on 2 workers
        try:
            results = client.gather(futures)
        except KilledWorker as e:
            pytest.fail(f"a task was killed with its job: {e}")
        assert results == list(range(480))
        states = {j.job_id: j.state for j in cluster.jobs.values()}
        assert len(states) >= 4, f"the first jobs were not replaced: {states}"
        assert JobState.TIMEOUT not in states.values(), f"a job hit its walltime: {states}"
        assert adaptive.submitted >= 4
        logs = "\n".join(cluster.get_logs().values())
        assert "reached its lifetime" in logs


def test_scale_down_moves_results_instead_of_recomputing(service, tmp_path):
    log = tmp_path / "executions"

    def record(i):
        with open(log, "a") as f:
            f.write(f"{i}\n")
        return i * 10

    with SLURMCluster(cores=1, memory="500MB", log_directory=str(tmp_path),
                      job_name="jqretire", poll_interval=0.5) as cluster, \
            Client(cluster) as client:
        cluster.scale(jobs=3)
        cluster.wait_for_workers(3, timeout=60)
        futures = client.map(record, range(60))
        wait(futures)
        held = [w["stored"] for w in client.scheduler_info()["workers"].values()]
        assert sum(1 for n in held if n) >= 2
        cluster.scale(jobs=1)
        assert len(cluster.live_jobs()) == 1
        assert client.gather(futures) == [i * 10 for i in range(60)]
        assert sorted(map(int, log.read_text().split())) == list(range(60))  # each ran once

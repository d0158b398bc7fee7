"""The tests every real batch system runs: test_real_slurm.py, test_real_sge.py and
test_real_pbs.py subclass :class:`RealSystemTests` and say which cluster, commands and queue.

They need the daemons that ci/slurm, ci/sge and ci/pbs start. Jobs are small (1-2 cores, 500 MB
to 1 GB) and polls short (0.5 s), so the whole set takes about a minute per system.
"""
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import wait_until  # noqa: F401  (the real-system tests import it from here)
from jobqueue import BatchCommandError, Client
from jobqueue.batch.status import JobState

def slurm_running() -> bool:
    """The SLURM that ci/slurm/start.sh runs answers (the SLURM test modules need it)."""
    if not shutil.which("sbatch"):
        return False
    out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    return "is UP" in out.stdout


TERMINAL = {JobState.FINISHED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT}


# A lambda travels by value: the workers cannot import this test module.
inc = lambda x: x + 1      # noqa: E731


def still_queued(cluster, ids) -> list:
    """Ids of the cluster's jobs that its batch system still lists as pending or running, asked
    with a command of our own (not the cluster's runner)."""
    system = cluster.system
    out = subprocess.run(system.status_argv(list(ids)), capture_output=True, text=True,
                         timeout=30)
    statuses = system.parse_status(out.stdout)
    queued = []
    for job_id in ids:
        status = statuses.get(system.status_key(job_id))
        if status is not None and (status.state not in TERMINAL or status.cancel):
            queued.append(job_id)      # pending, running, or failed but kept (Eqw)
    return sorted(queued)


# A user's script that submits two jobs and then exits (atexit) or is interrupted (Ctrl-C).
USER_SCRIPT = """
import sys, time, jobqueue
cluster = getattr(jobqueue, sys.argv[1])(cores=1, memory="500MB", log_directory=sys.argv[2],
                                         poll_interval=0.5)
cluster.scale(jobs=2)
cluster.wait_for_workers(2, timeout=60)
print(" ".join(cluster.jobs), flush=True)
if sys.argv[3] == "interrupt":
    time.sleep(600)                         # Ctrl-C arrives while the user's code runs
"""


class RealSystemTests:
    cluster_cls = None
    cancel_command = ""          # what a user runs to cancel a job from outside
    bad_queue = "no-such-queue"
    bad_queue_says = ""          # a phrase of the batch system's error for bad_queue
    arrays = True
    cancelled_state = JobState.CANCELLED

    @pytest.fixture
    def make(self, service, tmp_path):
        clusters = []

        def make(**settings):
            settings = {"cores": 1, "memory": "500MB", "walltime": "00:10:00",
                        "log_directory": str(tmp_path / "logs"), "poll_interval": 0.5,
                        **settings}
            c = self.cluster_cls(**settings)
            clusters.append(c)
            return c

        yield make
        for c in clusters:
            ids = list(c.jobs)
            c.close()
            if ids:
                wait_until(lambda: not still_queued(c, ids), 30,
                           f"jobs {still_queued(c, ids)} of {c.name} left the queue")

    def test_scale_computes_a_map_and_close_leaves_nothing(self, make):
        cluster = make(cores=2, memory="1GB", processes=1)
        cluster.scale(jobs=3)                     # returns at once: the jobs may pend
        assert len(cluster.jobs) == 3
        cluster.wait_for_workers(3, timeout=60)
        with Client(cluster) as client:
            assert client.gather(client.map(inc, range(1000))) == list(range(1, 1001))
        assert all(len(j.workers) == 1 for j in cluster.jobs.values())
        assert "3 running" in repr(cluster)
        ids = list(cluster.jobs)
        cluster.close()
        assert {j.state for j in cluster.jobs.values()} == {JobState.CANCELLED}
        wait_until(lambda: not still_queued(cluster, ids), 20,
                   f"close() should leave no job in the queue, but {ids} are still there")

    def test_array_is_one_submit_and_polling_one_command_per_interval(self, make):
        cluster = make()
        submit = cluster.system.submit_command
        status = cluster.system.status_command
        cluster.scale(jobs=5)
        assert cluster.runner.calls[submit] == (1 if self.arrays else 5)
        assert len(cluster.jobs) == 5 and len(set(cluster.jobs)) == 5
        cluster.wait_for_workers(5, timeout=60)
        before, started = cluster.runner.calls[status], time.monotonic()
        time.sleep(3.0)
        polls = cluster.runner.calls[status] - before
        elapsed = time.monotonic() - started
        # one status command per 0.5 s interval for all 5 jobs: never more (a slow machine may
        # poll less often, which is not what this checks)
        assert 1 <= polls <= elapsed / 0.5 + 1
        # nothing run per job; Grid Engine's "could it ever run?" check (qalter -w v) runs at
        # most once per submission, if a poll saw the jobs pending
        verify = (cluster.system.verify_argv("1") or [None])[0]
        assert set(cluster.runner.calls) - {verify} == {submit, status}
        assert cluster.runner.calls.get(verify, 0) <= cluster.runner.calls[submit]
        # scaling down cancels chosen tasks with one command; the others keep running
        cluster.scale(jobs=3)
        assert cluster.runner.calls[cluster.system.cancel_command] == 1
        wait_until(lambda: len(cluster.workers) == 3, 30, "2 workers should leave")
        assert len(cluster.live_jobs()) == 3

    def test_output_files_are_named_after_the_ids_the_queue_shows(self, make):
        cluster = make()
        cluster.scale(jobs=2)
        cluster.wait_for_workers(2, timeout=60)
        listed = cluster.system.parse_status(subprocess.run(
            cluster.system.status_argv(list(cluster.jobs)), capture_output=True, text=True,
            timeout=30).stdout)
        for job in cluster.jobs.values():
            key = cluster.system.status_key(job.job_id)
            assert key in listed                          # the id the status command shows
            path = job.log_paths()[0]
            assert os.path.basename(path) in (f"{cluster.job_name}-{key}.out",
                                              f"{cluster.job_name}.o{key}")
            assert f"output={path}>" in repr(job) and job.info()["output"] == path
            # its worker says its name in it (PBS's wrappers put stderr in NAME.eID beside it)
            wait_until(lambda: job.name in job.logs(), 30,
                       f"{path} should be {job.job_id}'s output (naming {job.name})")

    def test_worker_that_cannot_start_is_reported(self, make, caplog):
        caplog.set_level(logging.WARNING, logger="jobqueue.batch")
        cluster = make(python="/nonexistent/python")
        cluster.scale(jobs=1)
        job_id = list(cluster.jobs)[0]
        with pytest.raises(RuntimeError) as e:      # the job's failure, not a TimeoutError
            cluster.wait_for_workers(1, timeout=30)
        message = str(e.value)
        assert f"job {job_id} " in message and "/nonexistent/python" in message
        job = cluster.jobs[job_id]
        assert job.state in TERMINAL and f"{job.state}" in message
        warned = [r.getMessage() for r in caplog.records if job_id in r.getMessage()]
        assert warned and "/nonexistent/python" in warned[0] and "before any of its workers" \
            in warned[0]
        assert "/nonexistent/python" in cluster.get_logs()[job.name]

    never_says = ""              # the batch system's reason for a job with too many cores

    def check_never_starts(self, make, caplog):
        """A job asking for more cores than any node has: reported at once with the batch
        system's reason and a remedy, cancelled, and wait_for_workers fails."""
        caplog.set_level(logging.WARNING, logger="jobqueue.batch")
        cluster = make(cores=16, memory="1GB")
        cluster.scale(jobs=1)
        (job_id,) = cluster.jobs
        with pytest.raises(RuntimeError) as e:
            cluster.wait_for_workers(1, timeout=120)
        message = str(e.value)
        assert f"job {job_id} failed (cannot start as submitted: {self.never_says}" in message
        assert "cores=" in message
        (warning,) = [r.getMessage() for r in caplog.records
                      if job_id in r.getMessage() and r.levelno == logging.WARNING]
        assert f"job {job_id} can never start as submitted: {self.never_says}" in warning
        assert "To fix: ask for fewer cores" in warning
        wait_until(lambda: not still_queued(cluster, [job_id]), 30,
                   f"the job {job_id} should have been cancelled")

    def test_invalid_queue_raises_with_the_batch_systems_message(self, make):
        cluster = make(queue=self.bad_queue)
        with pytest.raises(BatchCommandError) as e:
            cluster.scale(jobs=2)
        assert e.value.argv[0] == cluster.system.submit_command
        assert e.value.returncode not in (0, None)
        assert self.bad_queue_says in (e.value.stderr + e.value.stdout)
        assert self.bad_queue_says in str(e.value)
        assert cluster.jobs == {}

    def test_job_cancelled_from_outside(self, make):
        cluster = make()
        cluster.scale(jobs=2)
        cluster.wait_for_workers(2, timeout=60)
        victim, survivor = list(cluster.jobs.values())
        subprocess.run([self.cancel_command, victim.job_id], check=True, capture_output=True)
        wait_until(lambda: victim.state in TERMINAL, 20, "the cancelled job should end")
        assert victim.state is self.cancelled_state
        wait_until(lambda: not victim.workers and len(cluster.workers) == 1, 20,
                   "the cancelled job's worker should leave")
        assert survivor.state is JobState.RUNNING and len(survivor.workers) == 1
        with Client(cluster) as client:
            assert client.gather(client.map(inc, range(100))) == list(range(1, 101))
        if self.cancelled_state is JobState.CANCELLED:
            # the user's decision: not replaced, the cluster keeps one job
            assert "1 running" in repr(cluster) and len(cluster.jobs) == 2
        else:
            # the batch system cannot say it was cancelled (it looks finished): replaced
            wait_until(lambda: len(cluster.live_jobs()) == 2, 20, "a replacement")

    @pytest.mark.parametrize("how", ["exit", "interrupt"])
    def test_exit_and_ctrl_c_cancel_the_jobs(self, service, tmp_path, how):
        proc = subprocess.Popen([sys.executable, "-c", USER_SCRIPT, self.cluster_cls.__name__,
                                 str(tmp_path), how], stdout=subprocess.PIPE, text=True)
        try:
            ids = proc.stdout.readline().split()
            assert len(ids) == 2, "the script should print its two job ids"
            if how == "interrupt":
                assert len(still_queued(self.cluster_cls, ids)) == 2
                proc.send_signal(signal.SIGINT)
            proc.wait(60)
        finally:
            proc.kill()
        wait_until(lambda: not still_queued(self.cluster_cls, ids), 20,
                   f"{how}: the jobs {ids} should have been cancelled")

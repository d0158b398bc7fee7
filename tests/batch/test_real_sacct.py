"""A SLURM job that left squeue is reported with its real end state and exit code, from sacct,
on the real SLURM of ci/slurm (accounting by slurmdbd, MinJobAge 10 s: what a site's cluster
sees 5 to 10 minutes after a job ended)."""
import re
import subprocess

import pytest

from _realsystem import slurm_running, wait_until
from conftest import needs_service
from jobqueue import SLURMCluster
from jobqueue.batch.status import JobState

pytestmark = pytest.mark.slurm

MAX_MIN_JOB_AGE = 60      # seconds a test may wait for a job to leave squeue


def slurm_config(key: str) -> str:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                         timeout=30).stdout
    match = re.search(rf"^{key}\s*=\s*(.*)$", out, re.M)
    return match.group(1).strip() if match else ""


@pytest.fixture(scope="module")
def accounting():
    needs_service(slurm_running(), "SLURM (ci/slurm/start.sh)")
    needs_service(slurm_config("AccountingStorageType") == "accounting_storage/slurmdbd",
                  "SLURM accounting by slurmdbd (ci/slurm/start.sh)")
    age = int((slurm_config("MinJobAge").split() or ["0"])[0])
    needs_service(age <= MAX_MIN_JOB_AGE, f"SLURM with MinJobAge <= {MAX_MIN_JOB_AGE} s "
                  f"(this one keeps ended jobs in squeue for {age} s; ci/slurm/start.sh sets 10)")


def test_job_that_left_squeue_is_reported_from_sacct(accounting, tmp_path):
    """The cluster does not look while its job ends (its poller is stopped, as when the
    login-node process was suspended) and until squeue has forgotten the job; its next polls
    find the job gone from squeue and ask sacct."""
    with SLURMCluster(cores=1, memory="500MB", walltime="00:05:00", poll_interval=0.5,
                      log_directory=str(tmp_path / "logs"),
                      job_script_prologue=["exit 3"]) as cluster:

        async def stop_polling():
            cluster._poller.cancel()

        cluster._sync(stop_polling())
        cluster.scale(jobs=1)
        (job,) = cluster.jobs.values()
        squeue = ["squeue", "-h", "-t", "all", "-j", job.job_id, "-o", "%T"]

        def listed() -> str:
            return subprocess.run(squeue, capture_output=True, text=True, timeout=30).stdout

        wait_until(lambda: listed().strip() == "FAILED", 60, "the job should end")
        wait_until(lambda: listed().strip() == "", MAX_MIN_JOB_AGE + 120,
                   "the ended job should leave squeue")
        assert job.state is JobState.PENDING            # the cluster has not looked yet
        cluster._sync(cluster._poll_step())             # not listed: maybe a race
        assert not job.done
        cluster._sync(cluster._poll_step())             # still not listed: ask sacct
        assert (job.state, job.reason) == (JobState.FAILED, "exit code 3 (sacct)")
        assert job.done and not job.gone and job.reported
        assert cluster.runner.calls["sacct"] == 1

"""On the real SLURM of ci/slurm: SIGTERM and SIGHUP to the process that owns a cluster clean up
like Ctrl-C, and a token in the user's environment never reaches a job's submitted environment
(sbatch exports the whole environment by default; slurmctld keeps it where admins read it)."""
import os
import signal
import subprocess
import sys

import pytest

from _realsystem import still_queued, slurm_running, wait_until
from conftest import needs_service
from jobqueue import SLURMCluster

pytestmark = pytest.mark.slurm

# The user's program: a cluster with two jobs, then a long computation (or a hang).
SCRIPT = """
import sys, time
from jobqueue import SLURMCluster
cluster = SLURMCluster(cores=1, memory="500MB", log_directory=sys.argv[1], poll_interval=0.5)
cluster.scale(jobs=2)
print(cluster.token_file, *cluster.jobs, flush=True)
time.sleep(600)
"""
OUTER_TOKEN = "outer-token-from-the-users-environment"


@pytest.fixture(scope="module")
def state_directory():
    needs_service(slurm_running(), "SLURM (ci/slurm/start.sh)")
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    for line in out.splitlines():
        if line.startswith("StateSaveLocation"):
            return line.split("=", 1)[1].strip()
    pytest.fail("scontrol show config names no StateSaveLocation")


def submitted_environment(state_directory: str, job_id: str) -> str:
    """What slurmctld stored as the job's environment (an array's, for one of its tasks)."""
    base = int(job_id.split("_")[0])
    path = os.path.join(state_directory, f"hash.{base % 10}", f"job.{base}", "environment")
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_cancels_the_jobs_and_removes_the_token_file(state_directory, tmp_path, sig):
    env = dict(os.environ, JOBQUEUE_TOKEN=OUTER_TOKEN)
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ids = []
    try:
        token_file, *ids = proc.stdout.readline().split()
        assert len(ids) == 2, f"the script should print its job ids: {proc.stderr.read()}"
        assert os.path.exists(token_file) and still_queued(SLURMCluster, ids) == sorted(ids)
        stored = submitted_environment(state_directory, ids[0])
        assert "PATH=" in stored                         # sbatch did export the environment
        assert OUTER_TOKEN not in stored and "JOBQUEUE_TOKEN" not in stored
        assert open(token_file).read() not in stored
        proc.send_signal(sig)
        assert proc.wait(60) == 128 + sig, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        if proc.returncode == -signal.SIGKILL and ids:    # the test failed: clean up after it
            subprocess.run(["scancel", *ids], capture_output=True, timeout=30)
    wait_until(lambda: not still_queued(SLURMCluster, ids), 20,
               f"{signal.Signals(sig).name}: the jobs {ids} should have been cancelled")
    assert not os.path.exists(token_file)

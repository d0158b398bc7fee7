"""SGECluster against the real Grid Engine that ci/sge/start.sh runs."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _realsystem import RealSystemTests, still_queued, wait_until
from conftest import needs_service
from jobqueue import SGECluster

pytestmark = pytest.mark.sge

PBS_BIN = str(Path(__file__).resolve().parents[2] / "ci" / "state" / "pbs" / "bin")


def grid_engine_running() -> bool:
    qstat = shutil.which("qstat")
    if not qstat or os.path.dirname(qstat) == PBS_BIN:
        return False
    out = subprocess.run(["qstat", "-f"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and "all.q@" in out.stdout


@pytest.fixture(scope="module")
def service():
    needs_service(grid_engine_running(), "Grid Engine (ci/sge/start.sh)")


class TestSGE(RealSystemTests):
    cluster_cls = SGECluster
    cancel_command = "qdel"
    bad_queue = "nosuch.q"
    bad_queue_says = 'job requests unknown queue "nosuch.q"'
    never_says = 'cannot run in PE "smp"'

    def test_job_that_can_never_start_is_reported_and_cancelled(self, make, caplog):
        self.check_never_starts(make, caplog)

    def test_submit_of_a_job_that_can_never_start_exits_1_and_leaves_no_job(self, tmp_path):
        script = tmp_path / "s.py"
        script.write_text("from jobqueue import Client\nprint(Client().submit(sum, [1, 2]).result())\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
        env["HOME"] = str(tmp_path)
        out = subprocess.run([sys.executable, "-m", "jobqueue", "submit", "--cluster", "sge",
                              "--cores", "16", "--memory", "1GB", "--poll-interval", "0.5",
                              "--log-directory", str(tmp_path / "logs"), str(script)],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
        assert out.returncode == 1, out.stderr
        # the id from the warning: "submitted 1 job (ID)" is not printed when the job was
        # already found to be hopeless and removed before the driver announced its jobs
        found = re.search(r"job (\d+) can never start as submitted: ", out.stderr)
        assert found, out.stderr
        job_id = found.group(1)
        assert f"job {job_id} can never start as submitted: {self.never_says}" in out.stderr
        assert re.search(rf"{job_id}: failed \(cannot start as submitted", out.stderr), out.stderr
        wait_until(lambda: not still_queued(SGECluster, [job_id]), 30,
                   f"the job {job_id} should have been cancelled")

    def test_unwritable_log_directory_is_reported_and_removed(self, make, tmp_path):
        # Grid Engine leaves such a job in the error state Eqw forever: the cluster says why
        # and cancels it.
        cluster = make()
        cluster.log_directory = str(tmp_path / "missing")
        cluster.scale(jobs=1)
        job = list(cluster.jobs.values())[0]
        with pytest.raises(RuntimeError, match=r"can't open output file"):
            cluster.wait_for_workers(1, timeout=60)
        assert job.state == "failed" and job.cancel_requested

"""SGECluster against the real Grid Engine that ci/sge/start.sh runs."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from _realsystem import RealSystemTests
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

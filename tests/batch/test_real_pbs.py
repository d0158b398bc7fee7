"""PBSCluster against SLURM's Torque-compatible qsub/qstat/qdel (ci/pbs/start.sh), not OpenPBS.

Through those commands a job that ended shows state C with no exit status, so a job cancelled
from outside is seen as finished, and job arrays are not used.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from _realsystem import RealSystemTests
from conftest import needs_service
from jobqueue import PBSCluster
from jobqueue.batch.status import JobState

pytestmark = pytest.mark.pbs

PBS_BIN = Path(__file__).resolve().parents[2] / "ci" / "state" / "pbs" / "bin"


def wrappers_work() -> bool:
    if not (PBS_BIN / "qsub").exists() or not shutil.which("sbatch"):
        return False
    out = subprocess.run([str(PBS_BIN / "pbsnodes"), "-a"], capture_output=True, text=True,
                         timeout=30)
    return out.returncode == 0


@pytest.fixture(scope="module")
def available():
    needs_service(wrappers_work(), "the PBS-compatible commands (ci/pbs/start.sh)")


@pytest.fixture
def service(available, monkeypatch):
    # The wrappers come first on PATH, before Grid Engine's qsub, as ci/state/pbs/env.sh does.
    monkeypatch.setenv("PATH", f"{PBS_BIN}:{os.environ['PATH']}")


class TestPBS(RealSystemTests):
    cluster_cls = PBSCluster
    cancel_command = "qdel"
    bad_queue = "nosuch"
    bad_queue_says = "invalid partition specified: nosuch"
    arrays = False
    cancelled_state = JobState.FINISHED

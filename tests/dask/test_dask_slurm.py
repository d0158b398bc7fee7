"""A dask.array reduction computed on workers in real SLURM batch jobs (ci/slurm/start.sh)."""
import os
import sys

import numpy as np
import pytest

dask = pytest.importorskip("dask")
import dask.array as da  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "batch"))
from _realsystem import slurm_running  # noqa: E402
from conftest import needs_service  # noqa: E402
from jobqueue import Client, SLURMCluster  # noqa: E402

pytestmark = pytest.mark.slurm


def test_dask_array_reduction_on_slurm_workers(tmp_path):
    needs_service(slurm_running(), "SLURM (ci/slurm/start.sh)")
    with SLURMCluster(cores=1, memory="1GB", walltime="00:10:00", poll_interval=0.5,
                      log_directory=str(tmp_path / "logs")) as cluster:
        cluster.scale(jobs=2)
        cluster.wait_for_workers(2, timeout=120)
        with Client(cluster) as client:
            pids = set(client.run(os.getpid).values())
            x = da.random.RandomState(0).random_sample((2000, 2000), chunks=500)
            where = x.map_blocks(lambda b: np.full(b.shape, os.getpid()), dtype=int)
            total, ran_on = dask.compute((x + x.T).mean(axis=1).sum(), np.unique(where))
            expected = (x + x.T).mean(axis=1).sum().compute(scheduler="sync")
            np.testing.assert_allclose(total, expected)
            assert set(ran_on) == pids and os.getpid() not in pids   # both batch workers

"""A persisted collection survives a worker SIGKILL: lost chunks are recomputed from lineage."""
import os
import signal

import numpy as np
import pytest

dask = pytest.importorskip("dask")
import dask.array as da  # noqa: E402

from jobqueue import Client, LocalCluster, futures_of, wait  # noqa: E402


def test_persisted_array_survives_worker_sigkill():
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        x = da.random.RandomState(42).random_sample((400, 400), chunks=100)
        y = (x + 1).rechunk((200, 50)) * 2       # lineage of several layers
        expected = y.sum(axis=0).compute(scheduler="sync")
        yp = client.persist(y)
        fs = futures_of(yp)
        wait(fs)
        who_has = client._sync(client._request({"op": "who-has",
                                                "keys": [f.key for f in fs]}))
        holders = {w for ws in who_has.values() for w in ws}
        assert len(holders) == 2, holders           # chunks on both workers
        victim = sorted(holders)[0]
        lost = [k for k, ws in who_has.items() if ws == [victim]]
        assert lost
        pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        # the persisted chunks the victim held are recomputed; the result is still right
        np.testing.assert_allclose(yp.sum(axis=0).compute(), expected)
        np.testing.assert_allclose(yp.compute(), y.compute(scheduler="sync"))
        assert all(f.status == "finished" for f in fs)
        logs = "\n".join(cluster.get_logs().values())
        assert "killed by signal 9; restarting it" in logs

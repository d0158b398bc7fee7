"""A reduction over an array 3x the cluster's memory limit streams through it, on jobqueue as on
dask.distributed (same array, same limits, side by side): no worker is killed for memory."""
import os
import threading

import numpy as np
import psutil
import pytest

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")  # the test extra installs it
import dask.array as da  # noqa: E402

LIMIT = 400_000_000          # per worker (400 MB); 2 workers
N, CHUNK = 17_500, 1_250     # 8 * N**2 = 2.45 GB: 3x the 800 MB the cluster may hold


def reduction():
    x = da.random.RandomState(0).random_sample((N, N), chunks=CHUNK)
    assert x.nbytes >= 3 * 2 * LIMIT
    return (x + x.T).mean()


class PeakRSS(threading.Thread):
    """Highest RSS seen of each worker process while the computation runs."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.procs = {pid: psutil.Process(pid) for pid in pids}
        self.peak = dict.fromkeys(pids, 0)
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.05):
            for pid, p in self.procs.items():
                try:
                    self.peak[pid] = max(self.peak[pid], p.memory_info().rss)
                except psutil.Error:
                    pass

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()


def run(client):
    pids = client.run(os.getpid)
    with PeakRSS(pids.values()) as peak:
        result = reduction().compute()
    return result, pids, client.run(os.getpid), max(peak.peak.values())


def test_reduction_over_three_times_cluster_memory_streams():
    from jobqueue import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=LIMIT,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        ours, before, after, our_peak = run(client)
        logs = "\n".join(cluster.get_logs().values())
    assert before == after, "a worker was restarted"
    assert "exceeded its memory limit" not in logs
    assert our_peak < 0.95 * LIMIT

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=LIMIT,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        theirs, before, after, their_peak = run(client)
    assert before == after, "dask.distributed restarted a worker: the baseline failed"
    np.testing.assert_allclose(ours, theirs)
    print(f"peak worker RSS: jobqueue {our_peak / 2**20:.0f} MB, dask.distributed "
          f"{their_peak / 2**20:.0f} MB, limit {LIMIT / 2**20:.0f} MB")

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


def dask_baseline(attempts=3):
    """dask.distributed's LocalCluster with the same limits. Its nanny sometimes fails to start
    on a loaded 2-core machine (a timeout, then an AssertionError in its own clean-up): that is
    the baseline failing, not what this test checks, so it gets another try."""
    for attempt in range(attempts):
        try:
            return distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                            memory_limit=LIMIT, dashboard_address=None)
        except (RuntimeError, OSError, TimeoutError) as e:
            if attempt == attempts - 1:
                raise
            print(f"dask.distributed's LocalCluster failed to start ({e}); trying again")


def test_reduction_over_three_times_cluster_memory_streams():
    from jobqueue import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit=LIMIT,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        ours, before, after, our_peak = run(client)
        logs = "\n".join(cluster.get_logs().values())
    # What the issue asks: no worker killed for memory (the nanny's restart at 0.95 of the
    # limit, which it logs), and no worker lost at all. The sampled peak RSS is reported, not
    # asserted: a sample above a threshold that the nanny, sampling on its own clock, did not
    # act on is not a worker killed.
    peaks = (f"peak worker RSS {our_peak / 2**20:.0f} MB, limit {LIMIT / 2**20:.0f} MB; "
             f"worker logs:\n{logs[-4000:]}")
    assert "exceeded its memory limit" not in logs, f"a worker was killed for memory: {peaks}"
    assert before == after, f"a worker was restarted or lost ({before} -> {after}): {peaks}"

    with dask_baseline() as cluster, distributed.Client(cluster) as client:
        theirs, before, after, their_peak = run(client)
    np.testing.assert_allclose(ours, theirs)
    print(f"peak worker RSS: jobqueue {our_peak / 2**20:.0f} MB, dask.distributed "
          f"{their_peak / 2**20:.0f} MB (workers {'kept' if before == after else 'restarted'}), "
          f"limit {LIMIT / 2**20:.0f} MB")

"""dask collection workloads for benchmarks/runner.py: the same dask code on either system.

Imported by runner.py only for these workloads (dask is heavy; the other rows must not pay for
it). Each function gets the runner's System and a quick flag and returns its figures.
With a jobqueue Client open, dask.compute runs on jobqueue (the client is dask's default
scheduler), exactly as it runs on dask.distributed with a distributed Client open.
"""
from __future__ import annotations

import os
import threading
import time

import psutil

runner = None  # runner.py's module (its __main__), set by runner.py before a workload runs


def log(msg):
    runner.log(msg)


def make_frame(i, rows=10_000):
    """Partition *i* of the groupby frame: 100 keys, seeded so every system sees the same."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(i)
    return pd.DataFrame({"key": rng.integers(0, 100, rows), "value": rng.random(rows)})


class PeakClusterRSS(threading.Thread):
    """The highest sum of the worker processes' RSS seen while the computation runs."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.procs = [psutil.Process(p) for p in pids]
        self.peak = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.02):
            total = 0
            for p in self.procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.join()


def _best(system, make, check, reps, what, memory=False):
    """Compute ``make()`` *reps* times on a fresh cluster: the best time (and peak RSS)."""
    import dask

    Session, quiesce, worker_addresses = runner.Session, runner.quiesce, runner.worker_addresses

    times, peaks = [], []
    with Session(system) as client:
        worker_addresses(client)
        pids = list(client.run(os.getpid).values())
        dask.compute(make(small=True))  # warm-up: imports on the workers
        quiesce(system, client)
        for i in range(reps):
            coll = make()
            with PeakClusterRSS(pids) as peak:
                t0 = time.perf_counter()
                (result,) = dask.compute(coll)
                dt = time.perf_counter() - t0
            check(result)
            del coll, result
            times.append(dt)
            peaks.append(peak.peak)
            log(f"{what} {i + 1}/{reps}: {dt:.3f} s, peak cluster RSS {peak.peak / 2**20:.0f} MB")
            quiesce(system, client)
    best = min(range(reps), key=times.__getitem__)
    out = {"seconds": times[best], "all_s": times}
    if memory:
        out["peak_mb"] = peaks[best] / 2**20
        out["all_peak_mb"] = [p / 2**20 for p in peaks]
    return out


def w_dask_array(system, quick):
    """``da.random.random(20_000_000, chunks=1_000).mean()``: 20,000 chunks, one run."""
    import dask.array as da

    n = 2_000_000 if quick else 20_000_000

    def make(small=False):
        return da.random.random(20_000 if small else n, chunks=1_000).mean()

    def check(r):
        assert abs(r - 0.5) < 0.01, r

    out = _best(system, make, check, 1, "array mean")  # one: dask takes minutes for it
    out["chunks"] = n // 1_000
    return out


def w_dask_groupby(system, quick):
    """A groupby-mean over 200 partitions of 10,000 rows made on the workers."""
    import dask.dataframe as dd

    parts = 20 if quick else 200

    def make(small=False):
        df = dd.from_map(make_frame, range(2 if small else parts))
        return df.groupby("key").value.mean()

    def check(r):
        assert len(r) == 100 and abs(r.mean() - 0.5) < 0.01, r

    out = _best(system, make, check, 1 if quick else 3, "groupby")
    out["partitions"] = parts
    return out


def w_dask_xxt(system, quick):
    """``(x + x.T).mean(axis=1)`` on 10,000 x 10,000 in 1,000 x 1,000 chunks (800 MB): data
    moves between workers; the peak of the workers' summed RSS is recorded."""
    import dask.array as da

    n = 4_000 if quick else 10_000

    def make(small=False):
        x = da.random.random((2_000 if small else n,) * 2, chunks=1_000)
        return (x + x.T).mean(axis=1)

    def check(r):
        assert r.shape == (n,) and abs(r.mean() - 1.0) < 0.01, r.mean()

    out = _best(system, make, check, 1 if quick else 3, "x + x.T", memory=True)
    out["n"] = n
    return out


FUNCS = {"dask-array": w_dask_array, "dask-groupby": w_dask_groupby, "dask-xxt": w_dask_xxt}

"""LocalCluster: workers on this machine, started the way batch jobs start them."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile

from .cluster import _FROM_CONFIG, Cluster, Job


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _total_memory() -> int:
    import psutil

    return psutil.virtual_memory().total


class ProcessJob(Job):
    """`jobqueue worker ...` as a local subprocess: the same command a batch job runs."""

    def __init__(self, cluster, name):
        super().__init__(cluster, name)
        self.proc = None
        self.log_path = os.path.join(cluster.local_directory, f"{name}.log")

    def command(self) -> list:
        c = self.cluster
        return [sys.executable, "-m", "jobqueue", "worker", c.scheduler_address,
                "--nthreads", str(c.threads_per_worker), "--nworkers", "1",
                "--memory-limit", str(c.memory_limit), "--name", self.name,
                "--death-timeout", str(c.death_timeout)]

    async def start(self):
        # What the client can import, its workers on the same machine can import too.
        path = os.pathsep.join([p for p in sys.path if p] + [os.environ.get("PYTHONPATH", "")])
        env = dict(os.environ, JOBQUEUE_TOKEN=self.cluster.token, PYTHONPATH=path.strip(os.pathsep),
                   **self.cluster.scheduler.security.env())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env,
                                         start_new_session=True)
        self.state = "running"

    def problem(self):
        if self.proc is not None and self.proc.poll() is not None:
            return f"exited with code {self.proc.returncode}; log:\n{self.logs()[-2000:]}"
        return None

    async def close(self, timeout=5.0):
        if self.proc is None or self.proc.poll() is not None:
            return
        scheduler = self.cluster.scheduler
        ws = scheduler.state.names.get(self.name)
        bs = scheduler.worker_streams.get(ws.address) if ws else None
        if bs is not None:
            bs.send({"op": "close", "reason": "cluster scaled down or closed"})
        else:
            self.proc.terminate()
        for _ in range(int(timeout / 0.02)):
            if self.proc.poll() is not None:
                return
            await asyncio.sleep(0.02)
        self.proc.terminate()
        await asyncio.sleep(1.0)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def logs(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def info(self) -> dict:
        row = super().info()
        if self.proc is not None:
            row["id"] = str(self.proc.pid)
            code = self.proc.poll()
            if code is not None and self.state not in ("closing", "closed"):
                row["state"], row["reason"] = "failed", f"exited with code {code}"
        return row


class ThreadJob(Job):
    """A worker inside this process, on the cluster's event loop (``processes=False``)."""

    def __init__(self, cluster, name):
        super().__init__(cluster, name)
        self.worker = None

    async def start(self):
        from ..core.worker import Worker

        c = self.cluster
        self.worker = Worker(c.scheduler_address, token=c.token, nthreads=c.threads_per_worker,
                             name=self.name, memory_limit=0, host="127.0.0.1")
        await self.worker.start()
        self.state = "running"

    async def close(self):
        if self.worker is not None:
            await self.worker.close()

    def logs(self) -> str:
        return ""


class LocalCluster(Cluster):
    """Workers on this machine.

    With no arguments it detects the cores and memory and starts workers to fill them:
    one single-threaded worker process per core up to 4, then more threads per worker.
    """

    kind = "local"

    def __init__(self, n_workers=None, threads_per_worker=None, processes=True,
                 memory_limit="auto", scheduler_port=0, dashboard_address=_FROM_CONFIG,
                 host="127.0.0.1", death_timeout=60.0, local_directory=None, **kwargs):
        from ..config import parse_bytes

        cores = _cpu_count()
        if n_workers is None and threads_per_worker is None:
            n_workers = min(cores, 4) if processes else 1
            threads_per_worker = max(1, cores // n_workers)
        elif n_workers is None:
            n_workers = max(1, cores // threads_per_worker)
        elif threads_per_worker is None:
            threads_per_worker = max(1, cores // max(n_workers, 1))
        self.threads_per_worker = self.threads_per_job = int(threads_per_worker)
        self.processes = processes
        if memory_limit in ("auto", None):
            memory_limit = _total_memory() // max(n_workers, 1)
        elif memory_limit in (0, "0"):
            memory_limit = 0
        else:
            memory_limit = parse_bytes(memory_limit)
        self.memory_limit = int(memory_limit)
        self.death_timeout = death_timeout
        self.dashboard_address = dashboard_address
        self.local_directory = local_directory or tempfile.mkdtemp(prefix="jobqueue-local-")
        self._closed_jobs = []
        super().__init__(host=host, scheduler_port=scheduler_port,
                         dashboard_address=dashboard_address, **kwargs)
        try:
            self.scale(n_workers)
        except BaseException:
            self.close()
            raise

    def new_job(self, name) -> Job:
        return ProcessJob(self, name) if self.processes else ThreadJob(self, name)

    async def _close_job(self, job):
        await super()._close_job(job)
        self._closed_jobs.append(job)

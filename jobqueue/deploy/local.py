"""LocalCluster: workers on this machine, started the way batch jobs start them."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile

from .. import params
from ..node import WorkerCommand, cpu_count
from .cluster import _FROM_CONFIG, Cluster, Job, remove_tree

KEPT_LOG = 1 << 20      # the tail of a closed worker's log kept once its file is removed


def _total_memory() -> int:
    import psutil

    return psutil.virtual_memory().total


class ProcessJob(Job):
    """`jobqueue worker ...` as a local subprocess: the same command a batch job runs."""

    cluster: LocalCluster

    def __init__(self, cluster, name):
        super().__init__(cluster, name)
        self.proc = None
        self.log_path = os.path.join(cluster.local_directory, f"{name}.log")
        self.kept_log: str | None = None

    def command(self) -> list:
        c = self.cluster
        return WorkerCommand(c.scheduler_address, nthreads=c.threads_per_worker, nworkers=1,
                             memory_limit=c.memory_limit, name=self.name,
                             death_timeout=c.death_timeout, interface=c.interface,
                             resources=c.worker_resources or None).argv()

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
        asked = await self.cluster.scheduler.close_workers([self.name],
                                                           "cluster scaled down or closed")
        if not asked:
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
        if self.kept_log is not None:
            return self.kept_log
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def keep_log(self) -> None:
        """Keep the log's tail in memory: its file is about to be removed."""
        self.kept_log = self.logs()[-KEPT_LOG:]

    def info(self, connected=None) -> dict:
        row = super().info(connected)
        if self.proc is not None:
            row["id"] = str(self.proc.pid)
            code = self.proc.poll()
            if code is not None and self.state not in ("closing", "closed"):
                row["state"], row["reason"] = "failed", f"exited with code {code}"
        return row


class ThreadJob(Job):
    """A worker inside this process, on the cluster's event loop (``processes=False``)."""

    cluster: LocalCluster

    def __init__(self, cluster, name):
        super().__init__(cluster, name)
        self.worker = None

    async def start(self):
        from ..core.worker import Worker
        from ..node import interface_address

        c = self.cluster
        host = interface_address(c.interface) if c.interface else "127.0.0.1"
        self.worker = Worker(c.scheduler_address, token=c.token, nthreads=c.threads_per_worker,
                             name=self.name, memory_limit=0, host=host,
                             security=c.scheduler.security, resources=c.worker_resources)
        await self.worker.start()
        self.state = "running"

    async def close(self):
        if self.worker is not None:
            await self.worker.close()

    def logs(self) -> str:
        return ""


@params.document("local", "scheduler", "worker")
class LocalCluster(Cluster):
    """Workers on this machine, each a ``jobqueue worker`` process as a batch job runs it.

    Arguments left at None come from the ``local`` config section (``profile=`` applies a named
    set of overrides first). With none there either, it detects the cores and memory and
    starts workers to fill them: one single-threaded worker process per core up to 4, then
    more threads per worker. ``resources={"GPU": 1}``: abstract resources each worker
    declares, as in dask (tasks submitted with ``resources=`` run only where they are).

    Parameters
    ----------
    local_directory : str, optional
        Directory for the workers' log files (default: a temporary directory, removed when
        the cluster closes).

    Examples
    --------
    >>> cluster = LocalCluster(n_workers=4, threads_per_worker=1, memory_limit="2GB")
    >>> client = Client(cluster)
    >>> Client()            # with no scheduler configured: a LocalCluster sized to the machine
    >>> LocalCluster(n_workers=2, resources={"GPU": 1})
    """

    kind = "local"

    def __init__(self, n_workers: int | None = None, threads_per_worker: int | None = None,
                 processes: bool | None = None, memory_limit: int | str | None = None,
                 scheduler_port: int = 0, dashboard_address=_FROM_CONFIG,
                 host: str | None = None, death_timeout: float | None = None,
                 local_directory: str | None = None, resources: dict | None = None,
                 profile: str | None = None, interface: str | None = None,
                 scheduler_options: dict | None = None, asynchronous: bool = False, *,
                 name: str | None = None, token: str | None = None,
                 allowed_failures: int | None = None, worker_ttl: float | None = None,
                 idle_timeout: float | None = None, scheduler_file: str | None = None):
        from ..config import get, parse_bytes, resolve

        s = resolve("local", {"n_workers": n_workers, "threads_per_worker": threads_per_worker,
                              "processes": processes, "memory_limit": memory_limit,
                              "resources": resources, "interface": interface,
                              "scheduler_options": scheduler_options}, profile)
        if scheduler_options is not None:       # replaces the config's, as in dask-jobqueue
            s["scheduler_options"] = dict(scheduler_options)
        resources = s.get("resources")
        n_workers, threads_per_worker = s["n_workers"], s["threads_per_worker"]
        processes, memory_limit = s["processes"], s["memory_limit"]
        cores = cpu_count()
        if n_workers is None and threads_per_worker is None:
            n_workers = min(cores, 4) if processes else 1
            threads_per_worker = max(1, cores // n_workers)
        elif n_workers is None:
            n_workers = max(1, cores // threads_per_worker)
        elif threads_per_worker is None:
            threads_per_worker = max(1, cores // max(n_workers, 1))
        self.threads_per_worker = self.threads_per_job = int(threads_per_worker)
        if resources:
            from ..core.placement import check_resources

            self.worker_resources = check_resources(resources, "LocalCluster(resources=...)")
        self.processes = processes
        if memory_limit in ("auto", None):
            memory_limit = _total_memory() // max(n_workers, 1)
        elif memory_limit in (0, "0"):
            memory_limit = 0
        else:
            memory_limit = parse_bytes(memory_limit)
        self.memory_limit = int(memory_limit)
        self.death_timeout = death_timeout or get("worker.death-timeout")
        self.dashboard_address = dashboard_address
        self.interface = s.get("interface")
        self._n_workers = n_workers
        self._temporary = None if local_directory else tempfile.mkdtemp(prefix="jobqueue-local-")
        self.local_directory: str = local_directory or self._temporary or ""
        self._closed_jobs: list = []
        if host is not None and (s["scheduler_options"] or {}).get("host") is not None:
            raise ValueError("LocalCluster: give host= or scheduler_options={'host': ...}, "
                             "not both")
        try:
            super().__init__(host=host or "127.0.0.1", scheduler_port=scheduler_port,
                             dashboard_address=dashboard_address, interface=self.interface,
                             scheduler_options=s["scheduler_options"], asynchronous=asynchronous,
                             name=name, token=token, allowed_failures=allowed_failures,
                             worker_ttl=worker_ttl, idle_timeout=idle_timeout,
                             scheduler_file=scheduler_file)
        except BaseException:
            remove_tree(self._temporary)
            raise

    async def _start(self) -> None:
        await super()._start()
        await self._scale_to(self._n_workers, wait=True)

    def new_job(self, name) -> Job:
        """A worker process (or, with ``processes=False``, a worker thread).

        Parameters
        ----------
        name : str
            The worker's name, unique in the cluster.
        """
        return ProcessJob(self, name) if self.processes else ThreadJob(self, name)

    async def _close_job(self, job):
        await super()._close_job(job)
        self._closed_jobs.append(job)

    def _remove_temporary(self) -> None:
        if self._temporary:
            for job in self._closed_jobs:
                if isinstance(job, ProcessJob):
                    job.keep_log()
            remove_tree(self._temporary)

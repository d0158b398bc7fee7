"""KubeCluster: workers as pods on Kubernetes, scaled, adapted and watched like batch jobs.

The scheduler runs in this process (a login node, a Jupyter pod); every worker is a pod rendered
from a jinja2 pod template (``templates/kubernetes-pod.yaml.j2``, or the site's
``kubernetes.template``) and connects back. The cluster's token is in a Secret that the pods mount
read-only: it is never in a pod spec, an environment given in the spec or a command line.

One list call per poll (a label selector) gives the state of every pod of the cluster, read as job
states with Kubernetes' own reasons (``Unschedulable: 0/1 nodes are available: 1 Insufficient
cpu.``, ``ErrImagePull``, ``Evicted``, ``OOMKilled, exit code 137``). ``close()``, the end of the
process, Ctrl-C and SIGTERM delete every pod and Secret the cluster made.

The API client is kr8s (``pip install 'jobqueue[kubernetes]'``), imported when a cluster starts.
The pure parts (quantities, pod states, settings, the pod template) are in ``pods.py``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import deque

from .. import config, params
from ..node import parse_worker_options
from .cluster import Cluster, Job
from .pods import (LABEL_CLUSTER, LABEL_WORKER, MANAGED_BY, NAME, PodStatus, containers_stopped,
                   pod_context,
                   pod_resources, pod_status, render_pod, resolve_settings, secret_manifest,
                   selector, worker_threads)

logger = logging.getLogger("jobqueue.kubernetes")

LOG_TAIL_LINES = 20
MAX_BACKOFF = 30.0          # longest pause between polls while they fail
DELETE_WAIT = 30.0          # seconds close() waits for the pods to be gone


class KubernetesError(RuntimeError):
    """A Kubernetes API call failed: says which call, in which namespace, and what the API said.
    ``status`` is the HTTP status, if the API answered."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------ the API (I/O)


class KubeAPI:
    """The few calls a KubeCluster makes, over kr8s; each failure becomes a KubernetesError."""

    def __init__(self, api, namespace: str):
        self.api, self.namespace = api, namespace

    @classmethod
    async def connect(cls, namespace=None, context=None) -> "KubeAPI":
        try:
            import kr8s.asyncio
        except ImportError:
            raise ImportError("KubeCluster needs the kr8s package: pip install "
                              "'jobqueue[kubernetes]'") from None
        import warnings

        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                api = await kr8s.asyncio.api(context=context)
        except Exception as e:
            where = os.environ.get("KUBECONFIG", "~/.kube/config")
            raise KubernetesError(f"cannot reach Kubernetes (kubeconfig {where}"
                                  f"{f', context {context}' if context else ''}): "
                                  f"{type(e).__name__}: {e}") from None
        for w in caught:
            logger.debug("kr8s: %s", w.message)      # e.g. its list of tested server versions
        httpx_log = logging.getLogger("httpx")          # one INFO line per request: every poll
        if httpx_log.level == logging.NOTSET:
            httpx_log.setLevel(logging.WARNING)
        return cls(api, namespace or api.namespace or "default")

    async def call(self, method: str, what: str, json_body=None, params=None, version="v1"):
        """One request; returns the decoded JSON (or text for logs)."""
        import httpx

        try:
            async with self.api.call_api(method, version=version, namespace=self.namespace,
                                         url=what, json=json_body, params=params) as response:
                if response.headers.get("content-type", "").startswith("application/json"):
                    return response.json()
                return response.text
        except Exception as e:
            status = getattr(e, "status", None)
            detail = status.get("message") if isinstance(status, dict) else None
            code = getattr(getattr(e, "response", None), "status_code", None)
            if isinstance(e, httpx.HTTPError) or code is None:
                detail = detail or f"{type(e).__name__}: {e}"
            raise KubernetesError(f"{method} {what} in namespace {self.namespace} failed"
                                  f"{f' (HTTP {code})' if code else ''}: {detail or e}",
                                  code) from None

    async def list_pods(self, label_selector: str) -> list:
        return (await self.call("GET", "pods", params={"labelSelector": label_selector}))["items"]

    async def create(self, plural: str, body: dict) -> dict:
        return await self.call("POST", plural, json_body=body)

    async def delete_collection(self, plural: str, label_selector: str, grace=None):
        params = {"labelSelector": label_selector}
        if grace is not None:
            params["gracePeriodSeconds"] = str(grace)
        return await self.call("DELETE", plural, params=params)

    async def delete(self, plural: str, name: str):
        try:
            return await self.call("DELETE", f"{plural}/{name}")
        except KubernetesError as e:
            if e.status != 404:
                raise

    async def aclose(self):
        """Close the HTTP session (kr8s opens it again if another cluster calls)."""
        session = getattr(self.api, "_session", None)
        if session is not None:
            await session.aclose()

    async def logs(self, pod: str, tail_lines=None) -> str:
        params = {"container": "worker"}
        if tail_lines:
            params["tailLines"] = str(tail_lines)
        try:
            return await self.call("GET", f"pods/{pod}/log", params=params)
        except KubernetesError as e:
            return f"(no logs: {e})"

# ------------------------------------------------------------------------------ pods as jobs


class PodJob(Job):
    """One worker pod: its state and reason as the last poll saw them, its workers, its log."""

    def __init__(self, cluster, name: str):
        super().__init__(cluster, name)
        self.job_id = name
        self.order = cluster._job_counter
        self.state, self.reason, self.native = "pending", "creating", ""
        self.exit_code: int | None = None
        self.stuck = False
        self.stale = False
        self.created_at: float | None = None     # monotonic time the API confirmed the pod
        self.delete_requested = False
        self.workers: set = set()
        self.ever_connected: set = set()
        self.log_text = ""
        self.reported = False
        self.missing = 0

    cancel_requested = property(lambda self: self.delete_requested)

    @property
    def done(self) -> bool:
        return self.state in ("finished", "failed", "cancelled", "unknown")

    def update(self, status: PodStatus):
        self.stale = False
        self.missing = 0
        self.state, self.reason, self.native = status.state, status.reason, status.native
        self.exit_code, self.stuck = status.exit_code, status.stuck

    async def start(self):
        await self.cluster._create_pods([self])

    async def close(self):
        await self.cluster._delete_pods([self])

    def logs(self) -> str:
        return self.log_text

    def problem(self) -> str | None:
        """Why this pod cannot bring its worker, or None."""
        if self.delete_requested or self.ever_connected:
            return None
        return self.summary() if self.stuck or self.done else None

    def summary(self) -> str:
        return f"pod {self.name} {self.state}" + (f" ({self.reason})" if self.reason else "")

    def describe(self) -> str:
        tail = self.log_text.rstrip("\n").splitlines()[-LOG_TAIL_LINES:]
        if not tail:
            return self.summary()
        return f"{self.summary()}; last {len(tail)} log lines:\n    " + "\n    ".join(tail)

    def __repr__(self):
        return f"<PodJob {self.name} {self.state}{f' {self.reason!r}' if self.reason else ''}>"


@params.document("kubernetes")
class KubeCluster(Cluster):
    """Workers as pods on Kubernetes; the scheduler runs in this process.

    ``KubeCluster(image="registry/jobqueue-worker:1", n_workers=2, resources={"cpu": "1",
    "memory": "2Gi"}, namespace="team", env={"OMP_NUM_THREADS": "1"})``. Every setting not given
    comes from the ``kubernetes`` config section (see jobqueue.yaml) or a profile of that kind.
    ``scale(n)`` creates or retires pods and returns; ``wait_for_workers(n)`` waits, and fails as
    soon as the pods left cannot bring n workers (an image that cannot be pulled, a request no node
    can hold), with Kubernetes' reasons.

    Examples
    --------
    >>> cluster = KubeCluster(image="registry.example.org/jobqueue-worker:1", n_workers=2,
    ...                       resources={"cpu": "1", "memory": "2Gi"})
    >>> cluster.wait_for_workers(2)
    >>> client = Client(cluster)
    """

    kind = "kubernetes"
    # the base class holds any Job; this one only pods
    jobs: dict[str, PodJob]  # type: ignore[assignment]

    def __init__(self, *,
                 image: str | None = None,
                 namespace: str | None = None,
                 context: str | None = None,
                 resources: dict | None = None,
                 threads: int | None = None,
                 env: dict | None = None,
                 image_pull_policy: str | None = None,
                 python: str | None = None,
                 worker_extra_args: list[str] | None = None,
                 interface: str | None = None,
                 death_timeout: float | str | None = None,
                 template: str | None = None,
                 poll_interval: float | str | None = None,
                 max_pods: int | None = None,
                 n_workers: int | None = None,
                 name: str | None = None,
                 profile: str | None = None,
                 asynchronous: bool = False,
                 scheduler_options: dict | None = None):
        settings = params.given(locals())
        for key in ("n_workers", "name", "profile", "asynchronous", "scheduler_options"):
            del settings[key]
        self.settings = s = resolve_settings(settings, profile)
        if name is not None and not (re.fullmatch(NAME, name) and len(name) <= 50):
            raise config.ConfigError(f"argument: name {name!r}: a KubeCluster's name is part of its "
                                     "pods' names: lower-case letters, digits and -, at most 50")
        self.poll_interval = s["poll_interval"]
        self.death_timeout = s.get("death_timeout") or config.get("worker.death-timeout")
        self.max_jobs = s.get("max_pods")
        self.threads_per_job = worker_threads(s, pod_resources(s.get("resources")))
        # what each worker declares (worker_extra_args --resources), for adapt()
        self.worker_resources = parse_worker_options(
            s.get("worker_extra_args") or ()).get("resources") or {}
        self.kube: KubeAPI = None  # type: ignore[assignment]  # connected by _setup()
        self.namespace: str = s.get("namespace")  # type: ignore[assignment]  # set by _setup()
        self.pods_created = 0
        self._closed_jobs: deque = deque(maxlen=100)
        self._poller = None
        self._poll_failures = 0
        self._n_workers = n_workers
        self.labels: dict = {}
        self.secret_name = ""
        super().__init__(host=self._scheduler_host(), name=name,
                         scheduler_port=config.get("scheduler.port", 0),
                         asynchronous=asynchronous, scheduler_options=scheduler_options)

    async def _start(self) -> None:
        self.labels = {LABEL_CLUSTER: self.name, **MANAGED_BY}
        self.secret_name = f"{self.name}-token"
        await super()._start()
        await self._setup()
        if self._n_workers:
            await self._scale_to(self._jobs_for(self._n_workers))

    def _scheduler_host(self) -> str:
        # Pods connect to the address of this host's default route (or of kubernetes.interface).
        from ..node import interface_address, public_address

        interface = self.settings.get("interface")
        if not interface:
            return public_address()
        try:
            return interface_address(interface)
        except ValueError as e:
            raise config.ConfigError(f"kubernetes.interface: {e}") from None

    async def _setup(self):
        self.kube = await KubeAPI.connect(self.namespace, self.settings.get("context"))
        self.namespace = self.kube.namespace
        await self.kube.create("secrets", secret_manifest(self.secret_name, self.namespace,
                                                          self.labels, self.token))
        self._poller = asyncio.get_running_loop().create_task(self._poll_loop())

    # -- the pod spec ---------------------------------------------------------------------------

    def pod_spec(self, pod_name: str | None = None) -> dict:
        """The pod a worker runs in, exactly as it is created (the token is not in it).

        Parameters
        ----------
        pod_name : str, optional
            The pod's name (default: the cluster's name and -0).
        """
        pod_name = pod_name or f"{self.name}-0"
        ctx = pod_context(self.settings, pod_name=pod_name,
                          labels={**self.labels, LABEL_WORKER: pod_name},
                          secret_name=self.secret_name, scheduler_address=self.scheduler_address,
                          death_timeout=self.death_timeout,
                          lifetime=config.get("worker.lifetime", None))
        return render_pod(self.settings.get("template"), ctx, namespace=self.namespace)

    # -- scaling --------------------------------------------------------------------------------

    def new_job(self, name) -> PodJob:
        return PodJob(self, name)

    def live_jobs(self) -> list:
        return [j for j in list(self.jobs.values()) if not j.done and not j.delete_requested]

    def scale(self, n=None, jobs=None, cores=None, memory=None, wait=False):
        """Have n worker pods pending or running. Returns once they are created or deleted;
        ``wait=True`` then waits for their workers (see wait_for_workers). Turns adaptive off."""
        self._stop_adaptive("scale() was called")
        target = self._jobs_for(n, jobs)
        return self._sync(self._scale_and_wait(target, wait))

    async def _scale_and_wait(self, target: int, wait: bool):
        await self._scale_to(target)
        if wait:
            await self._wait_for_workers(target, None)

    async def _scale_to(self, target: int, wait=False):
        if self.max_jobs is not None and target > self.max_jobs:
            logger.info("%s: %d pods asked for, kubernetes.max-pods is %d", self.name, target,
                        self.max_jobs)
            target = self.max_jobs
        live = self.live_jobs()
        if len(live) < target:
            new = []
            for _ in range(target - len(live)):
                self._job_counter += 1
                job = self.new_job(f"{self.name}-{self._job_counter - 1}")
                self.jobs[job.name] = job
                new.append(job)
            await self._create_pods(new)
        elif len(live) > target:
            order = sorted(live, key=lambda j: (bool(j.workers), j.state != "pending", -j.order))
            await self.retire_jobs(order[:len(live) - target])

    async def _create_pods(self, jobs):
        results = await asyncio.gather(*(self._create_pod(j) for j in jobs), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _create_pod(self, job: PodJob):
        try:
            await self.kube.create("pods", self.pod_spec(job.name))
        except BaseException:
            self.jobs.pop(job.name, None)
            raise
        job.created_at = time.monotonic()
        job.reason = "created"
        self.pods_created += 1
        logger.info("%s: created pod %s", self.name, job.name)

    async def retire_jobs(self, jobs):
        """Scale down gracefully: results only these pods' workers hold move to other workers,
        then the pods are deleted (one call). Their logs are kept for get_logs()."""
        jobs = [j for j in jobs if not j.delete_requested]
        for job in jobs:
            job.delete_requested = True
        names = [n for j in jobs for n in j.worker_names() if n in self._connected()]
        if names:
            await self.scheduler.retire_workers(names)
        await asyncio.gather(*(self._fetch_log(j) for j in jobs if j.created_at))
        await self._delete(jobs)

    async def _delete_pods(self, jobs):
        jobs = [j for j in jobs if not j.delete_requested]
        for job in jobs:
            job.delete_requested = True
        await self._delete(jobs)

    async def _delete(self, jobs):
        """Delete these pods with one call (a label selector naming them): gracefully, or at
        once for pods whose worker never started (a kubelet keeps a pod that waits to pull its
        image for up to a minute after a graceful delete, and there is nothing to stop in it)."""
        jobs = [j for j in jobs if j.created_at]
        unstarted = [j for j in jobs if _unstarted(j)]
        for group, grace in ((unstarted, 0), ([j for j in jobs if j not in unstarted], None)):
            if group:
                names = ",".join(j.name for j in group)
                await self.kube.delete_collection(
                    "pods", f"{selector(self.labels)},{LABEL_WORKER} in ({names})", grace)
                logger.info("%s: deleted pods %s", self.name, names)

    # -- polling --------------------------------------------------------------------------------

    def _connected(self) -> dict:
        return self.scheduler.workers()

    async def _poll_loop(self):
        while True:
            try:
                ok = await self._poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s: polling the pods failed", self.name)
                ok = False
            self._poll_failures = 0 if ok else self._poll_failures + 1
            delay = self.poll_interval * 2 ** min(self._poll_failures, 10)
            await asyncio.sleep(min(delay, max(MAX_BACKOFF, self.poll_interval)))

    async def _poll_once(self) -> bool:
        """One list call for every pod of the cluster; False if it failed (states kept, stale)."""
        started = time.monotonic()
        try:
            pods = await self.kube.list_pods(selector(self.labels))
        except KubernetesError as e:
            for job in self.jobs.values():
                job.stale = True
            if self._poll_failures == 0:
                logger.warning("%s: could not list its pods; keeping their last known states, "
                               "marked stale, and retrying: %s", self.name, e)
            return False
        by_name = {p["metadata"]["name"]: p for p in pods}
        self._apply(by_name, started)
        self._track_workers()
        await self._report()
        await self._remove_stopped([p for name, p in by_name.items()
                                    if name in self.jobs and self.jobs[name].delete_requested])
        return True

    async def _remove_stopped(self, deleted: list):
        """Of these deleted pods, those whose containers have exited are removed from the API
        at once: a kubelet may keep their objects for another 10 s or more."""
        stopped = [p["metadata"]["name"] for p in deleted if containers_stopped(p)]
        if stopped:
            await self.kube.delete_collection(
                "pods", f"{selector(self.labels)},{LABEL_WORKER} in ({','.join(stopped)})", grace=0)

    def _apply(self, pods: dict, started: float):
        for job in list(self.jobs.values()):
            pod = pods.get(job.name)
            if pod is not None:
                job.update(pod_status(pod))
                if job.delete_requested and not job.done:
                    job.state, job.reason = "cancelled", "deleted by this cluster, terminating"
            elif job.created_at is not None and job.created_at < started:
                job.missing += 1
                if job.delete_requested:
                    job.state, job.reason = "cancelled", "deleted by this cluster"
                elif job.missing > 1:                # once may be a race with the API
                    job.state, job.reason = "cancelled", "deleted, not by this cluster"
                else:
                    continue
                self.jobs.pop(job.name, None)
                self._closed_jobs.append(job)

    def _track_workers(self):
        """A pod with a connected worker is running, whatever the last poll said."""
        names = self._connected()
        for job in list(self.jobs.values()):
            job.workers = {n for n in job.worker_names() if n in names}
            job.ever_connected |= job.workers
            if job.workers and job.state == "pending":
                job.state, job.reason, job.stuck = "running", "", False

    async def _report(self):
        """Say once why a pod cannot start or has ended (with its last log lines)."""
        for job in list(self.jobs.values()) + list(self._closed_jobs):
            if job.reported or job.delete_requested:
                continue
            if job.done:
                if job.name in self.jobs:           # the pod is still there to ask
                    await self._fetch_log(job)
                job.reported = True
                log = logger.info if job.state == "finished" and job.ever_connected else logger.warning
                log("%s: %s", self.name, job.describe())
            elif job.stuck:
                job.reported = True
                logger.warning("%s: %s: it cannot start", self.name, job.summary())

    async def _fetch_log(self, job: PodJob, tail_lines=None):
        text = await self.kube.logs(job.name, tail_lines)
        if not text.startswith("(no logs:") or not job.log_text:
            job.log_text = text

    # -- waiting, logs --------------------------------------------------------------------------

    def wait_for_workers(self, n: int, timeout: float | None = None):
        """Wait until n workers are connected. Raises RuntimeError, with each pod's state and
        Kubernetes' reason (and the last log lines of pods that ended), as soon as the pods left
        cannot bring n workers; TimeoutError after timeout seconds (None: no limit)."""
        return self._sync(self._wait_for_workers(n, timeout))

    async def _wait_for_workers(self, n, timeout):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._track_workers()
            have = len(self._connected())
            if have >= n:
                return
            live = self.live_jobs()
            possible = have + sum(1 for j in live if not j.workers and not j.stuck)
            broken = [j for j in list(self.jobs.values()) + list(self._closed_jobs)
                      if (j.stuck or j.done) and not j.delete_requested and not j.ever_connected]
            if possible < n and all(j.reported for j in broken):
                details = "\n".join(j.describe() for j in broken[-5:])
                raise RuntimeError(f"{self.name}: waiting for {n} workers, {have} connected, and "
                                   f"the pods left can bring at most {possible}"
                                   + (f"; {len(broken)} cannot start or have ended:\n{details}"
                                      if broken else f" ({len(live)} pods; scale up first)"))
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {have} of {n} workers connected within "
                                   f"{timeout:g} s; pods: {self._pod_counts()}")
            await asyncio.sleep(0.05)

    def _pod_counts(self) -> str:
        counts: dict = {}
        for job in list(self.jobs.values()):
            key = f"{job.state} ({job.reason})" if job.reason else job.state
            counts[key] = counts.get(key, 0) + 1
        return ", ".join(f"{v} {k}" for k, v in counts.items()) or "none"

    def get_logs(self) -> dict:
        """``{name: text}`` for the scheduler and every pod (logs read from Kubernetes now; pods
        already deleted keep the log read before their deletion)."""
        async def fetch():
            await asyncio.gather(*(self._fetch_log(j) for j in list(self.jobs.values())
                                   if j.created_at and not j.delete_requested))
        if self.status == "running":
            self._block(fetch())
        return super().get_logs()

    def __repr__(self):
        from ..config import format_bytes

        n, threads, memory = self._summary()
        live = self.live_jobs()
        pending = sum(j.state == "pending" for j in live)
        return (f"KubeCluster({self.name!r}, {self.scheduler_address!r}, namespace="
                f"{self.namespace!r}, workers={n}, threads={threads}, memory={format_bytes(memory)}, "
                f"pods: {pending} pending, {len(live) - pending} running)")

    # -- closing --------------------------------------------------------------------------------

    _close_margin = DELETE_WAIT + 10

    async def _stop(self, timeout):
        """Delete every pod and the Secret of this cluster (by its labels: also pods it lost
        track of), wait until the pods are gone, then stop the scheduler."""
        await self._close()

    async def _close(self):
        if self._poller is not None:
            self._poller.cancel()
        if self.kube is not None:
            sel = selector(self.labels)
            jobs = list(self.jobs.values())
            for job in jobs:
                job.delete_requested = True
            try:
                await self._delete([j for j in jobs if _unstarted(j)])
                await self.kube.delete_collection("pods", sel)
                await self.kube.delete("secrets", self.secret_name)
                await self._wait_gone(sel)
            except KubernetesError as e:
                logger.error("%s: could not delete its pods and Secret %s in namespace %s; delete "
                             "them yourself (kubectl delete pods,secrets -n %s -l %s): %s",
                             self.name, self.secret_name, self.namespace, self.namespace, sel, e)
        if self.kube is not None:
            await self.kube.aclose()
        for job in list(self.jobs.values()):
            job.state, job.reason, job.workers = "cancelled", "deleted by close()", set()
            self._closed_jobs.append(job)
        self.jobs.clear()
        await self.scheduler.close()

    async def _wait_gone(self, sel: str):
        """Wait until the deleted pods are gone (those whose containers exited: at once)."""
        deadline = time.monotonic() + DELETE_WAIT
        while True:
            left = await self.kube.list_pods(sel)
            if not left:
                return
            if time.monotonic() > deadline:
                logger.warning("%s: pods %s are still terminating after %g s", self.name,
                               " ".join(p["metadata"]["name"] for p in left), DELETE_WAIT)
                return
            await self._remove_stopped(left)
            await asyncio.sleep(0.2)


def _unstarted(job: PodJob) -> bool:
    return job.state == "pending" and not job.ever_connected

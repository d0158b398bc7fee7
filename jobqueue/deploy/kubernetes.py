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

from .. import config, params
from ..core import notice
from ..node import parse_worker_options
from . import keep as keep_mod
from .cluster import Cluster, Job
from .pods import (LABEL_CLUSTER, LABEL_WORKER, MANAGED_BY, NAME, PodStatus,
                   containers_stopped, pod_context, pod_resources, pod_status, render_pod,
                   resolve_settings, secret_manifest, selector, worker_threads)
from .watched import Watched

logger = logging.getLogger("jobqueue.kubernetes")

LOG_TAIL_LINES = 20
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

    cluster: KubeCluster

    def __init__(self, cluster, name: str):
        super().__init__(cluster, name)
        self.job_id = name
        self.index = cluster._job_counter        # pods are numbered in the order made
        self.submission = name                   # the create call it came from (its first pod)
        self.order = 0                           # the cluster's create calls, numbered
        self.state, self.reason, self.native = "pending", "creating", ""
        self.exit_code: int | None = None
        self.stuck = self.never = False
        self.stale = False
        self.created_at: float | None = None     # monotonic time the API confirmed the pod
        self.delete_requested = False
        self.deleted_outside = False             # deleted by someone else (kubectl delete)
        self.refused = False                     # deleted by us: it can never start
        self.gone = False                        # no longer in the API
        self.missing = 0                         # polls in a row that did not list it
        self.workers: set = set()
        self.ever_connected: set = set()
        self.log_text = ""
        self.reported = False

    cancel_requested = property(lambda self: self.delete_requested)

    @property
    def done(self) -> bool:
        return self.state in ("finished", "failed", "cancelled", "unknown")

    def update(self, status: PodStatus):
        """What the last poll said about the pod."""
        self.stale = False
        self.missing = 0
        if self.refused:
            return
        self.state, self.reason, self.native = status.state, status.reason, status.native
        self.exit_code, self.stuck, self.never = status.exit_code, status.stuck, status.never
        if self.delete_requested and not self.done:
            self.state, self.reason = "cancelled", "deleted by this cluster, terminating"
        elif self.state == "cancelled" and not self.delete_requested:
            self.deleted_outside, self.reason = True, "deleted, not by this cluster"

    def vanished(self):
        """The pod is no longer in the API."""
        self.gone = True
        if not self.done:
            self.state = "cancelled"
            self.deleted_outside = not self.delete_requested
            self.reason = ("deleted by this cluster" if self.delete_requested
                           else "deleted, not by this cluster")

    def view(self) -> keep_mod.JobView:
        """This pod as the keep policy sees it (a create call is a submission)."""
        return keep_mod.JobView(
            self.name, self.submission, self.order,
            live=not self.done and not self.delete_requested,
            ever_connected=bool(self.ever_connected),
            failed_to_start=not self.ever_connected and (self.never or self.refused or (
                self.done and not self.delete_requested and not self.deleted_outside)),
            cancelled_outside=self.deleted_outside, never=self.never, why=self.summary())

    async def start(self):
        await self.cluster._create_pods([self])

    async def close(self):
        await self.cluster._delete_pods([self])

    def logs(self) -> str:
        return self.log_text

    def problem(self) -> str | None:
        """Why this pod cannot bring its worker, or None."""
        if (self.delete_requested and not self.refused) or self.ever_connected:
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
class KubeCluster(Watched, Cluster):  # type: ignore[misc]  # adapt: Cluster.adapt, wrapped
    """Workers as pods on Kubernetes; the scheduler runs in this process.

    ``KubeCluster(image="registry/jobqueue-worker:1", n_workers=2, resources={"cpu": "1",
    "memory": "2Gi"}, namespace="team", env={"OMP_NUM_THREADS": "1"})``. Every setting not given
    comes from the ``kubernetes`` config section (see jobqueue.yaml) or a profile of that kind.
    ``scale(n)`` creates or retires pods and returns; n pods are then kept, as batch clusters
    keep their jobs (deploy/keep.py): a pod that ends is replaced, pods that keep ending before
    their worker connects are created again ``start_retries`` times, and pods that can never
    start as created (an image that cannot be pulled) are deleted at once; then the cluster
    gives up and ``failure`` says why. ``wait_for_workers(n)`` waits, and fails as soon as the
    pods cannot bring n workers (also for a request no node can hold), with Kubernetes' reasons.

    Examples
    --------
    >>> cluster = KubeCluster(image="registry.example.org/jobqueue-worker:1", n_workers=2,
    ...                       resources={"cpu": "1", "memory": "2Gi"})
    >>> cluster.wait_for_workers(2)
    >>> client = Client(cluster)
    """

    kind = "kubernetes"
    noun, submitted, submitting, removed = "pod", "created", "creating", "deleted"
    submit_what = "creating a pod"
    max_jobs_key = "kubernetes.max-pods"
    submit_errors = (KubernetesError,)
    _logger = logger
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
        self._init_watched()
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

    async def _connect(self) -> KubeAPI:
        return await KubeAPI.connect(self.namespace, self.settings.get("context"))

    async def _setup(self):
        self.kube = await self._connect()
        self.namespace = self.kube.namespace
        await self.kube.create("secrets", secret_manifest(self.secret_name, self.namespace,
                                                          self.labels, self.token))
        await self._start_poller()

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

    def scale(self, n=None, jobs=None, cores=None, memory=None, wait=False):
        """Keep n worker pods pending or running. Returns once they are created or deleted;
        ``wait=True`` then waits for their workers (see wait_for_workers). Turns adaptive off."""
        self._stop_adaptive("scale() was called")
        target = self._jobs_for(n, jobs)
        return self._sync(self._scale_and_wait(target, wait))

    async def _scale_and_wait(self, target: int, wait: bool):
        await self._scale_to(target)
        if wait:
            await self._wait_for_workers(target, None)

    def _removal_order(self, jobs) -> list:
        """Pods without workers first (pending before running), newest first."""
        return sorted(jobs, key=lambda j: (bool(j.workers), j.state != "pending", -j.index))

    async def _gave_up(self):
        """Delete the pods that can never start as created (their workers never came)."""
        never = [j for j in self.live_jobs() if j.never and not j.ever_connected]
        for job in never:
            job.state, job.reason = "failed", f"cannot start as created: {job.reason}"
            job.refused = job.reported = True
        try:
            await self._delete_pods(never)
        except KubernetesError as e:
            notice.warn(logger, "%s: could not delete pods %s: %s", self.name,
                        " ".join(j.name for j in never), e)

    async def _submit(self, count: int) -> list:
        """Create count pods with one create call each, as one submission; returns them."""
        new = self._new_jobs(count)
        for job in new:
            job.submission, job.order = new[0].name, self._submissions
        self._submissions += 1
        await self._create_pods(new)
        return new

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
        once for pods whose worker never connected (a kubelet keeps a pod that waits to pull its
        image for up to a minute after a graceful delete, and there is nothing to stop in it)."""
        jobs = [j for j in jobs if j.created_at and not j.gone]
        unstarted = [j for j in jobs if not j.ever_connected]
        for group, grace in ((unstarted, 0), ([j for j in jobs if j not in unstarted], None)):
            if group:
                await self.kube.delete_collection("pods", self._selector(j.name for j in group),
                                                  grace)
                logger.info("%s: deleted pods %s", self.name, " ".join(j.name for j in group))

    def _selector(self, names) -> str:
        """The label selector of these pods (by name) of the cluster."""
        return f"{selector(self.labels)},{LABEL_WORKER} in ({','.join(names)})"

    # -- polling --------------------------------------------------------------------------------

    def _connected(self) -> dict:
        return self.scheduler.workers()

    async def _poll_once(self) -> bool:
        """One list call for every pod of the cluster; False if it failed (states kept, stale)."""
        started = time.monotonic()
        try:
            pods = await self.kube.list_pods(selector(self.labels))
        except KubernetesError as e:
            for job in self.jobs.values():
                job.stale = True
            if self._poll_failures == 0:
                notice.warn(logger, "%s: could not list its pods; keeping their last known "
                            "states, marked stale, and retrying: %s", self.name, e)
            return False
        if self._poll_failures:
            logger.info("%s: pod states are current again", self.name)
        by_name = {p["metadata"]["name"]: p for p in pods}
        self._apply(by_name, started)
        self._observe_jobs()
        async with self._keeping:
            await self._keep()
        await self._report()
        await self._remove_stopped([p for name, p in by_name.items() if name in self.jobs
                                    and self._finished_with(self.jobs[name])])
        return True

    @staticmethod
    def _finished_with(job: PodJob) -> bool:
        """Nothing more to learn from the pod: it was deleted, or it ended and was reported
        (its log read)."""
        return job.delete_requested or (job.done and job.reported)

    async def _remove_stopped(self, pods: list):
        """Of these pods the cluster is finished with, those whose containers have exited are
        removed from the API at once: a kubelet may keep a deleted pod's object for another 10 s
        or more, and a pod that ended stays until someone deletes it."""
        stopped = [p["metadata"]["name"] for p in pods if containers_stopped(p)]
        if stopped:
            await self.kube.delete_collection("pods", self._selector(stopped), grace=0)

    def _apply(self, pods: dict, started: float):
        """The listed pods' states onto their jobs; a pod created before the list call and
        missing from it twice in a row is gone (once may be a race with the API)."""
        for job in list(self.jobs.values()):
            if job.gone or job.created_at is None:
                continue
            pod = pods.get(job.name)
            if pod is not None:
                job.update(pod_status(pod))
            elif job.created_at < started:
                job.missing += 1
                if job.delete_requested or job.missing > 1:
                    job.vanished()

    def _observe_jobs(self):
        """A pod with a connected worker is running, whatever the last poll said."""
        names = self._connected()
        for job in list(self.jobs.values()):
            job.workers = {n for n in job.worker_names() if n in names}
            job.ever_connected |= job.workers
            if job.workers and job.state == "pending":
                job.state, job.reason, job.stuck = "running", "", False

    async def _report(self):
        """Say once why a pod cannot start or has ended (with its last log lines)."""
        for job in list(self.jobs.values()):
            if job.reported or job.delete_requested:
                continue
            if job.done:
                if not job.gone:                    # the pod is still there to ask
                    await self._fetch_log(job)
                job.reported = True
                if job.state == "finished" and job.ever_connected:
                    logger.info("%s: %s", self.name, job.describe())
                else:
                    notice.warn(logger, "%s: %s", self.name, job.describe())
            elif job.stuck:
                job.reported = True
                notice.warn(logger, "%s: %s: it cannot start", self.name, job.summary())

    async def _fetch_log(self, job: PodJob, tail_lines=None):
        text = await self.kube.logs(job.name, tail_lines)
        if not text.startswith("(no logs:") or not job.log_text:
            job.log_text = text

    # -- waiting, logs --------------------------------------------------------------------------

    def _cannot_bring(self, n: int, have: int) -> str:
        """Why the pods cannot bring n workers ('': they may)."""
        broken = [j for j in list(self.jobs.values()) if (j.stuck or j.done) and not
                  j.ever_connected and (j.refused or not j.delete_requested)]
        details = "\n".join(j.describe() for j in broken[-5:])
        if self.failure:
            return f"but {self.failure}\n{details}"
        live = self.live_jobs()
        coming = 0                           # pods the target still asks for (replacements)
        if self._target is not None and self._adaptive is None:
            coming = max(0, self._target - len(live))
        possible = have + coming + sum(1 for j in live if not j.workers and not j.stuck)
        if possible >= n or not all(j.reported for j in broken):
            return ""
        return (f"and the pods left can bring at most {possible}"
                + (f"; {len(broken)} cannot start or have ended:\n{details}" if broken
                   else f" ({len(live)} pods; scale up first)"))

    def _job_counts(self) -> str:
        counts: dict = {}
        for job in self.live_jobs():
            key = f"{job.state} ({job.reason})" if job.reason else job.state
            counts[key] = counts.get(key, 0) + 1
        return ", ".join(f"{v} {k}" for k, v in counts.items()) or "none"

    def get_logs(self) -> dict:
        """``{name: text}`` for the scheduler and every pod (logs read from Kubernetes now; pods
        already deleted keep the log read before their deletion)."""
        async def fetch():
            await asyncio.gather(*(self._fetch_log(j) for j in list(self.jobs.values())
                                   if j.created_at and not j.delete_requested and not j.gone))
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
        """Delete every pod of this cluster (by its labels: also pods it lost track of), wait
        until they are gone, delete its Secret, then stop the scheduler."""
        self._stop_poller()
        if self.kube is not None:
            sel = selector(self.labels)
            jobs = [j for j in list(self.jobs.values()) if not j.gone]
            for job in jobs:
                job.delete_requested = True
            try:
                await self._delete([j for j in jobs if not j.ever_connected])
                await self.kube.delete_collection("pods", sel)
                await self._wait_gone(sel)
                # after the pods: a kubelet still unmounting a pod's Secret complains if it is
                # gone first (FailedMount events)
                await self.kube.delete("secrets", self.secret_name)
            except KubernetesError as e:
                notice.warn(logger, "%s: could not delete its pods and Secret %s in namespace %s; "
                            "delete them yourself (kubectl delete pods,secrets -n %s -l %s): %s",
                            self.name, self.secret_name, self.namespace, self.namespace, sel, e,
                            level=logging.ERROR)
            for job in jobs:
                job.workers = set()
                if not job.done:
                    job.state, job.reason = "cancelled", "deleted by close()"
            await self.kube.aclose()
        await self.scheduler.close()

    async def _wait_gone(self, sel: str):
        """Wait until the deleted pods are gone (those whose containers exited: at once)."""
        deadline = time.monotonic() + DELETE_WAIT
        while True:
            left = await self.kube.list_pods(sel)
            if not left:
                return
            if time.monotonic() > deadline:
                notice.warn(logger, "%s: pods %s are still terminating after %g s", self.name,
                            " ".join(p["metadata"]["name"] for p in left), DELETE_WAIT)
                return
            await self._remove_stopped(left)
            await asyncio.sleep(0.2)

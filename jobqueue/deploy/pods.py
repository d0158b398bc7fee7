"""The pure part of KubeCluster: Kubernetes quantities, pod states, the kubernetes settings, the
pod template and its context. No I/O here (the template is read from disk by jinja2); tested
directly, without a Kubernetes.
"""
from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from .. import config, templating
from ..node import WorkerCommand, parse_worker_options

POD_TEMPLATE = "kubernetes-pod.yaml.j2"
LABEL_CLUSTER = "jobqueue/cluster"
LABEL_WORKER = "jobqueue/worker"
MANAGED_BY = {"app.kubernetes.io/managed-by": "jobqueue", "app.kubernetes.io/component": "worker"}
TOKEN_DIR = "/var/run/secrets/jobqueue"

POD_CONTEXT_DOC = """\
pod_name           the pod's name, also the worker's name
labels             the labels that select this cluster's pods (the cluster sets them again)
image              the worker image (kubernetes.image)
image_pull_policy  Always, IfNotPresent, Never, or None (Kubernetes' default)
command            the container command: reads the token file, then runs the worker
env                [{name, value}] from kubernetes.env
resources          {requests: {...}, limits: {...}} from kubernetes.resources
secret_name        the Secret holding the token (file "token")
token_dir          where the Secret is mounted in the container
threads            worker threads
memory_limit       the worker's memory limit in bytes (0: none)
scheduler_address  tcp://host:port the worker connects to
"""

# A worker reads the token from the mounted Secret into its own environment: never a command-line
# argument, never a value in the pod spec. "$@" is the worker's command.
TOKEN_SCRIPT = (
    'if ! JOBQUEUE_TOKEN=$(cat "$JOBQUEUE_TOKEN_FILE"); then '
    'echo "jobqueue: cannot read the cluster token from $JOBQUEUE_TOKEN_FILE (the Secret volume '
    'jobqueue-token); does the pod template mount it?" >&2; exit 1; fi; '
    'export JOBQUEUE_TOKEN; unset JOBQUEUE_TOKEN_FILE; exec "$@"')

NAME = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_.-]*"


# ------------------------------------------------------------------------------ quantities

_QUANTITY = r"\s*([+]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(m|k|Ki|Mi|Gi|Ti|Pi|Ei|M|G|T|P|E)?\s*"
_SUFFIX = {"": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}


def parse_quantity(value) -> float:
    """A Kubernetes quantity as a number: '250m' -> 0.25, '2Gi' -> 2147483648, '1e3' -> 1000."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = re.fullmatch(_QUANTITY, str(value))
    if match is None:
        raise ValueError(f"{value!r} is not a Kubernetes quantity, e.g. 500m, 2, 512Mi, 4Gi, 1G")
    return float(match.group(1)) * _SUFFIX[match.group(2) or ""]


def pod_resources(resources) -> dict:
    """{requests, limits} from kubernetes.resources: ``{cpu: "1", memory: 2Gi}`` asks for the same
    requests and limits (a Guaranteed pod); ``{requests: {...}, limits: {...}}`` is taken as is.
    Raises ValueError naming the bad entry."""
    resources = dict(resources or {})
    split = bool(resources) and set(resources) <= {"requests", "limits"}
    parts = resources if split else {"": resources}
    out = {}
    for part, values in parts.items():
        where = f"resources.{part}." if part else "resources."
        if not isinstance(values, dict):
            raise ValueError(f"{where[:-1]} must be a mapping such as {{cpu: '1', memory: 2Gi}}")
        for key, value in values.items():
            try:
                parse_quantity(value)
            except ValueError as e:
                raise ValueError(f"{where}{key}: {e}") from None
        out[part] = {str(key): str(value) for key, value in values.items()}
    if split:
        return out
    return {"requests": out[""], "limits": dict(out[""])} if resources else {}

# ------------------------------------------------------------------------------ pod states


@dataclass(frozen=True)
class PodStatus:
    """What Kubernetes says about one pod, in the job-state vocabulary (pending, running, finished,
    failed, cancelled, unknown). ``stuck``: pending for a reason that will not go away by waiting
    (an image that cannot be pulled, no node with room for the request)."""

    state: str
    reason: str = ""
    native: str = ""
    exit_code: int | None = None
    stuck: bool = False
    never: bool = False     # stuck because of the pod as created (its image, its container):
                            # it never starts; Unschedulable is stuck, not never (room may come)


# Waiting reasons of a container that does not start by itself (the kubelet retries some of them,
# slowly); the others (ContainerCreating, PodInitializing) are the normal way to start.
STUCK_WAITING = frozenset({
    "ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
    "ImageInspectError", "RegistryUnavailable", "CreateContainerConfigError",
    "CreateContainerError", "RunContainerError", "CrashLoopBackOff"})
# Of those, the ones that say the pod as created can never start.
IMAGE_PROBLEMS = STUCK_WAITING - {"RegistryUnavailable"}


def _reason(reason, message) -> str:
    message = " ".join(str(message or "").split())
    return f"{reason}: {message}" if reason and message else str(reason or message or "")


def _terminated(pod: dict):
    for cs in pod.get("status", {}).get("containerStatuses") or ():
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        if term:
            return term
    return None


def pod_status(pod: dict) -> PodStatus:
    """Read one pod (as the API returns it) into a PodStatus. Pure."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    deleting = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
    if phase == "Succeeded":
        return PodStatus("finished", "exit code 0", phase, 0)
    if phase == "Failed":
        if status.get("reason"):                                  # Evicted, DeadlineExceeded
            return PodStatus("failed", _reason(status["reason"], status.get("message")), phase)
        term = _terminated(pod) or {}
        code = term.get("exitCode")
        why = ", ".join(x for x in (term.get("reason"), f"exit code {code}" if code is not None
                                     else "") if x)
        return PodStatus("failed", _reason(why, term.get("message")) or "failed", phase, code)
    if deleting:
        return PodStatus("cancelled", "deleted, terminating", phase)
    if phase == "Running":
        return PodStatus("running", "", phase)
    if phase != "Pending":
        return PodStatus("unknown", _reason(f"pod phase {phase}", status.get("message")), phase)
    containers = [*(status.get("initContainerStatuses") or ()), *(status.get("containerStatuses") or ())]
    for cs in containers:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            reason = _reason(waiting["reason"], waiting.get("message"))
            return PodStatus("pending", reason, phase, stuck=waiting["reason"] in STUCK_WAITING,
                             never=waiting["reason"] in IMAGE_PROBLEMS)
    for cond in status.get("conditions") or ():
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            reason = _reason(cond.get("reason") or "Unschedulable", cond.get("message"))
            return PodStatus("pending", reason, phase, stuck=cond.get("reason") == "Unschedulable")
    scheduled = any(c.get("type") == "PodScheduled" and c.get("status") == "True"
                    for c in status.get("conditions") or ())
    return PodStatus("pending", "starting" if scheduled else "waiting to be scheduled", phase)


def containers_stopped(pod: dict) -> bool:
    """No container of the pod runs (none started yet, or all have exited)."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    return not any((cs.get("state") or {}).get("running")
                   for cs in status.get("containerStatuses") or ())

# ------------------------------------------------------------------------------ settings, rendering


def check_settings(s: dict) -> list:
    """Problems with resolved kubernetes settings as (key, message); [] if none. Pure."""
    problems = []
    if not s.get("image"):
        problems.append(("image", "not set: give the worker image, with jobqueue installed, "
                         "e.g. image='registry.example.org/jobqueue-worker:1', or set "
                         "kubernetes.image in the config (JOBQUEUE_KUBERNETES__IMAGE=...)"))
    if s.get("namespace") is not None and not re.fullmatch(NAME, s["namespace"]):
        problems.append(("namespace", f"{s['namespace']!r} is not a namespace name (lower-case "
                         "letters, digits and -)"))
    policy = s.get("image_pull_policy")
    if policy is not None and policy not in ("Always", "IfNotPresent", "Never"):
        problems.append(("image_pull_policy", f"must be Always, IfNotPresent or Never, not {policy!r}"))
    try:
        pod_resources(s.get("resources"))
    except (ValueError, TypeError, AttributeError) as e:
        problems.append(("resources", str(e)))
    for name, value in (s.get("env") or {}).items():
        if not re.fullmatch(_ENV_NAME, str(name)):
            problems.append(("env", f"{name!r} is not an environment variable name"))
        elif str(name).startswith("JOBQUEUE_TOKEN"):
            problems.append(("env", f"{name}: the token reaches the workers through a Secret, "
                             "never through the pod spec"))
        elif isinstance(value, (dict, list)) or value is None:
            problems.append(("env", f"{name}: the value must be text or a number, not {value!r}"))
    try:          # read as `jobqueue worker` reads them, so a wrong one fails here, not in a pod
        parse_worker_options(s.get("worker_extra_args") or ())
    except ValueError as e:
        problems.append(("worker_extra_args", str(e)))
    for key in ("threads", "max_pods"):
        if s.get(key) is not None and s[key] < 1:
            problems.append((key, f"must be at least 1, not {s[key]}"))
    for key in ("poll_interval", "death_timeout"):
        if s.get(key) is not None and s[key] <= 0:
            problems.append((key, f"must be positive, not {s[key]}"))
    if s.get("template") and not Path(s["template"]).is_file():
        problems.append(("template", f"{s['template']}: no such file (a jinja2 pod template)"))
    return problems


def resolve_settings(arguments: dict, profile=None) -> dict:
    """The checked settings: the kubernetes config section < profile < arguments. Raises
    ConfigError naming, for each problem, where the value came from and what is allowed."""
    resolved = config.resolve("kubernetes", arguments, profile)
    problems = []
    for key, message in check_settings(resolved):
        dashed = key.replace("_", "-")
        if arguments.get(key) is not None:
            where = "argument: "
        else:
            try:
                where = f"{config.source(f'kubernetes.{dashed}')}: "
            except KeyError:
                where = ""
            where = "" if where == "default: " else where
        problems.append(f"{where}kubernetes.{dashed}: {message}")
    if problems:
        raise config.ConfigError(problems)
    return resolved


def worker_threads(s: dict, resources: dict) -> int:
    if s.get("threads"):
        return s["threads"]
    cpu = (resources.get("limits") or {}).get("cpu") or (resources.get("requests") or {}).get("cpu")
    return max(1, math.floor(parse_quantity(cpu))) if cpu else 1


def pod_context(s: dict, *, pod_name: str, labels: dict, secret_name: str,
                scheduler_address: str, death_timeout: float, lifetime=None) -> dict:
    """The variables a pod template sees (POD_CONTEXT_DOC), from checked settings. Pure."""
    resources = pod_resources(s.get("resources"))
    memory = (resources.get("limits") or {}).get("memory")
    memory_limit = int(parse_quantity(memory)) if memory else 0
    threads = worker_threads(s, resources)
    worker = WorkerCommand(scheduler_address, nthreads=threads, nworkers=1,
                           memory_limit=memory_limit, name=pod_name,
                           death_timeout=float(death_timeout),
                           lifetime=float(lifetime) if lifetime else None
                           ).argv(s.get("python") or "python")
    worker += list(s.get("worker_extra_args") or ())
    env = [{"name": "JOBQUEUE_TOKEN_FILE", "value": f"{TOKEN_DIR}/token"}]
    env += [{"name": str(k), "value": str(v)} for k, v in sorted((s.get("env") or {}).items())]
    return {"pod_name": pod_name, "labels": dict(labels), "image": s["image"],
            "image_pull_policy": s.get("image_pull_policy"),
            "command": ["/bin/sh", "-c", TOKEN_SCRIPT, "jobqueue-worker", *worker],
            "env": env, "resources": resources, "secret_name": secret_name, "token_dir": TOKEN_DIR,
            "threads": threads, "memory_limit": memory_limit,
            "scheduler_address": scheduler_address}


def _yaml_value(value) -> str:
    """The pod template's ``y`` filter: any value as one quoted YAML (JSON) value."""
    return json.dumps(value, sort_keys=True)


def render_pod(template: str | None, ctx: dict, *, namespace: str) -> dict:
    """Render the pod template (a packaged name or a site path) and parse it. The name, namespace
    and labels are set from ctx afterwards, whatever the template says. Raises ValueError naming
    the template and what is wrong."""
    import yaml

    template = template or POD_TEMPLATE
    text = templating.render(template, ctx, what="pod template", variables=POD_CONTEXT_DOC,
                             filters={"y": _yaml_value})
    try:                        # libyaml's parser where PyYAML has it: 10 times faster
        pod = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        raise ValueError(f"pod template {template} does not render to valid YAML: {e}") from None
    spec = pod.get("spec") if isinstance(pod, dict) else None
    if not isinstance(pod, dict) or pod.get("kind") != "Pod" or not (spec or {}).get("containers"):
        raise ValueError(f"pod template {template} must render a Pod (kind: Pod) with "
                         "spec.containers")
    meta = pod.setdefault("metadata", {}) or {}
    pod["metadata"] = meta
    meta.update(name=ctx["pod_name"], namespace=namespace)
    meta["labels"] = {**(meta.get("labels") or {}), **ctx["labels"]}
    return pod


def preview_pod(arguments: dict, profile=None, scheduler_address="tcp://HOST:PORT") -> str:
    """The pod spec a KubeCluster with these settings would create, as YAML, without a cluster
    (``jobqueue submit --cluster kubernetes --dry-run``)."""
    import yaml

    s = resolve_settings(arguments, profile)
    name = "kubernetes-NAME-0"
    ctx = pod_context(s, pod_name=name, labels={LABEL_CLUSTER: "kubernetes-NAME", **MANAGED_BY,
                                                LABEL_WORKER: name},
                      secret_name="kubernetes-NAME-token", scheduler_address=scheduler_address,
                      death_timeout=s.get("death_timeout") or config.get("worker.death-timeout"),
                      lifetime=config.get("worker.lifetime", None))
    pod = render_pod(s.get("template"), ctx,
                     namespace=s.get("namespace") or "(the kubeconfig context's)")
    return yaml.safe_dump(pod, sort_keys=False)


def secret_manifest(name: str, namespace: str, labels: dict, token: str) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "data": {"token": base64.b64encode(token.encode()).decode()}}


def selector(labels: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))

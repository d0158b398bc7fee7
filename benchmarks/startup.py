"""Worker startup on real systems: ``scale(4)`` until 4 workers are connected, KubeCluster vs
SLURMCluster on this machine (the issue-16 figure).

    . ci/state/kubernetes/env.sh; . ci/state/slurm/env.sh
    python benchmarks/startup.py                    # both, median of 3 each, alternating
    python benchmarks/startup.py --only kubernetes --repeat 5 --breakdown

Each round builds a fresh cluster (not timed), then times ``scale(4)`` +
``wait_for_workers(4)``, then closes it (not timed). The clusters alternate so that a change
in machine load hits both; the 1-minute load average is printed with every figure (2 cores:
above 2, the figures are not comparable). Needs the test Kubernetes and SLURM of ci/
(JOBQUEUE_TEST_KUBERNETES_IMAGE: the worker image of this checkout).

``--breakdown`` (Kubernetes) prints, per pod, seconds from the ``scale`` call to: the API's
answer to the create call, the container's start (docker's timestamp, ms) and the worker's
connection, so that the time between them can be placed (kubelet, python's start, import).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

N = 4


def load() -> float:
    return os.getloadavg()[0]


# A little CPU asked for, none limited: a 100m limit would cap the worker's start (two python
# processes) at a tenth of a core (--resources '{"cpu": "100m", "memory": "256Mi"}' compares).
RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}}


def kube_cluster(namespace, resources):
    from jobqueue import KubeCluster

    return KubeCluster(image=os.environ["JOBQUEUE_TEST_KUBERNETES_IMAGE"], namespace=namespace,
                       resources=resources)


def slurm_cluster(tmp):
    from jobqueue import SLURMCluster

    return SLURMCluster(cores=1, memory="500MB", log_directory=tmp, dashboard_address=None)


def docker_started(pod: str, namespace: str) -> float | None:
    """The start time (epoch seconds) of the pod's worker container, from docker."""
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=io.kubernetes.pod.name={pod}",
                          "--filter", f"label=io.kubernetes.pod.namespace={namespace}",
                          "--filter", "label=io.kubernetes.container.name=worker",
                          "--format", "{{.ID}}"], capture_output=True, text=True).stdout.split()
    if not out:
        return None
    stamp = subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}}", out[0]],
                           capture_output=True, text=True).stdout.strip()
    from datetime import datetime

    return datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00").timestamp()


def one_round(make, breakdown=False, namespace=None) -> float:
    cluster = make()
    try:
        start, wall = time.perf_counter(), time.time()
        cluster.scale(N)
        created = time.perf_counter() - start
        connected = {}

        def note():
            for w in cluster.scheduler.workers():
                connected.setdefault(w, time.perf_counter() - start)
        while len(cluster.scheduler.workers()) < N:
            cluster.wait_for_workers(len(cluster.scheduler.workers()) + 1, timeout=300)
            note()
        elapsed = time.perf_counter() - start
        if breakdown and namespace:
            print(f"    scale() returned (pods created) after {created:.2f} s")
            for name in sorted(connected):
                started = docker_started(name, namespace)
                print(f"    {name}: container started {started - wall:.2f} s, "
                      f"worker connected {connected[name]:.2f} s")
        return elapsed
    finally:
        cluster.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("kubernetes", "slurm"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--breakdown", action="store_true")
    parser.add_argument("--resources", type=json.loads, default=RESOURCES,
                        help="the pods' resources, as JSON (default: %(default)s)")
    args = parser.parse_args()
    import tempfile

    kubectl = os.environ.get("KUBECTL", "kubectl")
    namespace = f"jq-startup-{os.getpid()}"
    systems = [s for s in ("kubernetes", "slurm") if args.only in (None, s)]
    times: dict = {s: [] for s in systems}
    if "kubernetes" in systems:
        subprocess.run([kubectl, "create", "namespace", namespace], check=True,
                       capture_output=True)
        while subprocess.run([kubectl, "get", "serviceaccount", "default", "-n", namespace],
                             capture_output=True).returncode:
            time.sleep(0.2)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.repeat):
                for system in systems:
                    make = ((lambda: kube_cluster(namespace, args.resources)) if system == "kubernetes"
                            else (lambda: slurm_cluster(tmp)))
                    before = load()
                    t = one_round(make, args.breakdown, namespace if system == "kubernetes"
                                  else None)
                    times[system].append(t)
                    print(f"{system:10} round {i + 1}: {t:.2f} s  (load {before:.2f} -> "
                          f"{load():.2f})", flush=True)
    finally:
        if "kubernetes" in systems:
            subprocess.run([kubectl, "delete", "namespace", namespace, "--wait=false"],
                           capture_output=True)
    print(f"scale({N}) to {N} connected workers, median of {args.repeat} "
          f"({os.cpu_count()} cores, load now {load():.2f}):")
    for system, ts in times.items():
        print(f"  {system:10} {statistics.median(ts):.2f} s   (all: "
              f"{', '.join(f'{t:.2f}' for t in ts)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

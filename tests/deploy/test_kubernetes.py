"""KubeCluster: pure parts (quantities, pod states, settings, the pod template) directly, then the
cluster on the real Kubernetes that ci/kubernetes/start.sh runs (marker ``kubernetes``).

The real tests need KUBECONFIG and JOBQUEUE_TEST_KUBERNETES_IMAGE (a worker image of this checkout)
from ``. ci/state/kubernetes/env.sh``; they fail under CI=true when it is missing. Each module run
works in a namespace of its own, deleted at the end.
"""
import json
import os
import secrets
import signal
import subprocess
import sys
import time

import pytest

from jobqueue import config
from jobqueue.deploy import pods
from tests.conftest import needs_service, wait_until, write

# ------------------------------------------------------------------------------ quantities


@pytest.mark.parametrize("text, value", [
    ("250m", 0.25), ("1", 1.0), (2, 2.0), ("0.5", 0.5), ("2Gi", 2 * 2 ** 30), ("512Mi", 2 ** 29),
    ("1G", 1e9), ("1e3", 1000.0), ("100k", 1e5), (" 3 ", 3.0)])
def test_parse_quantity(text, value):
    assert pods.parse_quantity(text) == value


@pytest.mark.parametrize("text", ["lots", "2 GB", "1.5x", "", "-1"])
def test_parse_quantity_rejects(text):
    with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
        pods.parse_quantity(text)


def test_pod_resources_flat_means_requests_and_limits():
    assert pods.pod_resources({"cpu": "1", "memory": "2Gi"}) == {
        "requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
    assert pods.pod_resources({"requests": {"cpu": 0.5}}) == {"requests": {"cpu": "0.5"}}
    assert pods.pod_resources({}) == {}
    with pytest.raises(ValueError, match=r"^resources.memory: 'much'"):
        pods.pod_resources({"memory": "much"})
    with pytest.raises(ValueError, match=r"^resources.limits.cpu: 'x'"):
        pods.pod_resources({"limits": {"cpu": "x"}})
    with pytest.raises(ValueError, match=r"^resources.requests must be a mapping"):
        pods.pod_resources({"requests": "1"})

# ------------------------------------------------------------------------------ pod states


def pod(phase="Pending", conditions=(), containers=(), deleting=False, **status):
    out = {"metadata": {"name": "c-0"}, "status": {"phase": phase, "conditions": list(conditions),
                                                   "containerStatuses": list(containers), **status}}
    if deleting:
        out["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    return out


def waiting(reason, message=""):
    return {"name": "worker", "state": {"waiting": {"reason": reason, "message": message}}}


def terminated(code, reason="Error", message=""):
    return {"name": "worker", "state": {"terminated": {"exitCode": code, "reason": reason,
                                                       "message": message}}}


UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available: 1 Insufficient cpu."}
SCHEDULED = {"type": "PodScheduled", "status": "True"}


@pytest.mark.parametrize("p, expected", [
    (pod(), pods.PodStatus("pending", "waiting to be scheduled", "Pending")),
    (pod(conditions=[UNSCHEDULABLE]),
     pods.PodStatus("pending", "Unschedulable: 0/1 nodes are available: 1 Insufficient cpu.",
                   "Pending", stuck=True)),
    (pod(conditions=[SCHEDULED]), pods.PodStatus("pending", "starting", "Pending")),
    (pod(conditions=[SCHEDULED], containers=[waiting("ContainerCreating")]),
     pods.PodStatus("pending", "ContainerCreating", "Pending")),
    (pod(conditions=[SCHEDULED], containers=[waiting("ErrImagePull", "pull access denied")]),
     pods.PodStatus("pending", "ErrImagePull: pull access denied", "Pending", stuck=True, never=True)),
    (pod(conditions=[SCHEDULED], containers=[waiting("ImagePullBackOff", "Back-off pulling")]),
     pods.PodStatus("pending", "ImagePullBackOff: Back-off pulling", "Pending", stuck=True, never=True)),
    (pod(conditions=[SCHEDULED], containers=[waiting("ErrImageNeverPull", "not present")]),
     pods.PodStatus("pending", "ErrImageNeverPull: not present", "Pending", stuck=True, never=True)),
    (pod("Running"), pods.PodStatus("running", "", "Running")),
    (pod("Succeeded", containers=[terminated(0, "Completed")]),
     pods.PodStatus("finished", "exit code 0", "Succeeded", 0)),
    (pod("Failed", containers=[terminated(3)]),
     pods.PodStatus("failed", "Error, exit code 3", "Failed", 3)),
    (pod("Failed", containers=[terminated(137, "OOMKilled")]),
     pods.PodStatus("failed", "OOMKilled, exit code 137", "Failed", 137)),
    (pod("Failed", reason="Evicted", message="The node was low on resource: memory."),
     pods.PodStatus("failed", "Evicted: The node was low on resource: memory.", "Failed")),
    (pod("Running", deleting=True), pods.PodStatus("cancelled", "deleted, terminating", "Running")),
    (pod("Unknown", message="node lost"), pods.PodStatus("unknown", "pod phase Unknown: node lost",
                                                         "Unknown")),
])
def test_pod_status(p, expected):
    assert pods.pod_status(p) == expected


def test_containers_stopped():
    running = {"name": "worker", "state": {"running": {"startedAt": "x"}}}
    assert not pods.containers_stopped(pod("Running", containers=[running], deleting=True))
    assert pods.containers_stopped(pod("Running", containers=[terminated(0)], deleting=True))
    assert pods.containers_stopped(pod(containers=[waiting("ErrImagePull")]))
    assert pods.containers_stopped(pod("Succeeded", containers=[running]))


def test_pod_status_of_a_pod_without_status_is_pending():
    assert pods.pod_status({"metadata": {"name": "x"}}).state == "pending"

# ------------------------------------------------------------------------------ settings


def test_settings_come_from_the_kubernetes_section(env):
    write(env / "etc" / "site.yaml", """
        kubernetes:
          image: site/worker:1
          resources: {cpu: "2", memory: 4Gi}
          env: {OMP_NUM_THREADS: 1}
    """)
    config.refresh()
    s = pods.resolve_settings({"namespace": "team"})
    assert (s["image"], s["namespace"], s["resources"]["cpu"]) == ("site/worker:1", "team", "2")
    assert s["poll_interval"] == 1.0


def test_settings_problems_name_their_source(env, monkeypatch):
    write(env / "etc" / "site.yaml", """
        kubernetes:
          image-pull-policy: Sometimes
    """)
    monkeypatch.setenv("JOBQUEUE_KUBERNETES__RESOURCES", "{memory: plenty}")
    config.refresh()
    with pytest.raises(config.ConfigError) as e:
        pods.resolve_settings({"env": {"JOBQUEUE_TOKEN": "x"},
                               "worker_extra_args": ["--resources", "GPU"]})
    text = str(e.value)
    assert "argument: kubernetes.worker-extra-args: argument --resources: 'GPU' is not " \
           "NAME=AMOUNT" in text
    assert "kubernetes.image: not set: give the worker image" in text
    assert f"{env / 'etc' / 'site.yaml'}:3: kubernetes.image-pull-policy: must be Always" in text
    assert "JOBQUEUE_KUBERNETES__RESOURCES: kubernetes.resources: resources.memory" in text
    assert "argument: kubernetes.env: JOBQUEUE_TOKEN: the token reaches the workers through a " \
           "Secret" in text


def test_unknown_setting_is_refused(env):
    with pytest.raises(config.ConfigError, match="kubernetes.imag: unknown setting; did you mean "
                                                 "'image'"):
        pods.resolve_settings({"imag": "x"})


def test_a_profile_of_kind_kubernetes(env):
    write(env / "etc" / "site.yaml", """
        profiles:
          big:
            kind: kubernetes
            image: site/worker:1
            resources: {cpu: "8"}
    """)
    config.refresh()
    s = pods.resolve_settings({}, profile="big")
    assert s["resources"] == {"cpu": "8"} and pods.worker_threads(s, pods.pod_resources(
        s["resources"])) == 8

# ------------------------------------------------------------------------------ the pod template


def context(settings, **kw):
    return pods.pod_context(settings, pod_name="jq-0", labels={pods.LABEL_CLUSTER: "jq"},
                           secret_name="jq-token", scheduler_address="tcp://10.0.0.5:8786",
                           death_timeout=60, **kw)


def test_default_pod(env):
    s = pods.resolve_settings({"image": "site/w:1", "resources": {"cpu": "1500m", "memory": "1Gi"},
                              "env": {"A": "x y"}, "worker_extra_args": ["--lifetime-stagger", "5s"]})
    pod = pods.render_pod(None, context(s), namespace="team")
    assert pod["metadata"] == {"name": "jq-0", "namespace": "team",
                               "labels": {pods.LABEL_CLUSTER: "jq"}}
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    (c,) = spec["containers"]
    assert c["image"] == "site/w:1" and "imagePullPolicy" not in c
    assert c["resources"]["limits"] == {"cpu": "1500m", "memory": "1Gi"}
    assert c["command"][:2] == ["/bin/sh", "-c"]
    assert c["command"][4:] == [
        "python", "-m", "jobqueue", "worker", "tcp://10.0.0.5:8786", "--nthreads", "1",
        "--nworkers", "1", "--memory-limit", str(2 ** 30), "--name", "jq-0", "--death-timeout",
        "60", "--lifetime-stagger", "5s"]
    assert {"name": "A", "value": "x y"} in c["env"]
    assert spec["volumes"] == [{"name": "jobqueue-token",
                                "secret": {"secretName": "jq-token", "defaultMode": 0o400}}]
    assert c["volumeMounts"][0]["mountPath"] == pods.TOKEN_DIR


def test_the_token_script_reads_the_file_and_runs_the_worker(tmp_path):
    """The container's command, run by a real sh: the token ends up in the worker's environment
    only; a missing file stops it with a message naming the file."""
    token = tmp_path / "token"
    token.write_text("s3cret")
    probe = [sys.executable, "-c", "import os, sys; print(os.environ['JOBQUEUE_TOKEN'], "
             "'JOBQUEUE_TOKEN_FILE' in os.environ, sys.argv[1:])", "a b"]
    run = subprocess.run(["/bin/sh", "-c", pods.TOKEN_SCRIPT, "jobqueue-worker", *probe],
                         env={"JOBQUEUE_TOKEN_FILE": str(token), "PATH": os.environ["PATH"]},
                         capture_output=True, text=True)
    assert run.stdout.strip() == "s3cret False ['a b']"
    run = subprocess.run(["/bin/sh", "-c", pods.TOKEN_SCRIPT, "jobqueue-worker", *probe],
                         env={"JOBQUEUE_TOKEN_FILE": str(tmp_path / "gone")},
                         capture_output=True, text=True)
    assert run.returncode == 1 and f"cannot read the cluster token from {tmp_path / 'gone'}" \
        in run.stderr


def test_values_cannot_add_keys(env):
    s = pods.resolve_settings({"image": 'x"\n    securityContext: {privileged: true}',
                              "env": {"B": "}\nhostNetwork: true"}})
    pod = pods.render_pod(None, context(s), namespace="default")
    assert "securityContext" not in pod["spec"]["containers"][0]
    assert "hostNetwork" not in pod["spec"]
    assert pod["spec"]["containers"][0]["image"].startswith('x"')


def test_site_template_and_enforced_labels(env, tmp_path):
    site = write(tmp_path / "site" / "pod.yaml.j2", """
        apiVersion: v1
        kind: Pod
        metadata:
          name: other
          labels: {team: physics, jobqueue/cluster: not-mine}
        spec:
          nodeSelector: {pool: batch}
          containers:
          - name: worker
            image: {{ image | y }}
            command: {{ command | y }}
    """)
    s = pods.resolve_settings({"image": "w:1", "template": str(site)})
    pod = pods.render_pod(s["template"], context(s), namespace="ns")
    assert pod["metadata"]["name"] == "jq-0" and pod["metadata"]["namespace"] == "ns"
    assert pod["metadata"]["labels"] == {"team": "physics", pods.LABEL_CLUSTER: "jq"}
    assert pod["spec"]["nodeSelector"] == {"pool": "batch"}


@pytest.mark.parametrize("body, message", [
    ("kind: Pod\nspec: {containers: []}", "must render a Pod"),
    ("kind: Service\n", "must render a Pod"),
    ("kind: Pod\nspec: {{ nothing }}", "'nothing' is undefined; the variables are"),
    ("kind: Pod\n{% if %}", "line 2"),
    ("kind: Pod\n  - : [", "does not render to valid YAML"),
])
def test_bad_site_templates(tmp_path, env, body, message):
    site = write(tmp_path / "bad.yaml.j2", body)
    s = pods.resolve_settings({"image": "w:1"})
    with pytest.raises(ValueError, match=message):
        pods.render_pod(str(site), context(s), namespace="ns")


def test_missing_site_template_is_a_config_error(env, tmp_path):
    with pytest.raises(config.ConfigError, match="kubernetes.template: .*no such file"):
        pods.resolve_settings({"image": "w:1", "template": str(tmp_path / "none.yaml.j2")})


def test_secret_manifest_holds_the_token_base64():
    m = pods.secret_manifest("jq-token", "ns", {"a": "b"}, "tok")
    assert m["data"] == {"token": "dG9r"} and m["metadata"]["labels"] == {"a": "b"}

# ------------------------------------------------------------------------------ on a real Kubernetes

KUBECTL = os.environ.get("KUBECTL") or "kubectl"
IMAGE = os.environ.get("JOBQUEUE_TEST_KUBERNETES_IMAGE")
# A small request, so that many pods fit on the test node, and no CPU limit (one of 100m would
# cap the worker's start, two python processes, at a tenth of a core).
RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}}
SETTINGS = {"resources": RESOURCES, "poll_interval": 0.5}

# Lambdas travel by value: the worker image cannot import this test module.
inc = lambda x: x + 1                                   # noqa: E731
add = lambda a, b: a + b                                # noqa: E731
stamp = lambda name: (name, os.urandom(8).hex())        # noqa: E731  a result that cannot be
                                                        # recomputed to the same value
slow = lambda x: time.sleep(0.5) or x                   # noqa: E731


def kubectl(*args, check=True) -> str:
    run = subprocess.run([KUBECTL, *args], capture_output=True, text=True, timeout=60)
    if check and run.returncode:
        raise AssertionError(f"kubectl {' '.join(args)}: exit {run.returncode}: {run.stderr}")
    return run.stdout


def kube_running() -> bool:
    if not (os.environ.get("KUBECONFIG") and IMAGE):
        return False
    try:
        return kubectl("get", "--raw", "/readyz", check=False).strip() == "ok"
    except (OSError, subprocess.TimeoutExpired):
        return False


def objects(namespace, cluster_name=None) -> list:
    """Pods, Secrets and Services that jobqueue made in the namespace (of one cluster), asked with
    kubectl, not with the cluster's own client."""
    label = f"{pods.LABEL_CLUSTER}={cluster_name}" if cluster_name else \
        "app.kubernetes.io/managed-by=jobqueue"
    out = kubectl("get", "pods,secrets,services", "-n", namespace, "-l", label, "-o", "name")
    return sorted(out.split())


def pod_names(namespace, cluster_name) -> list:
    return [o for o in objects(namespace, cluster_name) if o.startswith("pod/")]


def pods_made(namespace, cluster_name) -> dict:
    """{uid: name} of every pod of the cluster that Kubernetes scheduled, deleted ones too (from
    the scheduler's events, not from the cluster's own count): pod creations, to show churn."""
    out = kubectl("get", "events", "-n", namespace, "--field-selector", "reason=Scheduled",
                  "-o", "jsonpath={range .items[*]}{.involvedObject.uid} "
                  "{.involvedObject.name}{'\\n'}{end}")
    made = dict(line.split() for line in out.splitlines() if line.strip())
    return {uid: name for uid, name in made.items() if name.startswith(f"{cluster_name}-")}


@pytest.fixture(scope="module")
def namespace():
    needs_service(kube_running(), "Kubernetes (ci/kubernetes/start.sh; . ci/state/kubernetes/env.sh)")
    ns = f"jq-test-{secrets.token_hex(3)}"
    kubectl("create", "namespace", ns)
    wait_until(lambda: kubectl("get", "serviceaccount", "default", "-n", ns, check=False),
          60, f"the default service account of namespace {ns}")
    yield ns
    kubectl("delete", "namespace", ns, "--wait=false")


@pytest.fixture
def kube(namespace):
    """KubeCluster(...) in the test namespace with small worker pods; every cluster must leave
    nothing behind."""
    from jobqueue import KubeCluster

    made = []

    def make(**kw):
        cluster = KubeCluster(**{"image": IMAGE, "namespace": namespace, **SETTINGS, **kw})
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()
        assert objects(namespace, cluster.name) == []


@pytest.mark.kubernetes
def test_map_graph_and_scale_keep_every_result(kube, namespace):
    from jobqueue import Client

    cluster = kube(n_workers=2)
    with Client(cluster) as client:
        assert client.gather(client.map(inc, range(50))) == list(range(1, 51))
        a = client.submit(inc, 1)
        b = client.submit(add, a, 10)
        c = client.submit(add, a, b)
        assert c.result(timeout=60) == 14

        cluster.scale(4)
        cluster.wait_for_workers(4, timeout=120)
        names = sorted(w["name"] for w in cluster.workers.values())
        assert names == [f"{cluster.name}-{i}" for i in range(4)]
        held = [client.submit(stamp, n, workers=[n]) for n in names]
        before = client.gather(held)
        assert [name for name, _ in before] == names

        cluster.scale(1)
        wait_until(lambda: len(cluster.workers) == 1
                   and len(pod_names(namespace, cluster.name)) == 1,
                   120, "one worker and one pod after scale(1)")
        assert client.gather(held) == before            # moved off the retired workers, not
        assert cluster.pods_created == 4                # recomputed (os.urandom differs)
        assert sorted(pods_made(namespace, cluster.name).values()) == names
        assert set(cluster.get_logs()) >= {"scheduler", *names}


@pytest.mark.kubernetes
def test_adapt_goes_up_and_back_to_zero_without_churn(kube, namespace):
    from jobqueue import Client

    cluster = kube()
    cluster.adapt(minimum=0, maximum=3, interval=0.5, wait_count=3, target_duration="1s")
    with Client(cluster) as client:
        futures = client.map(slow, range(24))
        assert client.gather(futures) == list(range(24))
        assert len(pod_names(namespace, cluster.name)) >= 1
        del futures
    wait_until(lambda: not cluster.live_jobs() and not pod_names(namespace, cluster.name),
               120, "no pod left after the burst")
    assert cluster.pods_created == 3                    # up to the maximum once, no re-creation
    assert len(pods_made(namespace, cluster.name)) == 3   # as Kubernetes counts them
    assert len(cluster.workers) == 0


@pytest.mark.kubernetes
@pytest.mark.parametrize("settings, reason", [
    ({"image": "local/no-such-image:1"}, r"ErrImagePull|ImagePullBackOff"),
    ({"image": "local/no-such-image:1", "image_pull_policy": "Never"}, r"ErrImageNeverPull"),
    ({"resources": {"cpu": "1000"}}, r"Unschedulable: .*Insufficient cpu"),
], ids=["no-such-image", "image-never-pulled", "1000-cpus"])
def test_a_pod_that_cannot_start_is_explained(kube, namespace, settings, reason):
    """Must-show 2: Kubernetes' reason within 30 s, and wait_for_workers fails early with it.
    A pod whose image cannot be pulled can never start: the cluster gives up on it and deletes
    it; one asking for 1,000 CPUs may fit once a node is added: it stays, counted as capacity."""
    import re

    cluster = kube(**settings)
    cluster.scale(1)
    with pytest.raises(RuntimeError, match=reason) as e:
        cluster.wait_for_workers(1, timeout=30)          # a TimeoutError would fail the test
    (job,) = cluster.jobs.values()
    if "image" in settings:
        assert "but no more pods are created: its jobs can never start" in str(e.value)
        assert job.state == "failed" and re.match(f"cannot start as created: ({reason})",
                                                  job.reason)
        wait_until(lambda: not pod_names(namespace, cluster.name), 30, "the pod deleted")
    else:
        assert "the pods left can bring at most 0" in str(e.value) and not cluster.failure
        assert job.state == "pending" and job.stuck and re.match(reason, job.reason)
        assert pod_names(namespace, cluster.name) == [f"pod/{job.name}"]


@pytest.mark.kubernetes
def test_a_failing_pod_is_reported_created_again_then_given_up(kube):
    """Its exit code and last log lines are said; scale(1) is a target, so it is created again
    (start_retries times in a row, as batch jobs are), then the cluster gives up."""
    cluster = kube(python="/no/such/python")
    cluster.scale(1)
    with pytest.raises(RuntimeError, match=r"failed \(Error, exit code 127\)") as e:
        cluster.wait_for_workers(1, timeout=60)
    assert "/no/such/python: not found" in str(e.value)      # the pod's last log lines
    assert "no more pods are created: 3 submissions in a row" in str(e.value)
    assert [(j.state, j.exit_code) for j in cluster.jobs.values()] == [("failed", 127)] * 3


SCRIPT = """
import sys, time
from jobqueue import KubeCluster
cluster = KubeCluster(image=sys.argv[1], namespace=sys.argv[2], n_workers=2,
                      resources={"requests": {"cpu": "100m"}}, poll_interval=0.5)
cluster.wait_for_workers(2, timeout=120)
print(cluster.name, flush=True)
time.sleep(600)
"""


@pytest.mark.kubernetes
@pytest.mark.parametrize("how", ["close", "SIGINT", "SIGTERM"])
def test_close_ctrl_c_and_sigterm_leave_nothing(kube, namespace, how):
    if how == "close":
        cluster = kube(n_workers=2)
        cluster.wait_for_workers(2, timeout=120)
        name = cluster.name
        assert len(objects(namespace, name)) == 3        # two pods and the Secret
        cluster.close()
    else:
        proc = subprocess.Popen([sys.executable, "-c", SCRIPT, IMAGE, namespace],
                                stdout=subprocess.PIPE, text=True)
        try:
            name = proc.stdout.readline().strip()
            assert name, f"the script ended with {proc.wait()} before its workers came"
            assert len(objects(namespace, name)) == 3
            proc.send_signal(getattr(signal, how))
            signum = getattr(signal, how)
            assert proc.wait(timeout=90) in (-signum, 128 + signum)    # ended by the signal
        finally:
            proc.kill()
            proc.wait()
    assert objects(namespace, name) == []
    assert "pod/" not in kubectl("get", "pods", "-n", namespace, "-o", "name")


@pytest.mark.kubernetes
def test_the_token_is_in_no_pod_spec_and_no_command_line(kube, namespace):
    import base64

    cluster = kube(n_workers=2)
    cluster.wait_for_workers(2, timeout=120)
    token = cluster.token
    specs = kubectl("get", "pods", "-n", namespace, "-l", f"{pods.LABEL_CLUSTER}={cluster.name}",
                    "-o", "yaml") + kubectl("get", "pods", "-n", namespace, "-o", "json")
    assert f"name: {cluster.name}-1" in specs                # the pods are in what we read
    for form in (token, base64.b64encode(token.encode()).decode()):
        assert form not in specs
    secret = kubectl("get", "secret", cluster.secret_name, "-n", namespace, "-o",
                     "jsonpath={.data.token}")
    assert base64.b64decode(secret).decode() == token       # where it is instead

    cmdlines = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdlines.append(f.read().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    workers = [c for c in cmdlines if f"--name {cluster.name}-" in c]
    assert len(workers) >= 2                                  # the pods' processes are visible here
    assert not [c for c in cmdlines if token in c]


WORKFLOW = """
from jobqueue import Client

with Client() as client:
    squares = client.map(lambda x: x * x, range(20))
    total = client.submit(sum, squares)
    print("total", total.result(), flush=True)
"""


@pytest.mark.kubernetes
@pytest.mark.slurm
def test_one_workflow_runs_with_slurm_and_kubernetes(namespace, tmp_path):
    from tests.batch._realsystem import slurm_running

    needs_service(slurm_running(), "SLURM (ci/slurm/start.sh)")
    script = write(tmp_path / "workflow.py", WORKFLOW)
    env = dict(os.environ, JOBQUEUE_KUBERNETES__IMAGE=IMAGE, JOBQUEUE_KUBERNETES__NAMESPACE=namespace,
               JOBQUEUE_KUBERNETES__RESOURCES=json.dumps(RESOURCES))
    outputs = {}
    for cluster, options in [("slurm", ["--cores", "1", "--memory", "500MB",
                                        "--log-directory", str(tmp_path)]),
                             ("kubernetes", [])]:
        run = subprocess.run([sys.executable, "-m", "jobqueue", "submit", "--cluster", cluster,
                              *options, "--jobs", "2", str(script)],
                             capture_output=True, text=True, env=env, timeout=240)
        assert run.returncode == 0, run.stderr
        outputs[cluster] = run.stdout
    assert outputs["slurm"] == outputs["kubernetes"] == "total 2470\n"
    assert objects(namespace) == []


@pytest.mark.kubernetes
def test_submit_stops_the_script_when_every_pod_fails(namespace, tmp_path):
    """As for batch jobs: pods that can never start (an image that does not exist) stop the
    script with Kubernetes' reason, and nothing is left in the namespace."""
    script = write(tmp_path / "workflow.py", WORKFLOW)
    env = dict(os.environ, JOBQUEUE_KUBERNETES__IMAGE="local/no-such-image:1",
               JOBQUEUE_KUBERNETES__NAMESPACE=namespace,
               JOBQUEUE_KUBERNETES__RESOURCES=json.dumps(RESOURCES))
    run = subprocess.run([sys.executable, "-m", "jobqueue", "submit", "--cluster", "kubernetes",
                          "--jobs", "2", str(script)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 1, run.stderr
    assert "no more pods are created: its jobs can never start as submitted" in run.stderr
    assert "stopping the script: the cluster cannot run its jobs" in run.stderr
    assert "ErrImagePull" in run.stderr or "ErrImageNeverPull" in run.stderr
    assert "2 failed" in run.stderr and run.stdout == ""
    assert objects(namespace) == []

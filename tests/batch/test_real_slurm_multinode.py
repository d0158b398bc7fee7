"""SLURMCluster on a login node, its workers on two other hosts: the container SLURM cluster that
ci/slurm-multinode/start.sh runs (controller jqctl, compute nodes jqnode1 and jqnode2 on the
docker network whose bridge is jqslurm0; this host submits with SLURM_CONF pointing at it).

The compute nodes share $HOME, this checkout's top-level directory (read-only, with the venv the
jobs run) and JOBQUEUE_TEST_SLURM_MULTINODE_SHARED (the job output) with this host. Their
network interface is named jqslurm0 too, as ib0 is on both sides of a real cluster.
"""
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from _realsystem import still_queued, wait_until
from conftest import needs_service
from jobqueue import Client, SLURMCluster
from jobqueue.node import interface_address, public_address

pytestmark = pytest.mark.slurm

CONF = os.environ.get("JOBQUEUE_TEST_SLURM_MULTINODE_CONF", "")
INTERFACE = os.environ.get("JOBQUEUE_TEST_SLURM_MULTINODE_INTERFACE", "jqslurm0")
NODES = os.environ.get("JOBQUEUE_TEST_SLURM_MULTINODE_NODES", "jqnode1 jqnode2").split()
SHARED = os.environ.get("JOBQUEUE_TEST_SLURM_MULTINODE_SHARED", "")
MOUNTS = os.environ.get("JOBQUEUE_TEST_SLURM_MULTINODE_MOUNTS", "").split()


def cluster_up() -> bool:
    """The container cluster answers this host, with both compute nodes up."""
    if not (CONF and os.path.exists(CONF) and shutil.which("sinfo")):
        return False
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True,
                         timeout=30, env={**os.environ, "SLURM_CONF": CONF})
    up = {line.split()[0] for line in out.stdout.splitlines()
          if line.split()[1:] and line.split()[1] in ("idle", "mix", "alloc")}
    return up == set(NODES)


def shared(path: str) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in MOUNTS)


@pytest.fixture(scope="module")
def service():
    needs_service(cluster_up(), "the container SLURM cluster (ci/slurm-multinode/start.sh; "
                                ". ci/state/slurm-multinode/env.sh)")
    python = os.path.abspath(sys.executable)
    if not shared(python):
        pytest.fail(f"the compute containers cannot run {python}: they share only {MOUNTS}; "
                    f"run the tests from a checkout under one of them, or restart "
                    f"ci/slurm-multinode/start.sh from this checkout")


@pytest.fixture
def make(service, monkeypatch):
    """SLURMClusters that submit to the container cluster (SLURM_CONF), their job output in the
    shared directory; closed at the end, and their jobs must have left its queue."""
    monkeypatch.setenv("SLURM_CONF", CONF)
    logs = tempfile.mkdtemp(prefix="logs-", dir=SHARED)
    clusters = []

    def make(**settings):
        settings = {"cores": 1, "memory": "500MB", "walltime": "00:10:00",
                    "log_directory": logs, "poll_interval": 0.5, **settings}
        c = SLURMCluster(**settings)
        clusters.append(c)
        return c

    yield make
    for c in clusters:
        ids = list(c.jobs)
        c.close()
        if ids:
            wait_until(lambda: not still_queued(c, ids), 30,
                       f"jobs {still_queued(c, ids)} of {c.name} left the queue")
    shutil.rmtree(logs, ignore_errors=True)


def hosts_of(client) -> dict:
    """{worker address: the host name it runs on}, asked of the workers themselves."""
    return client.run(socket.gethostname)


def test_workers_on_two_compute_nodes_compute_a_map_and_a_graph(make):
    # --exclusive: each job gets a whole node, so the two jobs land on the two nodes
    cluster = make(interface=INTERFACE, job_extra_directives=["--exclusive"])
    login = interface_address(INTERFACE)
    assert cluster.scheduler_address.startswith(f"tcp://{login}:")
    assert f"--interface {INTERFACE}" in cluster.job_script()
    cluster.scale(jobs=2)
    cluster.wait_for_workers(2, timeout=120)
    with Client(cluster) as client:
        hosts = hosts_of(client)
        assert sorted(hosts.values()) == sorted(NODES)
        assert socket.gethostname() not in hosts.values()
        # the workers listen on the nodes' own jqslurm0 addresses, in the login node's network
        prefix = login.rsplit(".", 1)[0] + "."
        assert all(a.startswith(f"tcp://{prefix}") and not a.startswith(f"tcp://{login}:")
                   for a in hosts)
        assert client.gather(client.map(lambda x: x + 1, range(500))) == list(range(1, 501))

        # a graph across the hosts: parts made on both nodes, combined on the second
        def part(i):
            import socket
            return socket.gethostname(), list(range(10 * i, 10 * i + 10))

        def combine(*parts):
            import socket
            return socket.gethostname(), sorted({p[0] for p in parts}), \
                sum(sum(p[1]) for p in parts)

        (a, host_a), (b, host_b) = sorted(hosts.items(), key=lambda kv: kv[1])
        parts = [client.submit(part, i, workers=[(a, b)[i % 2]]) for i in range(6)]
        where, made_on, total = client.submit(combine, *parts, workers=[b]).result(timeout=60)
        assert (where, made_on, total) == (host_b, sorted([host_a, host_b]), sum(range(60)))

    ids = list(cluster.jobs)
    assert len(ids) == 2
    cluster.close()
    wait_until(lambda: not still_queued(cluster, ids), 30,
               f"close() should leave no job of {cluster.name} in the queue, but "
               f"{still_queued(cluster, ids)} are still there")
    listed = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True,
                            timeout=30, check=True).stdout.split()
    assert not set(ids) & set(listed)


# The two tests below use the dask-jobqueue parameters of issue 15 that the scheduler options
# (scheduler_options={"interface": ...}) and abstract resources (--resources, resources=) bring.

def test_scheduler_options_interface_is_where_workers_on_other_hosts_connect(make):
    # the scheduler's interface only: the workers find their own address (the one that routes
    # to the scheduler), as with dask-jobqueue's scheduler_options on a login node
    cluster = make(scheduler_options={"interface": INTERFACE},
                   job_extra_directives=["--exclusive"])
    login = interface_address(INTERFACE)
    assert login != public_address()        # not where the scheduler would listen by default
    assert cluster.scheduler_address.startswith(f"tcp://{login}:")
    assert "--interface" not in cluster.job_script()
    cluster.scale(jobs=2)
    cluster.wait_for_workers(2, timeout=120)
    with Client(cluster) as client:
        hosts = hosts_of(client)
        assert sorted(hosts.values()) == sorted(NODES)
        prefix = login.rsplit(".", 1)[0] + "."
        assert all(a.startswith(f"tcp://{prefix}") for a in hosts)
        assert client.gather(client.map(lambda x: 2 * x, range(100))) == list(range(0, 200, 2))


def test_a_gpu_task_runs_only_on_the_node_whose_workers_declare_a_gpu(make):
    gpu_node, plain_node = NODES
    cluster = make(worker_extra_args=["--resources", "GPU=1"],
                   job_extra_directives=[f"-w {gpu_node}"])
    assert "--resources GPU=1" in cluster.job_script()
    cluster.scale(jobs=1)
    # a worker without the resource joins the same scheduler from the other node: a job of
    # our own, which reads the cluster's token file as the cluster's jobs do
    plain = subprocess.run(
        ["sbatch", "--parsable", "-J", "plain-worker", "-w", plain_node, "-o",
         os.path.join(cluster.log_directory, "plain-%j.out"), "--wrap",
         f"export JOBQUEUE_TOKEN=$(cat {shlex.quote(cluster.token_file)}); "
         f"exec {shlex.quote(sys.executable)} -m jobqueue worker {cluster.scheduler_address} "
         f"--name plain-worker --death-timeout 60"],
        capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    try:
        cluster.wait_for_workers(1, timeout=120)
        wait_until(lambda: len(cluster.scheduler.workers()) == 2, 120,
                   f"the plain worker (job {plain}) should join")
        with Client(cluster) as client:
            hosts = hosts_of(client)
            assert sorted(hosts.values()) == sorted(NODES)
            (other,) = [a for a, h in hosts.items() if h == plain_node]

            def where(i):
                import socket
                return socket.gethostname()

            # both workers are idle; only the GPU node's may run the tasks that need a GPU
            gpu = [client.submit(where, i, resources={"GPU": 1}, pure=False) for i in range(20)]
            assert {f.result(timeout=60) for f in gpu} == {gpu_node}
            # the other worker computes what it is given
            assert client.submit(where, 0, workers=[other], pure=False).result(timeout=60) \
                == plain_node
    finally:
        subprocess.run(["scancel", plain], capture_output=True, timeout=30)
        wait_until(lambda: not still_queued(cluster, [plain]), 30,
                   f"the plain worker's job {plain} should leave the queue")

"""SSHCluster against real sshds: on localhost (ci/sshd/start.sh), and across simulated hosts
(network namespaces on a private bridge, each with its own sshd; see _netns.py).

Only loopback and the private addresses made here (10.123.S.0/24) are ever contacted.
"""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import _netns
from conftest import needs_service
from jobqueue import Client, SSHCluster
from jobqueue.deploy import ssh, ssh_remote

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SSH_CONFIG = os.path.join(ROOT, "ci", "state", "sshd", "ssh_config")

# A lambda travels by value: remote workers cannot import this test module.
inc = lambda x: x + 1      # noqa: E731
slow = lambda x: __import__("time").sleep(0.2) or x     # noqa: E731


def sshd_running() -> bool:
    if not os.path.exists(SSH_CONFIG):
        return False
    try:
        return subprocess.run(["ssh", "-F", SSH_CONFIG, "-o", "BatchMode=yes", "localhost",
                               "true"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def connect():
    needs_service(sshd_running(), "sshd on 127.0.0.1:2222 (ci/sshd/start.sh)")
    return {"config_file": SSH_CONFIG, "port": 2222}


@pytest.fixture(scope="module")
def net(connect):
    """Four simulated hosts: h0-h2 run an sshd, h3 refuses ssh."""
    why = _netns.unavailable()
    needs_service(why is None, f"network namespaces ({why})")
    net = _netns.claim(n=4)
    try:
        net.addresses = net.up(sshd=3)
        yield net
    finally:
        net.down()


def processes_with(text: str) -> list:
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or ())
        if text in cmdline and p.info["pid"] != me:
            found.append(f"{p.info['pid']}: {cmdline[:200]}")
    return found


def jobqueue_in(net) -> list:
    """The jobqueue processes in the namespaces, as "h<i> pid: command line"."""
    found = []
    for i in range(net.n):
        for pid in net.pids(i):
            try:
                p = psutil.Process(pid)
                if p.name() != "sshd" and "jobqueue" in " ".join(p.cmdline()):
                    found.append(f"h{i} {pid}: {' '.join(p.cmdline())[:200]}")
            except psutil.Error:
                pass
    return found


def wait_until_empty(probe, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while (left := probe()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.1)


def host_of(address: str) -> str:
    return address.split("://")[1].rsplit(":", 1)[0]


# -- no sshd needed ----------------------------------------------------------------------------

def test_connect_options_map_to_ssh_flags():
    argv = ssh.ssh_argv("alice@node1", {
        "config_file": "~/cfg", "port": 2222, "username": "alice", "identity_file": ["k1", "k2"],
        "known_hosts": "/kh", "connect_timeout": 5, "server_alive_interval": 20,
        "options": {"ProxyJump": "gw"}, "ssh_args": ["-v"]})
    assert argv == ["ssh", "-T", "-o", "BatchMode=yes", "-F", os.path.expanduser("~/cfg"),
                    "-p", "2222", "-l", "alice", "-i", "k1", "-i", "k2",
                    "-o", "UserKnownHostsFile=/kh", "-o", "ConnectTimeout=5",
                    "-o", "ServerAliveInterval=20", "-o", "ServerAliveCountMax=4",
                    "-o", "ProxyJump=gw", "-v", "--", "alice@node1"]
    assert ssh.ssh_argv("h", {}) == ["ssh", "-T", "-o", "BatchMode=yes", "--", "h"]


def test_remote_command_is_quoted_and_carries_no_token():
    cmd = ssh.remote_command("/opt/my env/python", "worker",
                             ["tcp://10.0.0.1:8786", "--name", "a b"])
    assert cmd == ("exec '/opt/my env/python' -m jobqueue.deploy.ssh_remote worker "
                   "tcp://10.0.0.1:8786 --name 'a b'")


def test_options_are_checked():
    assert ssh.worker_settings({"death-timeout": "10s", "memory-limit": "2GB"}) == {
        **ssh.WORKER_DEFAULTS, "death_timeout": 10.0, "memory_limit": 2_000_000_000}
    with pytest.raises(ValueError, match="unknown option 'nthread'; did you mean 'nthreads'"):
        ssh.worker_settings({"nthread": 2})
    with pytest.raises(ValueError, match="death_timeout must be positive"):
        ssh.worker_settings({"death_timeout": 0})
    with pytest.raises(ValueError, match="nworkers must be a whole number"):
        ssh.worker_settings({"nworkers": "two"})
    assert ssh.worker_settings({"resources": "GPU=1,FOO=2"})["resources"] == {"GPU": 1, "FOO": 2}
    assert ssh.worker_settings({"resources": {"GPU": 1}})["resources"] == {"GPU": 1}
    with pytest.raises(ValueError, match="worker_options: resources: the amount of 'GPU' must be a number"):
        ssh.worker_settings({"resources": {"GPU": "one"}})
    with pytest.raises(ValueError, match="at least two hosts"):
        SSHCluster(["localhost"])
    with pytest.raises(ValueError, match="bad host '-oProxyCommand=x'"):
        SSHCluster(["localhost", "-oProxyCommand=x"])
    with pytest.raises(ValueError, match="unknown option 'prot'; did you mean 'port'"):
        SSHCluster(["localhost", "localhost"], connect_options={"prot": 22})


def test_remote_half_fills_in_what_only_the_host_knows(monkeypatch):
    monkeypatch.setenv("SSH_CONNECTION", "10.0.0.1 50000 10.0.0.7 22")
    assert ssh_remote.fill_in(["scheduler", "--port", "0"]) == \
        ["scheduler", "--port", "0", "--host", "10.0.0.7"]
    # `jobqueue scheduler --interface` and `jobqueue worker ... auto` work these out themselves
    assert ssh_remote.fill_in(["scheduler", "--interface", "lo"]) == \
        ["scheduler", "--interface", "lo"]
    worker = ["worker", "tcp://x:1", "--nthreads", "auto", "--memory-limit", "auto"]
    assert ssh_remote.fill_in(worker) == worker


def test_remote_half_stops_its_command_when_stdin_closes():
    """The lifeline without ssh: the scheduler it runs exits when its stdin is closed."""
    proc = subprocess.Popen([sys.executable, "-m", "jobqueue.deploy.ssh_remote", "scheduler",
                             "--host", "127.0.0.1", "--port", "0"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdin.write("some-token\n")
        proc.stdin.flush()
        line = ""
        while "scheduler at tcp://127.0.0.1:" not in line:
            line = proc.stderr.readline()
            assert line, "the scheduler did not start"
        child = psutil.Process(proc.pid).children()[0]
        assert "some-token" not in " ".join(child.cmdline())
        assert child.environ()["JOBQUEUE_TOKEN"] == "some-token"
        proc.stdin.close()
        assert proc.wait(10) == 0
        assert not child.is_running()
    finally:
        proc.kill()
        proc.wait()


# -- localhost, the sshd of ci/sshd/start.sh ---------------------------------------------------

@pytest.mark.ssh
def test_localhost_map_logs_and_close(connect):
    cluster = SSHCluster(["localhost", "localhost"], connect_options=connect,
                         worker_options={"nthreads": 2, "death_timeout": 10})
    try:
        with Client(cluster) as client:
            assert client.gather(client.map(inc, range(100))) == list(range(1, 101))
            (info,) = client.scheduler_info()["workers"].values()
            assert info["nthreads"] == 2 and info["name"] == f"{cluster.name}-0"
        # the token travels on stdin: on no command line, here or there
        assert len(processes_with(cluster.name)) >= 4    # ssh, remote half, nanny, worker
        assert processes_with(cluster.token) == []
        logs = cluster.get_logs()
        assert "connected to " + cluster.scheduler_address in logs[f"{cluster.name}-0"]
        assert "joined" in logs["scheduler"]
        assert "workers=1" in repr(cluster)
    finally:
        cluster.close()
    assert wait_until_empty(lambda: processes_with(cluster.name), 2.0) == []
    assert f"{cluster.name}-0" in cluster.get_logs()   # logs of closed jobs stay


KILLED_SCRIPT = """
import sys, time
from jobqueue import SSHCluster
c = SSHCluster(["localhost", "localhost", "localhost"], name=sys.argv[1],
               connect_options={"config_file": sys.argv[2]}, worker_options={"nworkers": 2})
print("ready", flush=True)
time.sleep(600)
"""


@pytest.mark.ssh
def test_death_of_the_local_process_leaves_no_remote_process(connect):
    name = f"jqkilled{os.getpid()}"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SCRIPT, name, SSH_CONFIG],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        workers = [p for p in processes_with(name) if "jobqueue.core.worker" in p]
        assert len(workers) == 4     # 2 hosts x 2 worker processes
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # no atexit ran: the ssh sessions' stdin closed, and the remote side stopped on its own
    assert wait_until_empty(lambda: processes_with(name), 15.0) == []


@pytest.mark.ssh
def test_localhost_errors_name_the_host_and_quote_ssh(connect):
    # the messages come from ssh's own failure, not from the 60 s wait for workers
    with pytest.raises(RuntimeError) as info:
        SSHCluster(["localhost", "localhost"], connect_options=connect,
                   remote_python="/nonexistent/python")
    text = str(info.value)
    assert "the remote python '/nonexistent/python' was not found on 'localhost'" in text
    assert "/nonexistent/python: No such file or directory" in text or "not found" in text
    with pytest.raises(RuntimeError, match=r"(?s)ssh could not run a command on 'localhost'.*"
                                           r"port 1: Connection refused"):
        SSHCluster(["localhost", "localhost"], connect_options={**connect, "port": 1})


# -- several hosts: network namespaces ---------------------------------------------------------

@pytest.mark.ssh
def test_three_hosts(net, connect):
    h0, h1, h2 = net.addresses[:3]
    cluster = SSHCluster([h0, h1, h2], connect_options=connect,
                         worker_options={"death_timeout": 10})
    try:
        assert isinstance(cluster.scheduler, ssh.RemoteScheduler)
        assert host_of(cluster.scheduler_address) == h0
        assert {r.split()[0] for r in jobqueue_in(net)} == {"h0", "h1", "h2"}
        with Client(cluster) as client:
            workers = {host_of(a): a for a in client.scheduler_info()["workers"]}
            assert sorted(workers) == [h1, h2]
            big = client.submit(lambda: b"x" * (4 << 20), workers=[workers[h1]])
            n = client.submit(len, big, workers=[workers[h2]])
            assert n.result() == 4 << 20
            who = client._sync(client._request({"op": "who-has", "keys": [big.key]}))
            assert set(who[big.key]) == {workers[h1], workers[h2]}  # fetched h1 -> h2
            assert client.gather(client.map(inc, range(50))) == list(range(1, 51))
            cluster.scale(1)             # retire one: its results move to the other
            assert len(cluster.workers) == 1 and n.result() == 4 << 20
            cluster.scale(2)             # back on the free host
            assert sorted(host_of(a) for a in cluster.workers) == [h1, h2]
        assert "joined" in cluster.get_logs()["scheduler"]
    finally:
        cluster.close()
    assert wait_until_empty(lambda: jobqueue_in(net), 2.0) == []
    assert processes_with(cluster.name) == []


@pytest.mark.ssh
def test_adapt_with_a_remote_scheduler_scales_up_and_down(net, connect):
    """The adaptive loop asks a scheduler on another host for its load through the same
    interface as an in-process one: down to the minimum when idle, up under load, down again."""
    h0, h1, h2 = net.addresses[:3]
    cluster = SSHCluster([h0, h1, h2], connect_options=connect,
                         worker_options={"death_timeout": 10})
    try:
        assert isinstance(cluster.scheduler, ssh.RemoteScheduler)
        adaptive = cluster.adapt(minimum=1, maximum=2, interval="200ms", wait_count=2,
                                 target_duration="1s")
        wait_for(lambda: len(cluster.jobs) == 1 and len(cluster.workers) == 1, 30,
                 "idle: down to 1 job")
        with Client(cluster) as client:
            futures = client.map(slow, range(60))
            wait_for(lambda: len(cluster.workers) == 2, 30, "under load: up to 2 workers")
            assert sorted(host_of(a) for a in cluster.workers) == [h1, h2]
            assert client.gather(futures) == list(range(60))
        wait_for(lambda: len(cluster.jobs) == 1 and len(cluster.workers) == 1, 30,
                 "idle again: down to 1 job")
        decisions = [d for _, d in adaptive.log]
        assert [bool(d.submit) for d in decisions] == [False, True, False]
        assert all(d.retire or d.cancel for d in decisions if not d.submit)
    finally:
        cluster.close()
    assert wait_until_empty(lambda: jobqueue_in(net), 2.0) == []


@pytest.mark.ssh
def test_local_scheduler_remote_workers_on_an_interface(net, connect):
    """First host localhost: the scheduler runs here, on the address that routes to the
    workers; the workers listen on their eth0."""
    h1, h2 = net.addresses[1:3]
    cluster = SSHCluster(["localhost", h1, h2], connect_options=connect,
                         worker_options={"interface": "eth0", "death_timeout": 10})
    try:
        assert host_of(cluster.scheduler_address) == net.bridge_address
        assert sorted(host_of(a) for a in cluster.workers) == [h1, h2]
        with Client(cluster) as client:
            assert client.submit(inc, 1).result() == 2
    finally:
        cluster.close()
    assert wait_until_empty(lambda: jobqueue_in(net), 2.0) == []


@pytest.mark.ssh
def test_remote_errors_name_the_host_and_quote_ssh(net, connect):
    h0, h1, _, refuses = net.addresses
    with pytest.raises(RuntimeError, match=rf"(?s)ssh could not run a command on '{refuses}'"
                                           rf".*connect to host {refuses} port 2222: "
                                           "Connection refused"):
        SSHCluster([h0, h1, refuses], connect_options=connect)
    with pytest.raises(RuntimeError, match=rf"(?s)the scheduler on '{h0}' failed to start: "
                                           rf"the remote python '/nonexistent/python' was not "
                                           rf"found on '{h0}'.*No such file or directory"):
        SSHCluster([h0, h1], connect_options=connect,
                   remote_python=["/nonexistent/python", sys.executable])
    # a worker that cannot reach the scheduler says which address it tried
    with pytest.raises(RuntimeError, match=rf"(?s)remote command on '{h1}' exited with code 3"
                                           r".*could not reach the scheduler at "
                                           r"tcp://127\.0\.0\.1:\d+ within 2 s"):
        SSHCluster(["localhost", h1], connect_options=connect,
                   scheduler_options={"host": "127.0.0.1"}, worker_options={"death_timeout": 2})
    assert wait_until_empty(lambda: jobqueue_in(net), 2.0) == []


@pytest.mark.ssh
def test_tls_scheduler_here_workers_on_other_hosts(net, connect, monkeypatch):
    """security.protocol tls: the workers on two other hosts reach the scheduler and each other
    over TLS; the session's command line carries the certificate paths, not the key."""
    from jobqueue import config

    monkeypatch.setenv("JOBQUEUE_SECURITY__PROTOCOL", "tls")
    config.refresh()
    h1, h2 = net.addresses[1:3]
    cluster = SSHCluster(["localhost", h1, h2], connect_options=connect,
                         worker_options={"interface": "eth0", "death_timeout": 10})
    try:
        assert cluster.scheduler_address.startswith("tls://")
        assert sorted(cluster.workers) and all(a.startswith("tls://") for a in cluster.workers)
        with Client(cluster) as client:
            a, b = sorted(client.scheduler_info()["workers"])
            big = client.submit(lambda: bytes(2_000_000), workers=[a])
            assert client.submit(len, big, workers=[b]).result(timeout=60) == 2_000_000
        commands = [" ".join(j.session.argv) for j in cluster.jobs.values()]
        assert commands and all("JOBQUEUE_SECURITY__TLS_CERT=" in c for c in commands)
        assert not any(cluster.token in c for c in commands)
    finally:
        cluster.close()
        monkeypatch.delenv("JOBQUEUE_SECURITY__PROTOCOL")
        config.refresh()
    assert wait_until_empty(lambda: jobqueue_in(net), 2.0) == []

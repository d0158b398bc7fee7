"""scheduler_options and interface=: the pure checks, then LocalCluster listening where told."""
import socket

import psutil
import pytest

from jobqueue import Client, LocalCluster, config
from jobqueue.deploy import scheduler_options as so


def inc(x):
    return x + 1


def interface_names():
    return sorted(psutil.net_if_addrs())


# -- pure ----------------------------------------------------------------------------------------

def test_accepted_keys_with_dashes_or_underscores():
    o = so.check({"interface": "lo", "port": 8786, "dashboard-address": ":8788",
                  "protocol": "tls://"}, "X scheduler_options")
    assert (o.interface, o.port, o.dashboard_address, o.protocol) == ("lo", 8786, ":8788", "tls")
    assert o.given == {"interface", "port", "dashboard_address", "protocol"}
    assert so.check({"dashboard_address": 8799}, "X").dashboard_address == ":8799"
    assert so.check({"dashboard_address": None}, "X").dashboard_address is None
    assert so.check(None, "X") == so.SchedulerOptions()


@pytest.mark.parametrize("options, says", [
    ({"interfce": "ib0"}, "X scheduler_options: unknown key 'interfce'; accepted: host, "
                          "interface, port, dashboard_address, protocol, security"),
    ({"host": "10.0.0.1", "interface": "ib0"}, "give host or interface, not both"),
    ({"port": -1}, "port must be a whole number from 0"),
    ({"port": "8786"}, "port must be a whole number from 0"),
    ({"protocol": "ucx://"}, "protocol 'ucx://' is not one jobqueue speaks; use tcp or tls"),
    ({"dashboard_address": [8787]}, "dashboard_address must be like ':8787'"),
    ({"security": "yes"}, "security must be a jobqueue.core.security.Security"),
    ("ib0", "must be a dict"),
])
def test_bad_options_are_refused_naming_the_key(options, says):
    with pytest.raises(ValueError) as e:
        so.check(options, "X scheduler_options")
    assert says in str(e.value)


def test_listen_host_order_host_then_options_interface_then_cluster_interface():
    address = {"lo": "127.0.0.1", "ib0": "10.1.0.5", "eth0": "10.2.0.5"}.__getitem__
    pick = so.listen_host
    assert pick(so.check({"host": "10.9.9.9"}, "X"), "ib0", "d", "X", address) == "10.9.9.9"
    assert pick(so.check({"interface": "eth0"}, "X"), "ib0", "d", "X", address) == "10.2.0.5"
    assert pick(so.check({}, "X"), "ib0", "d", "X", address) == "10.1.0.5"
    assert pick(so.check({"port": 1}, "X"), None, "default", "X", address) == "default"


def test_bad_interface_names_the_setting_and_the_interfaces_that_exist():
    with pytest.raises(ValueError) as e:
        LocalCluster(n_workers=0, interface="nosuch0", dashboard_address=None)
    message = str(e.value)
    assert message.startswith("LocalCluster interface='nosuch0': no network interface 'nosuch0'")
    assert f"it has: {', '.join(interface_names())}" in message
    with pytest.raises(ValueError) as e:
        LocalCluster(n_workers=0, scheduler_options={"interface": "nosuch1"})
    assert "LocalCluster scheduler_options interface='nosuch1'" in str(e.value)


def test_unknown_key_from_the_config_is_refused(env, monkeypatch):
    monkeypatch.setenv("JOBQUEUE_LOCAL__SCHEDULER_OPTIONS", "{dashbord: ':1'}")
    config.refresh()
    with pytest.raises(ValueError, match="unknown key 'dashbord'; accepted: host"):
        LocalCluster(n_workers=0)


# -- a real LocalCluster -------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_cluster_scheduler_on_the_options_port_and_dashboard():
    port, dash = free_port(), free_port()
    with LocalCluster(n_workers=1, threads_per_worker=1,
                      scheduler_options={"interface": "lo", "port": port,
                                         "dashboard_address": f"127.0.0.1:{dash}"}) as cluster:
        assert cluster.scheduler_address == f"tcp://127.0.0.1:{port}"
        assert cluster.dashboard_link.startswith(f"http://127.0.0.1:{dash}/")
        with Client(cluster) as client:
            assert client.submit(inc, 1).result() == 2


def test_interface_sets_the_workers_and_the_scheduler():
    """interface=lo: the scheduler listens on lo's address and so do the workers."""
    with LocalCluster(n_workers=2, threads_per_worker=1, interface="lo",
                      dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert len(cluster.workers) == 2
        assert all(a.startswith("tcp://127.0.0.1:") for a in cluster.workers)
        job = next(iter(cluster.jobs.values()))
        assert job.command()[-2:] == ["--interface", "lo"]


def test_scheduler_options_protocol_tls_makes_the_cluster_speak_tls():
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None,
                      scheduler_options={"protocol": "tls://"}) as cluster:
        assert cluster.scheduler_address.startswith("tls://")
        with Client(cluster) as client:
            assert client.submit(inc, 41).result() == 42
            assert all(a.startswith("tls://") for a in client.scheduler_info()["workers"])


# -- batch clusters (no job is submitted: no batch system needed) --------------------------------

def test_batch_cluster_takes_scheduler_options_from_its_config_section(env, monkeypatch):
    from jobqueue import SLURMCluster

    port = free_port()
    monkeypatch.setenv("JOBQUEUE_SLURM__SCHEDULER_OPTIONS",
                       f"{{interface: lo, port: {port}, dashboard-address: null}}")
    config.refresh()
    with SLURMCluster(cores=1, memory="1GB", log_directory=str(env / "logs")) as cluster:
        assert cluster.scheduler_address == f"tcp://127.0.0.1:{port}"
        assert cluster.dashboard_link is None
    # an argument replaces the config's dict, as in dask-jobqueue: its port is not kept
    with SLURMCluster(cores=1, memory="1GB", log_directory=str(env / "logs"),
                      scheduler_options={"host": "127.0.0.1", "dashboard_address": None},
                      interface="lo") as cluster:
        host, _, chosen = cluster.scheduler_address.rpartition(":")
        assert host == "tcp://127.0.0.1" and chosen != str(port)
        assert "--interface lo" in cluster.job_script()


@pytest.mark.parametrize("key", ["host", "dashboard_address"])
def test_batch_cluster_top_level_host_or_dashboard_says_use_scheduler_options(env, key):
    from jobqueue import SLURMCluster

    with pytest.raises(ValueError, match=f"SLURMCluster: pass '{key}' through "
                                         f"'scheduler_options'"):
        SLURMCluster(cores=1, memory="1GB", **{key: ":8787"})

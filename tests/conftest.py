import os
import signal
import textwrap
from pathlib import Path

import pytest

from jobqueue import config


def _as_if_ignored(signum, frame):
    pass


def pytest_configure(config):
    """Children of the suite start with SIGINT and SIGHUP at their defaults, as from a terminal.

    A suite started in the background (`cmd &` ignores SIGINT, `nohup` SIGHUP) would pass the
    ignored signals on to every process its tests start; a Python whose SIGINT is ignored never
    raises KeyboardInterrupt, and a cluster leaves an ignored SIGHUP alone (the user asked for
    it), so the tests that press Ctrl-C or hang up on a cluster's process would wait in vain. A
    handler that does nothing keeps them ignored here, and is reset to the default at exec."""
    for signum in (signal.SIGINT, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_IGN:
            signal.signal(signum, _as_if_ignored)


@pytest.fixture(scope="module")
def cluster():
    from jobqueue import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="2GB") as c:
        yield c


@pytest.fixture
def client(cluster):
    from jobqueue import Client

    with Client(cluster) as c:
        yield c


def closes_by_itself(cluster, timeout: float = 60.0) -> None:
    """Wait until the cluster's scheduler closes by itself (scheduler.idle-timeout) and the
    cluster, which follows it in a thread of its own, has closed too."""
    import threading

    closed = threading.Event()
    cluster.scheduler.on_close(closed.set)        # called after the cluster's own callback
    assert closed.wait(timeout), f"the scheduler of {cluster.name} did not close"
    for thread in threading.enumerate():
        if thread.name == f"close-{cluster.name}":
            thread.join(timeout)
    assert cluster.status == "closed"


def needs_service(available: bool, what: str):
    """Skip outside CI when a real service is missing; in CI (CI=true) a missing one fails."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is not available, and CI=true: .ci/run must start it")
    pytest.skip(f"{what} is not available (start it with the script under ci/)")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An isolated configuration: empty site and user directories, no JOBQUEUE_* variables."""
    for name in list(os.environ):
        if name.startswith("JOBQUEUE_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    (home / ".config" / "jobqueue").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(config, "SITE_DIRS", [str(tmp_path / "etc")])
    monkeypatch.setattr(config, "DASK_FILES", [str(tmp_path / "etc" / "dask" / "jobqueue.yaml"),
                                               "~/.config/dask/jobqueue.yaml"])
    config.refresh()
    yield tmp_path
    config.refresh()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path

import os
import signal
import textwrap
from pathlib import Path

import pytest

from jobqueue import config


def pytest_configure(config):
    """The tests stand in for a user at a terminal: the scripts they start and then interrupt
    (SIGINT) or hang up on (SIGHUP) must not inherit those signals ignored from the shell that
    started pytest (``nohup``, ``cmd &`` without job control). Ignored signals stay ignored in a
    child, caught ones are reset to the default: so catch them here."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
        signal.signal(signal.SIGHUP, lambda signum, frame: None)


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


def wait_until(predicate, timeout: float, what: str = "the condition") -> None:
    """Wait for a state of the world outside the test's reach (processes, files, pods, a page)
    to be reached; AssertionError naming it after timeout seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g} s")
        time.sleep(0.05)

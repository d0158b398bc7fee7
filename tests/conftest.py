import os

import pytest


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

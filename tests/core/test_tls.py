"""TLS as an option: a whole LocalCluster over TLS (temporary per-cluster certificate), and the
peers a TLS scheduler refuses: plaintext, and TLS with a certificate of another CA."""
import asyncio
import shutil

import pytest

from jobqueue import Client, LocalCluster
from jobqueue.core.comm import connect, parse_address
from jobqueue.core.errors import CommClosedError
from jobqueue.core.security import Security

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="temporary certificates need the openssl command")


@pytest.fixture
def tls_cluster(monkeypatch):
    monkeypatch.setenv("JOBQUEUE_SECURITY__PROTOCOL", "tls")
    from jobqueue import config

    config.refresh()
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster:
        yield cluster
    config.refresh()


def test_local_cluster_over_tls(tls_cluster):
    cluster = tls_cluster
    assert cluster.scheduler_address.startswith("tls://")
    with Client(cluster) as c:
        workers = sorted(c.scheduler_info()["workers"])
        assert len(workers) == 2 and all(w.startswith("tls://") for w in workers)
        assert sum(c.gather(c.map(lambda x: x * 2, range(100)))) == 9900
        # a result made on one worker and needed on the other crosses a worker-to-worker link
        big = c.submit(lambda: bytes(5_000_000), workers=[workers[0]])
        n = c.submit(len, big, workers=[workers[1]])
        assert n.result(timeout=60) == 5_000_000
        assert len(big.result(timeout=60)) == 5_000_000  # and to the client


def test_tls_scheduler_refuses_plaintext_and_foreign_certificates(tls_cluster, tmp_path):
    cluster = tls_cluster
    host, port = parse_address(cluster.scheduler_address)

    async def plaintext():
        await connect(f"tcp://{host}:{port}", cluster.token, timeout=5)

    with pytest.raises(CommClosedError, match="tls://|TLS"):
        asyncio.run(plaintext())

    other = Security.temporary(str(tmp_path / "other-ca"))

    async def foreign():
        await connect(cluster.scheduler_address, cluster.token, timeout=5, security=other)

    with pytest.raises((CommClosedError, OSError)):
        asyncio.run(foreign())
    with Client(cluster) as c:  # still serving
        assert c.submit(sum, [1, 2]).result(timeout=30) == 3

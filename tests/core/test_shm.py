"""Same-machine transfers through /dev/shm: one copy, nothing left behind, and only files of
ours with mode 0600 are read."""
import asyncio
import hashlib
import os

import pytest

from conftest import wait_until
from jobqueue import Client, LocalCluster
from jobqueue.core import protocol, shm
from jobqueue.core.comm import connect

pytestmark = pytest.mark.skipif(shm.namespace() is None, reason="no writable /dev/shm")


def ours():
    return sorted(n for n in os.listdir(shm.SHM_DIR) if n.startswith("jobqueue-"))


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        yield c


def test_large_results_cross_through_shared_memory(cluster):
    np = pytest.importorskip("numpy")
    before = ours()
    with Client(cluster) as c:
        a, b = sorted(c.scheduler_info()["workers"])
        raw = c.submit(os.urandom, 8 << 20, workers=[a], pure=False)
        digest = c.submit(lambda x: (type(x).__name__, len(x), hashlib.sha256(x).digest()),
                          raw, workers=[b])
        kind, n, h = digest.result(timeout=60)
        assert (kind, n) == ("bytes", 8 << 20)
        assert h == hashlib.sha256(raw.result(timeout=60)).digest()
        arr = c.submit(np.arange, 4_000_000, workers=[a])
        total = c.submit(lambda x: (x.flags.writeable, int(x.sum())), arr, workers=[b])
        assert total.result(timeout=60) == (True, int(np.arange(4_000_000).sum()))
        got = arr.result(timeout=60)  # to the client too, on this machine
        assert got.shape == (4_000_000,) and got[-1] == 3_999_999
    assert ours() == before


def test_files_a_reader_never_took_are_removed(cluster):
    with Client(cluster) as c:
        a = sorted(c.scheduler_info()["workers"])[0]
        f = c.submit(os.urandom, 4 << 20, workers=[a], pure=False)
        f.result(timeout=60)

        async def ask_and_leave():
            comm = await connect(a, cluster.token, role="peer", expect="worker")
            reply = await comm.request({"op": "get-data", "keys": [f.key],
                                        "shm": shm.namespace()})
            (ref,) = [x for x in reply["data"][f.key] if isinstance(x, dict)]
            assert ref["shm"] in ours()
            comm.abort()  # without reading it
            return ref["shm"]

        name = asyncio.run(ask_and_leave())
        wait_until(lambda: name not in ours(), 30, f"{name} left in {shm.SHM_DIR}")


def test_only_our_own_private_files_are_read(tmp_path):
    frames = protocol.serialize(os.urandom(2 << 20))
    created = []
    out = shm.export(frames, created)
    name = out[1]["shm"]
    os.chmod(os.path.join(shm.SHM_DIR, name), 0o644)  # someone could have written it
    with pytest.raises(ValueError, match="not a file of ours"):
        shm.load(out)
    assert name not in ours()  # unlinked all the same
    out = shm.export(frames, created)
    os.chown(os.path.join(shm.SHM_DIR, out[1]["shm"]), 65534, 65534)
    if os.getuid() == 0 or os.stat(os.path.join(shm.SHM_DIR, out[1]["shm"])).st_uid != 0:
        with pytest.raises(ValueError, match="not a file of ours"):
            shm.load(out)
    with pytest.raises(ValueError, match="not a shared-memory frame"):
        shm.load([frames[0], {"shm": "../etc/passwd", "n": 10}])
    shm.discard(created)
    assert protocol.deserialize(shm.load(shm.export(frames, created))) == \
        protocol.deserialize(frames)

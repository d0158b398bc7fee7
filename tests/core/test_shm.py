"""Same-machine transfers: read from the holder's memory (or, where that is refused, through
/dev/shm files), one copy, nothing left behind; only the process that answered is read, and only
files of ours with mode 0600."""
import asyncio
import hashlib
import os

import pytest

from conftest import needs_service, wait_until
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


def test_large_results_are_read_from_the_holders_memory(cluster):
    """No file at all: the asker copies each large frame out of the holder's memory into the
    object it returns, and checks the holder is still the process that answered."""
    needs_service(shm.cross_memory(), "reading other processes' memory (process_vm_readv)")
    np = pytest.importorskip("numpy")
    with Client(cluster) as c:
        a = sorted(c.scheduler_info()["workers"])[0]
        raw = c.submit(os.urandom, 3 << 20, workers=[a], pure=False)
        arr = c.submit(np.arange, 1_000_000, workers=[a])
        c.gather([raw, arr])

        async def ask():
            comm = await connect(a, cluster.token, role="peer", expect="worker")
            reply = await comm.request({"op": "get-data", "keys": [raw.key, arr.key],
                                        "shm": shm.namespace(), "cross": True})
            comm.abort()
            return reply

        before = ours()
        reply = asyncio.run(ask())
        assert ours() == before
        source = reply["holder"]
        assert source["pid"] != os.getpid() and source["start"]
        refs = [f for frames in reply["data"].values() for f in frames if isinstance(f, dict)]
        assert sorted(r["n"] for r in refs) == [3 << 20, 8_000_000]
        assert all(type(r["at"]) is int for r in refs)
        # the holder let go of them when the connection ended; fresh ones through a Client:
        got = c.gather([raw, arr])
        assert type(got[0]) is bytes and len(got[0]) == 3 << 20
        assert got[1].flags.writeable and int(got[1][-1]) == 999_999


def test_a_refused_memory_read_falls_back_to_files(cluster, monkeypatch):
    """Where ptrace is restricted (Yama, seccomp) the first refusal switches this process to
    files for good, and the result arrives all the same."""
    from jobqueue.core import memory

    def refuse(pid, remote, view):
        raise memory.CannotRead(1, f"cannot read the memory of process {pid}")

    monkeypatch.setattr(memory, "read_process", refuse)
    monkeypatch.setattr(shm, "_cross", [memory.CAN_READ_PROCESSES])
    before = ours()
    with Client(cluster) as c:
        a = sorted(c.scheduler_info()["workers"])[0]
        raw = c.submit(os.urandom, 2 << 20, workers=[a], pure=False)
        digest = c.submit(lambda x: hashlib.sha256(x).digest(), raw, workers=[a])
        value = raw.result(timeout=60)
        assert type(value) is bytes and hashlib.sha256(value).digest() == digest.result(60)
        assert not shm.cross_memory()
    assert ours() == before


def test_memory_of_another_process_is_read_only_while_it_answers():
    """A frame is taken from a process only if it still is the one that answered (pid and
    start time), and only from references of the expected form."""
    from jobqueue.core import memory

    data = os.urandom(2 << 20)
    created = []
    out = shm.export(protocol.serialize(data), created, cross=True)
    me = shm.holder()
    if shm.cross_memory():
        got = protocol.deserialize(shm.load(out, me))
        assert got == data and type(got) is bytes and got is not data
    with pytest.raises(ValueError, match="ended while"):
        shm.load(out, {"pid": me["pid"], "start": me["start"] + 1})
    for bad in ({"at": "0", "n": 10}, {"at": 4096, "n": -1}):
        with pytest.raises(ValueError, match="another process's memory"):
            shm.load([out[0], bad], me)
    with pytest.raises(ValueError, match="another process's memory"):
        shm.load(out, None)
    shm.discard(created)
    assert created == [] and memory.bytes_behind(memoryview(data)) is None


def test_same_machine_transfers_can_be_turned_off(monkeypatch):
    """``worker.same-machine-transfers: false``: a worker answers a peer on its own machine as
    it would one on another node, over the connection (how the TCP path is tested and
    benchmarked on one machine)."""
    monkeypatch.setenv("JOBQUEUE_WORKER__SAME_MACHINE_TRANSFERS", "false")
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as c:
        (a,) = c.scheduler_info()["workers"]
        raw = c.submit(os.urandom, 2 << 20, workers=[a], pure=False)
        value = raw.result(timeout=60)

        async def ask():
            comm = await connect(a, cluster.token, role="peer", expect="worker")
            reply = await comm.request({"op": "get-data", "keys": [raw.key],
                                        "shm": shm.namespace(), "cross": True})
            comm.abort()
            return reply

        reply = asyncio.run(ask())
    assert "holder" not in reply
    frames = reply["data"][raw.key]
    assert not any(isinstance(f, dict) for f in frames)
    assert protocol.deserialize(frames) == value


def test_a_large_read_split_between_threads_arrives_whole():
    """A read of 16 MB or more is split between threads at 2 MB boundaries; the pieces
    together are the frame, with its odd tail."""
    from jobqueue.core import memory

    needs_service(shm.cross_memory(), "reading other processes' memory (process_vm_readv)")
    data = os.urandom(memory.PARALLEL_FROM + 3 * 4096 + 5)
    buf = memory.new_buffer(len(data), copy=True)
    memory.read_process(os.getpid(), memory.address(data), buf)
    assert memory.bytes_behind(buf) == data
    plain = memory.new_buffer(len(data), copy=False)  # an anonymous mapping (numpy's case)
    memory.read_process(os.getpid(), memory.address(data), plain)
    assert bytes(plain) == data

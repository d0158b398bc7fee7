"""Auth handshake and hostile input against a real scheduler over TCP."""
import asyncio
import os
import pickle
import socket
import struct

import pytest

from jobqueue import Client
from jobqueue.core import loop as loop_mod
from jobqueue.core import protocol
from jobqueue.core.comm import MAGIC, connect, parse_address
from jobqueue.core.errors import AuthenticationError


class Boom:
    """Unpickling this creates a file: proof that something decoded a user pickle."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def raw_socket(address):
    host, port = parse_address(address)
    s = socket.create_connection((host, port), timeout=5)
    return s


def closed_by_peer(s, timeout=5.0):
    s.settimeout(timeout)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_wrong_token_is_refused(cluster):
    with pytest.raises(AuthenticationError):
        Client(cluster.scheduler_address, token="not-the-token")
    with Client(cluster) as c:
        assert c.submit(sum, [1, 2]).result() == 3


def test_garbage_before_handshake_closes_connection(cluster, tmp_path):
    marker = tmp_path / "unpickled"
    payload = pickle.dumps(Boom(str(marker)))
    s = raw_socket(cluster.scheduler_address)
    hello = s.recv(len(MAGIC) + 32)
    assert hello.startswith(MAGIC)
    frames = b"".join(protocol.dumps([{"op": "update-graph", "tasks": [], "x": payload}]))
    s.sendall((frames * 16)[:320])  # not a valid reply to the challenge (and long enough)
    assert closed_by_peer(s)
    s.close()
    assert not marker.exists()
    with Client(cluster) as c:
        assert c.submit(sum, [1, 2]).result() == 3


def test_silent_peer_and_oversized_claims(cluster):
    s = raw_socket(cluster.scheduler_address)
    s.recv(len(MAGIC) + 32)
    s.sendall(os.urandom(320))  # a wrong HMAC, whatever length its hello claims
    assert closed_by_peer(s)
    s.close()
    with Client(cluster) as c:
        assert c.submit(sum, [4]).result() == 4


def test_malformed_frames_after_auth_close_only_that_connection(cluster, tmp_path):
    marker = tmp_path / "unpickled"

    async def hostile():
        results = []
        bad_batches = [
            struct.pack("<QI", 10, 0),                       # zero frames
            struct.pack("<QI", 1 << 62, 1),                  # absurd size
            struct.pack("<QI", 3, 1) + struct.pack("<Q", 3) + b"\xc1\xc1\xc1",  # bad msgpack
            b"".join(protocol.dumps([{"no-op": 1}])),        # not a message
            b"".join(protocol.dumps([{"op": "update-graph", "tasks": [["k", "g", None,
                                      pickle.dumps(Boom(str(marker))), [], None]]}])),
        ]
        for batch in bad_batches:
            comm = await connect(cluster.scheduler_address, cluster.token)
            await comm.write([{"op": "register-client", "id": f"hostile-{os.urandom(4).hex()}"}])
            await comm.read()
            comm.transport.write(batch)
            try:
                while True:
                    await asyncio.wait_for(comm.read(), 5)
            except Exception as e:
                results.append(type(e).__name__)
        return results

    results = loop_mod.sync(hostile(), 60)
    assert len(results) == 5 and "TimeoutError" not in results
    # the last batch was well-formed msgpack, but a task needs 7 fields: refused, not decoded
    assert not marker.exists()
    with Client(cluster) as c:
        assert c.submit(sum, [1, 2]).result() == 3


def test_scheduler_never_unpickles(monkeypatch, tmp_path):
    """Run a whole workload with pickle.loads forbidden in the scheduler's module namespace."""
    import jobqueue.core.scheduler as sched_mod
    import jobqueue.core.scheduler_state as state_mod

    assert not hasattr(sched_mod, "pickle")
    assert "loads" not in open(state_mod.__file__).read()
    assert "loads" not in open(sched_mod.__file__).read()


def test_protocol_round_trip_and_limits():
    big = os.urandom(1 << 17)
    msgs = [{"op": "x", "data": protocol.Raw(big), "n": 1}, {"op": "y", "s": "text"}]
    buffers = protocol.dumps(msgs)
    wire = b"".join(bytes(b) for b in buffers)
    size, nframes = protocol.parse_prefix(wire[:12])
    out = protocol.loads(nframes, wire[12:12 + size])
    assert bytes(out[0]["data"]) == big and out[1] == {"op": "y", "s": "text"}
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_prefix(struct.pack("<QI", 100, 0))
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_prefix(struct.pack("<QI", 1 << 40, 1))
    with pytest.raises(protocol.ProtocolError):
        protocol.loads(nframes, wire[12:12 + size - 1])


def test_in_process_pipe_speaks_the_same_protocol():
    """A client in the scheduler's own process and loop gets an in-memory pipe: same handshake,
    framing and large frames as TCP, a wrong token is refused, a close reaches the other end."""
    from jobqueue.core.listener import Listener
    from jobqueue.core.errors import CommClosedError

    async def main():
        served = []

        async def handler(comm):
            served.append(comm)
            while True:
                msgs = await comm.read()
                comm.write_nowait([{"op": "echo", "n": len(msgs), "data": protocol.Raw(
                    bytes(msgs[0]["data"]))}])

        listener = Listener(b"t" * 32, handler)
        port = await listener.start("127.0.0.1", 0)
        address = f"tcp://127.0.0.1:{port}"
        listener.serve_in_process(address)
        with pytest.raises(AuthenticationError):
            await connect(address, b"x" * 32)
        assert listener.rejected == 1
        comm = await connect(address, b"t" * 32)
        assert comm.transport.get_extra_info("socket") is None  # no socket involved
        big = os.urandom(3 << 20)
        data = bytearray(big)
        comm.write_nowait([{"op": "x", "data": protocol.Raw(data)}, {"op": "y"}])
        data[:] = bytes(len(data))  # what was written was taken as it was then
        (reply,) = await comm.read()
        assert reply["n"] == 2 and bytes(reply["data"]) == big
        served[0].abort()
        with pytest.raises(CommClosedError):
            await comm.read()
        listener.stop()
        with pytest.raises(CommClosedError, match="could not connect"):
            await connect(address, b"t" * 32)  # no stale in-process entry left behind

    asyncio.run(main())


@pytest.mark.parametrize("in_process", [False, True])
def test_dispatch_hands_over_batches_in_order_then_stops_or_raises(in_process):
    """Comm.dispatch: batches reach the handler in order; a true return ends dispatching and
    read() carries on from the next batch; an exception in the handler is raised to the caller."""
    from jobqueue.core.listener import Listener
    from jobqueue.core.errors import CommClosedError

    async def main():
        seen, outcome = [], []

        async def handler(comm):
            await comm.dispatch(lambda msgs: seen.extend(m["op"] for m in msgs) or
                                msgs[-1]["op"] == "stop")
            (after,) = await comm.read()
            comm.write_nowait([{"op": "got", "what": after["op"]}])

            def fails(msgs):
                raise ValueError(msgs[0]["op"])

            try:
                await comm.dispatch(fails)
            except ValueError as e:
                outcome.append(str(e))
            comm.write_nowait([{"op": "done"}])
            try:
                await comm.dispatch(lambda msgs: None)
            except CommClosedError:
                outcome.append("closed")

        listener = Listener(b"t" * 32, handler)
        port = await listener.start("127.0.0.1", 0)
        address = f"tcp://127.0.0.1:{port}"
        if in_process:
            listener.serve_in_process(address)
        comm = await connect(address, b"t" * 32)
        for op in ["a", "b", "stop", "after"]:
            comm.write_nowait([{"op": op}])
        assert (await comm.read())[0] == {"op": "got", "what": "after"}
        comm.write_nowait([{"op": "bad"}])
        assert (await comm.read())[0]["op"] == "done"
        comm.abort()
        for _ in range(100):
            if len(outcome) == 2:
                break
            await asyncio.sleep(0.01)
        listener.stop()
        assert seen == ["a", "b", "stop"]
        assert outcome == ["bad", "closed"]

    asyncio.run(main())


def test_batched_send_keeps_the_parts_it_is_given():
    """send_batches: each part arrives as a batch of its own, in order, after what was queued."""
    from jobqueue.core.comm import BatchedSend
    from jobqueue.core.listener import Listener

    async def main():
        got = []

        async def handler(comm):
            while True:
                got.append([m["op"] for m in await comm.read()])

        listener = Listener(b"t" * 32, handler)
        port = await listener.start("127.0.0.1", 0)
        comm = await connect(f"tcp://127.0.0.1:{port}", b"t" * 32)
        bs = BatchedSend(comm)
        bs.send({"op": "first"})            # written at once
        bs.send({"op": "queued"})           # waits for the end of this loop iteration
        bs.send_batches([[{"op": "a"}], [{"op": "b"}, {"op": "c"}], [{"op": "d"}]])
        for _ in range(200):
            if sum(map(len, got)) == 6:
                break
            await asyncio.sleep(0.01)
        bs.close()
        listener.stop()
        assert got == [["first"], ["queued", "a"], ["b", "c"], ["d"]]

    asyncio.run(main())


def test_decoder_reassembles_any_split_and_keeps_idle_buffers_small():
    import random

    rng = random.Random(7)
    batches = [[{"op": "m", "i": i, "pad": "x" * rng.choice([0, 10, 3000, 40_000]),
                 "data": protocol.Raw(os.urandom(rng.choice([70_000, 300_000])))}
                if i % 5 == 0 else {"op": "m", "i": i, "pad": "x" * rng.choice([0, 10, 3000])}]
               for i in range(60)]
    wire = b"".join(b"".join(bytes(b) for b in protocol.dumps(batch)) for batch in batches)
    d = protocol.Decoder()
    assert len(d.buf) == 4096  # an idle connection holds 4 KB, not 64
    out, pos = [], 0
    while pos < len(wire):
        n = rng.choice([1, 7, 100, 4096, 65536, 1 << 20])
        out.extend(d.feed(wire[pos:pos + n]))
        pos += n
    assert len(out) == len(batches)
    for got, sent in zip(out, batches):
        assert got[0]["i"] == sent[0]["i"] and got[0]["pad"] == sent[0]["pad"]
        if "data" in sent[0]:
            assert bytes(got[0]["data"]) == sent[0]["data"].data
    assert len(d.buf) <= 1 << 16  # grew for the busy stream, up to its chunk size


def test_large_write_goes_in_slices_and_arrives_whole():
    """write() sends a large frame slice by slice as the socket drains; meanwhile nothing else
    may be written on that comm, and the reader gets the batch intact."""
    from jobqueue.core.listener import Listener

    async def main():
        accepted = asyncio.get_running_loop().create_future()

        async def handler(comm):
            accepted.set_result(comm)
            await asyncio.sleep(60)

        listener = Listener(b"t" * 32, handler)
        port = await listener.start("127.0.0.1", 0)
        comm = await connect(f"tcp://127.0.0.1:{port}", b"t" * 32)
        peer = await accepted
        big = os.urandom(24 << 20)
        comm.transport.pause_reading()  # the socket fills up: the write waits for it to drain
        writing = asyncio.ensure_future(peer.write([{"op": "big", "data": protocol.Raw(big)}]))
        await asyncio.sleep(0.2)
        assert not writing.done()
        with pytest.raises(RuntimeError, match="under way"):
            peer.write_nowait([{"op": "interleaved"}])
        comm.transport.resume_reading()
        (msg,) = await comm.read()
        await writing
        assert bytes(msg["data"]) == big
        listener.stop()
        comm.abort()

    asyncio.run(main())

"""Per-batch authentication: a batch that was flipped, dropped, duplicated, reordered or spliced
in from another connection is never decoded, and nothing after it is.

The property, fuzzed: whatever happens to the signed byte stream, what the receiver decodes is
the sender's batches in order, up to (not including) the first one that was tampered with."""
import asyncio
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobqueue.core import protocol
from jobqueue.core.comm import connect
from jobqueue.core.listener import Listener
from jobqueue.core.errors import CommClosedError
from jobqueue.core.protocol import Decoder, FrameMac, ProtocolError, Raw

KEY = b"k" * 32


def signed(batches, key=KEY):
    """The wire bytes of *batches*, each followed by its tag: a list of per-batch byte strings."""
    mac = FrameMac(key)
    out = []
    for msgs in batches:
        buffers = [bytes(b) for b in protocol.dumps(msgs)]
        out.append(b"".join(buffers) + mac.sign(buffers))
    return out


def decode_all(stream: bytes, chunks, key=KEY, **kwargs):
    """Feed *stream* in pieces of the sizes in *chunks* (cycled); returns (batches, error)."""
    decoder = Decoder(mac=FrameMac(key), **kwargs)
    got, i, pos = [], 0, 0
    try:
        while pos < len(stream):
            n = chunks[i % len(chunks)]
            got.extend(decoder.feed(stream[pos:pos + n]))
            pos += n
            i += 1
    except ProtocolError as e:
        return got, e
    finally:
        decoder.close()
    return got, None


def plain(batch):
    """Messages with memoryviews turned into bytes, to compare with what was sent."""
    return [{k: bytes(v) if isinstance(v, (memoryview, bytes, bytearray)) else v
             for k, v in m.items()} for m in batch]


def sent(batch):
    return [{k: bytes(v.data) if isinstance(v, Raw) else v for k, v in m.items()} for m in batch]


messages = st.lists(st.fixed_dictionaries(
    {"op": st.sampled_from(["a", "b", "c"]), "n": st.integers(0, 1000)},
    optional={"data": st.one_of(st.binary(max_size=100),
                                st.integers(70_000, 300_000).map(lambda n: Raw(os.urandom(n))))}),
    min_size=1, max_size=3)

mutations = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**9), st.integers(0, 7)),
    st.tuples(st.just("drop"), st.integers(0, 10**9)),
    st.tuples(st.just("duplicate"), st.integers(0, 10**9)),
    st.tuples(st.just("swap"), st.integers(0, 10**9)),
    st.tuples(st.just("splice"), st.integers(0, 10**9)),
)


def mutate(parts, batches, mutation):
    """Apply *mutation* to the per-batch byte strings; returns (stream, index of the first
    batch that may not be decoded)."""
    parts = list(parts)
    kind, where = mutation[0], mutation[1] % len(parts)
    if kind == "flip":
        offsets = [0]
        for p in parts:
            offsets.append(offsets[-1] + len(p))
        stream = bytearray(b"".join(parts))
        pos = mutation[1] % len(stream)
        stream[pos] ^= 1 << mutation[2]
        first_bad = next(i for i in range(len(parts)) if offsets[i + 1] > pos)
        return bytes(stream), first_bad
    if kind == "drop":
        del parts[where]
    elif kind == "duplicate":
        parts.insert(where + 1, parts[where])
        where += 1
    elif kind == "swap":
        if len(parts) < 2:
            parts.append(parts[0])  # a replay of the only batch
            where = 1
        else:
            where = min(where, len(parts) - 2)
            parts[where], parts[where + 1] = parts[where + 1], parts[where]
    elif kind == "splice":  # the same batch, signed for another connection
        parts[where] = signed([batches[where]], key=b"x" * 32)[0] if where == 0 else \
            signed(batches[:where + 1], key=b"x" * 32)[where]
    return b"".join(parts), where


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(batches=st.lists(messages, min_size=1, max_size=4), mutation=mutations,
       chunks=st.lists(st.integers(1, 70_000), min_size=1, max_size=4))
def test_tampered_stream_decodes_only_the_untouched_prefix(batches, mutation, chunks):
    parts = signed(batches)
    untouched, _ = decode_all(b"".join(parts), chunks)
    assert [plain(b) for b in untouched] == [sent(b) for b in batches]

    stream, first_bad = mutate(parts, batches, mutation)
    got, error = decode_all(stream, chunks)
    assert len(got) <= first_bad, f"decoded {len(got)} batches past a tampered one"
    assert [plain(b) for b in got] == [sent(b) for b in batches[:len(got)]]
    if len(got) < first_bad:
        assert error is not None  # an untouched batch can only be lost to an error before it


def test_large_batch_is_checked_as_it_arrives_and_costs_only_what_arrived():
    """A batch bigger than the scratch buffer goes into a buffer of its own, hashed as it fills;
    a tampered byte at its end is caught, and a batch that only announces 8 GB holds nothing."""
    big = os.urandom(5 << 20)
    (part,) = signed([[{"op": "big", "data": Raw(big)}]])
    got, error = decode_all(part, [1 << 16])
    assert error is None and bytes(got[0][0]["data"]) == big

    tampered = bytearray(part)
    tampered[len(part) - protocol.TAG - 1] ^= 1
    got, error = decode_all(bytes(tampered), [1 << 16])
    assert got == [] and "failed authentication" in str(error)

    budget = protocol.ReceiveBudget(10 << 30)
    decoder = Decoder(mac=FrameMac(KEY), budget=budget)
    decoder.feed(protocol.PREFIX.pack(8 << 30, 1) + protocol.LENGTH.pack(8 << 30) + b"x" * 100)
    assert budget.used == (8 << 30) + protocol.LENGTH.size + protocol.TAG
    second = Decoder(mac=FrameMac(KEY), budget=budget)
    with pytest.raises(ProtocolError, match="already receives"):
        second.feed(protocol.PREFIX.pack(8 << 30, 1) + protocol.LENGTH.pack(8 << 30) + b"x")
    decoder.close()
    assert budget.used == 0


def test_a_large_frame_lands_in_the_object_it_becomes_and_is_still_authenticated():
    """A frame of 32 MB or more is received into a bytes object of its own: ``bytes`` results
    arrive without a copy after the socket's (numpy arrays get a writable buffer), and a byte
    flipped inside it, or in the small frames around it, still fails the batch."""
    from jobqueue.core import memory

    big = os.urandom(memory.LAZY_BYTES + 12345)
    head, payload = protocol.serialize(big)
    batch = [{"op": "data", "frames": [Raw(head), Raw(payload)], "after": Raw(b"z" * 70_000)}]
    (part,) = signed([batch])
    got, error = decode_all(part, [1 << 16, 3 << 20])
    assert error is None
    (msg,) = got[0]
    value = protocol.deserialize(msg["frames"])
    assert value == big and type(value) is bytes
    if memory.WRITABLE_BYTES:
        assert memory.bytes_behind(msg["frames"][1]) is value  # no copy
        assert not msg["frames"][1].readonly
    assert bytes(msg["after"]) == b"z" * 70_000
    for where in (len(part) // 2, len(part) - protocol.TAG - 100, 40):
        tampered = bytearray(part)
        tampered[where] ^= 1
        got, error = decode_all(bytes(tampered), [1 << 16, 3 << 20])
        assert got == [] and error is not None, where


def test_tampered_batches_over_tcp_are_never_handed_to_the_server():
    """The same property over a real connection: the server's handler sees the untouched
    batches, then the connection ends; a relay that flips one byte gains nothing."""

    async def main():
        seen, ended = [], asyncio.Event()

        async def handler(comm):
            try:
                while True:
                    seen.append(await comm.read())
            except (CommClosedError, ProtocolError):
                ended.set()

        listener = Listener(b"t" * 32, handler)
        port = await listener.start("127.0.0.1", 0)
        address = f"tcp://127.0.0.1:{port}"
        for kind in ("flip", "drop", "duplicate", "swap"):
            seen.clear()
            ended.clear()
            comm = await connect(address, b"t" * 32)
            batches = [[{"op": "a", "n": i, "data": Raw(os.urandom(100_000))}] for i in range(3)]
            parts = []
            for msgs in batches:
                buffers = [bytes(b) for b in protocol.dumps(msgs)]
                parts.append(b"".join(buffers) + comm.mac_out.sign(buffers))
            stream, first_bad = mutate(parts, batches, (kind, 1, 3))
            comm.transport.write(stream)
            await asyncio.wait_for(ended.wait(), 30)
            assert [plain(b) for b in seen] == [sent(b) for b in batches[:first_bad]], kind
            comm.abort()
        listener.stop()

    asyncio.run(main())

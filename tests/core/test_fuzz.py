"""Fuzz: thousands of random, truncated, oversized and wrongly-typed frames against a real
scheduler process whose pickle module is booby-trapped; it must stay up, decode no pickle,
and serve a normal client afterwards."""
import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobqueue import Client
from jobqueue.core import loop as loop_mod
from jobqueue.core import protocol
from jobqueue.core.comm import MAGIC, connect, parse_address
from jobqueue.core.scheduler import SCHEMAS

TRAPPED_SCHEDULER = textwrap.dedent("""
    import pickle, sys, asyncio
    marker = sys.argv[2]
    def trap(*args, **kwargs):
        open(marker, "w").write("the scheduler unpickled something")
        raise RuntimeError("unpickling is forbidden in the scheduler")
    pickle.loads = pickle.load = trap
    pickle.Unpickler = trap
    from jobqueue.core.scheduler import Scheduler
    async def main():
        s = Scheduler(host="127.0.0.1", port=0, scheduler_file=sys.argv[1])
        await s.start()
        await asyncio.Event().wait()
    asyncio.run(main())
""")


@pytest.fixture(scope="module")
def trapped(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    sched_file, marker = tmp / "scheduler.json", tmp / "unpickled"
    proc = subprocess.Popen([sys.executable, "-c", TRAPPED_SCHEDULER, str(sched_file),
                             str(marker)], stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while not sched_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    info = json.loads(sched_file.read_text())
    yield proc, info["address"], info["token"], marker, sched_file
    proc.kill()
    proc.wait()


class Boom:
    def __reduce__(self):
        return (print, ("unpickled!",))


PICKLE = __import__("pickle").dumps(Boom())

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(),
                    st.text(max_size=20), st.binary(max_size=40), st.just(PICKLE))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=20)
# "terminate" is left out: a well-formed one closes the scheduler by design (client.shutdown())
ops = st.sampled_from(sorted(set(SCHEMAS) - {"terminate"}) +
                      ["register-worker", "register-client", "identity", "close-client",
                       "nonsense"])


@st.composite
def messages(draw):
    msg = {"op": draw(ops)}
    schema = SCHEMAS.get(msg["op"], {})
    for field in list(schema) + ["tasks", "keys", "key", "workers", "address", "id"]:
        if draw(st.booleans()):
            msg[field] = draw(values)
    if msg["op"] == "update-graph" and draw(st.booleans()):
        msg["tasks"] = [[draw(st.text(max_size=5)), "g", None, PICKLE, [], None, 0]]
    return msg


def wire(msgs):
    return b"".join(bytes(b) for b in protocol.dumps(msgs))


frames = st.one_of(
    st.binary(max_size=200),                                                   # random bytes
    st.builds(lambda m, cut: wire(m)[:cut], st.lists(messages(), min_size=1, max_size=3),
              st.integers(0, 100)),                                            # truncated
    st.builds(lambda n, size: struct.pack("<QI", size, n),
              st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)),           # oversized claims
    st.builds(lambda m: wire(m), st.lists(messages(), min_size=1, max_size=3)),  # wrong types
    st.builds(lambda v: wire([v]) if isinstance(v, dict) and "op" in v else
              struct.pack("<QI", 20, 1) + struct.pack("<Q", 20) + msgpack.packb(v)[:20].ljust(20),
              values),                                                         # not messages
)


async def send_authenticated(address, token, data, first):
    """Past the handshake, with valid MACs: *data* is signed as if it were one batch, so the
    scheduler's decoder and handlers (not only the MAC check) see it."""
    comm = await connect(address, token, timeout=5)
    if first is not None:
        comm.write_nowait([first])
    comm.transport.write(data + comm.mac_out.sign([data]))
    # the scheduler still answers, on a connection of its own, after handling all that
    probe = await connect(address, token, timeout=5)
    await probe.write([{"op": "identity"}])
    (reply,) = await asyncio.wait_for(probe.read(), 30)
    assert reply["op"] == "identity"
    probe.abort()
    comm.abort()


def send_unauthenticated(address, data):
    host, port = parse_address(address)
    with socket.create_connection((host, port), timeout=5) as s:
        s.recv(len(MAGIC) + 32)
        try:
            s.sendall(data)
        except OSError:
            pass


@settings(max_examples=1200, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=frames, first=st.sampled_from([None, {"op": "register-client", "id": "fuzz"},
                                           {"op": "register-worker", "address": "tcp://x:1",
                                            "name": "fuzz", "nthreads": 1}]),
       authenticated=st.booleans())
def test_fuzz_scheduler(trapped, data, first, authenticated):
    proc, address, token, marker, _ = trapped
    if authenticated:
        loop_mod.sync(send_authenticated(address, token, data, first), 30)
    else:
        send_unauthenticated(address, data)
    assert proc.poll() is None


def test_after_fuzz_scheduler_serves_and_never_unpickled(trapped, tmp_path):
    proc, address, token, marker, sched_file = trapped
    assert proc.poll() is None
    env = dict({k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")},
               JOBQUEUE_TOKEN=token)
    worker = subprocess.Popen([sys.executable, "-m", "jobqueue", "worker", address,
                               "--name", "after-fuzz", "--death-timeout", "5s"], env=env,
                              stderr=subprocess.DEVNULL)
    try:
        with Client(scheduler_file=str(sched_file)) as c:
            assert c.submit(sum, [1, 2], workers=["after-fuzz"]).result(timeout=60) == 3
            info = c.scheduler_info()
            assert "after-fuzz" in {w["name"] for w in info["workers"].values()}
    finally:
        worker.terminate()
        worker.wait(10)
    assert not marker.exists(), marker.read_text()

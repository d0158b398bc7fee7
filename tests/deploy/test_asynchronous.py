"""asynchronous=True: clusters and clients awaited from the user's event loop."""
import asyncio
import threading

import pytest

from jobqueue import Client, LocalCluster, as_completed, wait
from jobqueue.core import loop as loop_mod


def inc(x):
    return x + 1


def fails(x):
    raise ValueError(f"bad input {x}")


GATE = threading.Event()


def wait_for_gate():
    return GATE.wait(60)


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_async_local_cluster_and_client_as_in_dask():
    async def main():
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                               asynchronous=True)
        assert cluster.status == "created"            # nothing started before the await
        async with cluster:
            assert cluster.status == "running" and len(cluster.workers) == 2
            async with Client(cluster, asynchronous=True) as client:
                future = client.submit(inc, 1)
                assert await future == 2
                assert await future.result() == 2
                futures = client.map(inc, range(20))
                assert await client.gather(futures) == list(range(1, 21))
                info = await client.scheduler_info()
                assert len(info["workers"]) == 2
                assert sorted((await client.run(lambda: 7)).values()) == [7, 7]
                [scattered] = await client.scatter([5])
                assert await client.submit(inc, scattered) == 6
                done = await wait(futures)
                assert len(done.done) == 20 and not done.not_done
                seen = [await f async for f in as_completed(client.map(inc, [10, 20]))]
                assert sorted(seen) == [11, 21]
                bad = client.submit(fails, 3)
                with pytest.raises(ValueError, match="bad input 3"):
                    await bad
                assert isinstance(await bad.exception(), ValueError)
                cluster.scale(3)                  # as in dask: need not be awaited
                await client.wait_for_workers(3)
                assert len(cluster.workers) == 3
                with pytest.raises(TimeoutError, match="3 of 4 workers connected to tcp://"):
                    await client.wait_for_workers(4, timeout=0.3)
            assert client.status == "closed"
        assert cluster.status == "closed"
        return cluster

    cluster = run(main())
    assert not cluster.jobs


def test_async_calls_do_not_block_the_callers_loop():
    """While a gather waits for a task held back by an event, the caller's loop keeps
    running its other coroutines."""
    async def main():
        async with LocalCluster(n_workers=1, processes=False, dashboard_address=None,
                                asynchronous=True) as cluster:
            async with Client(cluster, asynchronous=True) as client:
                future = client.submit(wait_for_gate, pure=False)
                gathering = asyncio.ensure_future(client.gather(future))
                ticks = 0
                while ticks < 5:                 # the loop is free while gather waits
                    await asyncio.sleep(0)
                    ticks += 1
                assert not gathering.done()
                GATE.set()
                assert await gathering is True

    run(main())


def test_client_without_address_starts_an_async_local_cluster():
    async def main():
        async with Client(asynchronous=True, n_workers=1, threads_per_worker=1,
                          dashboard_address=None) as client:
            assert client.cluster.asynchronous and client.cluster.status == "running"
            assert await client.submit(inc, 41) == 42
            cluster = client.cluster
        assert cluster.status == "closed"

    run(main())


def test_await_a_cluster_twice_and_close_twice():
    async def main():
        cluster = LocalCluster(n_workers=0, dashboard_address=None, asynchronous=True)
        assert await cluster is cluster
        assert await cluster is cluster
        await cluster.close()
        await cluster.close()
        assert cluster.status == "closed"

    run(main())


def test_a_cluster_that_fails_to_start_raises_at_the_await_and_is_closed():
    async def main():
        cluster = LocalCluster(n_workers=1, dashboard_address=None, asynchronous=True,
                               scheduler_options={"host": "192.0.2.1"})  # not ours: bind fails
        with pytest.raises(OSError):
            await cluster
        return cluster

    cluster = run(main())
    assert cluster.status == "closed"


def test_async_call_outside_an_event_loop_says_how_to_use_it():
    cluster = LocalCluster(n_workers=0, dashboard_address=None, asynchronous=True)
    try:
        with pytest.raises(RuntimeError, match="call this from a coroutine running in an event "
                                               "loop, and await the result"):
            cluster.scale(1)
    finally:
        cluster._block(cluster._close_cluster())
    assert cluster.status == "closed"


def test_sync_cluster_can_be_awaited_too():
    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        async def main():
            return await cluster
        assert run(main()) is cluster
    assert loop_mod.get_loop().is_running()

"""submit/map(pure=True): deterministic keys, shared tasks and results; pure=False: unique."""
from jobqueue import Client


def inc(x):
    return x + 1


def test_submit_pure_keys_share_results(client):
    a, b = client.submit(inc, 41), client.submit(inc, 41)
    assert a.key == b.key and a.result() == 42
    c = client.submit(inc, 41, pure=False)
    assert c.key != a.key and c.result() == 42
    m1, m2 = client.map(inc, [1, 2, 1]), client.map(inc, [1, 2, 1])
    assert [f.key for f in m1] == [f.key for f in m2] and m1[0].key == m1[2].key
    assert len({f.key for f in client.map(inc, [1, 1], pure=False)}) == 2
    # shared across clients: the second client's future refers to the same task and result
    with Client(client.cluster, set_as_default=False) as other:
        f = other.submit(inc, 41)
        assert f.key == a.key and f.result() == 42


def test_pure_call_runs_once_and_impure_every_time(client, tmp_path):
    calls = tmp_path / "calls"

    def record(x):
        with open(calls, "a") as f:
            f.write(f"{x}\n")
        return x

    first = client.submit(record, 1)
    assert first.result() == 1
    assert client.submit(record, 1).result() == 1           # same key, result shared
    assert client.gather(client.map(record, [1, 1])) == [1, 1]
    assert calls.read_text() == "1\n"
    assert client.gather([client.submit(record, 2, pure=False) for _ in range(2)]) == [2, 2]
    assert calls.read_text() == "1\n2\n2\n"

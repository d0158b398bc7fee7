"""The dashboard, /metrics, token mode and progress(): in a real browser, over HTTP, and pure."""
import asyncio
import http.client
import os
import re
import socket
import time
import types
from urllib.parse import urlsplit

import pytest

from conftest import needs_service, wait_until
from jobqueue import Client, LocalCluster, config
from jobqueue.core import loop as loop_mod
from jobqueue.core.dashboard import Dashboard, api, parse_address
from jobqueue.core.dashboard.http import FORBIDDEN
from jobqueue.core.scheduler import Scheduler
from jobqueue.core.scheduler_state import SchedulerState

from _browser import CHROMIUM, Browser


from _tasks import fails, inc, slow_inc, wait_for_file  # noqa: E402,F401


def get(url, path, headers=None):
    """(status, headers, body) without following redirects; the link's token, if it carries
    one, goes along as a Bearer header unless *headers* are given."""
    parts = urlsplit(url)
    if headers is None:
        token = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p).get("token")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        conn.close()


# -- 1. the dashboard in a real headless Chromium ---------------------------------------------


@pytest.mark.browser
def test_dashboard_in_chromium_matches_scheduler(tmp_path):
    needs_service(os.access(CHROMIUM, os.X_OK), f"headless chromium ({CHROMIUM}; "
                  "install with ci/browser/install.sh)")
    gate = tmp_path / "release"
    with LocalCluster(n_workers=2, threads_per_worker=2, memory_limit="1GB",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        state = cluster.scheduler.server.state
        assert client.gather(client.map(slow_inc, range(300))) == list(range(1, 301))
        failed = client.map(fails, range(3))
        assert all(isinstance(f.exception(), ValueError) for f in failed)
        held = client.map(wait_for_file, [str(gate)] * 10, key=[f"hold-{i}" for i in range(10)])
        blocked = lambda: state.groups["wait_for_file"].states if "wait_for_file" in \
            state.groups else {"processing": 0, "queued": 0}  # noqa: E731
        wait_until(lambda: blocked()["processing"] >= 4 and
                   blocked()["processing"] + blocked()["queued"] == 10,
                   20, "10 blocked tasks on the workers or queued for them")
        with Browser(tmp_path / "chromium") as browser:
            browser.open(cluster.dashboard_link)
            browser.wait_for("document.body.dataset.ready === 'true' && "
                             "document.querySelector('[data-group=\"slow_inc\"]') !== null",
                             what="dashboard rendered with the slow_inc progress row")
            metric = "document.querySelector('[data-metric=\"{}\"]').dataset.value"
            page = browser.evaluate("({" + ", ".join(
                f"{m}: Number({metric.format(m)})"
                for m in ("workers", "threads", "done", "processing", "waiting", "erred")) + ", " +
                "groupDone: Number(document.querySelector('[data-group=\"slow_inc\"]')"
                ".dataset.done), rows: document.querySelectorAll('#progress .row').length})")
            assert page == {
                "workers": len(state.workers), "threads": 4,
                "done": state.counts["tasks-finished"], "erred": state.counts["tasks-erred"],
                "processing": blocked()["processing"], "waiting": blocked()["queued"],
                "groupDone": state.groups["slow_inc"].done, "rows": 3,
            }
            assert page["workers"] == 2 and page["done"] == 300 and page["erred"] == 3
            time.sleep(1.5)  # let the task stream and the bars settle for the picture
            shot = browser.screenshot(tmp_path / "dashboard-status.png")
            print(f"\ndashboard screenshot: {shot}")
            for view in ("workers", "tasks", "jobs", "logs"):
                browser.evaluate(f"document.querySelector('nav a[data-nav=\"{view}\"]').click()")
                ready = {"workers": "#workers-table tbody tr", "tasks": "#stream-large-legend span",
                         "jobs": "#jobs-table tbody tr", "logs": "#log-list li"}[view]
                n = browser.wait_for(f"document.querySelectorAll('{ready}').length",
                                     what=f"{view} view rendered")
                if view in ("workers", "jobs"):
                    assert n == 2
                time.sleep(0.5)
                shot = browser.screenshot(tmp_path / f"dashboard-{view}.png")
                print(f"dashboard screenshot: {shot}")
            assert "running" in browser.evaluate("document.querySelector('#jobs-table').innerText")
            # the page follows the computation: release the blocked tasks and watch it count
            browser.evaluate("document.querySelector('nav a[data-nav=\"status\"]').click()")
            gate.touch()
            client.gather(held)
            browser.wait_for(f"Number({metric.format('done')}) === 310",
                             what="310 done on the page")
            assert browser.errors == []


@pytest.mark.browser
def test_dashboard_link_with_token_opens_in_chromium(tmp_path, token_required):
    needs_service(os.access(CHROMIUM, os.X_OK), f"headless chromium ({CHROMIUM})")
    with LocalCluster(n_workers=1, processes=False, dashboard_address="127.0.0.1:0") as cluster:
        link = cluster.dashboard_link
        assert "?token=" in link
        with Browser(tmp_path / "chromium") as browser:
            browser.open(link.split("?")[0])          # without the token: refused
            browser.wait_for("document.body.innerText.startsWith('403 Forbidden')")
            browser.open(link)                        # the link: the cookie takes over
            browser.wait_for("document.body.dataset.ready === 'true'", what="page with data")
            assert browser.evaluate("location.search") == ""
            assert browser.evaluate("document.querySelector('[data-metric=\"workers\"]')"
                                    ".dataset.value") == "1"
            assert browser.evaluate("document.cookie") == ""   # HttpOnly: scripts cannot read it
            assert browser.errors == []


# -- 2. /metrics --------------------------------------------------------------------------------

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def parse_prometheus(text):
    """The text exposition format (version 0.0.4), strictly: {(name, labels): value}, {name: type}.

    Every sample belongs to a family announced by HELP and TYPE lines before its samples;
    counters end in _total; values are floats; label values are escaped.
    """
    samples, types_, helps = {}, {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert name not in helps and doc, line
            helps[name] = doc
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name not in types_ and kind in ("counter", "gauge", "histogram", "summary",
                                                   "untyped"), line
            types_[name] = kind
        elif line.startswith("#") or not line:
            assert line, "blank lines are not expected"
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, label_text, value = match.groups()
            assert name in types_ and name in helps, f"{name}: sample before its HELP/TYPE"
            if types_[name] == "counter":
                assert name.endswith("_total"), name
            labels = {}
            if label_text:
                pos = 0
                for m in LABEL.finditer(label_text):
                    assert m.start() == pos, f"bad labels in {line!r}"
                    labels[m.group(1)] = m.group(2)
                    pos = m.end()
                assert pos == len(label_text), f"bad labels in {line!r}"
            key = (name, frozenset(labels.items()))
            assert key not in samples, f"duplicate sample {line!r}"
            samples[key] = float(value)
    assert text.endswith("\n")
    return samples, types_


def test_metrics_parse_and_match_scheduler():
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="1GB",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.gather(client.map(inc, range(100)))
        bad = client.map(fails, range(3))
        for f in bad:
            assert isinstance(f.exception(), ValueError)
        cluster.scale(1)
        wait_until(lambda: len(cluster.scheduler.workers()) == 1, 20, "scale down to 1")
        status, headers, text = get(cluster.dashboard_link, "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        samples, kinds = parse_prometheus(text)
        counts = cluster.scheduler.server.state.counts
        one = lambda name, **labels: samples[(name, frozenset(labels.items()))]  # noqa: E731
        assert one("jobqueue_tasks_finished_total") == counts["tasks-finished"] == 100
        assert one("jobqueue_tasks_erred_total") == counts["tasks-erred"] == 3
        assert one("jobqueue_workers_added_total") == counts["workers-added"] == 2
        assert one("jobqueue_workers_removed_total") == counts["workers-removed"] == 1
        assert kinds["jobqueue_tasks_finished_total"] == "counter"
        assert one("jobqueue_workers", status="running") == 1
        assert one("jobqueue_threads") == 1
        assert one("jobqueue_worker_memory_limit_bytes") == 1e9
        assert kinds["jobqueue_tasks"] == "gauge"
        assert one("jobqueue_tasks", state="erred") == 3
        assert one("jobqueue_clients") == 1
        assert one("jobqueue_jobs", state="running") == 1


def test_metrics_parse_with_prometheus_client():
    """Prometheus's own parser (a test-only dependency) reads /metrics the same way."""
    from prometheus_client import parser
    state = SchedulerState()
    state.add_worker("tcp://w:1", "w", 2, 100)
    scheduler = types.SimpleNamespace(state=state, started=time.time(), address="tcp://s:1",
                                      jobs_provider=None)
    from jobqueue.core.dashboard import metrics

    families = {f.name: f for f in parser.text_string_to_metric_families(metrics.render(scheduler))}
    assert families["jobqueue_workers_added"].samples[0].value == 1


# -- 3. token mode -------------------------------------------------------------------------------

ROUTES = ["/", "/status", "/workers", "/tasks", "/jobs", "/logs", "/api/summary", "/api/workers",
          "/api/progress", "/api/tasks", "/api/jobs", "/api/logs", "/api/logs?name=scheduler",
          "/metrics", "/static/dashboard.js", "/static/dashboard.css", "/static/index.html",
          "/no/such/page"]


@pytest.fixture
def token_required(monkeypatch):
    monkeypatch.setenv("JOBQUEUE_SCHEDULER__DASHBOARD_TOKEN_REQUIRED", "true")
    config.refresh()
    yield
    monkeypatch.undo()
    config.refresh()


def test_token_mode_refuses_without_token_and_reveals_nothing(token_required):
    with LocalCluster(n_workers=1, threads_per_worker=1, memory_limit="1GB",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.gather(client.map(inc, range(5)))
        link = cluster.dashboard_link
        token = cluster.scheduler.server.dashboard.token
        assert link.endswith(f"/status?token={token}") and token != cluster.token
        port = str(urlsplit(link).port)
        secrets_ = [token, cluster.token, cluster.scheduler_address, cluster.name,
                    *cluster.scheduler.server.state.names, "inc"]
        wrong = [{}, {"Authorization": "Bearer nope"},
                 {"Cookie": f"jobqueue-dashboard-{port}=nope"}, {"Authorization": f"Basic {token}"}]
        for route in ROUTES:
            for headers in wrong:
                for path in (route, route + ("&" if "?" in route else "?") + "token=nope"):
                    status, h, body = get(link, path, headers)
                    assert status == 403, (path, headers, status)
                    assert body == FORBIDDEN
                    assert "Server" not in h and "Set-Cookie" not in h
                    assert not any(s in body for s in secrets_)
        # the link's ?token= sets a cookie, and pages drop the token from the address bar
        status, h, _ = get(link, f"/workers?token={token}&x=1")
        assert status == 302 and h["Location"] == "workers?x=1"
        cookie = h["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        for route in ROUTES:
            sep = "&" if "?" in route else "?"
            status, h, body = get(link, f"{route}{sep}token={token}")
            expect = 404 if route == "/no/such/page" else 302 if route in (
                "/", "/status", "/workers", "/tasks", "/jobs", "/logs") else 200
            assert status == expect, (route, status)
            for headers in ({"Authorization": f"Bearer {token}"},
                            {"Authorization": f"Bearer {cluster.token}"},
                            {"Cookie": cookie.split(";")[0]}):
                status, _, body = get(link, route, headers)
                assert status == (404 if route == "/no/such/page" else 302 if route == "/"
                                  else 200), (route, headers, status)
        status, _, body = get(link, "/api/summary", {"Authorization": f"Bearer {token}"})
        assert '"workers":1' in body and '"finished":5' in body


def test_token_mode_on_by_itself_beyond_loopback():
    scheduler = Scheduler(dashboard_address="0.0.0.0:0")
    loop_mod.sync(scheduler.start())
    try:
        link = scheduler.dashboard_link
        assert scheduler.dashboard.require_token
        host = urlsplit(link).hostname
        assert host not in ("0.0.0.0", "", None)
        assert f"token={scheduler.dashboard.token}" in link
        port = urlsplit(link).port
        assert get(f"http://127.0.0.1:{port}", "/api/summary")[0] == 403
        assert get(f"http://127.0.0.1:{port}", "/api/summary",
                   {"Authorization": f"Bearer {scheduler.dashboard.token}"})[0] == 200
    finally:
        loop_mod.sync(scheduler.close())


# -- pure parts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("address, expected", [
    (":8787", ("127.0.0.1", 8787)), ("8787", ("127.0.0.1", 8787)), (8787, ("127.0.0.1", 8787)),
    ("0.0.0.0:0", ("0.0.0.0", 0)), ("login1:9000", ("login1", 9000)), ("[::1]:8787", ("::1", 8787)),
    ("*:8787", ("0.0.0.0", 8787)),
])
def test_parse_address(address, expected):
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["lots", "host:port", ":70000", "::1:8787", None])
def test_parse_address_errors(address):
    with pytest.raises(ValueError, match="dashboard address"):
        parse_address(address)


def test_task_stream_is_recorded_and_laid_out_in_lanes():
    s = SchedulerState()
    s.add_worker("tcp://a:1", "a", 2, 0)
    s.update_graph("c", [[f"t-{i}", "t", None, None, [], None, 0] for i in range(3)])
    s.take()
    s.task_finished("tcp://a:1", "t-0", 8, "int", 10.0, 11.0)
    s.task_finished("tcp://a:1", "t-1", 8, "int", 10.5, 12.0)
    s.task_erred("tcp://a:1", "t-2", None, "tb", 11.0, 11.5)
    assert [t[1] for t in s.task_stream] == ["t-0", "t-1", "t-2"]
    stream = api.task_stream(s, now=12.0)
    assert stream["workers"] == [{"address": "tcp://a:1", "name": "a", "lanes": 2,
                                  "connected": True}]
    lanes = {row[5]: (row[1], row[6]) for row in stream["tasks"]}
    assert lanes == {"t-0": (0, False), "t-1": (1, False), "t-2": (0, True)}
    assert [r[5] for r in api.task_stream(s, since=11.9, now=12.0)["tasks"]] == ["t-1"]
    groups = api.progress(s)
    assert groups[0]["name"] == "t" and groups[0]["done"] == 2 and groups[0]["erred"] == 1


def test_busy_port_falls_back_to_a_free_one():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        scheduler = Scheduler(dashboard_address=f"127.0.0.1:{port}")
        loop_mod.sync(scheduler.start())
        try:
            assert scheduler.dashboard.port != port
            assert get(scheduler.dashboard_link, "/api/summary")[0] == 200
        finally:
            loop_mod.sync(scheduler.close())
    finally:
        busy.close()


def test_dashboard_default_from_config_and_none():
    with LocalCluster(n_workers=1, processes=False) as cluster:
        link = cluster.dashboard_link
        # on a shared login node other users reach 127.0.0.1 too: the token is asked by default
        assert link.startswith("http://127.0.0.1:") and "/status?token=" in link
        assert get(link, "/api/summary", headers={})[0] == 403
        assert get(link, "/api/summary")[0] == 200
        assert Client(cluster).dashboard_link == link
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        assert cluster.dashboard_link is None


def test_jobs_and_logs_of_a_local_cluster(tmp_path):
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="1GB",
                      dashboard_address="127.0.0.1:0") as cluster:
        link = cluster.dashboard_link
        jobs = api.jobs(cluster.scheduler.server)
        assert jobs["counts"] == {"running": 2}
        assert all(j["workers"] == [j["name"]] and j["id"].isdigit() for j in jobs["jobs"])
        status, _, body = get(link, "/api/logs")
        assert status == 200 and sorted(cluster.jobs) == sorted(
            __import__("json").loads(body)["logs"][1:])
        name = sorted(cluster.jobs)[0]
        status, _, body = get(link, f"/api/logs?name={name}")
        assert status == 200 and "worker" in body.lower()
        assert get(link, "/api/logs?name=nobody")[0] == 404


def test_bad_dashboard_address_fails_clearly():
    with pytest.raises(ValueError, match="dashboard address 'lots'"):
        LocalCluster(n_workers=1, processes=False, dashboard_address="lots")


def test_dashboard_stop_closes_the_port():
    scheduler = Scheduler(dashboard_address="127.0.0.1:0")
    loop_mod.sync(scheduler.start())
    port = scheduler.dashboard.port
    loop_mod.sync(scheduler.close())
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_dashboard_accepts_only_its_tokens():
    scheduler = types.SimpleNamespace(token="cluster-secret")
    d = Dashboard(scheduler, "127.0.0.1:0", require_token=True)
    assert d.accepts(d.token) and d.accepts("cluster-secret")
    assert not any(d.accepts(t) for t in (None, "", "x", d.token[:-1], 42))
    assert asyncio.iscoroutinefunction(d.stop)


def test_slow_and_idle_dashboard_connections_are_closed(monkeypatch):
    """Slowloris against the dashboard: a header sent a byte at a time is cut off at the header
    timeout, and 400 idle connections over a cap of 100 leave the page reachable and at most
    100 connections open in the scheduler's process."""
    import jobqueue.core.dashboard as dashboard_mod

    monkeypatch.setattr(dashboard_mod, "HEADER_TIMEOUT", 1.0)
    monkeypatch.setattr(dashboard_mod, "MAX_CONNECTIONS", 100)
    scheduler = Scheduler(dashboard_address="127.0.0.1:0")
    loop_mod.sync(scheduler.start())
    idle = []
    try:
        port = scheduler.dashboard.port
        slow = socket.create_connection(("127.0.0.1", port), timeout=30)
        slow.sendall(b"GET /status HTTP/1.1\r\nHost: x")  # and never the rest
        assert slow.recv(100) == b""  # closed by the server, not by our 30 s timeout
        slow.close()
        for _ in range(400):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"G")
            idle.append(s)
        start = time.perf_counter()
        assert get(scheduler.dashboard_link, "/api/summary")[0] == 200
        print(f"dashboard answered in {(time.perf_counter() - start) * 1e3:.1f} ms "
              f"behind 400 idle connections")
        still_open = 0
        for s in idle:
            s.setblocking(False)
            try:
                still_open += s.recv(1) != b""
            except BlockingIOError:
                still_open += 1
            except ConnectionResetError:
                pass  # closed by the server while our byte was unread
        assert still_open <= 100
    finally:
        for s in idle:
            s.close()
        loop_mod.sync(scheduler.close())

"""progress(): a line redrawn in a terminal, whole lines every few seconds into a file, an HTML
bar in Jupyter. The pacing (Lines) is pure and tested with a clock of the test's own."""
import io
import sys
import threading
import time
import types

from jobqueue import progress
from jobqueue.core.progress import Lines


from _tasks import fails, inc, slow_inc, wait_for_file  # noqa: E402,F401


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_into_a_file_one_whole_line_every_few_seconds_and_the_last():
    out, clock = [], Clock()
    lines = Lines(out.append, every=5.0, tty=False, clock=clock)
    for step in range(121):                   # 12 s of updates, ten a second
        clock.now = step / 10
        lines.show(f"{step}/200 done")
    lines.show("200/200 done", final=True)
    assert out == ["0/200 done\n", "50/200 done\n", "100/200 done\n", "200/200 done\n"]
    assert lines.wait() == 5.0


def test_in_a_terminal_one_line_redrawn_when_it_changes():
    out, clock = [], Clock()
    lines = Lines(out.append, every=0.1, tty=True, clock=clock)
    for t, line in [(0.0, "1 done"), (0.05, "2 done"), (0.1, "2 done"), (0.2, "3 done"),
                    (0.3, "3 done")]:
        clock.now = t
        lines.show(line)
    clock.now = 0.31
    lines.show("4 done!", final=True)
    assert out == ["\r1 done", "\r2 done", "\r3 done", "\r4 done!", "\n"]


def test_progress_into_a_file_writes_lines(client):
    futures = client.map(slow_inc, range(30)) + [client.submit(fails, 1)]
    out = io.StringIO()
    progress(futures, file=out)
    text = out.getvalue()
    assert "\r" not in text and text.endswith("\n")
    last = text.splitlines()[-1]
    assert "[" + "#" * 40 + "] 100%" in last and "31/31 done" in last and "1 failed" in last
    assert all(f.done() for f in futures)


def test_progress_in_a_terminal_redraws_in_place(client, tmp_path):
    gate = str(tmp_path / "gate")
    # both gated tasks on one worker: the other is free to finish the two quick ones
    first = sorted(client.scheduler_info()["workers"])[0]
    futures = [client.submit(wait_for_file, gate, key=f"gate-{i}", workers=[first])
               for i in range(2)]
    futures += client.map(inc, range(2))
    out = Terminal()
    t = threading.Thread(target=progress, args=(futures,), kwargs={"file": out, "interval": 0.05})
    t.start()
    try:
        deadline = time.monotonic() + 20
        while "2/4 done" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        open(gate, "w").close()
    t.join(20)
    text = out.getvalue()
    assert text.startswith("\r[") and text.endswith("\n") and text.count("\n") == 1
    drawn = text.rstrip("\n").split("\r")
    assert any("2/4 done" in line for line in drawn) and "4/4 done" in drawn[-1]


def test_progress_in_jupyter_updates_html_in_place(client, monkeypatch):
    shown = []

    class Handle:
        def update(self, obj):
            shown.append(obj.data)

    display_mod = types.ModuleType("IPython.display")
    display_mod.HTML = lambda html: types.SimpleNamespace(data=html)
    display_mod.display = lambda obj, display_id=False: (shown.append(obj.data), Handle())[1]
    ipython = types.ModuleType("IPython")
    ipython.display = display_mod
    ipython.get_ipython = lambda: types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display_mod)
    futures = client.map(slow_inc, range(10))
    assert progress(futures) is None   # returns at once in a notebook
    client.gather(futures)
    deadline = time.monotonic() + 20
    while not (shown and "<b>10</b> / 10 done" in shown[-1]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "<b>10</b> / 10 done" in shown[-1] and "width:100.00%" in shown[-1]

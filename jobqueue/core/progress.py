"""``progress(futures)``: a progress bar for futures, in a terminal or in Jupyter.

In a terminal it blocks until every future is done, redrawing one plain-text line on stderr
(``\\r``), and ends the line when all are done. Into a file or pipe (a batch job's output, a
``--detach`` driver's log) it writes a whole line every few seconds (``log_every``) and one at
the end, so the file reads like a log. In a Jupyter kernel it shows an HTML bar that is updated
in place from a background thread and returns at once, so the notebook stays usable. It only
reads the futures' states: it asks the scheduler nothing.
"""
from __future__ import annotations

import html
import sys
import threading
import time

from .. import params
from .client import FINISHED, PENDING, _collect


LOG_EVERY = 5.0     # seconds between lines when the output is not a terminal


@params.document()
def progress(*futures, notebook=None, interval: float = 0.1, file=None, width: int = 40,
             log_every: float = LOG_EVERY):
    """Show how many of *futures* are done, until all are.

    Parameters
    ----------
    notebook : bool, optional
        An HTML bar (True) or text (False); None picks HTML inside a Jupyter kernel.
    interval : float, default 0.1
        Seconds between updates of a terminal's line or the HTML bar.
    file : file, optional
        Where the text goes (default ``sys.stderr``): a terminal gets one line redrawn every
        ``interval`` seconds, anything else a new line every ``log_every`` seconds.
    width : int, default 40
        Characters of the text bar.
    log_every : float, default 5.0
        Seconds between lines when ``file`` is not a terminal.

    Examples
    --------
    >>> futures = client.map(slow, range(100))
    >>> progress(futures)
    """
    flat: list = []
    _collect(futures, flat)
    if notebook is None:
        notebook = _in_kernel()
    if notebook:
        _notebook_bar(flat, max(interval, 0.2))
    else:
        file = file or sys.stderr
        tty = hasattr(file, "isatty") and file.isatty()
        _text_bar(flat, file, width, interval if tty else log_every, tty)


class _Count:
    __slots__ = ("total", "done", "erred", "started")

    def __init__(self, futures):
        self.total = len(futures)
        self.started = time.monotonic()
        self.done = self.erred = 0

    def update(self, futures) -> bool:
        """Count again; True when every future is done."""
        done = erred = 0
        for f in futures:
            status = f.status
            if status != PENDING:
                done += 1
                if status != FINISHED:
                    erred += 1  # erred, cancelled, or lost with the scheduler
        self.done, self.erred = done, erred
        return done == self.total

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _wait(futures, seconds):
    """Sleep up to *seconds*, waking early when the futures' client hears from the scheduler."""
    client = futures[0].client if futures else None
    cond = getattr(client, "_cond", None)
    if cond is None:
        time.sleep(seconds)
        return
    with cond:
        cond.wait(seconds)


# -- terminal -----------------------------------------------------------------------------------


def text_line(count: _Count, width: int = 40) -> str:
    """``[##########          ]  50% | 10/20 done | 1 failed | 2.3 s``: ASCII, for any terminal."""
    fraction = count.done / count.total if count.total else 1.0
    filled = int(round(fraction * width))
    parts = [f"[{'#' * filled}{' ' * (width - filled)}] {fraction:4.0%}",
             f"{count.done:,}/{count.total:,} done"]
    if count.erred:
        parts.append(f"{count.erred:,} failed")
    parts.append(_seconds(count.elapsed))
    return " | ".join(parts)


class Lines:
    """When to write what: a terminal's line is redrawn in place whenever it changed, at most
    every ``every`` seconds; a file gets a whole line at most every ``every`` seconds, and the
    last one. Pure: ``clock`` says the time, ``write`` takes the text."""

    def __init__(self, write, every: float, tty: bool, clock=time.monotonic):
        self.write, self.every, self.tty, self.clock = write, every, tty, clock
        self.last_line = ""
        self.last_time = None

    def show(self, line: str, final: bool = False):
        now = self.clock()
        due = self.last_time is None or now - self.last_time >= self.every
        if self.tty:
            if line != self.last_line and (due or final):
                self.write("\r" + line.ljust(len(self.last_line)))
                self.last_line, self.last_time = line, now
            if final:
                self.write("\n")
        elif due or final:
            self.write(line + "\n")
            self.last_line, self.last_time = line, now

    def wait(self) -> float:
        """Seconds until a line may be due."""
        if self.last_time is None:
            return 0.0
        return max(0.0, self.every - (self.clock() - self.last_time))


def _text_bar(futures, file, width, every, tty):
    count = _Count(futures)

    def write(text):
        file.write(text)
        file.flush()

    lines = Lines(write, every, tty)
    finished = False
    try:
        while not finished:
            finished = count.update(futures)
            lines.show(text_line(count, width), final=finished)
            if not finished:
                _wait(futures, lines.wait() or every)
    except BaseException:
        if tty:
            write("\n")          # leave the cursor on a line of its own
        raise


def _seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


# -- Jupyter ------------------------------------------------------------------------------------


def _in_kernel() -> bool:
    """Inside a Jupyter kernel? Checked without importing IPython when nothing did yet."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and hasattr(shell, "kernel")


def html_bar(count: _Count) -> str:
    total = count.total or 1
    ok = 100 * (count.done - count.erred) / total
    bad = 100 * count.erred / total
    failed = f" · <span style='color:#d9443a'>{count.erred:,} failed</span>" if count.erred else ""
    return (
        "<div style='font:13px system-ui,sans-serif;display:flex;align-items:center;gap:10px'>"
        "<div style='width:320px;height:14px;border-radius:4px;overflow:hidden;display:flex;"
        "background:#e3e6ea'>"
        f"<div style='width:{ok:.2f}%;background:#3aa35b'></div>"
        f"<div style='width:{bad:.2f}%;background:#d9443a'></div></div>"
        f"<span><b>{count.done:,}</b> / {count.total:,} done{failed} · "
        f"{html.escape(_seconds(count.elapsed))}</span></div>")


def _notebook_bar(futures, interval):
    from IPython.display import HTML, display

    count = _Count(futures)
    count.update(futures)
    handle = display(HTML(html_bar(count)), display_id=True)

    def run():
        while True:
            finished = count.update(futures)
            handle.update(HTML(html_bar(count)))
            if finished:
                return
            _wait(futures, interval)

    threading.Thread(target=run, name="jobqueue-progress", daemon=True).start()

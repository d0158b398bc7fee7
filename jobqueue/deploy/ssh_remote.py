"""The remote half of SSHCluster: what runs at the far end of each ssh session.

    <remote python> -m jobqueue.deploy.ssh_remote worker|scheduler ARGS...

It reads the cluster's token from the first line of stdin (never the command line, which every
user of the host sees in ``ps``), runs ``python -m jobqueue worker|scheduler ARGS`` with the
token in ``JOBQUEUE_TOKEN``, and treats the rest of stdin as a lifeline: when stdin closes
(``SSHCluster.close()``, or the ssh client or the whole local process died) the command gets
SIGTERM, and its process group SIGKILL after a grace period. The session ends when the command
does, with its exit code.

The scheduler listens, unless told ``--host`` or ``--interface``, on the address the ssh client
reached this host by. (``jobqueue worker`` works out ``--nthreads auto`` and ``--memory-limit
auto`` itself, from this host's cores and memory.)
It imports nothing heavy: it starts before every remote worker.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

GRACE = 10.0     # seconds between SIGTERM and SIGKILL once the session closed
ROLES = ("worker", "scheduler")


def say(text: str) -> None:
    try:
        print(f"jobqueue ssh: {text}", file=sys.stderr, flush=True)
    except OSError:
        pass    # the session is gone: nobody to tell


def ssh_server_address() -> str | None:
    """The address the ssh client connected to (``SSH_CONNECTION``'s third field)."""
    fields = os.environ.get("SSH_CONNECTION", "").split()
    return fields[2] if len(fields) == 4 else None


def fill_in(argv: list) -> list:
    """ARGS with what only this host knows (see the module docstring)."""
    argv = list(argv)
    if argv[0] == "scheduler" and not {"--host", "--interface"} & set(argv) \
            and ssh_server_address():
        argv += ["--host", ssh_server_address()]
    return argv


class Supervisor:
    def __init__(self, argv: list, token: str):
        env = dict(os.environ, JOBQUEUE_TOKEN=token)
        self.role = argv[0]
        self.proc = subprocess.Popen([sys.executable, "-m", "jobqueue", *argv], env=env,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.stopping = False
        self.lock = threading.RLock()   # a signal may arrive while stop() holds it

    def stop(self, why: str) -> None:
        with self.lock:
            if self.stopping or self.proc.poll() is not None:
                return
            self.stopping = True
        say(f"{why}: stopping the {self.role} (pid {self.proc.pid})")
        self.proc.send_signal(signal.SIGTERM)
        timer = threading.Timer(GRACE, self._kill_group, args=(signal.SIGKILL,))
        timer.daemon = True
        timer.start()

    def _kill_group(self, sig) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def watch_stdin(self) -> None:
        """The lifeline: block until stdin reaches EOF (or fails), then stop."""
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        self.stop("the ssh session closed")

    def wait(self) -> int:
        code = self.proc.wait()
        self._kill_group(signal.SIGKILL)    # orphans of a command that died abruptly
        return code if code >= 0 else 128 - code


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ROLES:
        say("usage: python -m jobqueue.deploy.ssh_remote worker|scheduler ARGS "
            "(the token on the first line of stdin)")
        return 2
    token = sys.stdin.buffer.readline().strip().decode("ascii", "replace")
    if not token:
        say("no token on the first line of stdin; SSHCluster sends it there")
        return 2
    try:
        argv = fill_in(argv)
    except (ValueError, ImportError) as e:
        say(f"{argv[0]}: {e}")
        return 2
    sup = Supervisor(argv, token)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: sup.stop(f"got signal {signum}"))
    threading.Thread(target=sup.watch_stdin, name="lifeline", daemon=True).start()
    return sup.wait()


if __name__ == "__main__":
    sys.exit(main())

"""SSHCluster: the scheduler on the first host, one worker job on each of the others, over ssh.

Every remote process is started by the system's OpenSSH client with ``BatchMode=yes``, so the
user's ``~/.ssh/config``, agent and ProxyJump apply as they set them up, and nothing ever waits
for a password. At the far end runs :mod:`jobqueue.deploy.ssh_remote`: it reads the cluster's
token from the session's stdin (a remote command line is visible to every user in ``ps``) and
keeps stdin open as a lifeline. When it closes (``close()``, or this process or its ssh client
died) the remote command is stopped, so no remote process outlives the cluster; a worker that
loses the scheduler also exits after ``death_timeout`` (30 s unless ``worker_options`` say).

Where the scheduler runs:

- The first host is this machine (``localhost``, its host name or one of its addresses): in this
  process, as for every other cluster, listening on the address that routes from here to the
  worker hosts (``scheduler_options`` ``host=`` or ``interface=`` choose another).
- Any other host: ``jobqueue scheduler`` runs there over ssh (:class:`RemoteScheduler`),
  listening on the address ssh reached it by (or ``host=``/``interface=``), and this process
  talks to it as a client. That address must be reachable from here and from the workers.

Workers listen on and advertise the address that routes from their host to the scheduler, or
that of ``worker_options`` ``interface=`` (``host=``).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time

from .. import node, params
from ..core.errors import CommClosedError
from ..core.scheduler_api import Remote
from . import scheduler_options as scheduler_options_mod
from .cluster import _FROM_CONFIG, Cluster, Job, remove_tree

logger = logging.getLogger("jobqueue.ssh")

REMOTE_MODULE = "jobqueue.deploy.ssh_remote"
# connect_options -> ssh flags; also "options" ({"Key": value} -> -o Key=value) and "ssh_args".
CONNECT_FLAGS = {"config_file": "-F", "port": "-p", "username": "-l", "identity_file": "-i"}
CONNECT_KEYS = (*CONNECT_FLAGS, "known_hosts", "connect_timeout", "server_alive_interval",
                "options", "ssh_args")
# A vanished host ends its session after 4 unanswered keepalives: the job shows as failed, and
# an ssh client orphaned by a killed cluster process does not wait for it forever.
CONNECT_DEFAULTS = {"connect_timeout": 10, "server_alive_interval": 15}
CONNECT_ALIASES = {"user": "username", "client_keys": "identity_file"}
WORKER_DEFAULTS = {"nthreads": "auto", "nworkers": 1, "memory_limit": "auto",
                   "death_timeout": 30.0, "interface": None, "host": None, "resources": None}
WORKER_ALIASES = {"n_workers": "nworkers", "processes": "nworkers", "threads": "nthreads"}
SCHEDULER_ADDRESS = re.compile(r"scheduler at (tcp://[^\s;]+)")
STOP_GRACE = 8.0     # after a hang-up, how long the remote side gets before ssh is killed


# -- options: plain functions, no I/O ----------------------------------------------------------

def _options(given, allowed, what: str, aliases=None) -> dict:
    """``given`` with Python names (config files use dashes), unknown keys refused."""
    import difflib

    out = {}
    for key, value in (given or {}).items():
        name = str(key).replace("-", "_")
        name = (aliases or {}).get(name, name)
        if name not in allowed:
            close = difflib.get_close_matches(name, list(allowed), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
            raise ValueError(f"SSHCluster {what}: unknown option {key!r}; {hint}")
        out[name] = value
    return out


def worker_settings(options) -> dict:
    """``worker_options`` checked and completed with the defaults."""
    from ..config import parse_bytes, parse_timedelta

    o = {**WORKER_DEFAULTS, **_options(options, WORKER_DEFAULTS, "worker_options",
                                       WORKER_ALIASES)}
    try:
        if o["nthreads"] != "auto":
            o["nthreads"] = _positive(o["nthreads"], "nthreads")
        o["nworkers"] = _positive(o["nworkers"], "nworkers")
        if o["memory_limit"] not in ("auto", None):
            o["memory_limit"] = parse_bytes(o["memory_limit"])
        o["memory_limit"] = o["memory_limit"] or 0
        o["death_timeout"] = parse_timedelta(o["death_timeout"])
        if o["resources"]:
            from ..core.placement import check_resources, parse_resources

            r = o["resources"]
            o["resources"] = parse_resources(r) if isinstance(r, str) else check_resources(r)
    except (TypeError, ValueError) as e:
        raise ValueError(f"SSHCluster worker_options: {e}") from None
    if not o["death_timeout"] or o["death_timeout"] <= 0:
        raise ValueError("SSHCluster worker_options: death_timeout must be positive: a remote "
                         "worker that lost the scheduler must exit")
    return o


def _positive(value, name) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1 (or 'auto'), got {value!r}")
    return value


def check_host(host) -> str:
    if not isinstance(host, str) or not host or host.startswith("-") or \
            any(c.isspace() for c in host):
        raise ValueError(f"SSHCluster: bad host {host!r}: give a host name or address as ssh "
                         "takes it (e.g. 'node1', 'alice@node1', '10.0.0.5')")
    return host


def ssh_argv(host: str, options: dict) -> list:
    """The ssh command line up to the remote command. BatchMode comes first, so neither
    options nor config can turn password prompts back on (for ssh the first value wins)."""
    argv = ["ssh", "-T", "-o", "BatchMode=yes"]
    for key, flag in CONNECT_FLAGS.items():
        values = options.get(key)
        if values is None or values == "":
            continue
        for value in ([values] if isinstance(values, (str, int)) else values):
            value = str(value)
            argv += [flag, os.path.expanduser(value) if key.endswith("_file") else value]
    if options.get("known_hosts"):
        argv += ["-o", f"UserKnownHostsFile={os.path.expanduser(options['known_hosts'])}"]
    if options.get("connect_timeout") is not None:
        argv += ["-o", f"ConnectTimeout={int(options['connect_timeout'])}"]
    if options.get("server_alive_interval") is not None:
        argv += ["-o", f"ServerAliveInterval={int(options['server_alive_interval'])}",
                 "-o", "ServerAliveCountMax=4"]
    for key, value in (options.get("options") or {}).items():
        argv += ["-o", f"{key}={value}"]
    argv += [str(a) for a in options.get("ssh_args") or ()]
    return argv + ["--", host]


def remote_command(python: str, role: str, args, env: dict | None = None) -> str:
    """What the remote login shell runs: the remote half, no token in sight (*env* holds no
    secret either: TLS certificate paths)."""
    assign = [shlex.quote(f"{k}={v}") for k, v in sorted((env or {}).items())]
    return " ".join(["exec", *(["env", *assign] if assign else []), shlex.quote(python), "-m",
                     REMOTE_MODULE, role, *(shlex.quote(str(a)) for a in args)])


def describe_exit(host: str, code: int, output: str, python: str, argv) -> str:
    """Why a session ended, naming the host and quoting what ssh and the remote side said."""
    said = "\n  ".join(output.strip().splitlines()[-15:]) or "(no output)"
    if code == 255:
        what = f"ssh could not run a command on {host!r} (exit code 255)"
    elif code == 127:
        what = f"the remote python {python!r} was not found on {host!r} (exit code 127)"
    else:
        what = f"the remote command on {host!r} exited with code {code}"
    hint = ""
    if "No module named" in output:
        hint = f"\ninstall jobqueue for {python} on {host!r}, or pass remote_python="
    elif code == 255:
        hint = f"\ncheck that `{shlex.join(argv[:-1])} true` works"
    return f"{what}:\n  {said}{hint}\ncommand: {shlex.join(argv)}"


# -- where things listen ----------------------------------------------------------------------

def _bare(host: str) -> str:
    return host.rpartition("@")[2]


def _is_loopback(host: str) -> bool:
    host = _bare(host)
    return host in ("localhost", "::1") or host.startswith("127.") or host.endswith(".localhost")


def is_this_machine(host: str) -> bool:
    """Whether ``host`` names this machine, without asking DNS."""
    import psutil

    host = _bare(host)
    if _is_loopback(host) or host in (socket.gethostname(), socket.gethostname().split(".")[0]):
        return True
    return any(a.address.split("%")[0] == host
               for addresses in psutil.net_if_addrs().values() for a in addresses)


def local_scheduler_host(first: str, worker_hosts,
                         options: scheduler_options_mod.SchedulerOptions) -> str:
    """The address an in-process scheduler listens on: given, an interface's, the first host's
    own address, loopback when every worker is here, else the one that routes to the workers."""
    if options.host or options.interface:
        return scheduler_options_mod.listen_host(options, None, None, "SSHCluster",
                                                 node.interface_address) or ""
    if not _is_loopback(first) and _bare(first) not in (socket.gethostname(),
                                                      socket.gethostname().split(".")[0]):
        return _bare(first)        # the user named one of this machine's addresses
    remote = [h for h in worker_hosts if not _is_loopback(h)]
    if not remote:
        return "127.0.0.1"
    for host in remote:
        address = node.route_source(_bare(host), 22)
        if address and not address.startswith("127."):
            return address
    return node.public_address()


# -- one ssh session --------------------------------------------------------------------------

class SSHSession:
    """One ssh process running the remote half. The token goes on its stdin, which then stays
    open as the remote command's lifeline; everything it prints (ssh's own errors and the
    remote logs) goes to ``log_path``."""

    def __init__(self, host: str, argv: list, log_path: str, python: str):
        self.host = host
        self.argv = argv
        self.log_path = log_path
        self.python = python
        self.proc: subprocess.Popen | None = None
        self.kept: str | None = None

    def start(self, token: str):
        with open(self.log_path, "ab") as log:
            self.proc = proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=log,
                                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            assert proc.stdin is not None
            proc.stdin.write(token.encode() + b"\n")
            proc.stdin.flush()
        except OSError:
            pass    # ssh already exited: problem() says why

    def text(self) -> str:
        if self.kept is not None:
            return self.kept
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def keep_text(self, limit: int = 1 << 20) -> None:
        """Keep the output's tail in memory: its file is about to be removed."""
        self.kept = self.text()[-limit:]

    def problem(self) -> str | None:
        """Why the session ended, if it did."""
        code = self.proc.poll() if self.proc is not None else None
        if code is None:
            return None
        return describe_exit(self.host, code, self.text(), self.python, self.argv)

    def hangup(self):
        """Close the lifeline: the remote side stops its command."""
        if self.proc is not None and self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    async def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.proc is not None and self.proc.poll() is None:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def stop(self, timeout: float = 5.0):
        """Let the session end on its own for ``timeout`` s, then hang up, then kill ssh."""
        proc = self.proc
        if proc is None:
            return
        if not await self.wait(timeout):
            self.hangup()
            if not await self.wait(STOP_GRACE):
                logger.warning("ssh session on %s did not end after hang-up; killing ssh "
                               "(the remote side stops on its own)", self.host)
                proc.terminate()
                if not await self.wait(2.0):
                    proc.kill()
        self.hangup()
        proc.wait()


# -- jobs and the remote scheduler ------------------------------------------------------------

class SSHJob(Job):
    """``jobqueue worker`` (a nanny and its worker processes) on one host, in one ssh session."""

    cluster: SSHCluster

    def __init__(self, cluster, name, index: int):
        super().__init__(cluster, name)
        self.index = index
        self.host = cluster.worker_hosts[index]
        self.session = cluster.session(index + 1, self.worker_args(),
                                       os.path.join(cluster.log_directory, f"{name}.log"))

    def worker_args(self) -> list:
        """``worker SCHEDULER --nthreads ...``: "auto" values are the worker host's own."""
        c, o = self.cluster, self.cluster.worker_options
        return node.WorkerCommand(
            c.scheduler_address, nthreads=o["nthreads"], nworkers=o["nworkers"],
            memory_limit=o["memory_limit"], name=self.name, death_timeout=o["death_timeout"],
            interface=o["interface"], host=o["host"], resources=o["resources"] or None).args()

    def worker_names(self) -> list:
        n = self.cluster.worker_options["nworkers"]
        return [self.name] if n == 1 else [f"{self.name}-{i}" for i in range(n)]

    async def start(self):
        self.session.start(self.cluster.token)
        self.state = "running"

    def problem(self):
        return self.session.problem()

    async def close(self):
        asked = await self.cluster.ask_workers_to_close(self.worker_names())
        await self.session.stop(timeout=5.0 if asked else 0.0)

    def logs(self) -> str:
        return self.session.text()


class RemoteScheduler(Remote):
    """``jobqueue scheduler`` on the first host, started over ssh; this process talks to it as
    a client through :class:`~jobqueue.core.scheduler_api.Remote`, like every cluster talks to
    its scheduler. No dashboard (yet) for a remote one."""

    def __init__(self, cluster, port: int = 0, scheduler_file=None, poll: float = 0.1):
        super().__init__(cluster.token, name=cluster.name, poll=poll,
                         expecting=cluster.expecting_workers)
        self.host = cluster.scheduler_host
        self.scheduler_file = scheduler_file
        args = ["scheduler", "--port", port]
        for key in ("host", "interface"):
            if getattr(cluster.ssh_scheduler_options, key):
                args += [f"--{key}", getattr(cluster.ssh_scheduler_options, key)]
        self.session = cluster.session(0, args,
                                       os.path.join(cluster.log_directory, "scheduler.log"))

    async def start(self, timeout: float = 30.0):
        self.session.start(self.token)
        try:
            self.address = await self._wait_for_address(timeout)
            await super().start()
            if self.scheduler_file:
                node.write_scheduler_file(self.scheduler_file, self.address, self.token)
        except BaseException:
            await super().close()
            await self.session.stop(timeout=0.0)
            raise
        logger.info("scheduler on %s at %s", self.host, self.address)
        return self

    async def _wait_for_address(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            found = SCHEDULER_ADDRESS.search(self.session.text())
            if found:
                return found.group(1)
            problem = self.session.problem()
            if problem:
                raise RuntimeError(f"the scheduler on {self.host!r} failed to start: {problem}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the scheduler on {self.host!r} did not report its address "
                                   f"within {timeout:g} s; its output:\n{self.session.text()}")
            await asyncio.sleep(0.02)

    def lost_because(self) -> str:
        problem = self.session.problem()
        return f" (on {self.host})\n{problem}" if problem else f" (on {self.host})"

    def log_text(self) -> str:
        return self.session.text()

    async def close(self):
        await super().close()
        await self.session.stop(timeout=0.0)  # hang up: the scheduler closes its workers, exits
        node.remove_private(self.scheduler_file)


# -- the cluster ------------------------------------------------------------------------------

@params.document("ssh", "scheduler")
class SSHCluster(Cluster):
    """A scheduler on ``hosts[0]`` and one ``jobqueue worker`` per other host, over ssh.

    ``connect_options``: ``username``, ``port``, ``config_file`` (-F), ``identity_file`` (-i),
    ``known_hosts``, ``connect_timeout`` (10 s), ``server_alive_interval`` (15 s; None: as
    ssh_config says), ``options`` ({"Key": value} -> -o Key=value),
    ``ssh_args`` (a list appended as is); one dict for all hosts or a list with one per host.
    ``worker_options``: ``nthreads`` and ``memory_limit`` (default "auto": the host's cores and
    memory), ``nworkers`` (processes per host, 1), ``death_timeout`` (30 s), ``interface`` or
    ``host`` (what the workers listen on), ``resources`` (``{"GPU": 1}`` or ``"GPU=1"``: what
    each worker declares, as ``jobqueue worker --resources``). ``scheduler_options``: ``port``, ``host``,
    ``interface``. ``remote_python``: the python on the hosts (default: this one's path), or a
    list with one per host. Defaults come from the ``ssh`` config section.

    Parameters
    ----------
    hosts : list of str
        The scheduler's host first, then one per worker job, e.g. ``["localhost", "node1",
        "node2"]`` (a host may appear more than once).
    log_directory : str, optional
        Directory for the ssh sessions' output (default: a temporary directory, removed when
        the cluster closes).

    Examples
    --------
    >>> cluster = SSHCluster(["localhost", "node1", "node2"],
    ...                      connect_options={"username": "alice"},
    ...                      worker_options={"nthreads": 4, "memory_limit": "8GB"})
    >>> client = Client(cluster)
    """

    kind = "ssh"

    def __init__(self, hosts: list[str], connect_options: dict | list[dict] | None = None,
                 worker_options: dict | None = None, scheduler_options: dict | None = None,
                 remote_python: str | list[str] | None = None, *, profile: str | None = None,
                 log_directory: str | None = None, name: str | None = None,
                 token: str | None = None, allowed_failures: int | None = None,
                 worker_ttl: float | None = None, idle_timeout: float | None = None,
                 dashboard_address=_FROM_CONFIG, scheduler_file: str | None = None,
                 asynchronous: bool = False):
        from .. import config

        if isinstance(hosts, str) or len(hosts) < 2:
            raise ValueError(f"SSHCluster needs a list of at least two hosts, the scheduler's "
                             f"first, then the workers', e.g. ['localhost', 'node1'], "
                             f"got {hosts!r}")
        self.hosts = [check_host(h) for h in hosts]
        self.scheduler_host, self.worker_hosts = self.hosts[0], self.hosts[1:]
        per_host = [isinstance(x, (list, tuple)) for x in (connect_options, remote_python)]
        settings = config.resolve("ssh", {
            "connect_options": None if per_host[0] else connect_options,
            "remote_python": None if per_host[1] else remote_python,
            "worker_options": worker_options, "scheduler_options": scheduler_options},
            profile=profile)
        self.connect_options = self._per_host(
            connect_options if per_host[0] else None, settings["connect_options"])
        self.remote_python = self._per_host_python(
            remote_python if per_host[1] else None, settings["remote_python"])
        self.worker_options = worker_settings(settings["worker_options"])
        self.ssh_scheduler_options = scheduler_options_mod.check(
            settings["scheduler_options"], "SSHCluster scheduler_options")
        self.workers_per_job = self.worker_options["nworkers"]
        self.worker_resources = self.worker_options["resources"] or {}
        self._temporary = None if log_directory else tempfile.mkdtemp(prefix="jobqueue-ssh-")
        self.log_directory: str = log_directory or self._temporary or ""
        os.makedirs(self.log_directory, exist_ok=True)
        self._closed_jobs: list = []
        self.local_scheduler = is_this_machine(self.scheduler_host)
        options = self.ssh_scheduler_options
        remote_only = sorted(options.given & {"dashboard_address", "protocol", "security"})
        if remote_only and not self.local_scheduler:
            raise ValueError(f"SSHCluster scheduler_options: {', '.join(remote_only)} cannot be "
                             f"set for a scheduler on another host ({self.scheduler_host!r}); "
                             f"use the config of that host")
        if self.local_scheduler:
            host = local_scheduler_host(self.scheduler_host, self.worker_hosts, options)
            given = {k: getattr(options, k) for k in sorted(options.given - {"host", "interface"})}
        else:
            host, given = self.scheduler_host, {}
        try:
            super().__init__(host=host, scheduler_options=given, name=name, token=token,
                             allowed_failures=allowed_failures, worker_ttl=worker_ttl,
                             idle_timeout=idle_timeout, dashboard_address=dashboard_address,
                             scheduler_file=scheduler_file, asynchronous=asynchronous)
        except BaseException:
            remove_tree(self._temporary)
            raise

    async def _start(self) -> None:
        await super()._start()
        await self._scale_to(len(self.worker_hosts))

    def _per_host(self, given, configured) -> list:
        base = {**CONNECT_DEFAULTS,
                **_options(configured, CONNECT_KEYS, "connect_options", CONNECT_ALIASES)}
        if given is None:
            return [base] * len(self.hosts)
        if len(given) != len(self.hosts):
            raise ValueError(f"SSHCluster connect_options: a list needs one dict per host "
                             f"({len(self.hosts)}), got {len(given)}")
        return [{**base, **_options(g, CONNECT_KEYS, "connect_options", CONNECT_ALIASES)}
                for g in given]

    def _per_host_python(self, given, configured) -> list:
        if given is None:
            return [configured or sys.executable] * len(self.hosts)
        if len(given) != len(self.hosts):
            raise ValueError(f"SSHCluster remote_python: a list needs one path per host "
                             f"({len(self.hosts)}), got {len(given)}")
        return [str(p) for p in given]

    def session(self, index: int, args, log_path: str) -> SSHSession:
        """An ssh session to ``hosts[index]`` running ``jobqueue ARGS`` through the remote
        half.

        Parameters
        ----------
        index : int
            Index of the host in ``hosts``.
        args : list of str
            Arguments of ``jobqueue``: ``ARGS[0]`` is worker or scheduler.
        log_path : str
            File that receives the session's output.
        """
        host, python = self.hosts[index], self.remote_python[index]
        argv = ssh_argv(host, self.connect_options[index])
        role = args[0]
        security = self.scheduler.security if role == "worker" else None
        env = security.env() if security is not None else {}
        return SSHSession(host, argv + [remote_command(python, role, args[1:], env)], log_path,
                          python)

    def expecting_workers(self) -> bool:
        """Whether a job's workers have not all connected yet."""
        connected = self.scheduler.workers() if hasattr(self, "scheduler") else {}
        return any(n not in connected for j in list(self.jobs.values())
                   for n in j.worker_names())

    def _new_scheduler(self, **options):
        if self.local_scheduler:
            return super()._new_scheduler(**options)
        return RemoteScheduler(self, port=options["port"],
                               scheduler_file=options.get("scheduler_file"))

    def new_job(self, name) -> Job:
        """A worker job on the worker host with the fewest live jobs.

        Parameters
        ----------
        name : str
            The job's name, unique in the cluster.
        """
        live = collections.Counter(j.index for j in self.jobs.values()
                                   if isinstance(j, SSHJob)
                                   and j.state not in ("closing", "closed"))
        index = min(range(len(self.worker_hosts)), key=lambda i: live[i])
        return SSHJob(self, name, index)

    async def ask_workers_to_close(self, names) -> bool:
        """Ask the scheduler to close these workers; False if none of them was told.

        Parameters
        ----------
        names : list of str
            Names of the workers.
        """
        try:
            return bool(await self.scheduler.close_workers(list(names),
                                                           "cluster scaled down or closed"))
        except (CommClosedError, OSError, RuntimeError) as e:
            logger.warning("could not ask the scheduler to close %s: %s", names, e)
            return False

    async def _wait_for_jobs(self, jobs, timeout=60.0):
        try:
            await super()._wait_for_jobs(jobs, timeout)
        except TimeoutError as e:
            arrived = self.scheduler.workers()
            said = [f"{j.name} on {j.host!r}:\n  " + "\n  ".join(
                        j.logs().strip().splitlines()[-10:] or ["(no output yet)"])
                    for j in jobs if any(n not in arrived for n in j.worker_names())]
            raise TimeoutError(f"{e}; their ssh sessions said:\n" + "\n".join(said)) from None

    async def _close_job(self, job):
        await super()._close_job(job)
        self._closed_jobs.append(job)

    def _remove_temporary(self) -> None:
        if self._temporary:
            for session in [j.session for j in self._closed_jobs] + [
                    getattr(self.scheduler, "session", None)]:
                if session is not None:
                    session.keep_text()
            remove_tree(self._temporary)

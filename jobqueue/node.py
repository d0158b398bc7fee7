"""This machine: its addresses, the user's private files, and the command that starts workers.

One home for what the scheduler, the workers and every cluster kind need to know about the
host they run on:

- **Addresses**: the one a network interface has (``ib0``), the one other hosts reach this host
  by (the default route's source), the one that routes to a given peer.
- **Private files** (tokens, scheduler files): created exclusively (``O_EXCL|O_NOFOLLOW``),
  mode 0600; by default in ``~/.jobqueue``, a 0700 directory the user owns. A path that exists
  and is not ours (another user's file, a symlink someone planted) is refused, never written
  through: its creator would read the token.
- **Worker command lines**: :class:`WorkerCommand` builds ``jobqueue worker ...`` for every
  cluster kind, and :func:`add_worker_arguments` defines the options that ``jobqueue worker``
  and each worker process (``python -m jobqueue.core.worker``) read, once, with one set of types.

It imports nothing heavy: ``jobqueue worker`` starts every batch job.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import stat
import sys
from dataclasses import dataclass, fields, replace
from typing import Any, Callable

# ------------------------------------------------------------------------------------ addresses


def interface_address(name: str) -> str:
    """The IPv4 address of a network interface (``ib0``, ``eth0``, ``lo``)."""
    import psutil

    addresses = psutil.net_if_addrs()
    if name not in addresses:
        raise ValueError(f"no network interface {name!r} on {socket.gethostname()}; "
                         f"it has: {', '.join(sorted(addresses))}")
    for a in addresses[name]:
        if a.family == socket.AF_INET:
            return a.address
    raise ValueError(f"network interface {name!r} on {socket.gethostname()} has no IPv4 address")


def route_source(host: str, port: int = 9) -> str | None:
    """The local address that routes to ``host`` (a name or an address; no packet is sent),
    or None if nothing routes there."""
    try:
        info = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(info[0][4])
            address = s.getsockname()[0]
    except (OSError, IndexError):
        return None
    return None if address.startswith("0.") else address


def public_address() -> str:
    """The address other hosts reach this one by: the source address of the default route,
    else what the host name resolves to, else 127.0.0.1."""
    address = route_source("203.0.113.1")     # TEST-NET-3: routed by the default route
    if address:
        return address
    try:
        return socket.gethostbyname(socket.getfqdn())
    except OSError:
        return "127.0.0.1"


def choose_address(host: str | None = None, interface: str | None = None,
                   toward: str | None = None) -> str:
    """The address to listen on and advertise: ``host`` as given, else ``interface``'s, else
    the one that routes to ``toward`` (a peer's host), else :func:`public_address`.
    A wildcard host (``0.0.0.0``, ``""``) advertises the public address."""
    if host and host not in ("0.0.0.0", "::"):
        return host
    if interface:
        return interface_address(interface)
    if toward:
        address = route_source(toward)
        if address:
            return address
    return public_address()


# -------------------------------------------------------------------------------- private files


class PrivateFileError(OSError):
    """A private file or directory could not be created safely; says which path and why."""


def private_directory(path: str | None = None) -> str:
    """``path`` (default ``~/.jobqueue``), created with mode 0700 if missing. Refused unless it
    is a real directory (not a symlink) that this user owns and no one else can write to or
    read; a directory of ours with looser permissions is tightened to 0700."""
    path = os.path.abspath(os.path.expanduser(path or os.path.join("~", ".jobqueue")))
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise PrivateFileError(f"cannot create the private directory {path}: {e.strerror}") \
            from None
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise PrivateFileError(f"{path} is not a directory (a symlink or a file): refusing to "
                               f"keep tokens there; remove it and try again")
    if info.st_uid != os.getuid():
        raise PrivateFileError(f"{path} belongs to uid {info.st_uid}, not to you "
                               f"(uid {os.getuid()}): refusing to keep tokens there")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def private_temp_directory(base: str) -> str:
    """A new directory of this user's alone (0700) inside ``base`` (created 0700 if missing), for
    temporary files that a cluster's workers read from a filesystem they share
    (``shared_temp_directory``); the caller removes it."""
    import tempfile

    base = os.path.abspath(os.path.expanduser(base))
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        return tempfile.mkdtemp(prefix="jobqueue-", dir=base)
    except OSError as e:
        raise PrivateFileError(f"shared_temp_directory {base}: cannot create a private directory "
                               f"in it ({e.strerror or e}); give a writable directory that the "
                               f"compute nodes share") from None


def private_path(name: str) -> str:
    """``~/.jobqueue/NAME`` (the directory made safe first)."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"not a file name: {name!r}")
    return os.path.join(private_directory(), name)


def write_private(path: str, text: str) -> str:
    """Write ``text`` to a new file at ``path`` that only this user can read (0600).

    The text goes into a fresh file beside ``path`` (``O_CREAT|O_EXCL|O_NOFOLLOW``: nothing that
    exists is ever written through), which is then renamed over ``path``: a reader (a client
    waiting for a scheduler file) sees the whole file or none. A regular file of ours that is
    there (left by an earlier run) is replaced; anything else (another user's file, a symlink, a
    directory) is refused with :class:`PrivateFileError`."""
    path = os.path.abspath(os.path.expanduser(path))
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    if info is not None:
        if not stat.S_ISREG(info.st_mode):
            kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
            raise PrivateFileError(f"{path} exists and is {kind}: refusing to write the token "
                                   f"through it; remove it or choose another path")
        if info.st_uid != os.getuid():
            raise PrivateFileError(f"{path} exists and belongs to uid {info.st_uid}, not to you "
                                   f"(uid {os.getuid()}): refusing to write the token into "
                                   f"another user's file; choose another path")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    partial = f"{path}.{secrets.token_hex(6)}.partial"
    try:
        fd = os.open(partial, flags, 0o600)
    except OSError as e:
        raise PrivateFileError(f"cannot create {path}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)      # whatever the umask said
            f.write(text)
        os.rename(partial, path)
    except BaseException:
        remove_private(partial)
        raise
    return path


def remove_private(path: str | None) -> None:
    """Remove a private file of ours; a file that is gone (or never was) is fine."""
    if not path:
        return
    try:
        if os.lstat(path).st_uid == os.getuid():
            os.unlink(path)
    except OSError:
        pass


def write_scheduler_file(path: str, address: str, token: str, env: dict | None = None) -> str:
    """JSON with the scheduler's address and token, and the environment a client needs (e.g.
    where the TLS certificates are), in a private file (see :func:`write_private`)."""
    return write_private(path, json.dumps({"address": address, "token": token,
                                           **({"env": env} if env else {})}))


def read_scheduler_file(path: str) -> tuple[str, str]:
    """(address, token) from a scheduler file."""
    with open(os.path.expanduser(path)) as f:
        info = json.load(f)
    return info["address"], info["token"]


def scheduler_file_security(path: str):
    """The TLS settings (a :class:`~jobqueue.core.security.Security`) a scheduler file names, if
    any (None)."""
    from .core.security import Security

    with open(os.path.expanduser(path)) as f:
        env = json.load(f).get("env") or {}
    if env.get("JOBQUEUE_SECURITY__PROTOCOL") != "tls":
        return None
    return Security("tls", env["JOBQUEUE_SECURITY__TLS_CA_FILE"],
                    env["JOBQUEUE_SECURITY__TLS_CERT"], env["JOBQUEUE_SECURITY__TLS_KEY"])


def environment_without_secrets(env=None) -> dict:
    """A copy of the environment (default: this process's) without the cluster's token: what
    batch commands run with, so that ``sbatch`` (which exports the environment by default)
    never puts a token into a job's submitted environment, where admins and tools see it."""
    return {k: v for k, v in (os.environ if env is None else env).items()
            if k != "JOBQUEUE_TOKEN"}


# -------------------------------------------------------------------------------- worker commands

AUTO = "auto"


def _size(text: str) -> int:
    if text.isdigit():        # as the nanny passes it: no need to load the config module
        return int(text)
    from .config import parse_bytes

    return parse_bytes(text)


def _size_or_auto(text: str):
    return AUTO if text == AUTO else _size(text)


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, not {value}")
    return value


def _count_or_auto(text: str):
    return AUTO if text == AUTO else _count(text)


def _duration(text: str) -> float:
    try:
        seconds = float(text)          # as the nanny passes it
    except ValueError:
        seconds = -1.0
    if seconds >= 0 and seconds != float("inf"):
        return seconds
    from .config import parse_timedelta

    return parse_timedelta(text)


def _resources(text: str) -> dict:
    from .core.placement import parse_resources

    return parse_resources(text)


def _module(text: str) -> str:
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"{text!r} is not a module name or a .py file")
    return text


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError(f"must be a fraction between 0 and 1, not {value}")
    return value


# (option, type, help, nanny only). Defaults are None: "from the config" (WorkerCommand.resolved).
_OPTIONS: tuple[tuple[str, Callable[[str], Any], str, bool], ...] = (
    ("nthreads", _count_or_auto, "threads per worker process (default 1; auto: cores / nworkers)",
     False),
    ("nworkers", _count, "worker processes (default 1)", True),
    ("memory-limit", _size_or_auto, "per worker process, e.g. 4GB (0: none; auto: the host's "
     "memory / nworkers)", False),
    ("name", str, "worker name (with --nworkers > 1: NAME-0, NAME-1, ...)", False),
    ("death-timeout", _duration, "exit when the scheduler is unreachable this long "
     "(default: config worker.death-timeout)", False),
    ("heartbeat-interval", _duration, "how often to tell the scheduler this worker is alive "
     "(default: config worker.heartbeat-interval)", False),
    ("lifetime", _duration, "retire gracefully after this long, e.g. 55m (set it below the "
     "job's walltime; default: config worker.lifetime)", False),
    ("lifetime-stagger", _duration, "leave up to this much earlier, at random, so workers do "
     "not all leave at once (default: config worker.lifetime-stagger)", False),
    ("memory-pause", _fraction, "fraction of the memory limit above which the worker takes "
     "no new tasks (default: config worker.memory.pause)", False),
    ("memory-terminate", _fraction, "fraction of the memory limit above which the nanny "
     "restarts the worker (default: config worker.memory.terminate)", True),
    ("host", str, "address to listen on and advertise (default: the one that routes to the "
     "scheduler)", False),
    ("interface", str, "network interface whose address to listen on and advertise, e.g. ib0 "
     "(instead of --host)", True),
    ("local-directory", str, "scratch directory, created if missing and given to the worker "
     "processes as TMPDIR (results stay in memory: nothing spills there)", True),
    ("resources", _resources, "abstract resources of each worker process, e.g. 'GPU=2,FOO=1': "
     "tasks submitted with resources={'GPU': 1} run only on workers that declare them, as "
     "many at once as the amounts allow", False),
    ("preload", _module, "a module (or .py file) each worker process imports at start; its "
     "dask_setup(worker) runs before the worker joins (repeat for several)", False),
)
# Options that may be given more than once (a list of values).
_REPEATED = {"preload"}
# Other names of options, as dask-worker spells them.
_ALIASES = {"nworkers": ("--nprocs",)}
_CONFIG_DEFAULTS = {"death_timeout": "worker.death-timeout",
                    "heartbeat_interval": "worker.heartbeat-interval",
                    "lifetime": "worker.lifetime", "lifetime_stagger": "worker.lifetime-stagger",
                    "memory_pause": "worker.memory.pause",
                    "memory_terminate": "worker.memory.terminate"}


def _argparse_type(convert):
    import argparse

    def check(text):
        try:
            return convert(text)
        except (TypeError, ValueError) as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    check.__name__ = convert.__name__.strip("_")
    return check


def add_worker_arguments(parser, nanny: bool = True) -> None:
    """The options of ``jobqueue worker`` (``nanny``) or of one worker process (not): defined
    here once, so that every builder and both parsers agree on names and types."""
    parser.add_argument("scheduler", help="scheduler address, tcp://host:port")
    for option, convert, help, nanny_only in _OPTIONS:
        if nanny_only and not nanny:
            continue
        if not nanny:        # one process: the nanny has worked out what "auto" means
            strict: dict[Callable, Callable] = {_count_or_auto: _count, _size_or_auto: _size}
            convert = strict.get(convert, convert)
        aliases = _ALIASES.get(option, ()) if nanny else ()
        parser.add_argument(f"--{option}", *aliases, type=_argparse_type(convert), help=help,
                            action="append" if option in _REPEATED else "store")


class _Refused(Exception):
    pass


# dask-worker options that jobqueue worker does not have, and why.
_NOT_HERE = {
    "--preload-nanny": "the nanny runs no user code; --preload runs in each worker process",
    "--preload-argv": "preload modules get no arguments of their own; read the environment",
    "--lifetime-restart": "a worker that reaches its lifetime retires and its job ends; "
                          "adaptive scaling (or scale()) starts a replacement job",
    "--worker-class": "jobqueue runs its own worker; use --preload to set it up",
    "--nanny-port": "the nanny does not listen: the worker processes connect out",
    "--contact-address": "workers advertise the address they listen on (--host or --interface)",
    "--listen-address": "workers listen on --host or the address of --interface",
    "--tls-ca-file": "TLS comes from the cluster's security settings (config security.*)",
    "--tls-cert": "TLS comes from the cluster's security settings (config security.*)",
    "--tls-key": "TLS comes from the cluster's security settings (config security.*)",
    "--no-nanny": "jobqueue worker always supervises its processes",
    "--nanny": "jobqueue worker always supervises its processes",
    "--dashboard-address": "workers serve no dashboard: the scheduler's shows them",
    "--no-dashboard": "workers serve no dashboard: the scheduler's shows them",
    "--worker-port": "workers listen on a free port, which they tell the scheduler",
    "--protocol": "the protocol is the cluster's (config security.protocol)",
    "--scheduler-file": "the job script gives the scheduler's address",
}


def parse_worker_options(args) -> dict:
    """The ``jobqueue worker`` options in ``args`` (a job's worker_extra_args) as
    ``{dest: value}``; ValueError naming any argument it does not accept or cannot read, so a
    wrong one is refused when the cluster is made, not when the job starts."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise _Refused(message)

    parser = Parser(prog="jobqueue worker", add_help=False, allow_abbrev=False)
    add_worker_arguments(parser)
    try:
        known, unknown = parser.parse_known_args(["tcp://scheduler:1", *map(str, args)])
    except _Refused as e:
        raise ValueError(f"{e} (as jobqueue worker reads it)") from None
    for arg in unknown:
        reason = _NOT_HERE.get(arg.split("=", 1)[0])
        if reason:
            raise ValueError(f"jobqueue worker does not accept {arg}: {reason}")
    if unknown:
        accepted = " ".join(sorted(o for a in parser._actions for o in a.option_strings))
        raise ValueError(f"jobqueue worker does not accept {' '.join(unknown)}; it accepts "
                         f"{accepted}")
    return {k: v for k, v in vars(known).items() if v is not None and k != "scheduler"}


@dataclass(frozen=True)
class WorkerCommand:
    """One ``jobqueue worker`` command: what LocalCluster, SSHCluster, batch job scripts and
    the nanny (for each worker process) start. None means "the default" (config, or 1 worker).
    """

    scheduler: str
    nthreads: Any = None               # int or "auto"
    nworkers: int | None = None
    memory_limit: Any = None           # bytes, "auto", or 0 for none
    name: str | None = None
    death_timeout: float | None = None
    heartbeat_interval: float | None = None
    lifetime: float | None = None
    lifetime_stagger: float | None = None
    memory_pause: float | None = None
    memory_terminate: float | None = None
    host: str | None = None
    interface: str | None = None
    local_directory: str | None = None
    resources: dict | None = None      # {name: amount}
    preload: tuple | None = None       # modules or .py files

    @classmethod
    def from_args(cls, args) -> WorkerCommand:
        """From parsed arguments (``add_worker_arguments``)."""
        values: dict[str, Any] = {f.name: getattr(args, f.name, None) for f in fields(cls)}
        if values["preload"] is not None:
            values["preload"] = tuple(values["preload"])
        return cls(**values)

    def resolved(self) -> WorkerCommand:
        """Defaults filled in: config values for what was not given, this host's cores and
        memory for "auto", the interface's address for ``interface``."""
        from . import config

        values = {name: config.get(key, None) for name, key in _CONFIG_DEFAULTS.items()
                  if getattr(self, name) is None}
        nworkers = self.nworkers or 1
        if self.nthreads is None:
            values["nthreads"] = 1
        elif self.nthreads == AUTO:
            values["nthreads"] = max(1, cpu_count() // nworkers)
        if self.memory_limit == AUTO:
            import psutil

            values["memory_limit"] = psutil.virtual_memory().total // nworkers
        elif self.memory_limit is None:
            values["memory_limit"] = 0
        if self.interface and not self.host:
            values["host"] = interface_address(self.interface)
        return replace(self, nworkers=nworkers, **values)

    def args(self) -> list:
        """The arguments after ``jobqueue`` (``worker SCHEDULER --nthreads ...``)."""
        return ["worker", *self._options(nanny=True)]

    def argv(self, python: str | None = None) -> list:
        """The whole command: ``PYTHON -m jobqueue worker ...``."""
        return [python or sys.executable, "-m", "jobqueue", *self.args()]

    def process_argv(self, python: str | None = None) -> list:
        """One worker process, as the nanny starts it (no nanny-only options)."""
        return [python or sys.executable, "-m", "jobqueue.core.worker",
                *self._options(nanny=False)]

    def shell(self, python: str | None = None, module: str | None = None, extra=(),
              expand=("name",)) -> str:
        """The command as shell text, for job scripts: ``PYTHON -m jobqueue worker ...`` (or
        ``PYTHON -m MODULE ...``: a cluster's ``worker_command``, given the same arguments),
        then *extra* arguments (worker_extra_args). Every value is shell-quoted, except those
        of the options in *expand*, which go in double quotes so that the shell expands the
        variables in them (``--name "job-${JOBQUEUE_JOB_ID}"``; the caller vouches that they
        hold nothing else that the shell would read). The command on the first line, its
        options wrapped at about 90 characters."""
        import shlex

        head = [python or sys.executable, "-m", *(module.split() if module else ["jobqueue",
                                                                                    "worker"])]
        options = self._options(nanny=True)
        words = [" ".join(shlex.quote(w) for w in head + options[:1])]
        for i in range(1, len(options), 2):
            option, value = options[i], options[i + 1]
            text = f'"{value}"' if option[2:].replace("-", "_") in expand else shlex.quote(value)
            words.append(f"{option} {text}")
        for a in map(str, extra):           # an option and its value stay on one line
            if words[1:] and not a.startswith("-") and words[-1].startswith("-") \
                    and " " not in words[-1]:
                words[-1] += " " + shlex.quote(a)
            else:
                words.append(shlex.quote(a))
        if len(words) == 1:
            return words[0]
        lines, line = [words[0]], "    " + words[1]        # the command, then its options
        for word in words[2:]:
            if len(line) + 1 + len(word) > 90:
                lines.append(line)
                line = "    " + word
            else:
                line += " " + word
        return " \\\n".join(lines + [line])

    def _options(self, nanny: bool) -> list:
        out = [self.scheduler]
        for option, _, _, nanny_only in _OPTIONS:
            value = getattr(self, option.replace("-", "_"))
            if value is None or nanny_only and not nanny:
                continue
            for item in (value if option in _REPEATED else [value]):
                out += [f"--{option}", _text(item)]
        return out


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):                  # --resources
        from .core.placement import format_resources

        return format_resources(value)
    return str(value)


def cpu_count() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1

"""``jobqueue submit``: start a cluster, run a script against it, cancel every job at the end.

The command (the *driver*) starts the cluster and its scheduler in this process, submits the
jobs, and runs SCRIPT with this python in a session of its own, with the scheduler's address and
token in its environment so that ``Client()`` connects. Whatever happens next (the script ends,
fails, the cluster fails, SIGINT, SIGTERM or SIGHUP) ends in ``cluster.close()``, which cancels
every job the driver submitted. Signals are forwarded to the script once; a second one kills it.
Startup is never interrupted half-way (a job submitted while being interrupted would be missed):
a signal during startup is acted on as soon as the cluster has its jobs.

``--detach`` submits the driver itself as a small batch job (the same template, with the worker
part replaced by ``python -m jobqueue submit ...``), so the workflow survives logout.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time

from . import config
from .batch.runner import BatchCommandError
from .batch.script import JobScriptError

BATCH = ("slurm", "pbs", "sge")
CLUSTER_CLASSES = {"slurm": ("jobqueue.batch.slurm", "SLURMCluster"),
                   "pbs": ("jobqueue.batch.pbs", "PBSCluster"),
                   "sge": ("jobqueue.batch.sge", "SGECluster"),
                   "kubernetes": ("jobqueue.deploy.kubernetes", "KubeCluster")}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE = 10.0          # seconds a signalled script gets to exit before it is killed
ERRORS = (config.ConfigError, BatchCommandError, JobScriptError)

# command-line option (attribute of args) -> setting, for each kind of cluster
BATCH_SETTINGS = {"cores": "cores", "memory": "memory", "processes": "processes",
                  "walltime": "walltime", "queue": "queue", "account": "account",
                  "job_name": "job_name", "job_extra": "job_extra_directives",
                  "prologue": "job_script_prologue", "log_directory": "log_directory",
                  "python": "python", "interface": "interface", "poll_interval": "poll_interval"}
LOCAL_SETTINGS = {"cores": "threads_per_worker", "memory": "memory_limit"}
SSH_WORKER_SETTINGS = {"cores": "nthreads", "memory": "memory_limit", "processes": "nworkers",
                       "interface": "interface"}
SSH_SETTINGS = {"python": "remote_python"}
KUBE_SETTINGS = {"python": "python", "interface": "interface", "poll_interval": "poll_interval"}
APPLIES = {**{kind: BATCH_SETTINGS for kind in BATCH}, "local": LOCAL_SETTINGS,
           "ssh": {**SSH_WORKER_SETTINGS, **SSH_SETTINGS}, "kubernetes": KUBE_SETTINGS}


class UsageError(ValueError):
    """The command line asks for something that cannot be done (exit code 2)."""


def say(message, command="submit") -> None:
    try:
        print(f"jobqueue {command}: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):       # stderr is gone (SIGHUP: the terminal closed)
        pass


def _say_in_handler(message) -> None:
    """say() from a signal handler: print() could be interrupted mid-write by it and refuse a
    reentrant call, so this writes to the file descriptor directly."""
    try:
        os.write(sys.stderr.fileno(), f"jobqueue submit: {message}\n".encode())
    except (OSError, ValueError):
        pass


def main(args) -> int:
    kind = None
    try:
        kind = cluster_kind(args)
        check_options(kind, args)
        if args.detach:
            return detach(kind, args)
        if args.dry_run:
            return dry_run(kind, args)
        return Driver(kind, args).run()
    except UsageError as e:
        say(e)
        return 2
    except ERRORS as e:
        say(_with_hint(e, args, kind))
        return 1


def print_job_script(args) -> int:
    """``jobqueue script SYSTEM [options]``."""
    try:
        _, _, text, _ = preview_job_script(args.system, given(args, BATCH_SETTINGS),
                                           args.profile)
    except ERRORS as e:
        say(_with_hint(e, args, args.system), "script")
        return 1
    sys.stdout.write(text)
    return 0

def _with_hint(error, args=None, kind=None) -> str:
    """The error's text, where a setting given on the command line is named by its option."""
    text = str(error)
    if not isinstance(error, config.ConfigError):
        return text
    if "is required" in text:
        text += ("\n  on the command line: --cores N --memory SIZE (or set them in the config, "
                 "see `jobqueue config show --sources`)")
    kind = kind or getattr(args, "cluster", None)
    for dest, setting in BATCH_SETTINGS.items():
        if kind and getattr(args, dest, None) is not None:
            text = text.replace(f"argument: {kind}.{setting.replace('_', '-')}",
                                f"--{dest.replace('_', '-')}")
    return text

# ------------------------------------------------------------------------------ options, cluster


def cluster_kind(args) -> str:
    if args.cluster:
        return args.cluster
    if args.profile:
        profiles = config.get("profiles", {}) or {}
        if args.profile not in profiles:
            defined = (f"the config defines: {', '.join(profiles)}" if profiles else
                       "the config defines none (see `jobqueue config show --sources`)")
            raise config.ConfigError(f"no profile {args.profile!r}; {defined}")
        return profiles[args.profile]["kind"]
    return "local"


def check_options(kind: str, args) -> None:
    for dest in BATCH_SETTINGS:
        if getattr(args, dest, None) is not None and dest not in APPLIES[kind]:
            raise UsageError(f"--{dest.replace('_', '-')} does not apply to --cluster {kind}")
    if kind == "ssh":
        if not args.hosts:
            raise UsageError("--cluster ssh needs --hosts SCHEDULER_HOST,WORKER_HOST,...")
        if args.jobs or args.adapt:
            raise UsageError("--cluster ssh starts one job per worker host in --hosts; "
                             "--jobs and --adapt do not apply")
    elif args.hosts:
        raise UsageError(f"--hosts applies to --cluster ssh, not {kind}")
    args.adapt_range = parse_adapt(args.adapt) if args.adapt else None
    if args.detach and kind not in BATCH:
        raise UsageError(f"--detach submits the driver as a batch job: give --cluster "
                         f"slurm, pbs or sge (or a profile of one), not {kind}")
    if not os.path.isfile(args.script):
        raise UsageError(f"no such script: {args.script}")


def parse_adapt(text: str) -> tuple:
    lo, sep, hi = text.partition(":")
    try:
        bounds = (int(lo or 0), int(hi))
    except ValueError:
        bounds = None
    if not sep or bounds is None or bounds[0] < 0 or bounds[1] < max(bounds[0], 1):
        raise UsageError(f"--adapt {text}: give MIN:MAX jobs with 0 <= MIN <= MAX and MAX >= 1, "
                         f"e.g. --adapt 1:20")
    return bounds


def given(args, table: dict) -> dict:
    """The settings the command line gives (options not given are left to the config)."""
    return {setting: getattr(args, dest) for dest, setting in table.items()
            if getattr(args, dest, None) is not None}


def cluster_class(kind: str):
    import importlib

    module, name = CLUSTER_CLASSES[kind]
    return getattr(importlib.import_module(module), name)


def local_settings(args) -> dict:
    """LocalCluster's arguments: the ``local`` config section (and profile) < the options."""
    n = args.jobs if args.jobs else (args.adapt_range[0] if args.adapt_range else None)
    s = config.resolve("local", {"n_workers": n, **given(args, LOCAL_SETTINGS)}, args.profile)
    return {k: s[k] for k in ("n_workers", "threads_per_worker", "processes", "memory_limit")}


def make_cluster(kind: str, args):
    if kind in CLUSTER_CLASSES:
        return cluster_class(kind)(profile=args.profile, **given(args, APPLIES[kind]))
    if kind == "local":
        from .deploy.local import LocalCluster

        return LocalCluster(**local_settings(args))
    from .deploy.ssh import SSHCluster

    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    return SSHCluster(hosts, worker_options=given(args, SSH_WORKER_SETTINGS) or None,
                      profile=args.profile, **given(args, SSH_SETTINGS))


def start_workers(cluster, kind: str, args) -> None:
    if kind == "ssh":
        return                     # one job per worker host, started by the constructor
    if args.adapt_range:
        cluster.adapt(minimum_jobs=args.adapt_range[0], maximum_jobs=args.adapt_range[1])
    elif kind in CLUSTER_CLASSES:
        cluster.scale(jobs=args.jobs or 1)
    # local: the constructor started n_workers

# ----------------------------------------------------------------------------- job script preview


PREVIEW_NAME = "CLUSTER"     # a cluster's name, in a preview made before it exists


def preview_job_script(kind: str, arguments: dict, profile):
    """(adapter, settings, script, scheduler address) as a cluster would submit them, without
    starting one: the port and the cluster's name (in the token file's and the default log
    directory's paths) are only known once it runs."""
    from .batch import script as script_mod
    from .batch.job import scheduler_host

    system = cluster_class(kind).system
    s = script_mod.settings(kind, arguments, profile)
    address = f"tcp://{scheduler_host(kind, s)}:{config.get('scheduler.port', 0) or 'PORT'}"
    token_file = os.path.join(os.path.expanduser("~"), ".jobqueue", f"{PREVIEW_NAME}.token")
    text = script_mod.job_script(s, system.template, scheduler_address=address,
                                 token_file=token_file,
                                 **script_mod.job_defaults(s, PREVIEW_NAME))
    return system, s, text, address


def _log_directory(s: dict, cluster_name: str = PREVIEW_NAME) -> str:
    from .batch.script import job_defaults

    return job_defaults(s, cluster_name)["log_directory"]


def _script_path(system, job_name: str) -> str:
    return os.path.join(tempfile.gettempdir(), "jobqueue-submit-XXXXXXXX",
                        system.script_name(job_name))


def _script_argv(args) -> list:
    return [sys.executable, args.script, *args.args]


def dry_run(kind: str, args) -> int:
    out = []
    if kind in BATCH:
        system, s, text, address = preview_job_script(kind, given(args, BATCH_SETTINGS),
                                                      args.profile)
        jobs = args.jobs or 1
        out += [f"# the job script ({kind})", text.rstrip("\n"), "", "# the commands"]
        if args.adapt_range:
            out.append(f"# adaptive: between {args.adapt_range[0]} and {args.adapt_range[1]} "
                       f"jobs; each scale-up submits N jobs with")
        array = jobs > 1 and s["job_array"] and system.supports_arrays
        argv = system.submit_argv(_script_path(system, s["job_name"]), jobs if array else None,
                                  s.get("submit_command_extra") or [], _log_directory(s))
        notes = [f"in {cwd}" for cwd in [system.submit_cwd(_log_directory(s))] if cwd]
        if not array and jobs > 1 and not args.adapt_range:
            notes.append(f"{jobs} times")
        out.append(shlex.join(argv) + (f"    # {', '.join(notes)}" if notes else ""))
    elif kind == "kubernetes":
        from .deploy.kubernetes import preview_pod

        address = "tcp://HOST:PORT"
        out += ["# the worker pod (kubernetes), one per job", preview_pod(
            given(args, KUBE_SETTINGS), args.profile, address).rstrip("\n")]
    elif kind == "local":
        s = local_settings(args)
        address = "tcp://127.0.0.1:PORT"
        out.append(f"# LocalCluster({', '.join(f'{k}={v!r}' for k, v in s.items())}): "
                   f"`jobqueue worker` processes on this machine")
    else:
        hosts = args.hosts.split(",")
        address = f"tcp://{hosts[0]}:PORT"
        out.append(f"# SSHCluster: the scheduler on {hosts[0]}, one `jobqueue worker` per host "
                   f"over ssh: {', '.join(hosts[1:])}")
    out.append(f"JOBQUEUE_SCHEDULER_ADDRESS={address} JOBQUEUE_TOKEN=<token> "
               f"{shlex.join(_script_argv(args))}")
    if kind in BATCH:
        cancel = system.cancel_argv(["<job ids>"], s.get("cancel_command_extra") or [])
        out.append(f"{shlex.join(cancel)}    # when the script ends, on error and on Ctrl-C")
    print("\n".join(out))
    return 0

# ------------------------------------------------------------------------------------ the driver


def _setup_logging(verbose: bool) -> None:
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    handler.setFormatter(logging.Formatter("jobqueue submit: %(levelname)s: %(message)s"))
    root = logging.getLogger("jobqueue")
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class Driver:
    """Runs one ``jobqueue submit``: cluster, jobs, script, signals, cleanup, summary."""

    def __init__(self, kind: str, args):
        self.kind, self.args = kind, args
        self.cluster = None
        self.proc = None
        self.signum = None           # the first signal that asked us to stop
        self.signalled_at = None
        self.closing = False
        self.failed = False          # the jobs failed: the script was stopped
        self.announced_workers = False
        self.scheduler_file = None

    def run(self) -> int:
        _setup_logging(self.args.verbose)
        previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        code = 1
        try:
            code = self._run()
        except ERRORS as e:
            say(_with_hint(e, self.args, self.kind))
        except Exception as e:
            say(f"{type(e).__name__}: {e}")
            if self.args.verbose:
                import traceback

                traceback.print_exc()
        finally:
            self.closing = True
            self._stop_script()
            self._close()
            for s, handler in previous.items():
                signal.signal(s, handler)
        if self.signum is not None:
            return 128 + self.signum
        return 1 if self.failed else code

    def _run(self) -> int:
        if self.args.cluster is None and self.kind == "local":
            say("no --cluster given: the workers run on this machine (--cluster local); "
                "give --cluster slurm, pbs or sge to run them in batch jobs")
        self.cluster = make_cluster(self.kind, self.args)
        if self.signum is not None:
            return 1
        self._announce_cluster()
        start_workers(self.cluster, self.kind, self.args)
        if self.signum is not None:
            return 1
        self._announce_jobs()
        return self._run_script()

    # -- signals ------------------------------------------------------------------------------

    def _on_signal(self, signum, frame):
        name = _signal_name(signum)
        if self.closing:
            _say_in_handler(f"{name}: still cancelling the jobs, a moment please")
        elif self.signum is None:
            self.signum, self.signalled_at = signum, time.monotonic()
            running = self.proc is not None and self.proc.returncode is None
            _say_in_handler(f"{name}: " + ("stopping the script, then " if running else "") +
                            "cancelling every job")
            self._signal_script(signum)
        elif self.proc is not None and self.proc.returncode is None:
            _say_in_handler(f"{name} again: killing the script")
            self._signal_script(signal.SIGKILL)
        else:
            _say_in_handler(f"{name} again: giving up on starting the cluster")
            raise KeyboardInterrupt

    def _signal_script(self, signum) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, signum)        # its own session: the script and its children
        except (ProcessLookupError, PermissionError):
            pass

    def _stop_script(self) -> None:
        """SIGTERM, then SIGKILL after GRACE seconds, if the script is still running."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        self._signal_script(signal.SIGTERM)
        try:
            proc.wait(GRACE)
        except subprocess.TimeoutExpired:
            self._signal_script(signal.SIGKILL)
            proc.wait()

    # -- running ------------------------------------------------------------------------------

    def _run_script(self) -> int:
        c, args = self.cluster, self.args
        env = dict(os.environ, JOBQUEUE_SCHEDULER_ADDRESS=c.scheduler_address,
                   JOBQUEUE_TOKEN=c.token)
        env.pop("JOBQUEUE_SCHEDULER_FILE", None)
        env.setdefault("PYTHONUNBUFFERED", "1")      # its output streams as it is printed
        argv = _script_argv(args)
        say(f"running {shlex.join(argv[1:])}")
        started = time.monotonic()
        self.proc = subprocess.Popen(argv, env=env, start_new_session=True)
        if self.signum is not None:                   # a signal came while it was starting
            self._signal_script(self.signum)
        while True:
            try:
                rc = self.proc.wait(timeout=0.25)
                break
            except subprocess.TimeoutExpired:
                pass
            if self.signalled_at and time.monotonic() - self.signalled_at > GRACE:
                say(f"the script did not exit within {GRACE:g} s of the signal: killing it")
                self._signal_script(signal.SIGKILL)
                self.signalled_at = None
            self._watch()
        elapsed = time.monotonic() - started
        if rc < 0:
            say(f"{args.script} was killed by {_signal_name(-rc)} after {elapsed:.1f} s")
            return 128 - rc
        say(f"{args.script} exited with code {rc} after {elapsed:.1f} s")
        return rc

    def _watch(self) -> None:
        """Say when the workers are there; stop the script once the cluster gives up on its
        jobs (they keep failing, or can never start as submitted)."""
        c = self.cluster
        if self.failed or not hasattr(c, "failure"):    # batch and Kubernetes clusters
            return
        expected = (c._target or 0) * c.workers_per_job
        if not self.announced_workers and expected and len(c.scheduler.workers()) >= expected:
            self.announced_workers = True
            say(f"{_plural(expected, 'worker')} connected")
        if c.failure:
            say("stopping the script: the cluster cannot run its jobs (see above)")
            self.failed = True
            self._stop_script()

    # -- messages -----------------------------------------------------------------------------

    def _announce_cluster(self) -> None:
        from .node import private_path, write_scheduler_file

        c = self.cluster
        driver_job = os.environ.get(DRIVER_JOB)
        say(f"{type(c).__name__} {c.name}: scheduler at {c.scheduler_address}")
        say(_dashboard_message(c.dashboard_link, driver_job))
        path = self.args.scheduler_file
        if not path:
            from .batch import owned

            owned.remove_stale()
            stem = f"driver-{driver_job}" if driver_job else c.name
            path = private_path(owned.owned_name(stem, ".json"))
        try:
            write_scheduler_file(path, c.scheduler_address, c.token)
        except OSError as e:        # PrivateFileError says which path and why
            what = "--scheduler-file" if self.args.scheduler_file else "the scheduler file"
            raise config.ConfigError(f"{what}: {e}; give a path in a directory you can "
                                     "write") from None
        self.scheduler_file = path
        how = driver_job or f"--scheduler-file {path}"
        say(f"`jobqueue info {how}` shows its workers, tasks and jobs")

    def _announce_jobs(self) -> None:
        from .config import format_bytes, format_walltime

        c = self.cluster
        if self.args.adapt_range:
            lo, hi = self.args.adapt_range
            say(f"adaptive: between {lo} and {hi} jobs, following the load")
        if self.kind in BATCH:
            s = c.settings
            walltime = f", walltime {format_walltime(s['walltime'])}" if s.get("walltime") else ""
            if c.jobs:
                say(f"submitted {len(c.jobs)} job{'s' if len(c.jobs) > 1 else ''} "
                    f"({' '.join(c.jobs)})")
            say(f"each job: {_plural(s['cores'], 'core')}, {format_bytes(s['memory'])}{walltime}, "
                f"{_plural(c.processes, 'worker process', 'worker processes')}; "
                f"output in {c.log_directory}")
        elif self.kind == "kubernetes":
            if c.jobs:
                say(f"created {_plural(len(c.jobs), 'pod')} in namespace {c.namespace} "
                    f"({' '.join(c.jobs)}), image {c.settings['image']}")
        elif self.kind == "local":
            say(f"{_plural(len(c.jobs), 'worker process', 'worker processes')} on this machine, "
                f"{_plural(c.threads_per_worker, 'thread')} each")

    def _close(self) -> None:
        c = self.cluster
        if c is None:
            return
        jobs = list(c.jobs.values())
        before = [(job, job.info()) for job in jobs]
        try:
            c.close()
        except Exception as e:
            say(f"closing {c.name} failed: {e}; check the batch queue for jobs left behind")
        from .node import remove_private

        remove_private(self.scheduler_file)
        self._summary(before)

    def _summary(self, before) -> None:
        c = self.cluster
        if not before:
            say(f"{c.name}: no jobs")
            return
        counts, lines = {}, []
        for job, old in before:
            new = job.info()
            counts[new["state"]] = counts.get(new["state"], 0) + 1
            workers = len(set(old["workers"]) | set(getattr(job, "ever_connected", ())))
            line = f"{old['id'] or old['name']}: {old['state']}"
            if old["reason"]:
                line += f" ({old['reason']})"
            line += f", {workers}/{old['expected_workers']} workers"
            if new["state"] != old["state"]:
                line += f" -> {new['state']}"
            lines.append(line)
        total = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        replaced = getattr(c, "replacements", 0)
        if replaced:
            total += f" ({_plural(replaced, 'replacement')} of jobs that ended)"
        say(f"jobs of {c.name}: {total}\n  " + "\n  ".join(lines))

# ------------------------------------------------------------------------------------- --detach


DRIVER_BODY = """\
{% for line in job_script_prologue %}
{{ line }}
{% endfor %}
{% if local_directory %}
mkdir -p {{ local_directory | q }} && export TMPDIR={{ local_directory | q }}
{% endif %}

# `jobqueue submit --detach`: this job runs the scheduler and the script; the workers are batch
# jobs of their own, cancelled when the script ends or when this job is cancelled.
# `jobqueue info JOBID` finds its scheduler file by this job's id.
export JOBQUEUE_DRIVER_JOB="$JOBQUEUE_JOB_ID"
cd {{ workdir | q }} || exit 1
exec {{ python | q }} -m jobqueue submit{% for arg in driver_args %} {{ arg | q }}{% endfor %}

"""
_DRIVER_MARK = "-m jobqueue submit"
DRIVER_JOB = "JOBQUEUE_DRIVER_JOB"     # set in a --detach driver's job: its batch job id


def _dashboard_message(link, driver_job) -> str:
    """The dashboard's link; from a driver job, with the node it runs on and how to reach a
    link on 127.0.0.1 from elsewhere (an ssh tunnel)."""
    import socket
    from urllib.parse import urlsplit

    if not link:
        return "dashboard: none (scheduler.dashboard-address is null)"
    if not driver_job:
        return f"dashboard: {link}"
    node = socket.gethostname()
    parts = urlsplit(link)
    text = f"dashboard: {link} on {node}, where job {driver_job} runs"
    if parts.hostname in ("127.0.0.1", "localhost", "::1"):
        text += (f"; from the login node: ssh -N -L {parts.port}:127.0.0.1:{parts.port} {node}, "
                 f"then open the link there")
    return text


def driver_scheduler_file(job_id: str) -> str:
    """The scheduler file of the `jobqueue submit --detach` driver running as batch job job_id
    (for `jobqueue info JOBID`)."""
    import glob

    from .batch import owned

    found = sorted(glob.glob(os.path.join(owned.directory(), f"driver-{job_id}.*.json")),
                   key=os.path.getmtime)
    if not found:
        raise ValueError(f"no scheduler file of a `jobqueue submit --detach` driver job "
                         f"{job_id} in {owned.directory()}: the driver writes one once its "
                         "cluster runs (its output file says so) and removes it at the end")
    return found[-1]
_NOT_FORWARDED = ("help", "script", "args", "cluster", "detach", "dry_run", "driver_walltime",
                  "driver_memory")


def forwarded_argv(kind: str, args) -> list:
    """The arguments of this command, without --detach, for the driver job to run."""
    out = ["--cluster", kind]
    for action in args.parser._actions:
        value = getattr(args, action.dest, None)
        if action.dest in _NOT_FORWARDED or value in (None, False, action.default):
            continue
        flag = action.option_strings[-1]
        if value is True:
            out.append(flag)
        else:
            out += [f"{flag}={v}" for v in (value if isinstance(value, list) else [value])]
    return [*out, "--", args.script, *args.args]


def driver_settings(kind: str, args, workers: dict) -> dict:
    """The driver job: the config section (not the profile: no GPU for the driver) with the
    workers' queue, account, log directory, python and prologue; 1 core."""
    from .batch import script as script_mod

    name = f"{workers['job_name']}-driver"
    name = name if len(name) <= 64 else "jobqueue-driver"
    arguments = {"queue": args.queue, "account": args.account, "cores": 1, "processes": 1,
                 "memory": args.driver_memory,
                 "walltime": args.driver_walltime or _clock(workers.get("walltime")),
                 "job_name": name, "log_directory": _log_directory(workers, name),
                 "python": workers.get("python"), "job_script_prologue": args.prologue}
    if kind == "slurm":
        arguments.update(job_cpu=1, job_mem=args.driver_memory)
    s = script_mod.settings(kind, arguments)
    s["resource_spec"] = None            # the site's is sized for workers
    return s


def _clock(seconds):
    """HH:MM:SS, which every batch system reads alike (a bare number is minutes to SLURM)."""
    return None if seconds is None else config.format_walltime(seconds)


def render_driver(system, s: dict, driver_args: list) -> str:
    """The system's template with the worker part replaced by the driver's command."""
    from .batch import script as script_mod

    text = script_mod.job_script(
        s, system.template, scheduler_address="", token_file="",
        **script_mod.job_defaults(s, s["job_name"]), overrides={"worker.sh.j2": DRIVER_BODY},
        extra={"workdir": os.getcwd(), "driver_args": driver_args})
    if _DRIVER_MARK not in text:
        raise config.ConfigError(f"{system.name}.template: {s.get('template')} does not "
                                 "include worker.sh.j2, so --detach cannot put the driver's "
                                 "command in it; submit without --detach")
    return text


def detach(kind: str, args) -> int:
    import asyncio

    from .batch import script as script_mod
    from .batch.job import submit_script
    from .batch.runner import CommandRunner

    system = cluster_class(kind).system
    workers = script_mod.settings(kind, given(args, BATCH_SETTINGS), args.profile)
    s = driver_settings(kind, args, workers)
    log_directory = s["log_directory"]
    text = render_driver(system, s, forwarded_argv(kind, args))
    if args.dry_run:
        argv = system.submit_argv(_script_path(system, s["job_name"]), None,
                                  s.get("submit_command_extra") or [])
        cwd = system.submit_cwd(log_directory)
        print(f"# the driver's job script ({kind})\n{text.rstrip()}\n\n# the command\n"
              f"{shlex.join(argv)}" + (f"    # in {cwd}" if cwd else ""))
        return 0
    os.makedirs(log_directory, exist_ok=True)
    [(job_id, _)] = asyncio.run(submit_script(CommandRunner(), system, text, s, log_directory,
                                              [None]))
    logs = system.log_paths(log_directory, s["job_name"], job_id)
    print(job_id, flush=True)
    say(f"the driver runs as {kind} job {job_id}: the scheduler and {args.script} inside it, "
        f"the workers in jobs of their own; it survives logout\n"
        f"  its output: {' and '.join(logs)}\n"
        f"  follow it:  tail -f {shlex.quote(logs[0])}\n"
        f"  look in:    jobqueue info {job_id}   (workers, tasks and jobs, once it runs)\n"
        f"  stop it:    {shlex.join(system.cancel_argv([job_id]))}   (cancels its worker "
        f"jobs too)")
    return 0

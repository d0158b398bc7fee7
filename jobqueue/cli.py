"""The `jobqueue` command.

Exit codes: 0 ok, 1 error (bad config, a failed batch command, no scheduler), 2 usage (bad
arguments); ``submit`` exits with its script's code (128 + N when a signal N stopped it).
Nothing heavy is imported at module level: ``jobqueue worker`` starts every batch job.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

EXAMPLES = {
    "worker": """examples:
  JOBQUEUE_TOKEN=... jobqueue worker tcp://10.0.0.1:8786 --nthreads 4 --nworkers 2 \\
      --memory-limit 16GB --name job-42
  (the token is read from JOBQUEUE_TOKEN, never from the command line)""",
    "scheduler": """examples:
  jobqueue scheduler --scheduler-file ~/scheduler.json
  python -c "from jobqueue import Client; c = Client(scheduler_file='~/scheduler.json')\"""",
    "submit": """examples:
  jobqueue submit --cluster slurm --cores 8 --memory 32GB --walltime 1h --jobs 4 sweep.py
  jobqueue submit --profile gpu --adapt 1:20 train.py --epochs 10
  jobqueue submit --cluster local --jobs 4 monte_carlo.py         # on this machine
  jobqueue submit --cluster slurm --cores 1 --memory 2GB --dry-run sweep.py
  jobqueue submit --cluster slurm --cores 8 --memory 32GB --jobs 10 --detach \\
      --driver-walltime 12h sweep.py                               # survives logout

SCRIPT runs with this python and JOBQUEUE_SCHEDULER_ADDRESS and JOBQUEUE_TOKEN in its
environment, so Client() in it connects to the cluster. Options after SCRIPT go to SCRIPT.
Every job is cancelled when the script ends, fails, or on Ctrl-C (SIGINT), SIGTERM or SIGHUP.
Exit code: the script's; 128 + N after signal N (130 for Ctrl-C); 1 if the cluster failed.

--detach: the driver job (1 core) gets the config section's settings, not the profile's, with
--queue, --account, --log-directory, --python and --prologue; it runs this command without
--detach in the current directory.""",
    "script": """examples:
  jobqueue script slurm --cores 8 --memory 32GB --walltime 02:00:00 --queue normal
  jobqueue script pbs --profile bigmem --job-extra "-l place=excl"
  jobqueue script sge --cores 4 --memory 8GB --prologue "module load python"

Settings not given come from the config (see `jobqueue config show --sources`). The scheduler's
address and the token file are filled in when a cluster starts.""",
    "config": """examples:
  jobqueue config show
  jobqueue config show --sources            # where each value comes from
  jobqueue config validate /etc/jobqueue/jobqueue.yaml""",
    "config show": """examples:
  jobqueue config show --sources
  JOBQUEUE_SLURM__QUEUE=debug jobqueue config show --sources | grep queue

Layers, later wins: the package defaults, /etc/jobqueue/*.yaml, ~/.config/jobqueue/*.yaml,
$JOBQUEUE_CONFIG (a file or directory), JOBQUEUE_<SECTION>__<KEY> variables.""",
    "config validate": """examples:
  jobqueue config validate /etc/jobqueue/jobqueue.yaml
  jobqueue config validate site.yaml gpu.yaml && sudo cp site.yaml gpu.yaml /etc/jobqueue/

Checks YAML syntax, keys, types, sizes, durations and profiles of each file on its own, and
exits 1 with one line per problem (file:line: key: what is wrong and what is allowed).""",
    "info": """examples:
  jobqueue info --scheduler-file ~/.jobqueue/slurm-1a2b3c.vm.4242.json   # printed by submit
  jobqueue info 4711                 # the `jobqueue submit --detach` driver running as job 4711
  JOBQUEUE_TOKEN=... jobqueue info tcp://10.0.0.5:8786
  jobqueue info --json | python -m json.tool

The address comes from ADDRESS, --scheduler-file, $JOBQUEUE_SCHEDULER_ADDRESS,
$JOBQUEUE_SCHEDULER_FILE or the config key scheduler-address; the token from the scheduler
file or $JOBQUEUE_TOKEN.""",
}


def _logging():
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def _error(command: str, message) -> None:
    print(f"jobqueue {command}: {message}", file=sys.stderr, flush=True)

# ---------------------------------------------------------------------------- worker, scheduler


def cmd_worker(args) -> int:
    from . import config
    from .core.nanny import Nanny
    from .node import WorkerCommand

    _logging()
    if not os.environ.get("JOBQUEUE_TOKEN"):
        print("jobqueue worker: JOBQUEUE_TOKEN is not set; the worker needs the cluster's "
              "token to connect", file=sys.stderr)
        return 2
    try:
        command = WorkerCommand.from_args(args).resolved()
    except ValueError as e:          # an --interface this host does not have
        _error("worker", e)
        return 2
    except config.ConfigError as e:
        _error("worker", e)
        return 1
    return Nanny(command).run()


def _never_or_duration(value, key: str):
    """A --worker-ttl/--idle-timeout value ("never" -> None), or the config's."""
    from . import config

    if value is None:
        return config.get(key, None)
    return None if value == "never" else config.parse_timedelta(value)


def cmd_scheduler(args) -> int:
    import asyncio
    import secrets
    import signal

    from . import config, node
    from .core.scheduler import Scheduler

    _logging()
    try:
        allowed_failures = args.allowed_failures if args.allowed_failures is not None \
            else config.get("scheduler.allowed-failures", 3)
        worker_ttl = _never_or_duration(args.worker_ttl, "scheduler.worker-ttl")
        idle_timeout = _never_or_duration(args.idle_timeout, "scheduler.idle-timeout")
        host = node.choose_address(args.host, args.interface) if args.interface else args.host
    except (config.ConfigError, ValueError) as e:
        _error("scheduler", e)
        return 1
    token = os.environ.get("JOBQUEUE_TOKEN")
    path = args.scheduler_file
    if not token and not path:
        try:
            path = node.private_path("scheduler.json")
        except OSError as e:
            _error("scheduler", e)
            return 1
    token = token or secrets.token_urlsafe(32)

    import gc

    # A dedicated scheduler process holds many small long-lived objects (tasks): collect the
    # young generation less often, and never rescan what was imported at start-up.
    gc.freeze()
    gc.set_threshold(20_000, 50, 50)

    async def run():
        loop = asyncio.get_running_loop()
        s = Scheduler(token, host=host, port=args.port, scheduler_file=path,
                      allowed_failures=allowed_failures, worker_ttl=worker_ttl,
                      idle_timeout=idle_timeout)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):   # before anyone learns
            loop.add_signal_handler(sig, stop.set)                    # the address
        try:
            await s.start()
        except OSError as e:               # the scheduler file is not ours, the port is taken
            _error("scheduler", e)
            return 1
        print(f"scheduler at {s.address}" + (f"; address and token in {path}" if path else ""),
              file=sys.stderr, flush=True)
        waits = [loop.create_task(stop.wait()), loop.create_task(s.closed.wait())]
        # closed by itself: a client's shutdown(), or scheduler.idle-timeout
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        await s.close()
        return 0

    return asyncio.run(run())

# ---------------------------------------------------------------------------------------- config


def cmd_config_show(args) -> int:
    from . import config

    try:
        text = config.show(sources=args.sources)
    except config.ConfigError as e:
        _error("config show", e)
        return 1
    sys.stdout.write(text)
    return 0


def cmd_config_validate(args) -> int:
    from . import config

    bad = 0
    for path in args.files:
        problems = config.validate_file(path)
        if problems:
            bad += 1
            print(f"{path}: {len(problems)} problem{'s' if len(problems) > 1 else ''}:",
                  file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
        else:
            print(f"{path}: ok")
    return 1 if bad else 0

# ------------------------------------------------------------------------------- script, submit


def cmd_script(args) -> int:
    from . import submit

    return submit.print_job_script(args)


def cmd_submit(args) -> int:
    from . import submit

    return submit.main(args)

# ------------------------------------------------------------------------------------------ info


def cmd_info(args) -> int:
    import json

    from . import config

    try:
        address, token = _info_target(args)
    except (OSError, ValueError, KeyError, config.ConfigError) as e:
        _error("info", e)
        return 1
    if address is None:
        _error("info", "no scheduler to ask: give an ADDRESS or --scheduler-file, or set "
               "JOBQUEUE_SCHEDULER_ADDRESS" + _scheduler_files_hint())
        return 2
    if not token:
        _error("info", f"no token for {address}: set JOBQUEUE_TOKEN or use --scheduler-file")
        return 1
    from .core.client import Client

    try:
        with Client(address, token=token, timeout=args.timeout) as client:
            info = client.scheduler_info()
    except Exception as e:             # connection refused, timeout, wrong token
        _error("info", f"cannot get the state of {address}: {e}")
        return 1
    if args.json:
        json.dump(info, sys.stdout, indent=2, sort_keys=True, default=str)
        print()
    else:
        sys.stdout.write(format_info(info))
    return 0


def _info_target(args):
    """(address, token) from the argument, the scheduler file, the environment or config."""
    from .node import read_scheduler_file

    token = os.environ.get("JOBQUEUE_TOKEN")
    if args.address and args.address.isdigit():      # the job id of a --detach driver
        from .submit import driver_scheduler_file

        return read_scheduler_file(driver_scheduler_file(args.address))
    if args.address:
        return args.address, token
    path = args.scheduler_file
    if not path and not os.environ.get("JOBQUEUE_SCHEDULER_ADDRESS"):
        path = os.environ.get("JOBQUEUE_SCHEDULER_FILE")
    if path:
        return read_scheduler_file(os.path.expanduser(path))
    address = os.environ.get("JOBQUEUE_SCHEDULER_ADDRESS")
    if not address:
        from . import config

        address = config.get("scheduler-address", None)
    return address, token


def _scheduler_files_hint() -> str:
    import glob

    files = sorted(glob.glob(os.path.expanduser("~/.jobqueue/*.json")))
    if not files:
        return ""
    return "; scheduler files: " + ", ".join(files)


def format_info(info: dict) -> str:
    """The scheduler's state as text: workers, tasks, jobs."""
    from .config import format_bytes

    workers = info.get("workers") or {}
    threads = sum(w.get("nthreads", 0) for w in workers.values())
    memory = sum(w.get("memory_limit", 0) for w in workers.values())
    lines = [f"scheduler  {info.get('address')}",
             f"dashboard  {info.get('dashboard_link') or '(none)'}",
             f"clients    {max(0, int(info.get('clients', 1)) - 1)} (besides this one)",
             f"workers    {len(workers)}, {threads} threads, {format_bytes(memory)}"]
    settings = info.get("settings")
    if settings:
        ttl, idle = settings.get("worker_ttl"), settings.get("idle_timeout")
        lines.append(f"settings   allowed-failures {settings.get('allowed_failures')}, "
                     f"worker-ttl {'never' if ttl is None else f'{ttl:g} s'}, "
                     f"idle-timeout {'never' if idle is None else f'{idle:g} s'}")
    rows: list[tuple] = [(w.get("name", ""), address, str(w.get("nthreads", "")),
             format_bytes(w.get("memory_limit", 0)), str(w.get("processing", 0)),
             str(w.get("stored", 0)))
            for address, w in sorted(workers.items(), key=lambda aw: str(aw[1].get("name")))]
    lines += _table(("NAME", "ADDRESS", "THREADS", "MEMORY", "RUNNING", "RESULTS"), rows)
    tasks = info.get("tasks") or {}
    lines.append("tasks      " + (", ".join(f"{n} {state}" for state, n in sorted(tasks.items()))
                                  or "none"))
    for what, n in sorted((info.get("no_worker") or {}).items()):
        lines.append(f"no worker  {n} {'task needs' if n == 1 else 'tasks need'} {what}, which "
                     "no connected worker offers")
    jobs = info.get("jobs")
    if jobs is None:
        lines.append("jobs       (not a cluster's scheduler)")
    else:
        counts: dict = {}
        for job in jobs:
            counts[job["state"]] = counts.get(job["state"], 0) + 1
        lines.append(f"jobs       {len(jobs)}" + (": " + ", ".join(
            f"{n} {state}" for state, n in sorted(counts.items())) if jobs else ""))
        rows = [(j.get("id") or "-", j.get("name", ""), j.get("state", ""), j.get("reason") or "",
                 f"{len(j.get('workers') or ())}/{j.get('expected_workers', '?')}") for j in jobs]
        lines += _table(("ID", "NAME", "STATE", "REASON", "WORKERS"), rows)
    return "\n".join(lines) + "\n"


def _table(header, rows) -> list:
    if not rows:
        return []
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
            for r in [header, *rows]]

# ---------------------------------------------------------------------------------------- parser


def _formatted(sub, name, help, examples_key=None, **kwargs):
    return sub.add_parser(name, help=help, description=help[:1].upper() + help[1:] + ".",
                          epilog=EXAMPLES[examples_key or name],
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def _checked_by(parser_name):
    """An argparse type that keeps the text but refuses what config.<parser_name> refuses."""
    def check(text):
        from . import config

        try:
            getattr(config, parser_name)(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text

    return check


_size = _checked_by("parse_bytes")
_duration = _checked_by("parse_timedelta")


def _walltime(text):
    """--walltime: any duration; what a bare number means depends on the batch system."""
    from . import config

    try:
        config.parse_timedelta(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"cannot read {text!r} as a walltime: give HH:MM:SS, 1h30m, 90m, or a bare number, "
            "which SLURM reads as minutes and PBS and Grid Engine as seconds") from None
    return text


def _duration_or_never(text):
    return text if text == "never" else _duration(text)


def _whole_number(minimum):
    """An argparse type: a whole number of at least *minimum*."""
    def check(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return check


_count = _whole_number(0)
_positive_int = _whole_number(1)


def add_cluster_options(p, batch_only=False):
    """The options `submit` and `script` share: settings of one job (config keys of the
    cluster's section; unset options keep the config's value)."""
    g = p.add_argument_group("job settings (default: the config, see `jobqueue config show`)")
    g.add_argument("--profile", metavar="NAME",
                   help="a named set of settings from the config (profiles: NAME:)")
    g.add_argument("--cores", type=_positive_int, metavar="N",
                   help="cores per job (local: threads per worker process)")
    g.add_argument("--memory", type=_size, metavar="SIZE",
                   help="memory per job, e.g. 32GB (local: per worker)")
    g.add_argument("--processes", type=_positive_int, metavar="N",
                   help="worker processes per job (ssh: per host)")
    g.add_argument("--walltime", type=_walltime, metavar="TIME",
                   help="time limit per job, e.g. 01:00:00, 90m; a bare number is minutes for "
                        "SLURM, seconds for PBS and SGE")
    g.add_argument("--queue", metavar="NAME", help="partition or queue")
    g.add_argument("--account", metavar="NAME", help="account or project to charge")
    g.add_argument("--job-name", metavar="NAME", help="name of the worker jobs in the queue")
    g.add_argument("--job-extra", action="append", metavar="DIRECTIVE",
                   help="an extra directive, e.g. --job-extra=--gres=gpu:1 (repeat for more; "
                   "replaces the config's list)")
    g.add_argument("--prologue", action="append", metavar="LINE",
                   help="a shell line run before the worker starts, e.g. 'module load python' "
                   "(repeat for more)")
    g.add_argument("--log-directory", metavar="DIR", help="where job output files go")
    g.add_argument("--python", metavar="PATH",
                   help="python that runs the workers (ssh: on the hosts)")
    g.add_argument("--interface", metavar="NAME",
                   help="network interface for the scheduler and workers, e.g. ib0")
    g.add_argument("--poll-interval", type=_duration, metavar="TIME",
                   help="how often to ask the batch system about the jobs")
    return g


def _add_submit(sub):
    s = _formatted(sub, "submit", "start a cluster, run a Python script against it, then cancel "
                   "every job", allow_abbrev=False)
    s.add_argument("--cluster", choices=("slurm", "pbs", "sge", "local", "ssh", "kubernetes"),
                   help="where the workers run (default: the profile's kind, else local)")
    size = s.add_mutually_exclusive_group()
    size.add_argument("--jobs", type=_positive_int, metavar="N",
                      help="submit N jobs (local: N worker processes; default 1 for batch "
                      "systems)")
    size.add_argument("--adapt", metavar="MIN:MAX",
                      help="scale between MIN and MAX jobs with the load")
    s.add_argument("--hosts", metavar="HOSTS",
                   help="ssh: comma-separated hosts, the scheduler's first")
    s.add_argument("--scheduler-file", metavar="PATH",
                   help="write the scheduler's address and token here for `jobqueue info` "
                   "(default: ~/.jobqueue/CLUSTER.json, removed at exit)")
    s.add_argument("--dry-run", action="store_true",
                   help="print the job script and the commands, submit nothing")
    s.add_argument("--detach", action="store_true",
                   help="run this command itself as a batch job (survives logout); print its "
                   "job id and log file")
    s.add_argument("--driver-walltime", type=_walltime, metavar="TIME",
                   help="--detach: time limit of the driver job (default: --walltime)")
    s.add_argument("--driver-memory", type=_size, default="2GB", metavar="SIZE",
                   help="--detach: memory of the driver job (default 2GB)")
    s.add_argument("-v", "--verbose", action="store_true", help="log what the cluster does")
    add_cluster_options(s)
    s.add_argument("script", metavar="SCRIPT", help="the Python script to run")
    s.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                   help="arguments for SCRIPT")
    s.set_defaults(func=cmd_submit, parser=s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jobqueue", description="Cluster manager for HPC batch systems (SLURM, PBS, SGE) "
        "with its own task runtime.", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  jobqueue submit --cluster slurm --cores 8 --memory 32GB --jobs 4 "
        "sweep.py\n  jobqueue config show --sources\n  jobqueue COMMAND --help")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    _add_submit(sub)

    sc = _formatted(sub, "script", "print the job script a batch cluster would submit")
    sc.add_argument("system", choices=("slurm", "pbs", "sge"), metavar="SYSTEM",
                    help="slurm, pbs or sge")
    add_cluster_options(sc)
    sc.set_defaults(func=cmd_script)

    c = _formatted(sub, "config", "show or check the configuration")
    csub = c.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    show = _formatted(csub, "show", "print the merged configuration", "config show")
    show.add_argument("--sources", action="store_true",
                      help="say where each value comes from (file:line, variable, default)")
    show.set_defaults(func=cmd_config_show)
    validate = _formatted(csub, "validate", "check config files before installing them",
                          "config validate")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(func=cmd_config_validate)
    c.set_defaults(func=None, parser=c)

    i = _formatted(sub, "info", "show a running scheduler's workers, tasks and jobs")
    i.add_argument("address", nargs="?", metavar="ADDRESS",
                   help="tcp://host:port, or the job id of a `jobqueue submit --detach` driver")
    i.add_argument("--scheduler-file", help="JSON file with the address and token")
    i.add_argument("--json", action="store_true", help="print the raw state as JSON")
    i.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the "
                   "scheduler (default 10)")
    i.set_defaults(func=cmd_info)

    w = _formatted(sub, "worker", "start worker processes that connect to a scheduler")
    from .node import add_worker_arguments

    add_worker_arguments(w)
    w.set_defaults(func=cmd_worker)

    s = _formatted(sub, "scheduler", "run a scheduler in the foreground")
    s.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all; "
                   "advertised: the one other hosts reach this host by)")
    s.add_argument("--interface", metavar="NAME", help="listen on this network interface's "
                   "address, e.g. ib0 (instead of --host)")
    s.add_argument("--port", type=int, default=8786, help="0: any free port")
    s.add_argument("--scheduler-file", help="write address and token here (mode 0600)")
    s.add_argument("--allowed-failures", type=_count, metavar="N",
                   help="a task on more than N workers that died fails with KilledWorker "
                   "(default: config scheduler.allowed-failures)")
    s.add_argument("--worker-ttl", type=_duration_or_never, metavar="TIME",
                   help="remove a worker silent for this long, e.g. 5m, or 'never' "
                   "(default: config scheduler.worker-ttl)")
    s.add_argument("--idle-timeout", type=_duration_or_never, metavar="TIME",
                   help="close after this long without a client and without a task, or "
                   "'never' (default: config scheduler.idle-timeout)")
    s.set_defaults(func=cmd_scheduler)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if not func:
        getattr(args, "parser", parser).print_help(sys.stderr)
        return 2
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130

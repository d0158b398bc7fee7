"""The `jobqueue` command."""
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
}


def _logging():
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


def cmd_worker(args) -> int:
    from . import config
    from .config import parse_bytes, parse_timedelta
    from .core.nanny import Nanny

    _logging()
    if not os.environ.get("JOBQUEUE_TOKEN"):
        print("jobqueue worker: JOBQUEUE_TOKEN is not set; the worker needs the cluster's "
              "token to connect", file=sys.stderr)
        return 2
    memory = parse_bytes(args.memory_limit) if args.memory_limit not in (None, "0") else 0
    host = args.host
    if args.interface and not host:
        from .batch.network import interface_address

        try:
            host = interface_address(args.interface)
        except ValueError as e:
            print(f"jobqueue worker: --interface: {e}", file=sys.stderr)
            return 2
    nanny = Nanny(args.scheduler, nworkers=args.nworkers, nthreads=args.nthreads,
                  memory_limit=memory, name=args.name,
                  death_timeout=parse_timedelta(args.death_timeout), host=host,
                  lifetime=parse_timedelta(args.lifetime) if args.lifetime else None,
                  lifetime_stagger=parse_timedelta(args.lifetime_stagger),
                  pause=config.get("worker.memory.pause", 0.8),
                  terminate=config.get("worker.memory.terminate", 0.95))
    return nanny.run()


def cmd_scheduler(args) -> int:
    import asyncio
    import secrets
    import signal

    from .core.scheduler import Scheduler

    _logging()
    token = os.environ.get("JOBQUEUE_TOKEN")
    path = args.scheduler_file
    if not token:
        token = secrets.token_urlsafe(32)
        if not path:
            path = os.path.expanduser("~/.jobqueue/scheduler.json")
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)

    import gc

    # A dedicated scheduler process holds many small long-lived objects (tasks): collect the
    # young generation less often, and never rescan what was imported at start-up.
    gc.freeze()
    gc.set_threshold(20_000, 50, 50)

    async def run():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):   # before anyone learns the address
            loop.add_signal_handler(sig, stop.set)
        s = Scheduler(token, host=args.host, port=args.port, scheduler_file=path)
        await s.start()
        print(f"scheduler at {s.address}" + (f"; address and token in {path}" if path else ""),
              file=sys.stderr, flush=True)
        await stop.wait()
        await s.close()

    asyncio.run(run())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jobqueue", description="Cluster manager for HPC batch "
                                "systems (SLURM, PBS, SGE) with its own task runtime.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    w = sub.add_parser("worker", help="start worker processes that connect to a scheduler",
                       epilog=EXAMPLES["worker"],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    w.add_argument("scheduler", help="scheduler address, tcp://host:port")
    w.add_argument("--nthreads", type=int, default=1, help="threads per worker process")
    w.add_argument("--nworkers", type=int, default=1, help="worker processes")
    w.add_argument("--memory-limit", default="0", help="per worker process, e.g. 4GB (0: none)")
    w.add_argument("--name", help="worker name (with --nworkers > 1: NAME-0, NAME-1, ...)")
    w.add_argument("--lifetime", help="retire gracefully after this long, e.g. 55m "
                   "(set it below the job's walltime)")
    w.add_argument("--lifetime-stagger", default="0s",
                   help="leave up to this much earlier, at random, so workers do not all leave "
                   "at once")
    w.add_argument("--death-timeout", default="60s",
                   help="exit when the scheduler is unreachable this long")
    w.add_argument("--host", help="address to listen on and advertise "
                   "(default: the one that routes to the scheduler)")
    w.add_argument("--interface", help="network interface whose address to listen on and "
                   "advertise, e.g. ib0 (instead of --host)")
    w.set_defaults(func=cmd_worker)

    s = sub.add_parser("scheduler", help="run a scheduler in the foreground",
                       epilog=EXAMPLES["scheduler"],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, default=8786, help="0: any free port")
    s.add_argument("--scheduler-file", help="write address and token here (mode 0600)")
    s.set_defaults(func=cmd_scheduler)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return args.func(args)

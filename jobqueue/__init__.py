"""jobqueue: a cluster manager for HPC batch systems with its own task runtime.

Public names are imported lazily, so ``jobqueue worker`` (the first process of every batch job)
starts without loading the client or the scheduler.
"""

__version__ = "0.1.0"

_PUBLIC = {
    "Client": "jobqueue.core.client",
    "Future": "jobqueue.core.futures",
    "as_completed": "jobqueue.core.futures",
    "wait": "jobqueue.core.futures",
    "futures_of": "jobqueue.core.collections",
    "progress": "jobqueue.core.progress",
    "LocalCluster": "jobqueue.deploy.local",
    "SSHCluster": "jobqueue.deploy.ssh",
    "KubeCluster": "jobqueue.deploy.kubernetes",
    "JobQueueCluster": "jobqueue.batch.job",
    "SLURMCluster": "jobqueue.batch.slurm",
    "PBSCluster": "jobqueue.batch.pbs",
    "SGECluster": "jobqueue.batch.sge",
    "BatchCommandError": "jobqueue.batch.runner",
    "KilledWorker": "jobqueue.core.errors",
    "CancelledError": "jobqueue.core.errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'jobqueue' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)

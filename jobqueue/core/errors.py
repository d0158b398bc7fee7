"""Exceptions that cross process boundaries or reach the user."""


class CommClosedError(IOError):
    """The connection is closed (by the peer, by us, or by a failed handshake)."""


class AuthenticationError(CommClosedError):
    """The peer did not prove it holds the cluster's token."""


class KilledWorker(Exception):
    """A task was running on too many workers that died."""

    def __init__(self, key, workers, allowed_failures=None):
        self.key = key
        self.workers = list(workers)
        self.allowed_failures = allowed_failures
        super().__init__(key, self.workers, allowed_failures)

    def __str__(self):
        return (f"task {self.key!r} was running on {len(self.workers)} workers that died: "
                f"{', '.join(self.workers)} (allowed-failures={self.allowed_failures}); "
                f"it may be killing its worker (memory, a crash). See the workers' logs.")


class CancelledError(Exception):
    """The future was cancelled."""


class TaskLostError(Exception):
    """The scheduler forgot a task that a future still refers to."""


class SchedulerError(Exception):
    """The scheduler refused a request; the message says why."""


class UnpicklableResult(TypeError):
    """A worker holds a result it cannot pickle, so it cannot send it anywhere."""

"""The one way batch commands are run: an asyncio subprocess with a timeout.

A command that exits non-zero (and is not told that this code is fine), cannot be found or runs
past its timeout raises :class:`BatchCommandError`, which carries the argv, the exit code and the
output, so the user sees what the batch system said.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import shlex
import time
from dataclasses import dataclass

logger = logging.getLogger("jobqueue.batch")


class BatchCommandError(RuntimeError):
    """A batch command failed: ``argv``, ``returncode`` (None: timed out or not started),
    ``stdout``, ``stderr``."""

    def __init__(self, argv, returncode, stdout="", stderr="", problem=None):
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        command = " ".join(shlex.quote(a) for a in self.argv)
        if problem is None:
            problem = f"exited with code {returncode}"
        said = (stderr.strip() or stdout.strip())
        text = f"{command} {problem}"
        if said:
            text += ":\n  " + "\n  ".join(said.splitlines()[-20:])
        super().__init__(text)


@dataclass(frozen=True)
class CommandResult:
    argv: tuple
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class CommandRunner:
    """Runs commands and remembers the last ones (``history``: argv tuples, ``calls``: counts by
    program name), so tests and users can see exactly what was run."""

    def __init__(self, timeout: float = 60.0, history: int = 1000):
        self.timeout = timeout
        self.history: collections.deque = collections.deque(maxlen=history)
        self.calls: collections.Counter = collections.Counter()

    async def run(self, argv, *, check=True, timeout=None, cwd=None, env=None) -> CommandResult:
        """Run argv; with check, a non-zero exit raises BatchCommandError (else the caller
        looks at the result's returncode)."""
        argv = tuple(str(a) for a in argv)
        if env is None:      # never the token: sbatch exports the environment into the job
            from ..node import environment_without_secrets

            env = environment_without_secrets()
        self.history.append(argv)
        self.calls[os.path.basename(argv[0])] += 1
        timeout = self.timeout if timeout is None else timeout
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, cwd=cwd, env=env, start_new_session=True)
        except FileNotFoundError:
            raise BatchCommandError(argv, None, problem="failed: command not found (is the batch "
                                    "system's client installed and on PATH?)") from None
        except OSError as e:
            raise BatchCommandError(argv, None, problem=f"could not start: {e}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise BatchCommandError(argv, None, problem=f"did not finish within {timeout:g} s "
                                    "and was killed") from None
        except asyncio.CancelledError:
            if proc.returncode is None:
                proc.kill()
            raise
        returncode = await proc.wait()        # communicate() has waited: this is the code
        result = CommandResult(argv, returncode, out.decode(errors="replace"),
                               err.decode(errors="replace"), time.monotonic() - started)
        logger.debug("%s -> %d in %.3f s", shlex.join(argv), result.returncode, result.seconds)
        if check and result.returncode != 0:
            raise BatchCommandError(argv, result.returncode, result.stdout, result.stderr)
        return result

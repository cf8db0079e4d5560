"""Errors that mean "the user asked for something that cannot work".

The command line prints these as one line and exits with status 2, before any expensive work;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


class UsageError(Exception):
    """Bad input: the message names what was wrong and what to do."""


class ConfigError(UsageError, ValueError):
    """A setting that cannot work; the message names the key, the value and what to do."""


class DataError(UsageError, ValueError):
    """A dataset on disk that cannot be used; the message says what is wrong and what to do."""


class TrainingDiverged(UsageError, RuntimeError):
    """The loss became NaN or infinite: the learning rate is too high for this model and data."""


class Stopped(Exception):
    """A stop signal (SIGUSR1, SIGTERM) arrived; the run saved a checkpoint and should be
    started again (the command line exits with ``EXIT_CODE``, which the sbatch script requeues)."""

    EXIT_CODE = 75  # EX_TEMPFAIL: "try again later"

    @classmethod
    def exit_code(cls) -> int:
        """``EXIT_CODE``, except under a torchrun agent that would restart the workers (restarts
        left under ``--max-restarts``): any non-zero exit is a failure to it, and it would start
        the stopped run again. 0 ends the job instead; ``RUN_DIR/stopped`` still says it stopped,
        and the launch scripts turn that into ``EXIT_CODE``."""
        restarts_left = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) - int(
            os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        )
        return 0 if restarts_left > 0 else cls.EXIT_CODE


@contextlib.contextmanager
def reported_as_one_line(command: str) -> Iterator[None]:
    """A UsageError raised in the block becomes ``clr-dist COMMAND: error: ...`` on stderr and
    exit status 2; a Stopped run says so and exits with ``Stopped.exit_code()``."""
    try:
        yield
    except UsageError as exc:
        print(f"clr-dist {command}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Stopped as exc:
        print(f"clr-dist {command}: {exc}", file=sys.stderr)
        sys.exit(Stopped.exit_code())

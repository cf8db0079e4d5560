"""Errors that mean "the user asked for something that cannot work".

The command line prints these as one line and exits with status 2, before any expensive work;
anything else is a bug and keeps its traceback.
"""


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

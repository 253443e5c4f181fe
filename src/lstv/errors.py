"""Exceptions the CLI maps to exit codes; kept free of heavy imports.

A :class:`UsageError` is the user's mistake (a flag, a file or what it holds): ``lstv`` prints
its message and exits 2. Anything else that escapes a command is a bug: exit 1, a short message,
the traceback in the log.
"""


class UsageError(ValueError):
    """What the user gave cannot be used; the message says what and how to fix it."""


class CheckpointError(UsageError):
    """A checkpoint file exists but cannot be loaded into the point net."""


class CheckpointNotFoundError(UsageError, FileNotFoundError):
    """The checkpoint file is missing; the message says how to get one."""


class RunDirBusyError(UsageError, RuntimeError):
    """Another lstv run holds the output folder's lock."""


class SeriesReadError(UsageError):
    """A series that cannot become a volume; the message says why, for failures.csv (in a
    batch, one study's failure; given alone, the user's file)."""

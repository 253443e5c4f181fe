"""Exceptions the CLI maps to exit codes; kept free of heavy imports."""


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be loaded into the point net."""


class CheckpointNotFoundError(FileNotFoundError):
    """The checkpoint file is missing; the message says how to get one."""


class RunDirBusyError(RuntimeError):
    """Another lstv run holds the output folder's lock."""

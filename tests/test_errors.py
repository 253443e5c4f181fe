"""The exceptions the CLI maps to exit codes (lstv.errors): which are the user's mistake."""

import subprocess
import sys

import pytest

from lstv.cli import is_usage_error
from lstv.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    RunDirBusyError,
    SeriesReadError,
    UsageError,
)


@pytest.mark.parametrize(
    "error",
    [UsageError, CheckpointError, CheckpointNotFoundError, RunDirBusyError, SeriesReadError],
)
def test_every_usage_error_is_a_value_error_and_exits_2(error):
    """API callers that catch ValueError keep working; the CLI sees the user's mistake."""
    exc = error("what the user gave cannot be used")
    assert isinstance(exc, ValueError) and isinstance(exc, UsageError)
    assert is_usage_error(exc)


def test_the_other_kinds_keep_what_callers_catch():
    assert isinstance(CheckpointNotFoundError("x"), FileNotFoundError)
    assert isinstance(RunDirBusyError("x"), RuntimeError)


@pytest.mark.parametrize("error", [ValueError, RuntimeError, TypeError, KeyError])
def test_anything_else_is_a_bug(error):
    assert not is_usage_error(error("an invariant broke"))


def test_a_missing_file_is_the_user_s_mistake():
    assert is_usage_error(FileNotFoundError("metrics CSV not found: m.csv"))


def test_the_module_imports_nothing_heavy():
    """The CLI imports it before any command runs: no numpy, pandas or torch behind it."""
    code = "import sys, lstv.errors; print(sorted({'numpy', 'pandas', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

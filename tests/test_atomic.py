"""Files written whole or not at all (lstv.atomic): strict JSON, CSVs, a failure half way or at
the rename, an output that is an input."""

import hashlib
import math
from pathlib import Path

import pytest

from lstv.atomic import (
    file_sha256,
    json_safe,
    non_finite_keys,
    refuse_overwriting,
    write_csv_atomic,
    write_json_atomic,
)


def test_json_with_nan_is_refused_not_written(tmp_path):
    """NaN is refused before anything is written (``json.dumps`` raises first); the write's own
    error path is tested below."""
    path = tmp_path / "x.json"
    path.write_text("{}")
    with pytest.raises(ValueError):
        write_json_atomic(path, {"flag_entropy": float("nan")})
    assert path.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


class RowsThatFail:
    """Rows whose second one raises, after the first was written to the temporary file; it
    records what the folder held at that moment."""

    def __init__(self, path):
        self.path = path
        self.seen = None

    def __iter__(self):
        yield {"a": "new"}
        folder = self.path.parent
        self.seen = {p.name: p.read_text() for p in folder.iterdir()}
        raise RuntimeError("the disk went away mid-write")


def test_a_write_that_fails_half_way_leaves_the_old_file_and_no_temporary(tmp_path):
    """The error path of the atomic write itself: a failure once the temporary file exists and
    part of the new content went to it. The old file stays whole the whole time, and the temporary
    is removed.

    Mutants: writing ``path`` in place instead of temp + rename fails (the old file is half
    overwritten); dropping the ``os.unlink(tmp)`` cleanup fails (a temporary is left);
    without them: passes."""
    path = tmp_path / "x.csv"
    path.write_text("a\nold\n")
    rows = RowsThatFail(path)
    with pytest.raises(RuntimeError, match="mid-write"):
        write_csv_atomic(path, ["a"], rows)
    assert rows.seen["x.csv"] == "a\nold\n"  # while the new file was being written
    (tmp,) = set(rows.seen) - {"x.csv"}  # ... into a temporary beside it
    assert tmp.startswith(".x.csv.") and tmp.endswith(".tmp")
    assert path.read_text() == "a\nold\n"
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]


def test_a_failed_rename_is_a_clear_error_and_changes_nothing(tmp_path, monkeypatch):
    """The last step failing (a full disk, a read-only folder) names the file; the old file and
    the folder are as before."""
    import errno

    import lstv.atomic

    def refuse(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    path = tmp_path / "x.json"
    path.write_text("{}")
    monkeypatch.setattr(lstv.atomic.os, "replace", refuse)
    with pytest.raises(OSError, match=r"cannot write .*x\.json: No space left on device"):
        write_json_atomic(path, {"a": 1})
    assert path.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_atomic_write_into_a_folder_or_a_missing_place_is_a_clear_error(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        write_csv_atomic(tmp_path, ["a"], [])
    with pytest.raises(OSError, match="cannot write .*absent"):
        write_csv_atomic(tmp_path / "absent" / "f.csv", ["a"], [])


def test_output_may_not_be_an_input(tmp_path):
    metrics = tmp_path / "m.csv"
    metrics.write_text("a\n")
    with pytest.raises(ValueError, match="would be overwritten"):
        refuse_overwriting(tmp_path / "." / "m.csv", [None, metrics], "--output")
    with pytest.raises(ValueError, match="is a folder"):
        refuse_overwriting(tmp_path, [metrics], "--output")
    refuse_overwriting(tmp_path / "report.html", [metrics], "--output")


def test_json_is_indented_by_two_and_names_what_it_cannot_encode_as_text(tmp_path):
    """The exact text: two-space indent, a final newline, a path as its string.

    Mutants: another indent or none, and no ``default=str`` (a Path is then an error) fail;
    without them: passes."""
    path = write_json_atomic(tmp_path / "x.json", {"a": 1, "checkpoint": Path("m/b.pth")})
    assert path.read_text() == '{\n  "a": 1,\n  "checkpoint": "m/b.pth"\n}\n'


def test_csv_rows_as_dicts_fill_missing_columns_and_lists_go_as_given(tmp_path):
    """Mutants: a missing column written as "XXXX", a list row read as a dict fail; without
    them: passes."""
    path = write_csv_atomic(tmp_path / "x.csv", ["a", "b"], [{"b": "2"}, ["3", "4"]])
    assert path.read_bytes() == b"a,b\r\n,2\r\n3,4\r\n"


def test_file_sha256_is_the_digest_of_every_byte_over_several_chunks(tmp_path):
    """A file over the 1 MiB chunk, so that reading stops at the end and not before.

    Mutants: no chunks read, chunks of 0 bytes fail; without them: passes."""
    data = bytes(range(256)) * 5000  # 1.2 MiB
    path = tmp_path / "m.pth"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_non_finite_values_are_named_by_dotted_key_and_made_null():
    data = {"a": [1.0, math.nan], "b": {"c": math.inf}, "d": "x", "e": (2.5, -math.inf)}
    assert non_finite_keys(data) == ["a.1", "b.c", "e.1"]
    assert non_finite_keys(math.nan) == ["(value)"]
    assert non_finite_keys(1.0) == []
    assert json_safe(data) == {"a": [1.0, None], "b": {"c": None}, "d": "x", "e": [2.5, None]}
    assert json_safe(math.nan) is None
    assert json_safe(3.5) == 3.5

"""Files written whole or not at all (lstv.atomic): strict JSON, CSVs, a failure half way or at
the rename, an output that is an input."""

import pytest

from lstv.atomic import refuse_overwriting, write_csv_atomic, write_json_atomic


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

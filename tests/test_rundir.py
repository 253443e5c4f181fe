"""Tests for lstv.rundir: the run folder's files, manifest, atomic writes and lock."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstv.errors import RunDirBusyError
from lstv.rundir import (
    FAILURE_COLUMNS,
    CsvAppender,
    Manifest,
    RunDir,
    drop_partial_last_row,
    refuse_overwriting,
    write_csv_atomic,
    write_json_atomic,
)


def test_appender_refuses_a_file_with_other_columns(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="other columns"):
        CsvAppender(path, ["a", "b", "c"])


def test_partial_row_repair_respects_quoted_newlines(tmp_path):
    path = tmp_path / "m.csv"
    whole = 'id,description\n1,"Sag T2\nsecond line"\n'
    path.write_text(whole + '2,"half a quoted\nrow')
    drop_partial_last_row(path)
    assert path.read_text() == whole
    path.write_text(whole)
    drop_partial_last_row(path)
    assert path.read_text() == whole  # a whole file is left alone


def test_manifest_round_trips_and_keeps_unknown_keys(tmp_path):
    m = Manifest(mode="prod", num_parts=2, part_id=1, selected_study_ids=[3, 5], n_selected=2)
    path = m.to_json(tmp_path / "run_manifest.json")
    data = json.loads(path.read_text())
    data["added_by_a_newer_version"] = {"x": 1}
    path.write_text(json.dumps(data))
    back = Manifest.from_json(path)
    assert back.replace(extra={}) == m
    assert back.to_dict()["added_by_a_newer_version"] == {"x": 1}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "valid"}, "mode must be one of"),
        ({"status": "halfway"}, "status must be one of"),
        ({"num_parts": 2, "part_id": 2}, "impossible"),
        ({"n_completed": -1}, "no integer 'n_completed'"),
    ],
)
def test_manifest_refuses_impossible_values_naming_the_file(tmp_path, change, message):
    path = tmp_path / "run_manifest.json"
    path.write_text(json.dumps({**Manifest().to_dict(), **change}))
    with pytest.raises(ValueError, match=message) as err:
        Manifest.from_json(path)
    assert str(path) in str(err.value)


def test_manifest_differences_name_the_settings():
    a = Manifest(image_size=160, tta=False, checkpoint={"sha256": "a"})
    b = a.replace(image_size=128, tta=True, checkpoint={"sha256": "b"})
    text = "; ".join(a.differences(b))
    assert "image_size: 160 vs 128" in text and "tta" in text and "checkpoint_sha256" in text
    assert a.differences(a.replace(n_completed=7, status="complete")) == []


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

    import lstv.rundir

    def refuse(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    path = tmp_path / "x.json"
    path.write_text("{}")
    monkeypatch.setattr(lstv.rundir.os, "replace", refuse)
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


def test_output_dir_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        RunDir(tmp_path / "f").create()


def _try_lock(path, queue):
    try:
        with RunDir(path).lock():
            queue.put("locked")
    except RunDirBusyError as exc:
        queue.put(str(exc))


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    run = RunDir(tmp_path / "out")
    queue = multiprocessing.get_context("fork").Queue()
    with run.lock():
        other = multiprocessing.get_context("fork").Process(
            target=_try_lock, args=(run.path, queue)
        )
        other.start()
        other.join(30)
        message = queue.get(timeout=5)
    assert "in use by another lstv run" in message and f"pid {os.getpid()}" in message
    with run.lock():  # released when the run ends
        pass


def test_failures_of_retried_studies_go_the_others_stay(tmp_path):
    run = RunDir(tmp_path)
    write_csv_atomic(
        run.failures_csv,
        FAILURE_COLUMNS,
        [{"study_id": "1", "stage": "read"}, {"study_id": "2", "stage": "read"}],
    )
    run.keep_failures_except({"1"})
    assert [r["study_id"] for r in run.read_failures()] == ["2"]


def test_a_manifest_with_nan_names_the_key_and_writes_nothing(tmp_path):
    manifest = Manifest(checkpoint={"config": {"val": {"l5_s1": float("nan")}}, "x": [1.0]})
    with pytest.raises(ValueError, match=r"at checkpoint\.config\.val\.l5_s1$"):
        manifest.to_json(tmp_path / "run_manifest.json")
    assert list(tmp_path.iterdir()) == []


def test_a_manifest_takes_its_settings_from_the_inference_config():
    """Manifest's defaults are InferenceConfig's, and from_config copies what was given."""
    import dataclasses

    from lstv.config import InferenceConfig
    from lstv.rundir import CONFIG_SETTINGS

    defaults = {f.name: f.default for f in dataclasses.fields(Manifest)}
    config = InferenceConfig("in", "s.csv", "out", valid_ids=None, command="lstv infer ...")
    assert {k: defaults[k] for k in CONFIG_SETTINGS} == {
        k: getattr(config, k) for k in CONFIG_SETTINGS
    }
    given = InferenceConfig("in", "s.csv", "out", mode="prod", seed=7, image_size=96, tta=True)
    manifest = Manifest.from_config(given, status="complete")
    assert (manifest.mode, manifest.seed, manifest.image_size, manifest.tta) == (
        "prod",
        7,
        96,
        True,
    )
    assert manifest.command == "lstv infer" and manifest.valid_ids == "models/valid_id.npy"
    assert manifest.input_dir == "in" and manifest.status == "complete"


def test_a_full_disk_while_appending_names_the_file(tmp_path, monkeypatch):
    """17.9: a full disk at the start of a run said "No space left on device" and no file."""
    import errno

    from lstv.rundir import CsvAppender

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=r"cannot write .*metrics.csv: No space left on device"):
        CsvAppender(tmp_path / "metrics.csv", ["study_id"])


def test_only_csvs_with_rows_hold_results(tmp_path):
    from lstv.rundir import RunDir

    run = RunDir(tmp_path)
    run.metrics_appender(["study_id", "x"]).close()
    run.failures_appender().close()
    assert run.files_with_rows() == []
    with run.failures_appender() as failures:
        failures.write({"study_id": "1", "series_id": "", "stage": "read", "error": "gone"})
    assert run.files_with_rows() == [run.failures_csv]


# -------------------- partial row
# Issue 9, messages: the half-row repair of an appended CSV respects CSV quoting, so a description
# holding a newline, a quote or a comma is never cut in two.


FIELD = st.text(alphabet=st.sampled_from('ab ,"\n\r;é'), max_size=12)


ROWS = st.lists(st.lists(FIELD, min_size=2, max_size=2), min_size=1, max_size=6)


def encoded_rows(rows) -> list[bytes]:
    """Each row as csv.writer appends it (quoted where needed, ending in \\r\\n)."""
    out = []
    for row in rows:
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerow(row)
        out.append(buffer.getvalue().encode())
    return out


@settings(max_examples=300, deadline=None)
@given(rows=ROWS, cut=st.floats(0, 1))
def test_repair_keeps_exactly_the_whole_rows(tmp_path_factory, rows, cut):
    header = b"study_id,series_description\r\n"
    chunks = [header, *encoded_rows(rows)]
    data = b"".join(chunks)
    k = len(header) + int(cut * (len(data) - len(header)))
    path = tmp_path_factory.mktemp("csv") / "m.csv"
    path.write_bytes(data[:k])

    drop_partial_last_row(path)

    ends = [sum(len(c) for c in chunks[: i + 1]) for i in range(len(chunks))]
    kept = max(e for e in ends if e <= k)
    assert path.read_bytes() == data[:kept]
    with open(path, newline="") as f:
        parsed = list(csv.reader(f))
    assert parsed[1:] == rows[: ends.index(kept)]

# -------------------- input parsing
# Issue 9, messages: CSV and ID parsing that gives clear errors instead of tracebacks or silently
# wrong matches, and an audit queue that a spreadsheet cannot run as formulas.


def test_run_csv_with_a_huge_field_is_a_clear_error(tmp_path):
    from lstv.rundir import read_csv_rows

    path = tmp_path / "failures.csv"
    path.write_text("study_id,error\n1,ok\n2," + "x" * (csv.field_size_limit() + 1) + "\n")
    with pytest.raises(ValueError, match=rf"{path} line 3: .*at most 128 KiB"):
        read_csv_rows(path)

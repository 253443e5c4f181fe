"""CSV files read back and appended to (lstv.csv_files): the header check, a full disk, and the
repair of a half-written last row, which respects CSV quoting so that a description holding a
newline, a quote or a comma is never cut in two (issue 9); a field over the csv module's limit
is a clear error."""

import csv
import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lstv.csv_files import CsvAppender, drop_partial_last_row, read_csv_rows


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


def test_a_full_disk_while_appending_names_the_file(tmp_path, monkeypatch):
    """17.9: a full disk at the start of a run said "No space left on device" and no file."""
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=r"cannot write .*metrics.csv: No space left on device"):
        CsvAppender(tmp_path / "metrics.csv", ["study_id"])


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


def test_run_csv_with_a_huge_field_is_a_clear_error(tmp_path):
    path = tmp_path / "failures.csv"
    path.write_text("study_id,error\n1,ok\n2," + "x" * (csv.field_size_limit() + 1) + "\n")
    with pytest.raises(ValueError, match=rf"{path} line 3: .*at most 128 KiB"):
        read_csv_rows(path)

"""CSV files read back and appended to (lstv.csv_files): the header check, a full disk, and the
repair of a half-written last row, which respects CSV quoting so that a description holding a
newline, a quote or a comma is never cut in two (issue 9); a field over the csv module's limit
is a clear error."""

import csv
import io
import logging
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


def test_a_bom_and_a_quoted_crlf_read_back_as_written(tmp_path):
    """A CSV saved with a BOM (a spreadsheet's UTF-8) and a field holding CR LF: the header has
    no BOM and the field keeps its CR LF; appending to it accepts its header.

    Mutants: reading without ``encoding="utf-8-sig"`` (the BOM joins the first column) or
    without ``newline=""`` (CR LF becomes LF) fail; without them: passes."""
    path = tmp_path / "m.csv"
    path.write_bytes('\ufeffstudy_id,note\r\n1,"a\r\nb é"\r\n'.encode())
    assert read_csv_rows(path) == (["study_id", "note"], [{"study_id": "1", "note": "a\r\nb é"}])
    with CsvAppender(path, ["study_id", "note"]) as out:
        out.write({"study_id": "2", "note": "c"})
    assert read_csv_rows(path)[1][1] == {"study_id": "2", "note": "c"}


def test_appender_header_rules_at_the_edges(tmp_path):
    """An empty file gets the header; a 1-byte file or one holding only a BOM is another
    version's (its header is not ours), with the advice; a row with a column the file lacks is
    an error, not dropped.

    Mutants: ``st_size >= 0`` or ``> 1``, ``next(reader)`` without a default, the advice's words
    changed, ``extrasaction="RAISE"`` (csv then drops extras) fail; without them: passes."""
    empty = tmp_path / "empty.csv"
    empty.touch()
    with CsvAppender(empty, ["study_id"]) as out:
        out.write({"study_id": "1"})
    assert empty.read_bytes() == b"study_id\r\n1\r\n"
    for name, data in (("one.csv", b"x"), ("bom.csv", b"\xef\xbb\xbf")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(
            ValueError,
            match=r"other columns than this version writes; use a new "
            r"--output_dir \(or move the old file away\)",
        ):
            CsvAppender(path, ["study_id"])
    with CsvAppender(tmp_path / "m.csv", ["study_id"]) as out, pytest.raises(ValueError):
        out.write({"study_id": "2", "extra": "x"})


def test_only_a_partial_row_is_repaired_and_said(tmp_path, caplog):
    """A whole file (quotes balanced, ending in a newline) is left alone without a word; a cut
    row is dropped with a warning naming the file; a file with no whole row is emptied.

    Mutants: ``not data and ...``, the newline test changed, ``count / 2``, the warning without
    the file or with other words, ``end = 1`` fail; without them: passes."""
    path = tmp_path / "m.csv"
    whole = 'id,d\n1,"x"\n'
    path.write_text(whole)
    with caplog.at_level(logging.WARNING, logger="lstv.csv_files"):
        drop_partial_last_row(path)
        assert caplog.messages == []
        path.write_text(whole + "2,y")
        drop_partial_last_row(path)
        assert caplog.messages == [f"{path} ended in a partial row (interrupted run): dropped it"]
    assert path.read_text() == whole
    path.write_text("id,")
    drop_partial_last_row(path)
    assert path.read_bytes() == b""


def test_write_syncs_each_row_to_the_disk_by_default(tmp_path, monkeypatch):
    """Mutant: ``sync=False`` as the default fails; without it: passes."""
    out = CsvAppender(tmp_path / "m.csv", ["study_id"])
    synced = []
    monkeypatch.setattr(os, "fsync", synced.append)
    out.write({"study_id": "1"})
    out.close()
    assert len(synced) == 1

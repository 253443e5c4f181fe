"""Issue 9, messages: CSV and ID parsing that gives clear errors instead of tracebacks or
silently wrong matches, and an audit queue that a spreadsheet cannot run as formulas."""

import csv

import numpy as np
import pytest

from lstv.studies import load_valid_ids, parse_id, read_series_table

HEADER = "study_id,series_id,series_description\n"


@pytest.mark.parametrize("text, value", [("123", 123), (" 42 ", 42), ("0007", 7)])
def test_ids_in_ascii_digits_parse(text, value):
    assert parse_id(text) == value


@pytest.mark.parametrize("text", ["4773_9259", "１２３", "+12", "-3", "1e3", "12.0", "", None])
def test_ids_int_would_accept_or_misread_are_refused(text):
    with pytest.raises(ValueError, match="digits 0-9"):
        parse_id(text)


def test_series_csv_with_a_bom_is_read(tmp_path):
    path = tmp_path / "series.csv"
    path.write_text(HEADER + "1,10,Sagittal T2/STIR\n", encoding="utf-8-sig")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_series_table(path) == [(1, 10, "Sagittal T2/STIR")]


def test_index_csv_with_a_bom_keeps_clean_column_names(tmp_path):
    from lstv.studies import read_series_records

    path = tmp_path / "index.csv"
    path.write_text(
        "study_uid,study_id,series_id,series_description\n1.2.3,1,10,Sagittal T2\n",
        encoding="utf-8-sig",
    )
    (record,) = read_series_records(path)
    assert (record.study_id, record.series_id) == (1, 10)
    assert record.headers == {"study_uid": "1.2.3"}


@pytest.mark.parametrize("bad_id", ["4773_9259", "１２３"])
def test_series_csv_refuses_ids_int_would_misread(tmp_path, bad_id):
    path = tmp_path / "series.csv"
    path.write_text(HEADER + "1,10,Sagittal T2/STIR\n" + f"{bad_id},11,Sagittal T2/STIR\n")
    with pytest.raises(ValueError, match=rf"{path} line 3: .*{bad_id}"):
        read_series_table(path)


def test_series_csv_field_over_the_csv_limit_is_a_clear_error(tmp_path):
    path = tmp_path / "series.csv"
    path.write_text(HEADER + '1,10,"' + "x" * (csv.field_size_limit() + 10) + '"\n')
    with pytest.raises(ValueError, match=rf"{path} line 2: .*at most 128 KiB"):
        read_series_table(path)


def test_series_csv_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "series.csv"
    path.write_bytes(HEADER.encode() + b"1,10,Sagittal T2 \xff\xfe\n")
    with pytest.raises(ValueError, match=rf"{path} is not UTF-8"):
        read_series_table(path)


def test_valid_ids_that_are_a_pickle_name_the_file(tmp_path):
    path = tmp_path / "valid_id.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=rf"{path}: not a numpy array of study IDs"):
        load_valid_ids(path)


def test_valid_ids_that_are_text_name_the_file(tmp_path):
    path = tmp_path / "valid_id.npy"
    path.write_text("123\n456\n")
    with pytest.raises(ValueError, match=rf"{path}: not a numpy array"):
        load_valid_ids(path)


def test_float32_valid_ids_are_refused(tmp_path):
    path = tmp_path / "valid_id.npy"
    np.save(path, np.array([4736760728, 8579676193], dtype=np.float32))
    with pytest.raises(ValueError, match=rf"{path}: holds float32 values"):
        load_valid_ids(path)


def test_whole_float64_and_integer_valid_ids_load(tmp_path):
    path = tmp_path / "valid_id.npy"
    np.save(path, np.array([4736760728.0, 12.0]))
    assert load_valid_ids(path) == {4736760728, 12}
    np.save(path, np.array([4736760728], dtype=np.int64))
    assert load_valid_ids(path) == {4736760728}


@pytest.mark.parametrize("bad_id", ["4773_9259", "１２３"])
def test_labels_refuse_ids_int_would_misread(tmp_path, bad_id):
    from lstv.evaluate import read_labels

    path = tmp_path / "labels.csv"
    path.write_text(f"study_id,lstv\n1,0\n{bad_id},1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path} row 3: study_id '{bad_id}'"):
        read_labels(path)


def _metrics_csv(path, study_ids):
    from lstv.evaluate import required_metric_columns

    columns = required_metric_columns()
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for i, study_id in enumerate(study_ids):
            row = dict.fromkeys(columns, 3.0 + i)
            row.update(study_id=study_id, series_id="-1")
            writer.writerow(row)
    return path


@pytest.mark.parametrize("payload", ['=HYPERLINK("http://x")', "+1+cmd", "-2+3", "@SUM(A1)"])
def test_audit_queue_cells_cannot_become_formulas(tmp_path, payload):
    from lstv.audit import write_audit_queue

    metrics = _metrics_csv(tmp_path / "lstv_uncertainty_metrics.csv", [payload, "7"])
    queue = write_audit_queue(metrics, tmp_path / "audit_queue.csv")
    with open(queue, newline="") as f:
        rows = list(csv.DictReader(f))
    cells = [v for row in rows for v in row.values()]
    assert "'" + payload in cells
    assert not [c for c in cells if c[:1] in ("=", "+", "@") or c.startswith("-") and c != "-1"]
    assert "-1" in cells  # numbers keep their sign: series_id -1 is not text to escape


def test_spreadsheet_safe_is_idempotent_and_leaves_numbers():
    from lstv.audit import spreadsheet_safe

    assert spreadsheet_safe("=1+2") == "'=1+2"
    assert spreadsheet_safe(spreadsheet_safe("=1+2")) == "'=1+2"
    for number in ("-1.5", "+2", "3e-4", "-inf", "nan", "12"):
        assert spreadsheet_safe(number) == number


def test_run_csv_with_a_huge_field_is_a_clear_error(tmp_path):
    from lstv.rundir import read_csv_rows

    path = tmp_path / "failures.csv"
    path.write_text("study_id,error\n1,ok\n2," + "x" * (csv.field_size_limit() + 1) + "\n")
    with pytest.raises(ValueError, match=rf"{path} line 3: .*at most 128 KiB"):
        read_csv_rows(path)


def test_audit_queue_with_a_huge_note_is_a_clear_error(tmp_path):
    from lstv.audit import write_audit_queue

    metrics = _metrics_csv(tmp_path / "lstv_uncertainty_metrics.csv", ["1", "2"])
    queue = tmp_path / "audit_queue.csv"
    queue.write_text("study_id,lstv,notes\n1,1," + "n" * (csv.field_size_limit() + 1) + "\n")
    with pytest.raises(ValueError, match=rf"{queue} line 2"):
        write_audit_queue(metrics, queue)
    assert queue.read_text().startswith("study_id,lstv,notes\n1,1,nnn")  # left as it was


def test_a_uid_in_full_width_digits_is_not_taken_as_that_number():
    from lstv.index import uid_to_id

    assert uid_to_id("123") == 123
    assert uid_to_id("１２３") != 123  # hashed like any other non-numeric UID
    assert uid_to_id("4773_9259") != 47739259

"""Reading labels and metrics back (lstv.tables): every accepted label word, and the checks made
once for every application that reads results."""

import math

import pandas as pd
import pytest

from lstv.columns import SEED_COLUMNS
from lstv.tables import (
    parse_lstv_label,
    ranking_score,
    read_labels,
    read_metrics_csv,
    required_metric_columns,
    score_fields,
)

TRUE_WORDS = ["1", "true", "yes", "y", "t"]
FALSE_WORDS = ["0", "false", "no", "n", "f"]


def spellings(word):
    return {word, word.upper(), word.capitalize(), f"  {word} "}


@pytest.mark.parametrize(
    ("word", "label"), [(w, 1.0) for w in TRUE_WORDS] + [(w, 0.0) for w in FALSE_WORDS]
)
def test_every_accepted_word_maps_to_its_label(word, label):
    """Each word a reviewer may type reads as the label it says, in any case and padding.

    Mutant ``_FALSE`` without ``"n"`` and ``_TRUE`` with it (``"n"`` parsed as 1): fails for
    ``n``; without it: passes. Mutants dropping any one word from either set fail likewise."""
    for text in spellings(word):
        assert parse_lstv_label(text) == label, text


@pytest.mark.parametrize(
    ("value", "label"), [(1, 1.0), (0, 0.0), (1.0, 1.0), (0.0, 0.0), ("1.0", 1.0), ("0.0", 0.0)]
)
def test_numbers_and_a_float_column_read_as_labels(value, label):
    """A 0/1 column with a blank is read by pandas as floats: ``1.0`` is still 1."""
    assert parse_lstv_label(value) == label


@pytest.mark.parametrize("value", [None, math.nan, "", "  ", "nan", "None"])
def test_empty_cells_are_unreviewed(value):
    assert math.isnan(parse_lstv_label(value))


@pytest.mark.parametrize("value", ["2", "maybe", "yes please", "1.5", "-1", "10", "0.5"])
def test_other_values_are_refused(value):
    with pytest.raises(ValueError, match="is not one of 0/1, true/false, yes/no"):
        parse_lstv_label(value)


def test_a_labels_file_reads_every_word(tmp_path):
    path = tmp_path / "labels.csv"
    rows = [f"{100 + i},{w}" for i, w in enumerate(TRUE_WORDS + FALSE_WORDS)]
    path.write_text("study_id,lstv\n" + "\n".join(rows) + "\n200,\n")  # 200: not yet reviewed
    labels, n_unreviewed = read_labels(path)
    assert n_unreviewed == 1
    assert list(labels["lstv"]) == [1] * len(TRUE_WORDS) + [0] * len(FALSE_WORDS)
    assert list(labels["study_id"]) == [str(100 + i) for i in range(len(rows))]


def write_labels(path, rows):
    path.write_text("study_id,lstv,lstv_type\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def test_unsure_is_skipped_and_counted_not_an_error(tmp_path):
    """One ``unsure`` cell made ``lstv evaluate`` reject the whole file."""
    path = write_labels(
        tmp_path / "l.csv", [("1", "0", ""), ("2", "unsure", ""), ("3", "1", ""), ("4", "", "")]
    )
    labels, n_unreviewed = read_labels(path)
    assert list(labels["study_id"]) == ["1", "3"]
    assert labels.attrs["n_unsure"] == 1 and n_unreviewed == 1


@pytest.mark.parametrize(
    ("typed", "kind"),
    [
        ("Sacralisation", "sacralization"),
        ("sacralized", "sacralization"),
        ("LUMBARISATION", "lumbarization"),
        ("lumbarized", "lumbarization"),
        ("sacralization", "sacralization"),
    ],
)
def test_common_spellings_of_a_type_are_one_roc_group(tmp_path, typed, kind):
    """ "Sacralisation" silently became its own ROC group."""
    labels, _ = read_labels(write_labels(tmp_path / "l.csv", [("1", "1", typed)]))
    assert list(labels["lstv_type"]) == [kind]


def test_an_unknown_type_is_an_error_naming_the_row(tmp_path):
    path = write_labels(tmp_path / "l.csv", [("1", "0", "normal"), ("2", "1", "castellvi 2a")])
    with pytest.raises(ValueError, match=r"row 3: lstv_type 'castellvi 2a' is not one of"):
        read_labels(path)


# --- read_labels: every check names the file and what is wrong -----------------------------


def labels_file(tmp_path, text):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def test_labels_keep_types_and_count_unreviewed_rows(tmp_path):
    path = labels_file(
        tmp_path,
        "study_id,lstv,lstv_type,reviewer\n"
        "1,yes, Sacralization ,AB\n"
        "2,no,NORMAL,AB\n"
        "3,1\n"  # a short row: lstv_type missing entirely
        ",1,,AB\n"  # no study: not a review
        "5,,,\n"
        "6,1,lumbarization,CD\n"
        "6,1,lumbarization,EF\n",  # the same verdict twice is one label
    )
    labels, n_unreviewed = read_labels(path)
    assert n_unreviewed == 2
    assert list(labels.columns) == ["study_id", "lstv", "lstv_type"]
    assert list(labels["study_id"]) == ["1", "2", "3", "6"]
    assert list(labels["lstv"]) == [1, 0, 1, 1]
    assert labels["lstv"].dtype.kind == "i"
    assert list(labels["lstv_type"]) == ["sacralization", "normal", "", "lumbarization"]
    assert list(labels.index) == [0, 1, 2, 3]


def test_labels_without_a_type_column(tmp_path):
    labels, n_unreviewed = read_labels(labels_file(tmp_path, "study_id,lstv\n7,0\n8,\n"))
    assert (list(labels["study_id"]), list(labels["lstv_type"]), n_unreviewed) == (["7"], [""], 1)


def test_na_is_not_a_label_word(tmp_path):
    """pandas would read "NA" as missing (an unreviewed study); it is refused instead."""
    with pytest.raises(ValueError, match=r"labels CSV .*labels\.csv row 2: lstv label 'NA'"):
        read_labels(labels_file(tmp_path, "study_id,lstv\n1,NA\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"labels CSV .*labels\.csv is empty"),
        ("study_id,label\n1,1\n", r"labels CSV .*labels\.csv lacks the columns: lstv$"),
        ("id,label\n1,1\n", r"lacks the columns: study_id, lstv$"),
        ("study_id,lstv\n1,maybe\n", r"labels CSV .*labels\.csv row 2: lstv label 'maybe' is not"),
        ("study_id,lstv\n1,1\n4773_9259,0\n", r"row 3: study_id '4773_9259' is not a whole"),
        ("study_id,lstv\n１,1\n", r"'１' is not a whole"),  # a full-width digit
        (
            "study_id,lstv\na,1\nb,0\n",
            r"row 2: study_id 'a' is not a whole number in digits 0-9 \(2 such rows\)",
        ),
        (
            "study_id,lstv,lstv_type\n1,0,sacralization\n2,0,lumbarization\n",
            r"study 1 has lstv=0 but lstv_type='sacralization' \(2 such rows\)",
        ),
        ("study_id,lstv,lstv_type\n1,1,normal\n", r"study 1 has lstv=1 but lstv_type='normal'"),
        ("study_id,lstv\n2,1\n2,0\n1,1\n1,0\n", r"labelled twice with different values: 1, 2$"),
        (
            "study_id,lstv\n1,1\n2,0,extra,cells\n",
            r"labels CSV .*labels\.csv is malformed: .*Expected 2 fields in line 3, saw 4",
        ),
    ],
)
def test_bad_labels_name_the_file_and_the_problem(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_labels(labels_file(tmp_path, text))


def test_a_missing_labels_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"labels CSV not found: .*absent\.csv"):
        read_labels(tmp_path / "absent.csv")


# --- the metrics CSV ------------------------------------------------------------------------


def test_the_contract_columns_are_the_seeds():
    from lstv.tables import required_metric_columns

    cols = required_metric_columns()
    assert cols[:5] == [
        "study_id",
        "series_id",
        "l1_l2_confidence",
        "l1_l2_entropy",
        "l1_l2_spatial_entropy",
    ]
    assert cols[-3:] == ["l5_s1_confidence", "l5_s1_entropy", "l5_s1_spatial_entropy"]
    assert len(cols) == 2 + 5 * 3


def metrics_text(rows, extra=""):
    from lstv.tables import required_metric_columns

    cols = required_metric_columns()
    header = ",".join(cols) + ("," + extra if extra else "")
    return header + "\n" + "".join(",".join(r) + "\n" for r in rows)


def metric_row(study, series="9", value="4.5", extra=None):
    return [study, series] + [value] * 15 + ([extra] if extra is not None else [])


def test_a_metrics_csv_keeps_ids_as_text_and_numbers_as_floats(tmp_path):
    from lstv.tables import read_metrics_csv

    path = tmp_path / "m.csv"
    path.write_text(
        metrics_text([metric_row(" 007 ", " 01 ", "5", "2"), metric_row("8")], "l4_l5_tta_entropy")
    )
    df = read_metrics_csv(path)
    assert list(df["study_id"]) == ["007", "8"] and list(df["series_id"]) == ["01", "9"]
    assert df["l5_s1_entropy"].dtype == float and df["l5_s1_entropy"].tolist() == [5.0, 4.5]
    assert df["l4_l5_tta_entropy"].dtype == float  # every entropy column, not only the seed's


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("", ValueError, r"metrics CSV .*m\.csv is empty \(no header, no rows\)"),
        ('a,b\n"1,2\n', ValueError, r"metrics CSV .*m\.csv is malformed: "),
        ("study_id,series_id\n1,2\n", ValueError, r"m\.csv lacks the contract columns: l1_l2_co"),
        (None, ValueError, r"metrics CSV .*m\.csv has a header but no rows"),
        ("text", ValueError, r"m\.csv: column 'l1_l2_confidence' is not numeric \("),
        ("tta", ValueError, r"m\.csv: column 'l4_l5_tta_entropy' is not numeric \("),
    ],
)
def test_a_bad_metrics_csv_names_the_file_and_the_problem(tmp_path, text, error, message):
    from lstv.tables import read_metrics_csv

    if text is None:
        text = metrics_text([])
    elif text == "text":
        text = metrics_text([metric_row("1", value="high")])
    elif text == "tta":
        text = metrics_text([metric_row("1", extra="x")], "l4_l5_tta_entropy")
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(error, match=message):
        read_metrics_csv(path)


def test_a_missing_metrics_csv_is_named(tmp_path):
    from lstv.tables import read_metrics_csv

    with pytest.raises(FileNotFoundError, match=r"metrics CSV not found: .*absent\.csv"):
        read_metrics_csv(tmp_path / "absent.csv")


# --- ranking and score display ----------------------------------------------------------------


def test_a_run_is_ranked_by_its_score_only_when_a_study_has_one():
    import pandas as pd

    from lstv.tables import ranking_score

    assert ranking_score(pd.DataFrame({"l5_s1_entropy": [1.0]})) == "l5_s1_entropy"
    empty = pd.DataFrame({"lstv_score": ["", None], "l5_s1_entropy": [1.0, 2.0]})
    assert ranking_score(empty) == "l5_s1_entropy"
    assert ranking_score(empty.assign(lstv_score=["", "2.5"])) == "lstv_score"


@pytest.mark.parametrize(
    ("row", "fields"),
    [
        (
            {"lstv_score": " 3.25 ", "lstv_score_flag": " True ", "lstv_score_reason": "why"},
            (3.25, True, "why"),
        ),
        ({"lstv_score": 3.0, "lstv_score_flag": "1", "lstv_score_reason": None}, (3.0, True, "")),
        ({"lstv_score": 3.0, "lstv_score_flag": "yes"}, (3.0, True, "")),
        (
            {"lstv_score": 3.0, "lstv_score_flag": "False", "lstv_score_reason": "r"},
            (3.0, False, "r"),
        ),
        ({"lstv_score": 3.0}, (3.0, False, "")),
    ],
)
def test_score_fields_of_a_scored_study(row, fields):
    from lstv.tables import score_fields

    out = score_fields(row)
    assert (out["lstv_score"], out["lstv_score_flag"], out["lstv_score_reason"]) == fields
    assert list(out) == ["lstv_score", "lstv_score_flag", "lstv_score_reason"]


@pytest.mark.parametrize("row", [{"lstv_score": ""}, {"lstv_score": "nan"}, {}, None, "text"])
def test_score_fields_of_a_study_without_a_score(row):
    from lstv.tables import score_fields

    out = score_fields(row if row is not None else {"lstv_score": None, "lstv_score_flag": "True"})
    assert math.isnan(out["lstv_score"])
    assert (out["lstv_score_flag"], out["lstv_score_reason"]) == (False, "")


# -------------------- input parsing
# Issue 9, messages: an ID that int() would misread is refused, naming the row.


@pytest.mark.parametrize("bad_id", ["4773_9259", "１２３"])
def test_labels_refuse_ids_int_would_misread(tmp_path, bad_id):
    path = tmp_path / "labels.csv"
    path.write_text(f"study_id,lstv\n1,0\n{bad_id},1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{path} row 3: study_id '{bad_id}'"):
        read_labels(path)


def write_csv(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def contract_row(study_id="0007", **values):
    row = dict.fromkeys(SEED_COLUMNS, 0.5)
    return {**row, "study_id": study_id, "series_id": "0042", **values}


def test_ids_stay_text_and_the_contract_is_numeric(tmp_path):
    df = read_metrics_csv(write_csv(tmp_path / "m.csv", [contract_row(), contract_row("12")]))
    assert list(df["study_id"]) == ["0007", "12"] and df["series_id"][0] == "0042"
    assert df["l5_s1_entropy"].dtype == float
    assert required_metric_columns() == list(SEED_COLUMNS)


def test_a_missing_contract_column_or_a_text_entropy_is_refused(tmp_path):
    row = contract_row()
    del row["l3_l4_spatial_entropy"]
    with pytest.raises(ValueError, match="l3_l4_spatial_entropy"):
        read_metrics_csv(write_csv(tmp_path / "a.csv", [row]))
    with pytest.raises(ValueError, match="l5_s1_entropy"):
        read_metrics_csv(write_csv(tmp_path / "b.csv", [contract_row(l5_s1_entropy="high")]))


def test_ranking_uses_the_score_when_any_study_has_one():
    df = pd.DataFrame({"l5_s1_entropy": [4.0, 5.0], "lstv_score": [float("nan"), 3.2]})
    assert ranking_score(df) == "lstv_score"
    assert ranking_score(df.assign(lstv_score=float("nan"))) == "l5_s1_entropy"
    assert ranking_score(df.drop(columns="lstv_score")) == "l5_s1_entropy"


def test_score_fields_for_display():
    shown = score_fields({"lstv_score": "7.5", "lstv_score_flag": "True", "lstv_score_reason": "r"})
    assert shown == {"lstv_score": 7.5, "lstv_score_flag": True, "lstv_score_reason": "r"}
    empty = score_fields({"lstv_score": "", "lstv_score_flag": "True"})
    assert math.isnan(empty["lstv_score"]) and empty["lstv_score_flag"] is False


@pytest.mark.parametrize(
    ("cell", "kind"),
    [
        (None, ""),
        (math.nan, ""),
        ("NaN", ""),
        ("  ", ""),
        (" No_LSTV ", "normal"),
        ("no   lstv", "normal"),
        ("Sacralised", "sacralization"),
    ],
)
def test_a_type_cell_is_normalised(cell, kind):
    from lstv.tables import normalise_type

    assert normalise_type(cell) == kind


def test_an_unknown_type_names_the_three_types():
    from lstv.tables import normalise_type

    with pytest.raises(ValueError, match=r"^lstv_type 'l6' is not one of normal, sacralization, "):
        normalise_type("l6")


def test_an_unsure_row_without_a_study_is_not_counted(tmp_path):
    labels, n_unreviewed = read_labels(labels_file(tmp_path, "study_id,lstv\n1,unsure\n,unsure\n"))
    assert labels.empty and labels.attrs["n_unsure"] == 1


def test_an_unknown_type_in_a_file_names_the_file_and_row(tmp_path):
    path = labels_file(tmp_path, "study_id,lstv,lstv_type\n1,1,l6\n")
    with pytest.raises(ValueError, match=r"^labels CSV .*labels\.csv row 2: lstv_type 'l6'"):
        read_labels(path)


def test_more_than_ten_conflicts_name_the_first_ten(tmp_path):
    rows = "".join(f"{i},1\n{i},0\n" for i in range(10, 22))
    with pytest.raises(ValueError, match=r"different values: 10, 11, .*, 18, 19$"):
        read_labels(labels_file(tmp_path, "study_id,lstv\n" + rows))


def test_every_missing_contract_column_is_named(tmp_path):
    import pandas as pd

    from lstv.tables import read_metrics_csv, required_metric_columns

    cols = [c for c in required_metric_columns() if c not in ("l4_l5_entropy", "l5_s1_entropy")]
    path = tmp_path / "m.csv"
    pd.DataFrame([dict.fromkeys(cols, 1)]).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"columns: l4_l5_entropy, l5_s1_entropy$"):
        read_metrics_csv(path)


def test_a_text_score_column_does_not_rank():
    import pandas as pd

    from lstv.tables import ranking_score

    assert ranking_score(pd.DataFrame({"lstv_score": ["n/a"], "l5_s1_entropy": [1.0]})) == (
        "l5_s1_entropy"
    )

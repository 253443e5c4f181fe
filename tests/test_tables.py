"""Reading labels and metrics back (lstv.tables): every accepted label word, and the checks made
once for every application that reads results."""

import math

import pytest

from lstv.tables import parse_lstv_label, read_labels

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
    """"Sacralisation" silently became its own ROC group."""
    labels, _ = read_labels(write_labels(tmp_path / "l.csv", [("1", "1", typed)]))
    assert list(labels["lstv_type"]) == [kind]


def test_an_unknown_type_is_an_error_naming_the_row(tmp_path):
    path = write_labels(tmp_path / "l.csv", [("1", "0", "normal"), ("2", "1", "castellvi 2a")])
    with pytest.raises(ValueError, match=r"row 3: lstv_type 'castellvi 2a' is not one of"):
        read_labels(path)

"""The column schema (lstv.columns): the files' columns come from it, and the README shows it."""

import re
from pathlib import Path

import pytest

from lstv import columns
from lstv.columns import AUDIT, METRIC_COLUMNS, METRICS, Column, markdown_table, metric_column

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_table(name: str) -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(
        rf"<!-- columns: {re.escape(name)} -->\n(.*?)<!-- end columns -->", text, re.S
    )
    assert found, f"README.md has no column table for {name}"
    return found.group(1)


@pytest.mark.parametrize(
    ("name", "declared"),
    [("lstv_uncertainty_metrics.csv", [c for g in METRICS for c in g]), ("audit_queue.csv", AUDIT)],
)
def test_the_readme_column_tables_are_the_schema(name, declared):
    expected = markdown_table(declared)
    assert readme_table(name) == expected, f"paste this table into README.md:\n{expected}"


def test_the_seed_contract_leads_in_round_1_order():
    assert METRIC_COLUMNS[:5] == [
        "study_id",
        "series_id",
        "l1_l2_confidence",
        "l1_l2_entropy",
        "l1_l2_spatial_entropy",
    ]
    assert (
        METRIC_COLUMNS[:17] == columns.SEED_COLUMNS
        and len(set(METRIC_COLUMNS)) == len(METRIC_COLUMNS) == 105
    )


def test_the_acquisition_columns_are_appended_in_the_descriptors_order():
    # Added after the parasagittal columns (readers of the older files keep working), one per
    # lstv.acquisition descriptor, each with a unit.
    from lstv.acquisition import DESCRIPTORS

    assert METRIC_COLUMNS[-6:] == list(DESCRIPTORS) == list(columns.ACQUISITION_COLUMNS)
    assert METRIC_COLUMNS[-7] == "l5_s1_para_shift_mm"
    assert all(metric_column(n).dtype == "float" and metric_column(n).unit for n in DESCRIPTORS)


def test_every_column_is_declared_once_and_found_by_its_file_name():
    assert metric_column("l4_l5_peak2") == Column(
        "l4_l5_peak2", "float", metric_column("l5_s1_peak2").meaning, "", "higher"
    )
    assert metric_column("l5_s1_confidence").score == "lower"
    assert metric_column("lstv_score_reason").dtype == "text"
    assert metric_column("no_such_column") is None
    templates = [c.name for g in METRICS for c in g]
    assert len(templates) == len(set(templates))


def test_a_bad_declaration_is_refused():
    with pytest.raises(ValueError, match="dtype"):
        Column("x", "number", "?")
    with pytest.raises(ValueError, match="score"):
        Column("x", "float", "?", score="up")

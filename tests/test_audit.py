import csv

import numpy as np
import pandas as pd
import pytest

from helpers import write_metrics
from lstv.audit import AUDIT_COLUMNS, write_audit_queue
from lstv.evaluate import evaluate, read_labels
from lstv.uncertainty import RiskThresholds


def test_queue_is_ranked_by_flag_score_with_empty_review_columns(tmp_path):
    ids = ["11", "12", "13", "14", "15", "007"]
    entropy = [3.0, 6.2, 4.5, 5.2, 6.2, 5.8]
    csv = write_metrics(tmp_path / "m.csv", entropy, study_ids=ids)
    path = write_audit_queue(csv, tmp_path / "out" / "audit_queue.csv", n=4)
    queue = pd.read_csv(path, dtype=str, keep_default_na=False)

    assert tuple(queue.columns) == AUDIT_COLUMNS
    # 6.2 twice: the tie goes to the smaller study ID; "007" keeps its leading zeros
    assert list(queue["study_id"]) == ["12", "15", "007", "14"]
    assert list(queue["rank"]) == ["1", "2", "3", "4"]
    assert [float(v) for v in queue["l5_s1_entropy"]] == [6.2, 6.2, 5.8, 5.2]
    assert list(queue["risk_level"]) == ["High", "High", "High", "Medium"]
    assert list(queue["lstv_flag"]) == ["True", "True", "True", "True"]
    assert float(queue["l4_l5_entropy"][0]) == pytest.approx(3.31)  # 3.0 + 0.1 * 3 + 0.01 * 1
    assert float(queue["l5_s1_confidence"][0]) == pytest.approx(round(1 / 7.2, 4))
    for col in ("lstv", "lstv_type", "reviewer", "notes"):
        assert (queue[col] == "").all()


def test_queue_uses_the_given_thresholds(tmp_path):
    csv = write_metrics(tmp_path / "m.csv", [6.0, 4.5, 3.0], study_ids=["1", "2", "3"])
    thresholds = RiskThresholds(flag_entropy=4.0, high_entropy=4.4, medium_entropy=3.5)
    queue = pd.read_csv(write_audit_queue(csv, tmp_path / "q.csv", thresholds=thresholds))
    assert list(queue["risk_level"]) == ["High", "High", "Low"]
    assert list(queue["lstv_flag"]) == [True, True, False]


def test_queue_is_capped_and_deduplicated(tmp_path):
    csv = write_metrics(tmp_path / "m.csv", [4.0, 5.0, 4.9, 3.0], study_ids=["1", "2", "2", "3"])
    queue = pd.read_csv(write_audit_queue(csv, tmp_path / "q.csv", n=60))
    assert list(queue["study_id"]) == [2, 1, 3]
    assert list(queue["l5_s1_entropy"]) == [5.0, 4.0, 3.0]
    with pytest.raises(ValueError, match=">= 0"):
        write_audit_queue(csv, tmp_path / "q.csv", n=-1)


def test_filled_queue_feeds_back_into_evaluate(tmp_path):
    rng = np.random.default_rng(0)
    ids = [str(1000 + i) for i in range(30)]
    entropy = list(np.round(rng.uniform(3.0, 7.0, 30), 3))
    csv = write_metrics(tmp_path / "m.csv", entropy, study_ids=ids)
    path = write_audit_queue(csv, tmp_path / "audit_queue.csv", n=12)

    # A reviewer fills ten rows and leaves two for later.
    queue = pd.read_csv(path, dtype=str, keep_default_na=False)
    verdicts = ["yes", "yes", "no", "yes", "no", "no", "yes", "no", "no", "no"]
    types = [
        "sacralization",
        "lumbarization",
        "normal",
        "sacralization",
        "normal",
        "normal",
        "sacralization",
        "normal",
        "normal",
        "normal",
    ]
    queue.loc[:9, "lstv"] = verdicts
    queue.loc[:9, "lstv_type"] = types
    queue.loc[:9, "reviewer"] = "JD"
    queue.to_csv(path, index=False)

    labels, n_unreviewed = read_labels(path)
    assert (len(labels), n_unreviewed) == (10, 2)
    result = evaluate(csv, path, tmp_path / "eval", n_bootstrap=100)
    assert result["join"]["n_matched"] == 10
    assert len(result["join"]["missing_in_labels"]) == 20
    assert set(result["groups"]) == {"all", "sacralization", "lumbarization"}
    # "yes" at ranks 1, 2, 4, 7 of 10 by entropy, 6 normals: the transitional studies beat
    # the normals ranked below them, 6 + 6 + 5 + 3 of 4 x 6 pairs
    assert result["groups"]["all"]["scores"]["l5_s1_entropy"]["auc"] == pytest.approx(20 / 24)


def test_queue_ranks_by_the_calibrated_score_when_the_run_has_one(tmp_path):
    path = write_metrics(tmp_path / "m.csv", [6.0, 4.5, 3.0], study_ids=["1", "2", "3"])
    metrics = pd.read_csv(path)
    # study 3 has the lowest entropy (the seed ranks it last) but the largest score:
    # a lumbarized spine whose L5/S1 map has a second peak
    metrics["lstv_score"] = [4.0, 1.5, 12.5]
    metrics["lstv_score_driver"] = ["l5_s1_entropy", "l4_l5_peak2", "l5_s1_peak2"]
    metrics["lstv_score_flag"] = [False, False, True]
    metrics["lstv_score_reason"] = ["a", "b", "L5/S1 map has a second peak 23 mm below the first"]
    metrics.to_csv(path, index=False)
    queue = pd.read_csv(write_audit_queue(path, tmp_path / "q.csv"), keep_default_na=False)
    assert list(queue["study_id"]) == [3, 1, 2]
    assert list(queue["lstv_score_flag"]) == [True, False, False]
    assert queue["lstv_score_reason"][0].startswith("L5/S1 map has a second peak 23 mm")
    assert list(queue["lstv_flag"]) == [False, True, False]  # the seed's rule, beside it
    assert list(queue["risk_level"]) == ["Low", "High", "Medium"]


def fill(path, entries):
    """Write a reviewer's entries (study_id -> {column: value}) into a queue file."""
    queue = pd.read_csv(path, dtype=str, keep_default_na=False)
    for study, values in entries.items():
        for col, value in values.items():
            queue.loc[queue["study_id"] == study, col] = value
    queue.to_csv(path, index=False)


def read_queue(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False).set_index("study_id")


def test_a_review_of_only_the_lstv_column_is_kept(tmp_path):
    """A reviewer who typed only the verdict (``lstv``) keeps it when the queue is written
    again (``lstv report`` rewrites it); the columns left empty stay empty.

    Mutant ``any(...)`` -> ``all(...)`` in ``keep_reviews`` (a review counts only with all
    four columns filled): fails; without it: passes."""
    csv = write_metrics(tmp_path / "m.csv", [6.0, 5.5, 5.0], study_ids=["1", "2", "3"])
    path = write_audit_queue(csv, tmp_path / "audit_queue.csv", n=3)
    fill(path, {"2": {"lstv": "0"}})
    write_audit_queue(csv, path, n=3)
    queue = read_queue(path)
    assert queue.loc["2", ["lstv", "lstv_type", "reviewer", "notes"]].tolist() == ["0", "", "", ""]
    assert (queue.loc[["1", "3"], "lstv"] == "").all()


def test_a_reviewed_study_that_no_longer_ranks_stays_in_the_queue(tmp_path):
    """New studies outrank a reviewed one: the queue keeps its top ``n`` and the reviewed study
    after them, with its entries and the figures it was reviewed with.

    Mutant (``keep_reviews`` without the studies that left the ranking): fails; without it:
    passes."""
    csv = write_metrics(tmp_path / "m.csv", [6.0, 5.5, 5.0, 4.0], study_ids=["1", "2", "3", "4"])
    path = write_audit_queue(csv, tmp_path / "audit_queue.csv", n=3)
    review = {"lstv": "1", "lstv_type": "sacralization", "reviewer": "dr a", "notes": "L5 fused"}
    fill(path, {"3": review, "1": {"lstv": "0", "reviewer": "dr a"}})
    ids = ["1", "2", "3", "4", "5", "6"]
    csv = write_metrics(tmp_path / "m.csv", [6, 5.5, 5, 4, 7, 6.5], study_ids=ids)
    write_audit_queue(csv, path, n=3)
    queue = read_queue(path)
    assert list(queue.index) == ["5", "6", "1", "3"]
    assert list(queue["rank"]) == ["1", "2", "3", "4"]
    assert queue.loc["3", list(review)].to_dict() == review
    assert float(queue.loc["3", "l5_s1_entropy"]) == 5.0
    assert queue.loc["1", ["lstv", "reviewer"]].tolist() == ["0", "dr a"]
    assert (queue.loc[["5", "6"], ["lstv", "lstv_type", "reviewer", "notes"]] == "").all().all()


def test_review_columns_come_right_after_the_ids(tmp_path):
    assert AUDIT_COLUMNS[:8] == (
        "rank", "study_id", "series_id", "study_instance_uid",
        "lstv", "lstv_type", "reviewer", "notes",
    )  # fmt: skip
    assert "path" in AUDIT_COLUMNS


def queue_file(tmp_path):
    csv = write_metrics(tmp_path / "m.csv", [6.0, 5.0, 4.0], study_ids=["11", "12", "13"])
    path = write_audit_queue(csv, tmp_path / "audit_queue.csv")
    fill(path, {"12": {"notes": '=HYPERLINK("x")'}})  # a guarded cell must stay guarded
    write_audit_queue(csv, path)
    return path


def test_save_review_changes_only_that_rows_review_columns(tmp_path):
    from lstv.audit import read_queue as read
    from lstv.audit import review_values, save_review

    path = queue_file(tmp_path)
    before = path.read_text().splitlines()
    _, _, token = read(path)
    values = review_values("sacralization", "dr a", "=cmd|' /C calc'!A0")
    new_token = save_review(path, "11", values, token)
    after = path.read_text().splitlines()
    assert new_token != token
    assert [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b] == [1]
    row = read_queue(path).loc["11"]
    assert (row["lstv"], row["lstv_type"], row["reviewer"]) == ("1", "sacralization", "dr a")
    assert row["notes"].startswith("'=")  # the formula guard
    assert read_queue(path).loc["12", "notes"].startswith("'=")
    labels, _ = read_labels(path)
    assert list(labels["study_id"]) == ["11"] and list(labels["lstv"]) == [1]


def test_a_queue_changed_since_the_page_loaded_is_not_overwritten(tmp_path):
    """Open in a spreadsheet, or saved from another tab: refused, nothing written."""
    from lstv.audit import StaleQueueError, review_values, save_review
    from lstv.audit import read_queue as read

    path = queue_file(tmp_path)
    _, _, token = read(path)
    fill(path, {"13": {"lstv": "0"}})  # the spreadsheet's edit
    edited = path.read_bytes()
    with pytest.raises(StaleQueueError, match="changed on disk since this page loaded"):
        save_review(path, "11", review_values("normal", "dr a", ""), token)
    assert path.read_bytes() == edited
    # two tabs with the same token: the second save is refused, not silently applied
    _, _, token = read(path)
    save_review(path, "11", review_values("normal", "tab 1", ""), token)
    with pytest.raises(StaleQueueError):
        save_review(path, "12", review_values("unsure", "tab 2", ""), token)


def test_only_review_columns_and_known_verdicts_can_be_written(tmp_path):
    from lstv.audit import read_queue as read
    from lstv.audit import review_values, save_review

    path = queue_file(tmp_path)
    _, _, token = read(path)
    with pytest.raises(ValueError, match="only the review columns"):
        save_review(path, "11", {"lstv_score": "9"}, token)
    with pytest.raises(ValueError, match="verdict 'maybe'"):
        review_values("maybe", "", "")
    with pytest.raises(ValueError, match="study 99"):
        save_review(path, "99", review_values("normal", "", ""), token)


@pytest.mark.parametrize(
    ("lstv", "kind", "verdict"),
    [
        ("", "", ""),
        ("0", "", "normal"),
        ("no", "normal", "normal"),
        ("1", "Sacralisation", "sacralization"),
        ("yes", "", "lstv"),
        ("Unsure", "", "unsure"),
        ("maybe", "", "invalid: lstv label 'maybe' is not one of 0/1, true/false, yes/no"),
    ],
)
def test_verdict_of_reads_a_row_as_the_labels_reader_does(lstv, kind, verdict):
    from lstv.audit import verdict_of

    assert verdict_of({"lstv": lstv, "lstv_type": kind}) == verdict


def test_earlier_reviews_are_merged_in_their_order_and_blank_ones_are_not_reviews(tmp_path):
    """An earlier queue (of an older version, without ``notes``): studies that left the ranking
    follow in the earlier queue's order, ranked on from the top ``n``; a row whose review
    columns hold only spaces, or that has no study ID, is no review."""
    csv = write_metrics(tmp_path / "m.csv", [6.0, 5.5, 5.0], study_ids=["1", "2", "3"])
    path = tmp_path / "audit_queue.csv"
    path.write_text(
        "rank,study_id,l5_s1_entropy,lstv,lstv_type,reviewer\n"
        "1,9,7.5,1,lumbarization,dr b\n"
        "2,8,7.0,  ,  ,  \n"
        "3,,6.9,1,,dr b\n"
        "4,7,6.8,0,,\n"
        "5,2,5.5,,,dr c\n"
    )
    write_audit_queue(csv, path, n=2)
    queue = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert list(queue["study_id"]) == ["1", "2", "9", "7"]
    assert list(queue["rank"]) == ["1", "2", "3", "4"]
    assert list(queue["lstv"]) == ["", "", "1", "0"]
    assert list(queue["reviewer"]) == ["", "dr c", "dr b", ""]
    assert list(queue["notes"]) == ["", "", "", ""]
    assert list(queue["l5_s1_entropy"]) == ["6.0", "5.5", "7.5", "6.8"]
    assert list(queue["series_id"]) == ["900", "901", "", ""]


def test_a_queue_without_earlier_reviews_is_written_as_ranked(tmp_path):
    from lstv.audit import audit_queue, keep_reviews
    from lstv.tables import read_metrics_csv

    csv = write_metrics(tmp_path / "m.csv", [6.0, 5.5], study_ids=["1", "2"])
    queue = audit_queue(read_metrics_csv(csv))
    unreviewed = tmp_path / "old.csv"
    unreviewed.write_text("rank,study_id,lstv,lstv_type,reviewer,notes\n1,1,,,,\n2,5,,,,\n")
    for previous in (unreviewed, tmp_path / "absent.csv"):
        kept = keep_reviews(queue, previous)
        pd.testing.assert_frame_equal(kept, queue)


# -------------------- input parsing
# Issue 9, messages: CSV and ID parsing that gives clear errors instead of tracebacks or silently
# wrong matches, and an audit queue that a spreadsheet cannot run as formulas.


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


def test_audit_queue_with_a_huge_note_is_a_clear_error(tmp_path):
    from lstv.audit import write_audit_queue

    metrics = _metrics_csv(tmp_path / "lstv_uncertainty_metrics.csv", ["1", "2"])
    queue = tmp_path / "audit_queue.csv"
    queue.write_text("study_id,lstv,notes\n1,1," + "n" * (csv.field_size_limit() + 1) + "\n")
    with pytest.raises(ValueError, match=rf"{queue} line 2"):
        write_audit_queue(metrics, queue)
    assert queue.read_text().startswith("study_id,lstv,notes\n1,1,nnn")  # left as it was


def test_keep_reviews_says_what_it_kept_and_renumbers_the_rows(tmp_path, caplog):
    import logging

    from lstv.audit import audit_queue, keep_reviews
    from lstv.tables import read_metrics_csv

    csv = write_metrics(tmp_path / "m.csv", [6.0, 5.5], study_ids=["1", "2"])
    queue = audit_queue(read_metrics_csv(csv))
    previous = tmp_path / "old.csv"
    previous.write_text("rank,study_id,lstv,lstv_type,reviewer,notes\n1,1,0,,,\n2,5,1,,,\n")
    with caplog.at_level(logging.INFO, logger="lstv.audit"):
        kept = keep_reviews(queue, previous)
    assert list(kept["study_id"]) == ["1", "2", "5"]
    assert list(kept.index) == [0, 1, 2]  # one row per label, as a fresh queue has
    assert f"kept the review entries of 2 studies from {previous}" in caplog.messages

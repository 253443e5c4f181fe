import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from helpers import write_metrics
from lstv.evaluate import (
    bootstrap_auc_ci,
    bootstrap_aucs,
    cohens_d,
    evaluate,
    evaluate_frames,
    mann_whitney,
    read_labels,
    read_metrics_csv,
    roc_auc,
    score_columns,
    score_metrics,
    sensitivity_specificity,
    youden,
)
from lstv.levels import LEVEL_KEYS
from lstv.results import METRIC_COLUMNS


def write_labels(path, study_ids, lstv, lstv_type=None):
    data = {"study_id": study_ids, "lstv": lstv}
    if lstv_type is not None:
        data["lstv_type"] = lstv_type
    pd.DataFrame(data).to_csv(path, index=False)
    return path


# ----------------------------------------------------------------- pure statistics


def test_perfect_score_has_auc_one_and_reversed_zero():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert roc_auc(y, s) == 1.0
    assert roc_auc(y, -s) == 0.0
    assert bootstrap_auc_ci(y, s, n=200, seed=0) == (1.0, 1.0)


def test_ties_count_one_half():
    assert roc_auc(np.array([0, 0, 1, 1]), np.full(4, 5.0)) == 0.5
    # positives 2 and 3 against negatives 1 and 2: 1 + 0.5 + 1 + 1 = 3.5 of 4 pairs
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([1.0, 2.0, 2.0, 3.0])) == 0.875


def test_auc_needs_both_classes():
    with pytest.raises(ValueError, match="both"):
        roc_auc(np.array([1, 1]), np.array([0.1, 0.2]))


def test_hand_computed_case():
    # normal 3.0, 4.0, 4.5, 5.2; transitional 4.8, 5.6, 6.1
    y = np.array([0, 0, 0, 0, 1, 1, 1])
    s = np.array([3.0, 4.0, 4.5, 5.2, 4.8, 5.6, 6.1])
    # pairs won: 4.8 beats 3 of 4 normals, 5.6 and 6.1 beat all 4 -> 11 of 12
    assert roc_auc(y, s) == pytest.approx(11 / 12)
    # score >= 4.8 catches all transitional and only 5.2 of the normals: J = 1 - 1/4
    best = youden(y, s)
    assert best["threshold"] == 4.8
    assert best["sensitivity"] == 1.0
    assert best["specificity"] == 0.75
    assert best["j"] == pytest.approx(0.75)
    # score > 5.0: 5.6 and 6.1 of the transitional, 5.2 wrongly among the normals
    sens, spec = sensitivity_specificity(y, s, 5.0)
    assert sens == pytest.approx(2 / 3)
    assert spec == pytest.approx(3 / 4)
    # the fixed rule is strict: a score equal to the threshold is not flagged
    assert sensitivity_specificity(y, s, 6.1) == (0.0, 1.0)


def test_youden_prefers_the_more_specific_threshold_on_ties():
    # >= 5.6: sens 2/3, spec 1 (J 2/3); >= 4.8: sens 1, spec 2/3 (J 2/3)
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([3.0, 4.5, 5.2, 4.8, 5.6, 6.1])
    best = youden(y, s)
    assert best["threshold"] == 5.6
    assert (best["sensitivity"], best["specificity"]) == (pytest.approx(2 / 3), 1.0)


def test_cohens_d_on_known_numbers():
    # means 4 and 2, variances 4 and 1 (n - 1), pooled variance (2*4 + 2*1) / 4 = 2.5
    assert cohens_d([2, 4, 6], [1, 2, 3]) == pytest.approx(2 / math.sqrt(2.5))
    assert cohens_d([1, 2, 3], [2, 4, 6]) == pytest.approx(-2 / math.sqrt(2.5))
    assert math.isnan(cohens_d([1.0], [2.0, 3.0]))
    assert math.isnan(cohens_d([1.0, 1.0], [1.0, 1.0]))


def test_mann_whitney_exact_p_for_perfect_separation():
    # 3 vs 3 with no ties: the two extreme orderings of C(6, 3) = 20, two-sided p = 2 / 20
    u, p = mann_whitney([4, 5, 6], [1, 2, 3])
    assert u == 9.0
    assert p == pytest.approx(0.1)


def test_auc_equals_mann_whitney_u_over_pairs():
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(40, int), np.ones(25, int)]
    s = np.round(rng.normal(size=65) + 0.8 * y, 1)  # rounding makes ties
    u, _ = mann_whitney(s[y == 1], s[y == 0])
    assert roc_auc(y, s) == pytest.approx(u / (40 * 25))


@pytest.mark.slow  # over 10 s on the shared 2-core machine
def test_bootstrap_matches_scikit_learn_on_the_same_resamples():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.normal(size=60) + y, 1)
    aucs = bootstrap_aucs(y, s, n=300, seed=11)
    idx = np.random.default_rng(11).integers(0, 60, size=(300, 60))
    expected = [roc_auc_score(y[i], s[i]) if 0 < y[i].sum() < 60 else np.nan for i in idx]
    np.testing.assert_allclose(aucs, expected, atol=1e-12)


def test_bootstrap_ci_is_deterministic_and_contains_the_auc():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(50, int), np.ones(30, int)]
    s = rng.normal(size=80) + y
    auc = roc_auc(y, s)
    low, high = bootstrap_auc_ci(y, s, n=500, seed=4)
    assert (low, high) == bootstrap_auc_ci(y, s, n=500, seed=4)
    assert (low, high) != bootstrap_auc_ci(y, s, n=500, seed=5)
    assert low < auc < high
    assert low >= 0.0 and high <= 1.0


def test_score_metrics_drops_missing_scores():
    y = np.array([0, 0, 1, 1, 1])
    s = np.array([1.0, 2.0, 3.0, np.nan, 4.0])
    out = score_metrics(y, s, n_bootstrap=50, fixed_threshold=2.5)
    assert (out["n"], out["n_positive"], out["n_negative"]) == (4, 2, 2)
    assert out["auc"] == 1.0
    assert (out["fixed_sensitivity"], out["fixed_specificity"]) == (1.0, 1.0)


# ----------------------------------------------------------------- inputs


def test_score_columns_cover_every_score(tmp_path):
    csv = write_metrics(
        tmp_path / "m.csv",
        [4.0, 6.0],
        extra={
            "tta_score": [0.1, 0.9],
            "note_score": ["a", "b"],
            "l5_s1_mutual_entropy": [0.2, 0.4],
        },
    )
    scores = score_columns(read_metrics_csv(csv))
    for k in LEVEL_KEYS:
        for metric in ("entropy", "normalized_entropy", "spatial_entropy", "one_minus_confidence"):
            assert f"{k}_{metric}" in scores
    assert "tta_score" in scores and "l5_s1_mutual_entropy" in scores
    assert "note_score" not in scores  # text, not a score
    np.testing.assert_allclose(scores["l5_s1_one_minus_confidence"], [1 - 1 / 5, 1 - 1 / 7])
    assert list(scores)[:4] == [
        "l1_l2_entropy",
        "l1_l2_normalized_entropy",
        "l1_l2_spatial_entropy",
        "l1_l2_one_minus_confidence",
    ]


def test_labels_accept_words_and_drop_unreviewed(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(
        "study_id,lstv,lstv_type,reviewer\n1,yes,Sacralization,AB\n2,No,normal,AB\n"
        "3,TRUE,,AB\n4,0,,\n5,,,\n 6 ,1.0,lumbarization,CD\n"
    )
    labels, n_unreviewed = read_labels(path)
    assert n_unreviewed == 1
    assert list(labels["study_id"]) == ["1", "2", "3", "4", "6"]
    assert list(labels["lstv"]) == [1, 0, 1, 0, 1]
    assert list(labels["lstv_type"]) == ["sacralization", "normal", "", "", "lumbarization"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("study_id,lstv\n1,maybe\n", "maybe"),
        ("study_id,label\n1,1\n", "lstv"),
        ("study_id,lstv,lstv_type\n1,0,sacralization\n", "lstv_type"),
        ("study_id,lstv\n1,1\n1,0\n", "twice"),
    ],
)
def test_bad_labels_are_refused(tmp_path, content, message):
    path = tmp_path / "labels.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_labels(path)


def test_metrics_csv_errors_name_the_problem(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_metrics_csv(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(METRIC_COLUMNS) + "\n")
    with pytest.raises(ValueError, match="no rows"):
        read_metrics_csv(header_only)
    missing = tmp_path / "missing.csv"
    pd.read_csv(write_metrics(tmp_path / "m.csv", [4.0])).drop(columns=["l4_l5_entropy"]).to_csv(
        missing, index=False
    )
    with pytest.raises(ValueError, match="l4_l5_entropy"):
        read_metrics_csv(missing)
    text = tmp_path / "text.csv"
    df = pd.read_csv(tmp_path / "m.csv")
    df["l5_s1_entropy"] = "high"
    df.to_csv(text, index=False)
    with pytest.raises(ValueError, match="l5_s1_entropy"):
        read_metrics_csv(text)


# ----------------------------------------------------------------- evaluate end to end


@pytest.mark.slow  # over 10 s on the shared 2-core machine
def test_evaluate_writes_outputs_and_reports_missing_studies(tmp_path):
    ids = [str(i) for i in range(1, 9)]
    entropy = [3.0, 3.5, 4.0, 5.2, 4.8, 5.6, 6.1, 7.0]
    csv = write_metrics(tmp_path / "m.csv", entropy, study_ids=ids)
    # study 8 is not labelled; study 42 was labelled but never analysed; 9 is unreviewed
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "study_id,lstv,lstv_type\n1,0,normal\n2,0,normal\n3,0,normal\n4,0,normal\n"
        "5,1,sacralization\n6,1,lumbarization\n7,1,sacralization\n42,1,sacralization\n9,,\n"
    )
    out = tmp_path / "eval"
    result = evaluate(csv, labels, out, n_bootstrap=200, seed=0, fixed_threshold=5.0)

    join = result["join"]
    assert join["missing_in_labels"] == ["8"]
    assert join["missing_in_metrics"] == ["42"]
    assert (join["n_matched"], join["n_unreviewed"]) == (7, 1)
    l5 = result["groups"]["all"]["scores"]["l5_s1_entropy"]
    # normals 3.0, 3.5, 4.0, 5.2 vs transitional 4.8, 5.6, 6.1: 11 of 12 pairs
    assert l5["auc"] == pytest.approx(11 / 12)
    assert l5["youden_threshold"] == 4.8
    assert (l5["fixed_sensitivity"], l5["fixed_specificity"]) == (
        pytest.approx(2 / 3),
        pytest.approx(3 / 4),
    )
    assert l5["auc_ci_low"] <= l5["auc"] <= l5["auc_ci_high"]
    # the fixed entropy rule does not apply to scores on other scales
    assert result["groups"]["all"]["scores"]["l5_s1_spatial_entropy"]["fixed_sensitivity"] is None

    # per type against normal: sacralization 4.8, 6.1 beat 3 and 4 of 4 normals
    sac = result["groups"]["sacralization"]
    assert (sac["n_positive"], sac["n_negative"]) == (2, 4)
    assert sac["scores"]["l5_s1_entropy"]["auc"] == pytest.approx(7 / 8)
    assert result["groups"]["lumbarization"]["scores"]["l5_s1_entropy"]["auc"] == 1.0

    on_disk = json.loads((out / "evaluation.json").read_text())
    assert on_disk["groups"]["all"]["scores"]["l5_s1_entropy"]["auc"] == pytest.approx(11 / 12)
    table = pd.read_csv(out / "evaluation.csv")
    assert set(table["group"]) == {"all", "sacralization", "lumbarization"}
    assert len(table) == 3 * len(score_columns(read_metrics_csv(csv)))
    png = (out / "roc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_evaluate_refuses_labels_of_one_class(tmp_path):
    csv = write_metrics(tmp_path / "m.csv", [4.0, 6.0])
    labels = write_labels(tmp_path / "l.csv", ["100", "101"], [1, 1])
    with pytest.raises(ValueError, match="needs both"):
        evaluate(csv, labels, tmp_path / "out", n_bootstrap=10)


def test_evaluate_frames_is_deterministic(tmp_path):
    rng = np.random.default_rng(1)
    entropy = list(np.round(rng.normal(5.0, 1.0, 40), 2))
    csv = write_metrics(tmp_path / "m.csv", entropy)
    metrics = read_metrics_csv(csv)
    labels = pd.DataFrame(
        {
            "study_id": metrics["study_id"],
            "lstv": (np.array(entropy) > 5.3).astype(int),
            "lstv_type": "",
        }
    )
    a = evaluate_frames(metrics, labels, n_bootstrap=100, seed=2)
    b = evaluate_frames(metrics, labels, n_bootstrap=100, seed=2)
    assert json.dumps(a) == json.dumps(b)  # NaN-safe comparison
    assert a["groups"]["all"]["scores"]["l5_s1_entropy"]["auc"] == 1.0


def test_lstv_evaluate_command(tmp_path, capsys):
    from lstv.cli import main

    ids = [str(i) for i in range(6)]
    csv = write_metrics(tmp_path / "m.csv", [3.0, 3.5, 4.0, 5.5, 6.0, 6.5], study_ids=ids)
    labels = write_labels(tmp_path / "l.csv", ids, [0, 0, 0, 1, 1, 1])
    out = tmp_path / "eval"
    rc = main(
        [
            "evaluate",
            "--csv",
            str(csv),
            "--labels",
            str(labels),
            "--output_dir",
            str(out),
            "--n_bootstrap",
            "50",
            "--seed",
            "3",
            "--fixed_threshold",
            "5.8",
        ]
    )
    assert rc == 0
    result = json.loads((out / "evaluation.json").read_text())
    assert (result["n_bootstrap"], result["seed"], result["fixed_threshold"]) == (50, 3, 5.8)
    l5 = result["groups"]["all"]["scores"]["l5_s1_entropy"]
    assert l5["auc"] == 1.0
    assert l5["fixed_sensitivity"] == pytest.approx(2 / 3)  # 6.0 and 6.5 exceed 5.8, 5.5 not
    assert "6 studies" in capsys.readouterr().out


def test_the_calibrated_score_and_shape_features_are_scores(tmp_path):
    from lstv.evaluate import is_fixed_threshold_score

    csv = write_metrics(
        tmp_path / "m.csv",
        [4.0, 6.0],
        extra={
            "lstv_score": [1.2, 9.5],
            "lstv_score_driver": ["l5_s1_entropy", "l5_s1_peak2"],
            "lstv_score_flag": [False, True],
            "l5_s1_peak2": [0.02, 0.8],
            "l5_s1_mass_out": [0.1, 0.4],
            "l5_s1_top100_entropy": [3.7, 4.1],
        },
    )
    scores = score_columns(read_metrics_csv(csv))
    assert list(scores)[0] == "lstv_score"  # the calibrated score leads
    assert {"l5_s1_peak2", "l5_s1_mass_out", "l5_s1_top100_entropy"} <= set(scores)
    assert "lstv_score_driver" not in scores and "lstv_score_flag" not in scores
    # the seed's fixed entropy threshold means nothing on the top-100 entropy's scale
    assert is_fixed_threshold_score("l5_s1_entropy")
    assert not is_fixed_threshold_score("l5_s1_top100_entropy")


def test_evaluate_cuts_at_the_runs_own_flag_threshold(infer_output, tmp_path):
    """Regression (issue 8): lstv demo wrote evaluation.json at the fixed 5.0 while the run and
    its report flagged at the checkpoint's 9.6778. The default now is the run's flag threshold."""
    import shutil

    from lstv.rundir import Manifest, RunDir

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    shutil.copy(RunDir(infer_output).metrics_csv, run.metrics_csv)
    bands = {"flag_entropy": 9.6778, "high_entropy": 9.6836, "medium_entropy": 9.6719}
    run.write_manifest(Manifest(thresholds=bands))
    ids = [r.split(",")[0] for r in run.metrics_csv.read_text().splitlines()[1:]]
    labels = tmp_path / "labels.csv"
    labels.write_text("study_id,lstv\n" + "".join(f"{s},{i % 2}\n" for i, s in enumerate(ids)))
    result = evaluate(run.metrics_csv, labels, tmp_path / "ev", n_bootstrap=20)
    assert result["fixed_threshold"] == 9.6778
    assert evaluate(run.metrics_csv, labels, tmp_path / "ev2", n_bootstrap=20,
                    fixed_threshold=5.0)["fixed_threshold"] == 5.0  # fmt: skip

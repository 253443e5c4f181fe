"""The score's maths (lstv.score): features, robust fits, the reference JSON, reasons."""

import json
import math

import numpy as np
import pytest

from helpers import SHA_A, normal_features, rows_from
from lstv.score import (
    FEATURES,
    SCORE_COLUMNS,
    Reference,
    describe,
    feature_matrix,
    fit_reference,
    leave_one_out_scores,
    read_reference,
    required_columns,
    robust_location_scale,
    score_rows,
)


def test_robust_scale_falls_back_from_mad_to_iqr_std_and_one():
    assert robust_location_scale([1, 2, 3, 4, 100]) == (3.0, pytest.approx(1.4826), "mad")
    # more than half equal: MAD 0, IQR not
    centre, scale, rule = robust_location_scale([5, 5, 5, 5, 5, 9, 9, 9])
    assert (centre, rule) == (5.0, "iqr") and scale == pytest.approx(4 / 1.349)
    centre, scale, rule = robust_location_scale([5] * 9 + [8])
    assert rule == "std" and scale == pytest.approx(np.std([5] * 9 + [8], ddof=1))
    assert robust_location_scale([2.0, 2.0, np.nan]) == (2.0, 1.0, "one")
    with pytest.raises(ValueError, match="no finite"):
        robust_location_scale([np.nan])


def test_a_study_at_the_reference_median_scores_zero():
    raw = normal_features(np.random.default_rng(0), 41)
    ref = fit_reference(raw, SHA_A)
    median = np.median(raw, axis=0)  # 41 rows: the median is one of them, log or not
    score, driver, flag = ref.score(median[None])
    assert score[0] == pytest.approx(0.0, abs=1e-12)
    assert not flag[0]
    assert ref.n == 41 and ref.log_features == (
        "l4_l5_one_minus_confidence",
        "l4_l5_peak2",
        "l4_l5_mass_out",
        "l5_s1_one_minus_confidence",
        "l5_s1_peak2",
        "l5_s1_mass_out",
    )


def test_score_is_the_largest_two_sided_z_and_names_its_feature():
    raw = normal_features(np.random.default_rng(1), 60)
    ref = fit_reference(raw, SHA_A)
    study = np.median(raw, axis=0)
    j = FEATURES.index("l5_s1_entropy")
    study_low = study.copy()
    study_low[j] -= 10 * ref.scale["l5_s1_entropy"]  # entropy *falls*: still an outlier
    score, driver, flag = ref.score(study_low[None])
    assert score[0] == pytest.approx(10.0)
    assert driver == ["l5_s1_entropy"] and flag[0]
    k = FEATURES.index("l5_s1_peak2")
    study_peak = study.copy()
    study_peak[k] = 0.8
    z = (np.log(0.8 + 1e-4) - ref.centre["l5_s1_peak2"]) / ref.scale["l5_s1_peak2"]
    score, driver, _ = ref.score(study_peak[None])
    assert driver == ["l5_s1_peak2"] and score[0] == pytest.approx(z)


def test_threshold_is_the_leave_one_out_maximum_or_a_quantile():
    raw = normal_features(np.random.default_rng(2), 50)
    ref = fit_reference(raw, SHA_A)
    loo = leave_one_out_scores(ref.transform(raw))
    assert ref.threshold == pytest.approx(loo.max())
    assert "leave-one-out maximum" in ref.threshold_rule
    # every reference study is scored against all 50 here, so none exceeds its LOO max
    assert not ref.score(raw)[2].any()
    q = fit_reference(raw, SHA_A, target_specificity=0.9)
    assert q.threshold == pytest.approx(np.quantile(loo, 0.9))
    assert q.threshold < ref.threshold and "0.9" in q.threshold_rule
    with pytest.raises(ValueError, match="specificity"):
        fit_reference(raw, SHA_A, target_specificity=1.5)
    with pytest.raises(ValueError, match="at least 3"):
        fit_reference(raw[:2], SHA_A)


def test_json_round_trip_and_bad_files(tmp_path):
    raw = normal_features(np.random.default_rng(4), 25)
    ref = fit_reference(raw, SHA_A, reference_studies="25 test studies", extra={"labels": "x"})
    data = json.loads(ref.save(tmp_path / "r.json").read_text())
    assert data["format"] == "lstv-score-reference" and data["checkpoint_sha256"] == SHA_A
    assert data["n"] == 25 and data["features"] == list(FEATURES)
    assert data["threshold_rule"] and data["created_at"] and data["lstv_version"]
    again = read_reference(tmp_path / "r.json")
    assert again == ref
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not an LSTV score reference"):
        read_reference(tmp_path / "bad.json")
    broken = dict(data, scale={**data["scale"], "l5_s1_peak2": 0})
    (tmp_path / "zero.json").write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="positive scale"):
        read_reference(tmp_path / "zero.json")
    with pytest.raises(FileNotFoundError):
        read_reference(tmp_path / "missing.json")


def test_feature_matrix_reads_text_and_empty_cells():
    rows = rows_from(normal_features(np.random.default_rng(6), 2))
    rows[1]["l5_s1_peak2"] = ""
    x = feature_matrix(rows)
    assert x.shape == (2, len(FEATURES)) and np.isnan(x[1, FEATURES.index("l5_s1_peak2")])
    assert x[0, FEATURES.index("l4_l5_one_minus_confidence")] == pytest.approx(
        1 - float(rows[0]["l4_l5_confidence"])
    )
    del rows[0]["l4_l5_mass_out"]
    with pytest.raises(ValueError, match="l4_l5_mass_out"):
        feature_matrix(rows, source="run.csv")
    assert "l5_s1_confidence" in required_columns() and "l5_s1_one_minus_confidence" not in (
        required_columns()
    )


def test_describe_says_where_the_second_peak_is():
    raw = normal_features(np.random.default_rng(7), 30)
    ref = fit_reference(raw, SHA_A)
    row = {"l5_s1_peak2_dx_mm": "1.5", "l5_s1_peak2_dy_mm": "23.2"}
    text = describe("l5_s1_peak2", 0.81, 9.4, ref, row)
    assert text.startswith("L5/S1 map has a second peak 23 mm below the first (0.81 of the peak")
    assert text.endswith("z = +9.4")
    assert "above" in describe(
        "l4_l5_peak2", 0.5, 3.0, ref, {"l4_l5_peak2_dx_mm": "2", "l4_l5_peak2_dy_mm": "-30"}
    )
    assert "more concentrated" in describe("l5_s1_entropy", 9.3, -12.0, ref)
    assert "peak probability lower" in describe("l5_s1_one_minus_confidence", 0.6, 8.0, ref)


def test_score_rows_leave_rows_without_features_empty():
    raw = normal_features(np.random.default_rng(8), 30)
    ref = fit_reference(raw, SHA_A)
    rows = rows_from(raw[:2])
    for name in FEATURES:
        col = name.replace("one_minus_confidence", "confidence")
        rows[1][col] = ""
    out = score_rows(rows, ref)
    assert set(out[0]) == set(SCORE_COLUMNS) and out[0]["lstv_score"] != ""
    assert out[1] == dict.fromkeys(SCORE_COLUMNS, "")


def test_reference_scales_are_finite_and_positive():
    raw = normal_features(np.random.default_rng(12), 20)
    ref = fit_reference(raw, SHA_A)
    assert all(math.isfinite(ref.centre[f]) and ref.scale[f] > 0 for f in FEATURES)
    assert isinstance(ref, Reference)


def test_a_score_equal_to_the_threshold_is_not_flagged():
    """The flag is a score *above* the threshold, in ``Reference.score`` and in the CSV's
    ``lstv_score_flag`` (``score_rows``) alike: at the threshold no flag, a hair below it yes.

    Mutant ``> self.threshold`` -> ``>=`` (in either place): fails; without it: passes."""
    import dataclasses

    raw = normal_features(np.random.default_rng(13), 30)
    study = np.median(raw, axis=0)
    study[FEATURES.index("l5_s1_entropy")] += 3.0
    fitted = fit_reference(raw, SHA_A)
    (score,), _, _ = fitted.score(study[None])
    assert score > 0
    for threshold, flagged in ((score, False), (math.nextafter(score, 0.0), True)):
        ref = dataclasses.replace(fitted, threshold=threshold)
        assert ref.score(study[None])[2].tolist() == [flagged]
        (row,) = score_rows(rows_from(study[None]), ref)
        assert row["lstv_score_flag"] is flagged

"""The score's fit and its columns (lstv.score): robust fits, thresholds, score v2's Mahalanobis
rule and the score columns of rows."""

import math

import numpy as np
import pytest

from helpers import SHA_A, normal_features, rows_from
from lstv.columns import SCORE_COLUMNS
from lstv.score import fit_reference, leave_one_out_scores, robust_location_scale, score_rows
from lstv.score_features import FEATURES
from lstv.score_reference import Reference


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


def test_robust_scale_rules_hold_below_one_and_at_interpolated_quartiles():
    """A spread under 1 (entropies, probabilities) is still a spread; the IQR is of the 25th
    and 75th percentiles as numpy interpolates them, low and high side alike."""
    assert robust_location_scale([0.1, 0.2, 0.3, 0.4, 0.5]) == (
        0.3,
        pytest.approx(0.1 * 1.4826),
        "mad",
    )
    assert robust_location_scale([0, 4, 5, 5, 5, 5, 5]) == (5.0, pytest.approx(0.5 / 1.349), "iqr")
    assert robust_location_scale([5, 5, 5, 5, 5, 6, 10]) == (5.0, pytest.approx(0.5 / 1.349), "iqr")


def test_robust_scale_of_one_value_is_one_without_a_numpy_warning():
    """One study has no spread: the rule is "one", and no standard deviation of one value
    (numpy's "degrees of freedom <= 0" warning on the user's console) is tried."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert robust_location_scale([2.5, np.nan]) == (2.5, 1.0, "one")


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


# --------------------------------------------------------------------------- score v2


@pytest.mark.slow  # 40-80 leave-one-out MinCovDet fits
def test_mahalanobis_counts_correlated_features_once():
    """Two copies of one signal: a study off in both scores as it does against a reference of
    one copy (a sum of per-feature evidence, like Fisher's, would count it twice: x 1.4)."""
    rng = np.random.default_rng(3)
    base = rng.normal(0.0, 1.0, 80)
    other = rng.normal(0.0, 1.0, 80)
    twice = np.column_stack([base, base + rng.normal(0.0, 0.3, 80), other])  # r about 0.96
    names = ("l5_s1_entropy", "l5_s1_top100_entropy", "l4_l5_entropy")
    ref2 = fit_reference(twice, SHA_A, features=names, rule="mahalanobis")
    ref1 = fit_reference(twice[:, [0, 2]], SHA_A, features=names[::2], rule="mahalanobis")
    d2 = ref2.score(np.array([[3.0, 3.0, 0.0]]))[0][0]
    d1 = ref1.score(np.array([[3.0, 0.0]]))[0][0]
    assert d2 == pytest.approx(d1, rel=0.15)
    both = ref2.score(np.array([[3.0, 3.0, 3.0]]))[0][0]
    assert both > 1.25 * d2  # an independent deviation does add up
    assert ref2.covariance and ref2.rule == "mahalanobis"


@pytest.mark.slow  # over 10 s on the shared 2-core machine
def test_mahalanobis_is_one_sided_for_a_surer_map():
    raw = normal_features(np.random.default_rng(4), 80)
    ref = fit_reference(raw, SHA_A, rule="mahalanobis")
    study = np.median(raw, axis=0)
    j = FEATURES.index("l5_s1_peak2")
    lower, higher = study.copy(), study.copy()
    lower[j] = 1e-6  # far less of a second peak than normal: no sign of LSTV
    higher[j] = 0.9
    score, drivers, _ = ref.score(np.vstack([study, lower, higher]))
    assert score[1] == pytest.approx(score[0], abs=0.5) and score[2] > 5 * max(score[0], 1.0)
    assert drivers[2] == "l5_s1_peak2"


@pytest.mark.slow  # 40-80 leave-one-out MinCovDet fits
def test_threshold_at_a_target_specificity_is_cross_fitted():
    raw = normal_features(np.random.default_rng(5), 60)
    ref = fit_reference(raw, SHA_A, rule="mahalanobis", target_specificity=0.95)
    x = ref.transform(raw)
    mask = np.array([f in ref.one_sided for f in ref.features])
    loo = leave_one_out_scores(x, "mahalanobis", mask)
    assert ref.threshold == pytest.approx(np.quantile(loo, 0.95))
    assert 0.02 <= float(np.mean(loo > ref.threshold)) <= 0.08
    assert "1 normal" not in ref.threshold_rule and "5%" in ref.threshold_rule


@pytest.mark.slow  # a MinCovDet fit per left-out study
def test_an_unflagged_study_s_reason_says_it_is_within_normal_limits():
    """A reason names the driver of every score; for a study under the flag it is no finding,
    and the words must not read as one ("the localizer is unsure ..." on a normal study)."""
    raw = normal_features(np.random.default_rng(8), 60)
    ref = fit_reference(raw, SHA_A, rule="mahalanobis")
    study = np.median(raw, axis=0)
    far = study.copy()
    far[FEATURES.index("l5_s1_peak2")] = 0.9
    typical, flagged = score_rows(rows_from(np.vstack([study, far])), ref)
    assert not typical["lstv_score_flag"] and flagged["lstv_score_flag"]
    assert typical["lstv_score_reason"].startswith("Within normal limits; closest to a flag: ")
    assert not flagged["lstv_score_reason"].startswith("Within normal limits")


def test_a_level_name_keeps_its_capital_after_within_normal_limits():
    """An unflagged reason is lower-cased after the prefix ("the column bends ..."), but a
    level name ("L5/S1 peak probability ...") is not prose and keeps its capital."""
    raw = normal_features(np.random.default_rng(8), 40)
    features = ("l5_s1_one_minus_confidence", "l5_s1_peak2")
    columns = [FEATURES.index(f) for f in features]
    ref = fit_reference(raw[:, columns], SHA_A, features=features, rule="mahalanobis")
    study = np.median(raw, axis=0, keepdims=True)
    # A surer-than-usual peak2 and a 1 - peak near the top of its range: 1 - peak drives.
    study[0, columns[0]] = np.quantile(raw[:, columns[0]], 0.85)
    study[0, columns[1]] = np.quantile(raw[:, columns[1]], 0.2)
    (typical,) = score_rows(rows_from(study), ref)
    reason = typical["lstv_score_reason"]
    assert reason.startswith("Within normal limits; closest to a flag: "), reason
    assert "l5/S1" not in reason and "L5/S1" in reason


# --- issue 20: mutation survivors of lstv.score ----------------------------------------------


def _peak2_reference(normal_range):
    """A hand-set max |z| reference of one feature, the L5/S1 second peak: centre 0.1, spread
    0.1, flag above 3 (a peak2 over 0.4)."""
    return Reference(
        checkpoint_sha256=SHA_A,
        features=("l5_s1_peak2",),
        log_features=(),
        centre={"l5_s1_peak2": 0.1},
        scale={"l5_s1_peak2": 0.1},
        scale_rule={"l5_s1_peak2": "mad"},
        n=40,
        threshold=3.0,
        threshold_rule="fixed",
        normal_range=normal_range,
    )


def test_score_rows_word_for_word_with_and_without_a_normal_range():
    below = {"l5_s1_peak2_dx_mm": "1.5", "l5_s1_peak2_dy_mm": "23.2"}
    rows = [
        {"l5_s1_peak2": ""},
        {"l5_s1_peak2": "0.312345", **below},
        {"l5_s1_peak2": "0.9", **below},
    ]
    empty, typical, flagged = score_rows(rows, _peak2_reference({"l5_s1_peak2": [0.02, 0.3]}))
    assert empty == dict.fromkeys(SCORE_COLUMNS, "")  # a row without features ends nothing
    assert typical["lstv_score"] == round((0.312345 - 0.1) / 0.1, 4)  # z to 4 decimals
    assert typical == {
        "lstv_score": typical["lstv_score"],
        "lstv_score_driver": "l5_s1_peak2",
        "lstv_score_flag": False,
        "lstv_score_reason": "Within normal limits; closest to a flag: the L5/S1 map has a "
        "second candidate 23 mm below the first (0.31 of the peak; normal 0.02-0.30)",
    }
    assert flagged["lstv_score_flag"] and flagged["lstv_score_reason"] == (
        "The L5/S1 map has a second candidate 23 mm below the first (0.90 of the peak; normal "
        "0.02-0.30)"
    )
    # A version-1 reference (no normal range) keeps describe's words, with the row's offset.
    (old,) = score_rows(rows[2:], _peak2_reference({}))
    assert old["lstv_score_reason"] == (
        "L5/S1 map has a second peak 23 mm below the first (0.90 of the peak; normal 0.10), "
        "z = +8.0"
    )


def test_score_rows_name_the_missing_column_and_the_source():
    from lstv.errors import UsageError

    ref = _peak2_reference({})
    with pytest.raises(UsageError) as caught:
        score_rows([{"l5_s1_entropy": "9"}], ref)
    assert str(caught.value) == "metrics has no column 'l5_s1_peak2' (needed for l5_s1_peak2)"
    with pytest.raises(UsageError, match="^run.csv has no column"):
        score_rows([{"l5_s1_entropy": "9"}], ref, "run.csv")


def test_the_mahalanobis_covariance_is_the_robust_spreads_with_mincovdet_s_correlations():
    """Location: each feature's median; variances: its robust spread squared; correlations:
    those of a MinCovDet fit of the complete rows (two gross outliers that would flip a plain
    correlation do not), shrunk by the 1e-3 ridge."""
    from sklearn.covariance import MinCovDet

    from lstv.score import _robust_covariance

    rng = np.random.default_rng(4)
    a = rng.normal(0, 1, 60)
    x = np.column_stack([a, a + rng.normal(0, 0.3, 60)])
    x[:2] = [[8, -8], [-8, 8]]  # outliers against the correlation
    x = np.vstack([x, [[np.nan, 1.0]]])  # an incomplete row: left out of the correlations
    location, cov = _robust_covariance(x)
    fits = [robust_location_scale(x[:, j]) for j in range(2)]
    assert location.tolist() == [f[0] for f in fits]
    assert np.diag(cov).tolist() == pytest.approx([f[1] ** 2 for f in fits])
    mcd = MinCovDet(random_state=0).fit(x[:-1]).covariance_
    robust = mcd[0, 1] / math.sqrt(mcd[0, 0] * mcd[1, 1])
    got = cov[0, 1] / math.sqrt(cov[0, 0] * cov[1, 1])
    assert got == pytest.approx(robust / (1 + 1e-3))
    assert robust > 0.9 and np.corrcoef(x[:-1].T)[0, 1] < 0.6  # the plain one is pulled down


def test_a_mahalanobis_reference_needs_more_complete_studies_than_features_plus_one():
    from lstv.errors import UsageError
    from lstv.score import _robust_covariance

    rng = np.random.default_rng(5)
    x = rng.normal(0, 1, (4, 2))
    _robust_covariance(x)  # 4 complete studies for 2 features: enough
    x[0, 1] = np.nan
    with pytest.raises(UsageError) as caught:
        _robust_covariance(x)
    assert str(caught.value) == (
        "a Mahalanobis reference of 2 features needs more than 3 complete studies, got 3"
    )


def test_a_feature_constant_on_most_studies_falls_back_to_plain_correlations(caplog):
    """MinCovDet finds no spread when most studies are alike: the correlations are then the
    plain ones, with a warning. A feature constant on MinCovDet's support is uncorrelated (0),
    and its 0 / 0 is not a numpy warning."""
    import logging
    import warnings

    from lstv.score import _robust_covariance

    rng = np.random.default_rng(6)
    x = rng.normal(0, 1, (40, 3))
    x[30:, 2] += 2 * x[30:, 0]
    x[:30] = 0.0  # three quarters of the studies alike
    with caplog.at_level(logging.WARNING, logger="lstv.score"):
        _, cov = _robust_covariance(x)
    assert [r.getMessage() for r in caplog.records] == [
        "MinCovDet found no spread in the reference; using plain correlations"
    ]
    sd = np.sqrt(np.diag(cov))
    assert (cov / np.outer(sd, sd))[0, 2] == pytest.approx(np.corrcoef(x.T)[0, 2] / (1 + 1e-3))
    x = rng.normal(0, 1, (40, 3))
    x[:30, 1] = 0.0  # feature 1 constant on most studies, so on MinCovDet's support
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, cov = _robust_covariance(x)
    assert not [w for w in caught if "encountered in divide" in str(w.message)]
    assert cov[1, 0] == cov[1, 2] == 0.0 and cov[1, 1] > 0


def test_a_cross_fitted_mahalanobis_score_is_the_score_of_a_reference_without_the_study():
    """leave_one_out_scores(rule="mahalanobis") gives each study the score a Mahalanobis
    reference fitted on the others gives it, not the max |z| rule's."""
    features = ("l4_l5_entropy", "l5_s1_entropy")  # neither on a log scale nor one-sided
    rng = np.random.default_rng(9)
    a = rng.normal(9, 1, 12)
    x = np.column_stack([a, a + rng.normal(0, 0.2, 12)])
    x[0] = [10.5, 7.5]  # against the correlation: far by Mahalanobis, not by max |z|
    loo = leave_one_out_scores(x, "mahalanobis", np.array([False, False]))
    without = fit_reference(x[1:], SHA_A, features=features, rule="mahalanobis")
    assert loo[0] == pytest.approx(without.combine(x[:1])[0][0])
    assert loo[0] > 2 * leave_one_out_scores(x)[0]


def test_fit_reference_refusals_and_boundaries_word_for_word(caplog):
    import logging

    from lstv.errors import UsageError

    raw = normal_features(np.random.default_rng(10), 20)
    with pytest.raises(ValueError) as caught:
        fit_reference(raw[:, :3], SHA_A)
    assert str(caught.value) == "expected (10) feature columns, got shape (20, 3)"
    for bad in (0.0, 1.5):
        with pytest.raises(UsageError) as caught:
            fit_reference(raw, SHA_A, target_specificity=bad)
        assert str(caught.value) == f"target specificity must be in (0, 1], got {bad}"
    with pytest.raises(UsageError) as caught:
        fit_reference(raw, SHA_A, rule="bogus")
    assert str(caught.value) == "rule must be one of ('max_abs_z', 'mahalanobis'), got 'bogus'"
    # Specificity 1 is the largest cross-fitted score; 3 studies are enough; 20 give no warning.
    with caplog.at_level(logging.WARNING, logger="lstv.score"):
        whole = fit_reference(raw, SHA_A, target_specificity=1.0)
        assert not caplog.records
        fit_reference(raw[:19], SHA_A)
    assert [r.getMessage() for r in caplog.records] == [
        "only 19 reference studies: the medians and spreads will be rough (20 or more are better)"
    ]
    assert whole.threshold == fit_reference(raw, SHA_A).threshold
    assert whole.reference_studies == "" and fit_reference(raw[:3], SHA_A).n == 3


def test_cross_fitted_scores_leave_the_study_out_and_keep_one_sided_features_one_sided():
    rng = np.random.default_rng(11)
    a = rng.normal(9, 1, 12)
    x = np.column_stack([a, a + rng.normal(0, 0.2, 12)])
    centre, scale, _ = zip(*(robust_location_scale(x[1:, j]) for j in range(2)), strict=True)
    assert leave_one_out_scores(x)[0] == pytest.approx(
        np.max(np.abs((x[0] - np.array(centre)) / np.array(scale)))
    )
    x[1] = [5.0, 5.0]  # far below on both: no finding where only a rise is unusual
    one_sided = leave_one_out_scores(x, "mahalanobis", np.array([True, True]))
    two_sided = leave_one_out_scores(x, "mahalanobis", np.array([False, False]))
    assert one_sided[1] < 1 < two_sided[1]


def test_a_mahalanobis_threshold_is_cross_fitted_with_its_one_sided_features():
    """The flag threshold (specificity None) is the largest cross-fitted score, with the
    one-sided features one-sided there too: a study far below on one is no outlier."""
    features = ("l5_s1_para_shift_mm", "l5_s1_entropy")  # one-sided, two-sided; no log scale
    rng = np.random.default_rng(12)
    raw = np.column_stack([rng.normal(10, 1, 14), rng.normal(9, 1, 14)])
    raw[0, 0] = 10 - 10.0  # far below where only a rise is unusual
    raw[1, 1] = 9 - 2.5  # below where both ways are unusual
    ref = fit_reference(raw, SHA_A, features=features, rule="mahalanobis")
    assert ref.one_sided == ("l5_s1_para_shift_mm",)
    loo = leave_one_out_scores(raw, "mahalanobis", np.array([True, False]))
    assert ref.threshold == pytest.approx(loo.max())
    assert int(np.argmax(loo)) != 0
    assert loo.max() < leave_one_out_scores(raw, "mahalanobis", np.array([False, False])).max()


def test_fit_reference_records_its_threshold_rule_and_provenance():
    raw = normal_features(np.random.default_rng(13), 20)
    ref = fit_reference(
        raw, SHA_A, target_specificity=0.9, reference_studies="20 normal", extra={"src": "a.csv"}
    )
    assert ref.threshold_rule == (
        "quantile 0.9 of the reference studies' leave-one-out scores (target specificity 0.9: "
        "about 10% of normal studies like these go to review by design)"
    )
    assert (ref.target_specificity, ref.reference_studies, ref.extra) == (
        0.9,
        "20 normal",
        {"src": "a.csv"},
    )
    assert fit_reference(raw, SHA_A).threshold_rule == (
        "leave-one-out maximum of the reference studies' scores"
    )


def test_no_finite_value_is_a_clear_error():
    from lstv.errors import UsageError

    with pytest.raises(UsageError) as caught:
        robust_location_scale([math.nan, math.inf])
    assert str(caught.value) == "no finite value to fit a median and spread on"

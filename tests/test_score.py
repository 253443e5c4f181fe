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


# --------------------------------------------------------------------------- score v2


def _column_points(spacings=(36.0, 36.0, 36.0, 36.0), tilts=(0.0, 0.0, 0.0, 0.0)):
    """LPS points (x, y, z) of five discs down a column: each step ``spacing`` mm at ``tilt``
    degrees from straight down (positive posterior, +y), as on a sagittal slice."""
    from lstv.levels import LEVEL_KEYS

    q = np.zeros(2)
    points = {LEVEL_KEYS[0]: (0.0, 0.0, 0.0)}
    for key, s, a in zip(LEVEL_KEYS[1:], spacings, tilts, strict=True):
        q = q + s * np.array([math.sin(math.radians(a)), math.cos(math.radians(a))])
        points[key] = (0.0, float(q[0]), -float(q[1]))
    return points


def test_geometry_features_from_the_five_points():
    from lstv.score import geometry_features

    straight = geometry_features(_column_points())
    assert straight["l5_s1_spacing_ratio"] == pytest.approx(1.0)
    assert straight["l4_l5_bend_deg"] == pytest.approx(0.0, abs=1e-9)
    assert straight["l5_s1_along"] == pytest.approx(1.0)
    assert straight["l5_s1_across"] == pytest.approx(0.0, abs=1e-9)
    short = geometry_features(_column_points((36, 36, 36, 15), (0, 0, 10, 40)))
    assert short["l5_s1_spacing_ratio"] == pytest.approx(15 / 36)
    assert short["l4_l5_bend_deg"] == pytest.approx(30.0)
    assert short["l5_s1_across"] > 0  # the lower segment leans posteriorly
    missing = geometry_features({**_column_points(), "l5_s1": None})
    assert all(math.isnan(v) for v in missing.values())


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


@pytest.mark.slow  # over 10 s on the shared 2-core machine
def test_reason_in_a_radiologists_words_with_the_normal_range():
    from lstv.score import GEOMETRY_FEATURES, explain

    rng = np.random.default_rng(6)
    raw = np.column_stack([rng.normal(0.91, 0.08, 60), rng.normal(5, 4, 60)])
    features = (GEOMETRY_FEATURES[0], GEOMETRY_FEATURES[1])
    ref = fit_reference(raw, SHA_A, features=features, rule="mahalanobis")
    lo, hi = ref.normal_range["l5_s1_spacing_ratio"]
    text = explain("l5_s1_spacing_ratio", 0.41, ref)
    assert text == (
        f"L5/S1 disc space 41% of the mean spacing above it; normal {100 * lo:.0f}-"
        f"{100 * hi:.0f}%"
    )
    assert "z =" not in explain("l4_l5_bend_deg", 25.0, ref)


@pytest.mark.slow  # a MinCovDet fit per left-out study
def test_an_unflagged_study_s_reason_says_it_is_within_normal_limits():
    """A reason names the driver of every score; for a study under the flag it is no finding,
    and the words must not read as one ("the localizer is unsure ..." on a normal study)."""
    from lstv.score import score_rows

    raw = normal_features(np.random.default_rng(8), 60)
    ref = fit_reference(raw, SHA_A, rule="mahalanobis")
    study = np.median(raw, axis=0)
    far = study.copy()
    far[FEATURES.index("l5_s1_peak2")] = 0.9
    typical, flagged = score_rows(rows_from(np.vstack([study, far])), ref)
    assert not typical["lstv_score_flag"] and flagged["lstv_score_flag"]
    assert typical["lstv_score_reason"].startswith("Within normal limits; closest to a flag: ")
    assert not flagged["lstv_score_reason"].startswith("Within normal limits")


def test_a_version_1_reference_still_loads_and_scores_as_before(tmp_path):
    """A reference written before score v2 (version 1: no rule, ranges or covariance) keeps
    the largest two-sided |z|, its driver and its words."""
    raw = normal_features(np.random.default_rng(7), 50)
    new = fit_reference(raw, SHA_A)  # max |z| on the ten map features, as version 1 did
    old = new.to_dict()
    for key in ("rule", "one_sided", "location", "covariance", "normal_range"):
        old.pop(key)
    old["version"] = 1
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(old))
    ref = read_reference(path)
    assert ref.rule == "max_abs_z" and not ref.normal_range
    studies = np.vstack([np.median(raw, axis=0), raw[:5] * 1.5])
    z = ref.z_scores(studies)
    score, drivers, _ = ref.score(studies)
    np.testing.assert_allclose(score, np.abs(z).max(axis=1))
    assert drivers == [FEATURES[i] for i in np.abs(z).argmax(axis=1)]
    rows = score_rows(rows_from(studies), ref)
    assert all("z = " in r["lstv_score_reason"] for r in rows)


def test_drift_check_fires_on_a_shifted_set_and_stays_silent_on_a_like_one():
    from lstv.score import drift_check

    rng = np.random.default_rng(8)
    ref = fit_reference(normal_features(rng, 40), SHA_A)
    like = drift_check(ref, normal_features(rng, 100))
    assert like["drift"] is False and like["features"] == {}
    shifted = normal_features(rng, 100)
    j = FEATURES.index("l5_s1_entropy")
    shifted[:, j] += 3 * ref.scale["l5_s1_entropy"]  # another scanner's maps
    found = drift_check(ref, shifted)
    assert found["drift"] is True and list(found["features"]) == ["l5_s1_entropy"]
    assert "lstv calibrate" in found["note"]
    assert drift_check(ref, shifted[:5])["drift"] is None


# --- a reference validated completely at load (issue 17.3, 17.4) ------------------------------


def _reference_json(tmp_path) -> dict:
    raw = normal_features(np.random.default_rng(4), 25)
    return json.loads(fit_reference(raw, SHA_A).save(tmp_path / "good.json").read_text())


def _with(data: dict, path: str, value) -> dict:
    """A copy of ``data`` with the field at ``path`` ("scale.l5_s1_peak2") set to ``value``."""
    data = json.loads(json.dumps(data))
    *parents, last = path.split(".")
    target = data
    for key in parents:
        target = target[key]
    target[last] = value
    return data


BAD_REFERENCES = [
    # (field, value, what the message says) -- 17.3: each crashed or failed every study
    ("threshold", "5.0", "threshold.*not a number"),
    ("threshold", 10**400, "threshold.*not a finite number"),
    ("threshold", True, "threshold.*not a number"),
    ("threshold", None, "threshold.*not a number"),
    ("log_offset", "x", "log_offset.*not a number"),
    ("log_features", 5, "log_features.*list of feature names"),
    ("log_features", ["l5_s1_nonsense"], "log_features.*not among its features"),
    ("features", [], "features.*empty"),
    ("features", "l5_s1_peak2", "features.*list of feature names"),
    ("features", ["l5_s1_peak2", "l5_s1_nonsense"], "features.*unknown feature 'l5_s1_nonsense'"),
    ("features", ["l5_s1_peak2", "l5_s1_peak2"], "features.*twice"),
    ("centre", {}, "centre.*no value for l4_l5_entropy"),
    ("centre.l5_s1_peak2", "1", "centre.*l5_s1_peak2.*not a number"),
    ("centre.l5_s1_peak2", float("nan"), "centre.*l5_s1_peak2.*not a finite number"),
    ("scale.l5_s1_peak2", -1.0, "scale.*l5_s1_peak2.*positive scale"),
    ("n", 0, "n.*whole number of studies"),
    ("n", 2.5, "n.*whole number of studies"),
    ("target_specificity", 2, "target_specificity.*between 0 and 1"),
    ("checkpoint_sha256", 5, "checkpoint_sha256.*text"),
    # 17.4: accepted, then wrong scores without a word
    ("threshold", -5, "threshold.*below 0: every study would be flagged"),
    ("scale.l5_s1_peak2", float("inf"), "scale.*l5_s1_peak2.*not a finite number"),
    ("scale.l5_s1_peak2", 1e-320, "scale.*l5_s1_peak2.*too small"),
    ("log_offset", -1, "log_offset.*positive"),
    ("log_offset", 0, "log_offset.*positive"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD_REFERENCES)
def test_a_bad_reference_is_refused_at_load_naming_file_and_field(tmp_path, field, value, message):
    data = _with(_reference_json(tmp_path), field, value)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"bad.json.*{message}") as caught:
        read_reference(path)
    assert f"'{field.split('.')[0]}'" in str(caught.value)  # the field, by name


def test_deep_nesting_and_huge_numbers_are_a_clear_error(tmp_path):
    """17.3: 200,000 nested '[' was a RecursionError traceback."""
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ValueError, match="deep.json is not valid JSON.*nested too deeply"):
        read_reference(path)
    path.write_text('{"format": "lstv-score-reference", "version": 1, "n": ' + "9" * 5000 + "}")
    with pytest.raises(ValueError, match="deep.json"):
        read_reference(path)


def test_a_good_reference_still_loads_and_scores(tmp_path):
    data = _reference_json(tmp_path)
    ref = read_reference(tmp_path / "good.json")
    assert ref.to_dict() == data


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rule", "median", "rule.*not one of max_abs_z, mahalanobis"),
        ("covariance", [[1.0]], "covariance.*not a 3 x 3 matrix"),
        ("covariance", [[1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]], "covariance.*positive definite"),
        ("location", {}, "location.*no value for"),
        ("normal_range.l5_s1_peak2", [0.5, 0.1], "normal_range.*l5_s1_peak2: low"),
        ("one_sided", ["l4_l5_entropy"], "one_sided.*not among its features"),
    ],
)
def test_score_v2_fields_are_validated_by_the_same_function(tmp_path, field, value, message):
    raw = normal_features(np.random.default_rng(4), 40)
    from lstv.score import V2_FEATURES

    columns = [FEATURES.index(f) for f in V2_FEATURES]
    ref = fit_reference(raw[:, columns], SHA_A, features=V2_FEATURES, rule="mahalanobis")
    data = _with(json.loads(ref.save(tmp_path / "v2.json").read_text()), field, value)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"bad.json: field .*{message}"):
        read_reference(tmp_path / "bad.json")
    assert read_reference(tmp_path / "v2.json") == ref

"""The score's reference (lstv.score_reference): its JSON file round trip, version 1 files, and
every field checked at load (issue 17.3, 17.4)."""

import json
import math

import numpy as np
import pytest

from helpers import SHA_A, normal_features, rows_from
from lstv.score import V2_FEATURES, fit_reference, score_rows
from lstv.score_features import FEATURES
from lstv.score_reference import read_reference


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
    columns = [FEATURES.index(f) for f in V2_FEATURES]
    ref = fit_reference(raw[:, columns], SHA_A, features=V2_FEATURES, rule="mahalanobis")
    data = _with(json.loads(ref.save(tmp_path / "v2.json").read_text()), field, value)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"bad.json: field .*{message}"):
        read_reference(tmp_path / "bad.json")
    assert read_reference(tmp_path / "v2.json") == ref


def _hand_reference(**changes):
    """A hand-set two-feature reference: l5_s1_entropy as it is, l5_s1_peak2 on the log scale."""
    from lstv.score_reference import Reference

    names = ("l5_s1_entropy", "l5_s1_peak2")
    fields = dict(
        checkpoint_sha256=SHA_A,
        features=names,
        log_features=("l5_s1_peak2",),
        centre={"l5_s1_entropy": 9.5, "l5_s1_peak2": math.log(0.04)},
        scale={"l5_s1_entropy": 0.5, "l5_s1_peak2": 0.5},
        scale_rule=dict.fromkeys(names, "mad"),
        n=40,
        threshold=3.0,
        threshold_rule="fixed",
    )
    return Reference(**{**fields, **changes})


def test_max_abs_takes_the_largest_finite_magnitude_and_its_column():
    from lstv.score_reference import max_abs

    z = np.array([[1.0, -3.0, np.nan], [np.nan, np.inf, np.nan], [2.0, 2.0, -0.5]])
    best, idx = max_abs(z)
    np.testing.assert_array_equal(best, [3.0, np.nan, 2.0])
    assert idx.tolist() == [1, -1, 0]


def test_mahalanobis_over_the_known_features_with_one_sided_ones_clipped_at_the_location():
    from lstv.score_reference import mahalanobis

    # Covariance [[4, 1], [1, 1]]: its inverse is [[1, -1], [-1, 4]] / 3, so d = (2, 3) has
    # contributions (-2/3, 10) and distance sqrt(28/3); the second feature is one-sided.
    x = np.array([[3.0, 4.0], [3.0, -5.0], [np.nan, 3.0], [np.nan, np.nan]])
    location, covariance = np.array([1.0, 1.0]), np.array([[4.0, 1.0], [1.0, 1.0]])
    scores, drivers = mahalanobis(x, location, covariance, np.array([False, True]))
    # Row 2: the second feature is below its location (one-sided: counts as at it), so
    # d = (2, 0) and d P d = 4/3. Row 3: only the second feature is known, its variance 1.
    np.testing.assert_allclose(scores[:3], [math.sqrt(28 / 3), math.sqrt(4 / 3), 2.0], rtol=1e-12)
    assert math.isnan(scores[3])
    assert drivers.tolist() == [1, 0, 1, -1]
    assert x[1, 1] == -5.0  # the caller's array is left as it was
    # a study with no known feature first: the studies after it are still scored
    again, _ = mahalanobis(x[::-1].copy(), location, covariance, np.array([False, True]))
    np.testing.assert_allclose(again[::-1], scores, rtol=0)


def test_transform_z_scores_score_and_normal_value_of_a_hand_set_reference():
    ref = _hand_reference()
    # Entropy 11.0 is exactly 3.0 SDs, the threshold (not above it); peak2 -1.0 is read as 0
    # (log of 1e-4); 0.04 * e^3 - 1e-4 is 6 SDs on the log scale.
    raw = np.array([[11.0, 0.04], [9.5, -1.0], [np.nan, np.nan], [9.5, 0.04 * math.exp(3) - 1e-4]])
    x = ref.transform(raw)
    assert raw[1, 1] == -1.0  # transformed on a copy
    # integer counts are transformed as numbers, not truncated back to integers
    assert ref.transform(np.array([[10, 1]])).tolist() == [[10.0, math.log(1 + 1e-4)]]
    np.testing.assert_allclose(
        x[[0, 1, 3], 1], [math.log(0.04 + 1e-4), math.log(1e-4), 3 + math.log(0.04)]
    )
    z = ref.z_scores(raw)
    assert z[0].tolist() == [3.0, pytest.approx((math.log(0.0401) - math.log(0.04)) / 0.5)]
    assert z[1, 1] == pytest.approx((math.log(1e-4) - math.log(0.04)) / 0.5)
    assert z[3, 1] == pytest.approx(6.0)
    score, drivers, flag = ref.score(raw)
    assert score[0] == 3.0 and score[3] == pytest.approx(6.0) and math.isnan(score[2])
    assert drivers == ["l5_s1_entropy", "l5_s1_peak2", "", "l5_s1_peak2"]
    assert flag.tolist() == [False, True, False, True]
    assert ref.normal_value("l5_s1_entropy") == 9.5
    assert ref.normal_value("l5_s1_peak2") == pytest.approx(0.04 - 1e-4, rel=1e-12)


def test_what_is_not_a_readable_reference_is_refused_word_for_word(tmp_path):
    from lstv.errors import UsageError
    from lstv.score_reference import Reference

    with pytest.raises(UsageError) as caught:
        Reference.from_dict(["not", "a", "dict"], "reference r.json")
    assert str(caught.value) == (
        "reference r.json is not an LSTV score reference (written by lstv calibrate)"
    )
    with pytest.raises(UsageError) as caught:
        Reference.from_dict({"format": "lstv-score-referenc"})  # named "reference" by default
    assert str(caught.value) == (
        "reference is not an LSTV score reference (written by lstv calibrate)"
    )
    data = _hand_reference().to_dict()
    with pytest.raises(UsageError) as caught:
        Reference.from_dict({**data, "version": 3}, "reference r.json")
    assert str(caught.value) == (
        "reference r.json is reference version 3; this lstv reads versions 1, 2: fit it again "
        "with lstv calibrate"
    )
    path = tmp_path / "r.json"
    with pytest.raises(FileNotFoundError) as caught:
        read_reference(path)
    assert str(caught.value) == f"reference not found: {path}"
    path.write_text("{")
    with pytest.raises(UsageError) as caught:
        read_reference(path)
    assert str(caught.value) == (
        f"reference {path} is not valid JSON: Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1)"
    )


def test_a_references_unknown_keys_are_kept_and_written_back():
    from lstv.score_reference import Reference

    data = {**_hand_reference().to_dict(), "labels": "confirmed normal", "extra": {"site": 3}}
    ref = Reference.from_dict(data, "reference r.json")
    assert ref.extra == {"labels": "confirmed normal", "extra": {"site": 3}}
    assert ref.features == ("l5_s1_entropy", "l5_s1_peak2")
    assert ref.log_features == ("l5_s1_peak2",) and ref.one_sided == ()
    assert ref.to_dict() == data
    assert data["format"] == "lstv-score-reference" and data["version"] == 2


def test_a_reference_of_another_or_no_checkpoint_is_refused_word_for_word():
    from lstv.errors import UsageError
    from lstv.score_reference import check_checkpoint

    check_checkpoint(_hand_reference(), SHA_A, "reference r.json")  # its own: accepted
    with pytest.raises(UsageError) as caught:
        check_checkpoint(_hand_reference(checkpoint_sha256=None), SHA_A, "reference r.json")
    assert str(caught.value) == (
        "reference r.json names no checkpoint SHA-256: fit it again with lstv calibrate"
    )
    with pytest.raises(UsageError) as caught:
        check_checkpoint(_hand_reference(), "b" * 64, "reference r.json")
    assert str(caught.value) == (
        f"reference r.json was fitted on checkpoint SHA-256 {SHA_A}, but these maps come from "
        f"checkpoint SHA-256 {'b' * 64}: a reference holds only for its own checkpoint; fit "
        "one with lstv calibrate on this checkpoint's normal studies"
    )


def test_a_mahalanobis_reference_scores_by_its_location_covariance_and_one_sided_features():
    ref = _hand_reference(
        log_features=(),
        rule="mahalanobis",
        one_sided=("l5_s1_peak2",),
        location={"l5_s1_entropy": 9.5, "l5_s1_peak2": 0.04},
        covariance=[[0.25, 0.0], [0.0, 0.01]],
    )
    # Entropy 0.5 below its location is 1 SD (two-sided); peak2 below its location counts as
    # at it (one-sided); peak2 0.06 above is 0.6 SD.
    raw = np.array([[9.0, 0.04], [9.5, 0.0], [9.5, 0.1]])
    score, drivers, flag = ref.score(raw)
    np.testing.assert_allclose(score, [1.0, 0.0, 0.6], atol=1e-12)
    assert drivers == ["l5_s1_entropy", "l5_s1_entropy", "l5_s1_peak2"]
    assert not flag.any()


def test_a_reference_without_acquisition_loads_writes_and_scores_exactly_as_before(tmp_path):
    """A reference fitted before the acquisition descriptors lacks the field: it loads, writes
    back byte for byte the same keys (no empty 'acquisition' added), scores as it did, and its
    drift check says once that the acquisition part cannot run."""
    from dataclasses import replace

    from lstv.score_drift import NO_ACQUISITION, check_run

    raw = normal_features(np.random.default_rng(4), 40)
    old = fit_reference(raw, SHA_A)
    data = json.loads(old.save(tmp_path / "old.json").read_text())
    assert "acquisition" not in data
    ref = read_reference(tmp_path / "old.json")
    assert ref.acquisition == {} and ref.to_dict() == data
    np.testing.assert_array_equal(ref.score(raw)[0], old.score(raw)[0])
    assert check_run(ref, rows_from(raw))["acquisition"]["note"] == NO_ACQUISITION
    # a current one records it and reads it back
    fitted = {"n": 40, "descriptors": {"acq_noise": {"centre": 0.05, "spread": 0.01, "n": 40}}}
    new = replace(old, acquisition=fitted)
    assert read_reference(new.save(tmp_path / "new.json")).acquisition == fitted

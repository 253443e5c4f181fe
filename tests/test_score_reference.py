"""The score's reference (lstv.score_reference): its JSON file round trip, version 1 files, and
every field checked at load (issue 17.3, 17.4)."""

import json

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

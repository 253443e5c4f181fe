"""What a score reference's JSON must hold (lstv.score_check), checked field by field with a
small vocabulary: each check, the order (features first), and the message's shape."""

import json

import pytest

from lstv.errors import UsageError
from lstv.score_check import MIN_SCALE, REFERENCE_FIELDS, Vocabulary, check_fields

VOCABULARY = Vocabulary(("a_x", "a_y", "b_x"), ("max_abs_z", "mahalanobis"), frozenset({"n"}))


def reference(**changes) -> dict:
    data = {
        "features": ["a_x", "a_y"],
        "log_features": ["a_y"],
        "centre": {"a_x": 0.0, "a_y": 1.0},
        "scale": {"a_x": 1.0, "a_y": 2.0},
        "n": 40,
        "threshold": 3.0,
        "log_offset": 1e-4,
        "rule": "mahalanobis",
        "location": {"a_x": 0.0, "a_y": 1.0},
        "covariance": [[1.0, 0.2], [0.2, 1.0]],
        "normal_range": {"a_x": [-1.0, 1.0]},
    }
    return json.loads(json.dumps({**data, **changes}))


def refused(data) -> str:
    with pytest.raises(UsageError) as caught:
        check_fields(data, "ref.json", VOCABULARY)
    return str(caught.value)


def test_a_good_reference_passes():
    check_fields(reference(), "ref.json", VOCABULARY)
    # with the acquisition a current lstv calibrate records, and with none (an older one's)
    fitted = {"acq_noise": {"centre": 0.05, "spread": 0.01, "n": 40}}
    check_fields(reference(acquisition={"n": 40, "descriptors": fitted}), "ref.json", VOCABULARY)
    check_fields(reference(acquisition={}), "ref.json", VOCABULARY)


def test_a_required_field_missing_is_named():
    data = reference()
    del data["n"]
    assert refused(data) == "ref.json: field 'n' is missing"
    del data["threshold"]  # not required by this vocabulary: absent is fine
    with pytest.raises(UsageError, match="'n'"):
        check_fields(data, "ref.json", VOCABULARY)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"features": ["a_x", "zz"]},
            "field 'features': unknown feature 'zz' (known: a_x, a_y, b_x)",
        ),
        ({"features": ["a_x", "a_x"]}, "field 'features': names a feature twice"),
        ({"features": []}, "field 'features': is empty: a reference scores at least one feature"),
        ({"log_features": ["b_x"]}, "field 'log_features': ['b_x'] are not among its features"),
        ({"centre": {"a_x": 0.0}}, "field 'centre': no value for a_y"),
        ({"centre": {"a_x": "0", "a_y": 1.0}}, "field 'centre': a_x: '0' is not a number"),
        (
            {"scale": {"a_x": 1.0, "a_y": 0.0}},
            "field 'scale': a_y: 0.0 is not a positive scale (spread)",
        ),
        (
            {"scale": {"a_x": 1.0, "a_y": MIN_SCALE / 2}},
            "field 'scale': a_y: 5e-13 is too small a spread (below 1e-12): z overflows",
        ),
        ({"n": True}, "field 'n': True is not a whole number of studies >= 1"),
        (
            {"threshold": -0.5},
            "field 'threshold': -0.5 is below 0: every study would be flagged (scores are >= 0)",
        ),
        ({"threshold": 10**400}, "field 'threshold': a 401-digit number is not a finite number"),
        (
            {"log_offset": 0},
            "field 'log_offset': 0 is not positive: log features would be NaN or -infinity",
        ),
        ({"rule": "sum"}, "field 'rule': 'sum' is not one of max_abs_z, mahalanobis"),
        (
            {"covariance": [[1.0, 2.0], [2.0, 1.0]]},
            "field 'covariance': is not symmetric positive definite",
        ),
        (
            {"covariance": [[1.0]]},
            "field 'covariance': is not a 2 x 2 matrix (one row and column per feature)",
        ),
        (
            {"normal_range": {"a_x": [1.0, -1.0]}},
            "field 'normal_range': a_x: low 1 is above high -1",
        ),
        ({"extra": []}, "field 'extra': [] is not an object"),
        ({"acquisition": []}, "field 'acquisition': [] is not an object"),
        (
            {"acquisition": {"descriptors": {}}},
            "field 'acquisition': n: None is not a whole number of studies >= 1",
        ),
        (
            {"acquisition": {"n": 40, "descriptors": {}}},
            "field 'acquisition': descriptors: {} is not a non-empty object",
        ),
        (
            {"acquisition": {"n": 40, "descriptors": {"acq_iq": {}}}},
            "field 'acquisition': unknown descriptor 'acq_iq' (known: acq_noise, acq_sharpness, "
            "acq_contrast, acq_bias_ratio, acq_pixel_spacing_mm, acq_slice_spacing_mm)",
        ),
        (
            {"acquisition": {"n": 40, "descriptors": {"acq_noise": {"centre": 0.05, "n": 40}}}},
            "field 'acquisition': acq_noise: None is not a number",
        ),
        (
            {
                "acquisition": {
                    "n": 40,
                    "descriptors": {"acq_noise": {"centre": 0.05, "spread": 0.0, "n": 40}},
                }
            },
            "field 'acquisition': acq_noise: 0.0 is not a positive scale (spread)",
        ),
    ],
)
def test_each_bad_field_is_refused_naming_file_field_and_fault(changes, message):
    assert refused(reference(**changes)) == f"ref.json: {message}"


def test_a_scale_at_the_limit_is_kept():
    check_fields(reference(scale={"a_x": 1.0, "a_y": MIN_SCALE}), "ref.json", VOCABULARY)


def test_the_covariance_is_only_a_matrix_for_the_max_abs_z_rule():
    check_fields(reference(rule="max_abs_z", covariance=[]), "ref.json", VOCABULARY)


def test_features_are_checked_first():
    """The other fields are checked against the features: those must be sound first."""
    assert list(REFERENCE_FIELDS)[0] == "features"
    text = refused(reference(features="a_x", centre={}))
    assert "field 'features'" in text

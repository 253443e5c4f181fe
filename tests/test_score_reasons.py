"""A score's reason in words (lstv.score_reasons): the driver, where a second peak is, the
reference's normal value or range."""

import numpy as np
import pytest

from helpers import SHA_A, normal_features
from lstv.score import fit_reference
from lstv.score_features import GEOMETRY_FEATURES
from lstv.score_reasons import describe, explain


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


@pytest.mark.slow  # over 10 s on the shared 2-core machine
def test_reason_in_a_radiologists_words_with_the_normal_range():
    rng = np.random.default_rng(6)
    raw = np.column_stack([rng.normal(0.91, 0.08, 60), rng.normal(5, 4, 60)])
    features = (GEOMETRY_FEATURES[0], GEOMETRY_FEATURES[1])
    ref = fit_reference(raw, SHA_A, features=features, rule="mahalanobis")
    lo, hi = ref.normal_range["l5_s1_spacing_ratio"]
    text = explain("l5_s1_spacing_ratio", 0.41, ref)
    assert text == (
        f"L5/S1 disc space 41% of the mean spacing above it; normal {100 * lo:.0f}-{100 * hi:.0f}%"
    )
    assert "z =" not in explain("l4_l5_bend_deg", 25.0, ref)


def test_parasagittal_reasons_say_beside_the_centre_with_the_normal_range():
    """A reference of the parasagittal features fits (log scale, one-sided as the centre's map
    features) and its reasons say what the slices beside the centre show."""
    from lstv.score_features import PARASAGITTAL_FEATURES

    rng = np.random.default_rng(7)
    raw = np.column_stack(
        [rng.uniform(1e-4, 1e-2, 30), rng.uniform(0.001, 0.1, 30), rng.gamma(2.0, 1.0, 30)]
    )
    features = PARASAGITTAL_FEATURES[2:]
    ref = fit_reference(raw, SHA_A, features=features, rule="mahalanobis")
    assert set(ref.one_sided) == set(features)
    assert set(ref.log_features) == set(features[:2])
    lo, hi = ref.normal_range["l5_s1_para_min_one_minus_confidence"]
    assert explain("l5_s1_para_min_one_minus_confidence", 0.4, ref) == (
        "Beside the centre slice the localizer is unsure where L5/S1 is (lowest peak "
        f"probability 0.600; normal {1 - hi:.3f}-{1 - lo:.3f})"
    )
    # Inside the normal range the words are neutral: an unflagged study quotes its closest
    # feature, and "unsure" at a normal peak read as a finding.
    assert explain("l5_s1_para_min_one_minus_confidence", lo, ref) == (
        f"Beside the centre slice the lowest L5/S1 peak probability is {1 - lo:.3f}; "
        f"normal {1 - hi:.3f}-{1 - lo:.3f}"
    )
    assert explain("l5_s1_para_mean_peak2", 0.8, ref).startswith(
        "Beside the centre slice the L5/S1 map has a second candidate (0.80 of the peak"
    )
    assert explain("l5_s1_para_shift_mm", 23.0, ref).startswith(
        "The L5/S1 point moves 23 mm between the centre slice and the slices beside it; normal"
    )


def test_the_localizer_is_called_unsure_only_outside_the_normal_range():
    rng = np.random.default_rng(3)
    raw = np.column_stack([rng.uniform(1e-4, 1e-2, 40), rng.uniform(0.01, 0.5, 40)])
    features = ("l5_s1_one_minus_confidence", "l5_s1_peak2")
    ref = fit_reference(raw, SHA_A, features=features, rule="mahalanobis")
    lo, hi = ref.normal_range["l5_s1_one_minus_confidence"]
    normal = f"normal {1 - hi:.3f}-{1 - lo:.3f}"
    assert explain("l5_s1_one_minus_confidence", hi, ref) == (
        f"L5/S1 peak probability {1 - hi:.3f}; {normal}"
    )
    assert explain("l5_s1_one_minus_confidence", 0.3, ref) == (
        f"The localizer is unsure where L5/S1 is (peak probability 0.700; {normal})"
    )

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

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


def _hand_reference(normal_range=None):
    """A hand-set reference (no log scale, spread 0.1) so each normal value and z is exact."""
    from lstv.score_reference import Reference

    centre = {
        "l5_s1_entropy": 9.6,
        "l5_s1_one_minus_confidence": 0.0003,
        "l5_s1_peak2": 0.04,
        "l5_s1_mass_out": 0.2,
        "l5_s1_top100_entropy": 3.7,
        "l4_l5_peak2": 0.05,
        "l5_s1_spacing_ratio": 0.91,
    }
    return Reference(
        checkpoint_sha256=SHA_A,
        features=tuple(centre),
        log_features=(),
        centre=centre,
        scale=dict.fromkeys(centre, 0.1),
        scale_rule=dict.fromkeys(centre, "mad"),
        n=40,
        threshold=3.0,
        threshold_rule="fixed",
        normal_range=normal_range or {},
    )


def test_describe_word_for_word_for_each_feature_both_ways():
    ref = _hand_reference()
    below = {"l5_s1_peak2_dx_mm": "1.5", "l5_s1_peak2_dy_mm": "23.2"}
    cases = [
        (
            ("l5_s1_peak2", 0.81, 9.4, below),
            "L5/S1 map has a second peak 23 mm below the first (0.81 of the peak; normal 0.04), "
            "z = +9.4",
        ),
        (
            ("l4_l5_peak2", 0.5, 3.0, {"l4_l5_peak2_dx_mm": "2", "l4_l5_peak2_dy_mm": "-30"}),
            "L4/L5 map has a second peak 30 mm above the first (0.50 of the peak; normal 0.05), "
            "z = +3.0",
        ),
        (
            ("l5_s1_peak2", 0.01, -2.0, below),
            "L5/S1 map has less of a second peak than normal studies (0.01 of the peak; normal "
            "0.04), z = -2.0",
        ),
        (
            ("l5_s1_entropy", 9.9, 3.0, None),
            "L5/S1 map more spread out than normal (entropy 9.90; normal 9.60), z = +3.0",
        ),
        (
            ("l5_s1_entropy", 9.6, 0.0, None),
            "L5/S1 map more concentrated than normal (entropy 9.60; normal 9.60), z = +0.0",
        ),
        (
            ("l5_s1_one_minus_confidence", 0.6, 8.0, None),
            "L5/S1 peak probability lower than normal (0.4000; normal 0.9997), z = +8.0",
        ),
        (
            ("l5_s1_one_minus_confidence", 0.0001, -1.2, None),
            "L5/S1 peak probability higher than normal (0.9999; normal 0.9997), z = -1.2",
        ),
        (
            ("l5_s1_mass_out", 0.45, 5.0, None),
            "More of the L5/S1 map's mass lies outside its main blob than normal (45.0%; normal "
            "20.0%), z = +5.0",
        ),
        (
            ("l5_s1_mass_out", 0.05, -1.5, None),
            "Less of the L5/S1 map's mass lies outside its main blob than normal (5.0%; normal "
            "20.0%), z = -1.5",
        ),
        (
            ("l5_s1_top100_entropy", 4.1, 4.0, None),
            "L5/S1 map's 100 strongest pixels spread over more than one spot (entropy 4.10; "
            "normal 3.70), z = +4.0",
        ),
        (
            ("l5_s1_top100_entropy", 3.5, -2.0, None),
            "L5/S1 map's 100 strongest pixels more concentrated than normal (entropy 3.50; "
            "normal 3.70), z = -2.0",
        ),
        (
            ("l5_s1_spacing_ratio", 0.41, -5.1, None),
            "L5/S1 spacing ratio 0.41 (normal 0.91), z = -5.1",
        ),
    ]
    for (driver, value, z, row), words in cases:
        assert describe(driver, value, z, ref, row) == words


def test_where_the_second_peak_is_from_its_offsets():
    ref = _hand_reference()

    def where(dx, dy):
        row = {"l5_s1_peak2_dx_mm": dx, "l5_s1_peak2_dy_mm": dy}
        text = describe("l5_s1_peak2", 0.5, 4.0, ref, row)
        return text.removeprefix("L5/S1 map has a second peak ").split(" (")[0]

    assert where("40", "-30") == "50 mm from the first"  # mostly sideways: the distance
    assert where("3", "3") == "3 mm below the first"  # as much down as across: below
    assert where("-3", "-3.4") == "3 mm above the first"
    assert where("", "20") == where("20", "nan") == "away from the first"
    assert describe("l5_s1_peak2", 0.5, 4.0, ref).startswith(
        "L5/S1 map has a second peak away from the first ("
    )


def test_explain_without_a_range_uses_describe_with_the_references_z():
    ref = _hand_reference()
    assert explain("l5_s1_entropy", 9.9, ref) == (
        "L5/S1 map more spread out than normal (entropy 9.90; normal 9.60), z = +3.0"
    )
    row = {"l5_s1_peak2_dx_mm": "0", "l5_s1_peak2_dy_mm": "12"}
    assert explain("l5_s1_peak2", 0.34, ref, row) == (
        "L5/S1 map has a second peak 12 mm below the first (0.34 of the peak; normal 0.04), "
        "z = +3.0"
    )


def test_explain_word_for_word_with_the_normal_range():
    ranges = {
        "l5_s1_spacing_ratio": [0.78, 1.04],
        "l4_l5_bend_deg": [-5.0, 12.0],
        "l5_s1_along": [0.8, 1.1],
        "l5_s1_across": [-0.1, 0.1],
        "l5_s1_one_minus_confidence": [0.001, 0.05],
        "l4_l5_para_min_one_minus_confidence": [0.001, 0.05],
        "l5_s1_para_mean_peak2": [0.01, 0.2],
        "l5_s1_para_shift_mm": [1.0, 6.0],
        "l5_s1_peak2": [0.01, 0.1],
        "l5_s1_mass_out": [0.1, 0.3],
        "l5_s1_entropy": [9.5, 9.7],
        "l5_s1_top100_entropy": [3.6, 3.8],
    }
    ref = _hand_reference(ranges)
    row = {"l5_s1_peak2_dx_mm": "1.5", "l5_s1_peak2_dy_mm": "23.2"}
    cases = [
        (
            ("l5_s1_spacing_ratio", 0.41),
            "L5/S1 disc space 41% of the mean spacing above it; normal 78-104%",
        ),
        (
            ("l4_l5_bend_deg", 25.0),
            "The column bends +25 degrees at L4/L5 (L3/L4 -> L4/L5 against L4/L5 -> L5/S1); "
            "normal -5 to +12",
        ),
        (
            ("l5_s1_along", 1.3),
            "L5/S1 lies 130% of the L3/L4-L4/L5 spacing below L4/L5; normal 80-110%",
        ),
        (
            ("l5_s1_across", 0.2),
            "L5/S1 sits 20% of a level posterior to the L3/L4-L4/L5 line; normal -10% to +10% "
            "(positive: posterior)",
        ),
        (
            ("l5_s1_across", 0.0),
            "L5/S1 sits 0% of a level anterior to the L3/L4-L4/L5 line; normal -10% to +10% "
            "(positive: posterior)",
        ),
        (
            ("l5_s1_across", -0.3),
            "L5/S1 sits 30% of a level anterior to the L3/L4-L4/L5 line; normal -10% to +10% "
            "(positive: posterior)",
        ),
        (("l5_s1_one_minus_confidence", 0.05), "L5/S1 peak probability 0.950; normal 0.950-0.999"),
        (
            ("l5_s1_one_minus_confidence", 0.3),
            "The localizer is unsure where L5/S1 is (peak probability 0.700; normal 0.950-0.999)",
        ),
        (
            ("l4_l5_para_min_one_minus_confidence", 0.05),
            "Beside the centre slice the lowest L4/L5 peak probability is 0.950; normal "
            "0.950-0.999",
        ),
        (
            ("l4_l5_para_min_one_minus_confidence", 0.3),
            "Beside the centre slice the localizer is unsure where L4/L5 is (lowest peak "
            "probability 0.700; normal 0.950-0.999)",
        ),
        (
            ("l5_s1_para_mean_peak2", 0.8),
            "Beside the centre slice the L5/S1 map has a second candidate (0.80 of the peak on "
            "average; normal 0.01-0.20)",
        ),
        (
            ("l5_s1_para_shift_mm", 23.0),
            "The L5/S1 point moves 23 mm between the centre slice and the slices beside it; "
            "normal 1-6 mm",
        ),
        (
            ("l5_s1_peak2", 0.81),
            "The L5/S1 map has a second candidate 23 mm below the first (0.81 of the peak; normal "
            "0.01-0.10)",
        ),
        (
            ("l5_s1_mass_out", 0.45),
            "45% of the L5/S1 map lies outside its main spot; normal 10-30%",
        ),
        (
            ("l5_s1_entropy", 9.9),
            "The L5/S1 map more spread out than normal (entropy 9.90; normal 9.50-9.70)",
        ),
        (
            ("l5_s1_entropy", 9.3),
            "The L5/S1 map more concentrated than normal (entropy 9.30; normal 9.50-9.70)",
        ),
        (("l5_s1_entropy", 9.7), "The L5/S1 map as than normal (entropy 9.70; normal 9.50-9.70)"),
        (("l5_s1_entropy", 9.5), "The L5/S1 map as than normal (entropy 9.50; normal 9.50-9.70)"),
        (
            ("l5_s1_top100_entropy", 4.1),
            "The L5/S1 map's 100 strongest pixels more spread out than normal (entropy 4.10; "
            "normal 3.60-3.80)",
        ),
    ]
    for (driver, value), words in cases:
        assert explain(driver, value, ref, row) == words


def test_percentages_and_directions_where_a_slip_of_one_would_show():
    """Values whose percentages round differently at 101 x than at 100 x, a z between 0 and 1
    and a second peak less than 1 mm below (the exact tests above use values where such slips
    happen to round alike).

    Mutants: ``101 * value`` (or ``lo``, ``hi``) in the spacing, across and mass-out words,
    ``high = z > 1``, ``'below' if dy > 1``, and ``feature.replace`` mangled in the words of a
    feature with none of its own all fail; without them: passes."""
    ranges = {
        "l5_s1_spacing_ratio": [0.78, 1.04],
        "l5_s1_across": [-0.7, 0.9],
        "l5_s1_mass_out": [0.7, 0.9],
        "l4_l5_disc_height": [0.4, 0.6],  # a feature without words of its own
    }
    ref = _hand_reference(ranges)
    assert explain("l5_s1_spacing_ratio", 0.98, ref) == (
        "L5/S1 disc space 98% of the mean spacing above it; normal 78-104%"
    )
    assert explain("l5_s1_across", 0.7, ref) == (
        "L5/S1 sits 70% of a level posterior to the L3/L4-L4/L5 line; normal -70% to +90% "
        "(positive: posterior)"
    )
    assert explain("l5_s1_mass_out", 0.95, ref) == (
        "95% of the L5/S1 map lies outside its main spot; normal 70-90%"
    )
    assert explain("l4_l5_disc_height", 0.5, ref) == "L4/L5 disc height 0.5; normal 0.4-0.6"
    assert describe("l5_s1_entropy", 9.65, 0.5, ref) == (
        "L5/S1 map more spread out than normal (entropy 9.65; normal 9.60), z = +0.5"
    )
    row = {"l5_s1_peak2_dx_mm": "0", "l5_s1_peak2_dy_mm": "0.6"}
    assert describe("l5_s1_peak2", 0.5, 4.0, ref, row).startswith(
        "L5/S1 map has a second peak 1 mm below the first ("
    )

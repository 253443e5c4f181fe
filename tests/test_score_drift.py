"""The drift check (lstv.score_drift): a run's feature medians against its reference's."""

import numpy as np
import pytest

from helpers import SHA_A, normal_features
from lstv.score import fit_reference
from lstv.score_drift import drift_check
from lstv.score_features import FEATURES


def test_drift_check_fires_on_a_shifted_set_and_stays_silent_on_a_like_one():
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


A, B, C, D = "l5_s1_peak2", "l4_l5_entropy", "l5_s1_entropy", "l4_l5_mass_out"


def _reference(centre=0.0, scale=2.0):
    """A hand-set reference over four features (no log), so every shift is known exactly."""
    from lstv.score_reference import Reference

    names = (A, B, C, D)
    return Reference(
        checkpoint_sha256=SHA_A,
        features=names,
        log_features=(),
        centre=dict.fromkeys(names, centre),
        scale=dict.fromkeys(names, scale),
        scale_rule=dict.fromkeys(names, "mad"),
        n=40,
        threshold=4.0,
        threshold_rule="fixed",
    )


def _rows(n, values):
    """``n`` studies, each feature's column constant at its value (its median, exactly)."""
    return np.tile(np.asarray(values, dtype=float), (n, 1))


def test_drift_check_reports_the_three_largest_shifts_rounded_in_its_note_word_for_word():
    # Shifts (median - centre) / scale: A +2.0, B -2.5, C +3.137, D +4.0 over 16 studies.
    # The note's order is by |shift| (not the features' order, nor by name), at most three.
    result = drift_check(_reference(1.0, 2.0), _rows(16, [5.0, -4.0, 7.274, 9.0]))
    assert result["drift"] is True and result["n"] == 16
    shifts = [result["features"][f]["median_shift_sd"] for f in (A, B, C, D)]
    assert shifts == [2.0, -2.5, 3.14, 4.0]
    assert all(0 <= v["p_adjusted"] < 1e-9 for v in result["features"].values())
    assert result["note"] == (
        "these 16 studies sit far from the reference's normal studies (l4_l5_mass_out median "
        "+4.0 SD, l5_s1_entropy median +3.1 SD, l4_l5_entropy median -2.5 SD): the reference "
        "may come from another scanner, protocol or population, and its flag rate will not "
        "hold; run lstv calibrate on confirmed normal studies of this set"
    )


def test_a_shift_of_exactly_half_an_sd_drifts_and_a_smaller_one_does_not():
    # 100 studies: A's shift is exactly DRIFT_MIN_SHIFT (0.5), z = 0.5 * 10 / 1.2533, and its
    # Bonferroni p over 4 features is 4 * 2 * P(Z > z) = 2.64886825e-4 (scipy.stats.norm.sf);
    # B's shift of 0.49 is as significant but too small to be worth a word.
    result = drift_check(_reference(), _rows(100, [1.0, 0.98, 0.0, 0.0]))
    assert result["drift"] is True and result["n"] == 100
    assert list(result["features"]) == [A]
    assert result["features"][A]["median_shift_sd"] == 0.5
    assert result["features"][A]["p_adjusted"] == pytest.approx(2.6488682522359794e-4, rel=1e-9)
    assert "(l5_s1_peak2 median +0.5 SD)" in result["note"]


def test_a_large_shift_that_is_not_significant_does_not_drift():
    # 10 studies, A shifted 0.6 SD: z = 0.6 * sqrt(10) / 1.2533 = 1.51, p * 4 features > 0.5.
    result = drift_check(_reference(), _rows(10, [1.2, 0.0, 0.0, 0.0]))
    assert result == {
        "drift": False,
        "n": 10,
        "features": {},
        "note": "feature medians of 10 studies are like the reference's",
    }


def test_ten_studies_are_tested_even_after_a_feature_with_fewer_known_values():
    # A has 9 known values (one NaN): skipped; B, after it, has all 10 and is 3 SDs off.
    raw = _rows(10, [0.0, 6.0, 0.0, 0.0])
    raw[0, 0] = np.nan
    result = drift_check(_reference(), raw)
    assert result["drift"] is True and result["n"] == 10
    assert list(result["features"]) == [B]
    assert result["features"][B]["median_shift_sd"] == 3.0


def test_fewer_than_ten_studies_or_none_known_are_not_tested():
    too_few = {"drift": None, "features": {}, "note": "too few studies to test"}
    assert drift_check(_reference(), _rows(9, [6.0, 6.0, 6.0, 6.0])) == {**too_few, "n": 9}
    assert drift_check(_reference(), _rows(3, [np.nan] * 4)) == {**too_few, "n": 0}


# --------------------------------------------------------------------------- acquisition

NOISE, SHARP = "acq_noise", "acq_sharpness"


def _acquisition(n_ref=40):
    """A reference's acquisition: noise centred at 0.05 (spread 0.01), sharpness at 2.7 (0.1)."""
    return {
        "n": n_ref,
        "descriptors": {
            NOISE: {"centre": 0.05, "spread": 0.01, "n": n_ref},
            SHARP: {"centre": 2.7, "spread": 0.1, "n": n_ref},
        },
    }


def _descriptors(n, noise, sharp):
    from lstv.acquisition import DESCRIPTORS

    raw = np.full((n, len(DESCRIPTORS)), np.nan)
    raw[:, DESCRIPTORS.index(NOISE)] = noise
    raw[:, DESCRIPTORS.index(SHARP)] = sharp
    return raw


def test_acquisition_check_tests_each_descriptor_against_both_medians_uncertainty():
    from lstv.score_drift import acquisition_check

    # 60 studies, sharpness -1.0 spread: none above the reference's median, a sign test's
    # z = 2 (0 - 1/2) / sqrt(1/60 + 1/40) = -4.899; its Bonferroni p over 2 descriptors is
    # 2 * 2 * P(Z < -4.899) = 1.92671e-6 (scipy.stats.norm); noise, at the median, ties: silent.
    result = acquisition_check(_acquisition(), _descriptors(60, 0.05, 2.6))
    assert result["drift"] is True and result["n"] == 60 and list(result["descriptors"]) == [SHARP]
    assert result["descriptors"][SHARP]["median_shift_sd"] == -1.0
    assert result["descriptors"][SHARP]["p_adjusted"] == pytest.approx(1.92671e-6, rel=1e-4)
    assert result["note"] == (
        "these 60 studies were acquired differently from the reference's normal studies "
        "(acq_sharpness median -1.0 SD)"
    )
    # Upwards too; against a reference of 10 even a whole set on one side gives z = 1 /
    # sqrt(1/60 + 1/10) = 2.93, short of the 3.48 that p < 0.001 / 2 needs: not tested, and
    # the note says why (a silence would be no evidence).
    assert list(acquisition_check(_acquisition(), _descriptors(60, 0.06, 2.7))["descriptors"]) == [
        NOISE
    ]
    small_ref = acquisition_check(_acquisition(10), _descriptors(60, 0.05, 2.6))
    assert small_ref["drift"] is None and small_ref["note"] == (
        "too few studies to test the acquisition: a sign test against a reference of 10 normal "
        "studies cannot reach p < 0.001 however large the set (it needs a reference of 13 or "
        "more)"
    )


def test_acquisition_check_is_a_sign_test_not_a_z_of_medians():
    """Header spacings are discrete and a mix of protocols is multimodal: the test counts the
    studies above the reference's median, so a median that jumps between modes on a few
    studies does not fire; a set whose every study sits above it does."""
    from lstv.score_drift import acquisition_check

    raw = _descriptors(40, 0.05, 2.7)
    raw[:, 1] = [2.5] * 21 + [2.9] * 19  # median 2.5 (-2 spreads), 19 of 40 above 2.7
    split = acquisition_check(_acquisition(), raw)
    assert split["drift"] is False  # a z of medians, -2 / (1.2533 sqrt(2/40)) = -7.1, would fire
    raw[:, 1] = 2.9  # every study above
    assert list(acquisition_check(_acquisition(), raw)["descriptors"]) == [SHARP]


def test_acquisition_check_needs_half_a_spread_and_ten_studies():
    from lstv.score_drift import acquisition_check

    # 0.49 spread over 1,000 studies is significant but too small to be worth a word.
    small = acquisition_check(_acquisition(1000), _descriptors(1000, 0.05, 2.651))
    assert small == {
        "drift": False,
        "n": 1000,
        "descriptors": {},
        "note": "the acquisition of 1000 studies is like the reference's",
    }
    # Against 40: 1 / sqrt(1/n + 1/40) reaches 3.48 from n = 18 (17: 3.45), whatever the shift.
    few = acquisition_check(_acquisition(), _descriptors(17, 0.2, 1.0))
    assert few["drift"] is None and few["n"] == 17 and few["note"] == (
        "too few studies to test the acquisition: 17 studies against a reference of 40 cannot "
        "reach p < 0.001 (it needs 18 or more)"
    )
    enough = acquisition_check(_acquisition(), _descriptors(18, 0.05, 1.0))
    assert enough["drift"] is True and enough["descriptors"][SHARP]["p_adjusted"] < 1e-3


def test_acquisition_check_cannot_run_without_the_references_or_the_runs_descriptors():
    from lstv.score_drift import NO_ACQUISITION, acquisition_check

    assert acquisition_check({}, _descriptors(50, 1.0, 1.0)) == {
        "drift": None, "n": 0, "descriptors": {}, "note": NO_ACQUISITION
    }
    old_run = acquisition_check(_acquisition(), None)
    assert old_run["drift"] is None
    assert "this run's CSV has no acquisition columns" in old_run["note"]


def _rows_with(raw_features, noise, sharp):
    from helpers import rows_from

    rows = rows_from(raw_features)
    for row in rows:
        row.update({NOISE: repr(noise), SHARP: repr(sharp)})
    return rows


@pytest.mark.parametrize(
    ("feature_shift", "sharp", "verdict"),
    [
        (0.0, 2.7, "none"),
        (3.0, 2.7, "feature shift without acquisition drift"),  # e.g. many transitional studies
        (3.0, 2.3, "acquisition drift"),
        (0.0, 2.3, "acquisition drift"),  # the acquisition moved, the features' medians did not
    ],
)
def test_check_run_says_which_it_is(feature_shift, sharp, verdict):
    from dataclasses import replace

    from lstv.score_drift import check_run

    rng = np.random.default_rng(8)
    ref = replace(fit_reference(normal_features(rng, 40), SHA_A), acquisition=_acquisition())
    raw = normal_features(rng, 100)
    raw[:, FEATURES.index("l5_s1_entropy")] += feature_shift * ref.scale["l5_s1_entropy"]
    result = check_run(ref, _rows_with(raw, 0.05, sharp))
    assert result["verdict"] == verdict
    assert result["drift"] is (feature_shift > 0)  # the feature part's key, as before
    assert result["acquisition_drift"] is (sharp != 2.7)
    recommends = "run lstv calibrate on confirmed normal studies of this set" in result["note"]
    assert recommends is (verdict == "acquisition drift")
    if verdict == "feature shift without acquisition drift":
        assert result["note"] == (
            "the score features of these 100 studies moved (l5_s1_entropy median +2.9 SD) but "
            "the acquisition of 100 studies is like the reference's: the set may hold many "
            "transitional studies; that is not a reason to re-calibrate"
        )
    if verdict == "acquisition drift":  # the features that moved too, only when some did
        moved = " (the score features moved too: l5_s1_entropy median +2.9 SD)"
        assert result["note"].endswith(moved if feature_shift else "of this set")


def test_check_run_with_an_old_reference_tests_the_features_and_says_once_why_not_the_rest():
    from lstv.score_drift import NO_ACQUISITION, check_run

    rng = np.random.default_rng(8)
    ref = fit_reference(normal_features(rng, 40), SHA_A)  # no acquisition field
    raw = normal_features(rng, 100)
    raw[:, FEATURES.index("l5_s1_entropy")] += 3 * ref.scale["l5_s1_entropy"]
    result = check_run(ref, _rows_with(raw, 0.05, 2.7))
    assert result["verdict"] == "feature drift" and result["acquisition_drift"] is None
    assert result["feature_note"] == drift_check(ref, raw)["note"]
    assert result["note"] == f"{result['feature_note']} ({NO_ACQUISITION})"
    assert result["note"].count("cannot run") == 1


def test_check_run_names_the_file_of_a_value_that_is_not_a_number():
    """lstv infer checks its rows without naming a file: they are its metrics CSV's."""
    from dataclasses import replace

    from lstv.errors import UsageError
    from lstv.score_drift import check_run

    rng = np.random.default_rng(8)
    ref = replace(fit_reference(normal_features(rng, 40), SHA_A), acquisition=_acquisition())
    rows = _rows_with(normal_features(rng, 12), 0.05, 2.7)
    rows[3]["l5_s1_entropy"] = "high"
    with pytest.raises(UsageError, match=r"^metrics CSV: l5_s1_entropy = 'high' is not a"):
        check_run(ref, rows)
    with pytest.raises(UsageError, match=r"^run/m\.csv: l5_s1_entropy = 'high' is not a"):
        check_run(ref, rows, "run/m.csv")
    rows[3]["l5_s1_entropy"], rows[5][NOISE] = "0.5", "loud"
    with pytest.raises(UsageError, match=rf"^run/m\.csv: {NOISE} = 'loud' is not a number"):
        check_run(ref, rows, "run/m.csv")


def test_acquisition_check_counts_ties_at_the_reference_median_as_half():
    """200 studies: 30 at the reference's sharpness median (ties, half above), 170 above it;
    q = (170 + 15) / 200 = 0.925, z = 2 (0.925 - 1/2) / sqrt(1/200 + 1/40) = 4.9075, p over two
    descriptors 2 erfc(z / sqrt 2) = 1.84511e-6. The shift, 1.123 spreads, is given to 2 places."""
    from lstv.score_drift import acquisition_check

    raw = _descriptors(200, 0.05, 2.8123)
    raw[:30, 1] = 2.7
    result = acquisition_check(_acquisition(), raw)
    assert result["descriptors"] == {
        SHARP: {"median_shift_sd": 1.12, "p_adjusted": pytest.approx(1.84511e-6, rel=1e-5)}
    }


def test_acquisition_check_of_half_a_spread_exactly_drifts():
    from lstv.score_drift import acquisition_check

    acquisition = {"n": 40, "descriptors": {SHARP: {"centre": 2.0, "spread": 0.5, "n": 40}}}
    result = acquisition_check(acquisition, _descriptors(100, np.nan, 2.25))
    assert result["descriptors"][SHARP]["median_shift_sd"] == 0.5 and result["drift"] is True


def test_acquisition_check_tests_a_later_descriptor_after_one_it_skips():
    """noise (the first descriptor) is not in the reference, or has no known value in the
    run: sharpness, after it, is still tested."""
    from lstv.score_drift import acquisition_check

    sharp_only = {"n": 40, "descriptors": {SHARP: _acquisition()["descriptors"][SHARP]}}
    result = acquisition_check(sharp_only, _descriptors(60, 0.05, 2.6))
    assert list(result["descriptors"]) == [SHARP]
    result = acquisition_check(_acquisition(), _descriptors(60, np.nan, 2.6))
    assert list(result["descriptors"]) == [SHARP]


def test_acquisition_check_not_run_says_so_in_the_same_keys():
    from lstv.score_drift import acquisition_check

    assert acquisition_check(_acquisition(), None) == {
        "drift": None,
        "n": 0,
        "descriptors": {},
        "note": "the acquisition check cannot run: this run's CSV has no acquisition columns "
        "(written by an lstv before them; run lstv infer again to have them)",
    }
    assert acquisition_check(_acquisition(), _descriptors(20, np.nan, np.nan)) == {
        "drift": None,
        "n": 0,
        "descriptors": {},
        "note": "too few studies to test the acquisition: 0 studies against a reference of 40 "
        "cannot reach p < 0.001 (it needs 18 or more)",
    }
    # an acquisition field without its count of studies counts none
    uncounted = {"descriptors": _acquisition(10)["descriptors"]}
    assert acquisition_check(uncounted, _descriptors(20, 0.05, 2.7))["note"].startswith(
        "too few studies to test the acquisition: a sign test against a reference of 0 normal"
    )

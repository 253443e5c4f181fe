"""The drift check (lstv.score_drift): a run's feature medians against its reference's."""

import numpy as np

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

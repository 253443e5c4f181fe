import math

import numpy as np
import pytest

from lstv.uncertainty import (
    RiskThresholds,
    block_sums,
    level_metrics,
    level_point,
    mutual_information,
    risk_level,
    shannon_entropy,
    spatial_entropy,
    study_metrics,
)


def test_delta_map_has_zero_entropy_and_full_confidence():
    m = np.zeros((160, 160))
    m[40, 70] = 1.0
    out = level_metrics(m)
    assert out["confidence"] == 1.0
    assert out["entropy"] == 0.0
    assert out["spatial_entropy"] == 0.0
    assert out["normalized_entropy"] == 0.0
    assert out["point"] == (70.0, 40.0)


def test_uniform_map_has_maximal_entropy():
    m = np.full((160, 160), 0.2)
    out = level_metrics(m)
    assert out["entropy"] == pytest.approx(math.log(160 * 160))
    assert out["normalized_entropy"] == pytest.approx(1.0)
    assert out["spatial_entropy"] == pytest.approx(math.log(100))
    assert out["confidence"] == pytest.approx(0.2)
    assert out["point"] is None  # nothing above 0.5


def test_two_equal_peaks_have_entropy_ln2_and_midpoint():
    m = np.zeros((160, 160))
    m[20, 20] = m[120, 140] = 0.9
    out = level_metrics(m)
    assert out["entropy"] == pytest.approx(math.log(2))
    assert out["spatial_entropy"] == pytest.approx(math.log(2))
    assert out["confidence"] == pytest.approx(0.9)
    assert out["point"] == (80.0, 70.0)


def test_two_peaks_in_one_block_have_zero_spatial_entropy():
    m = np.zeros((160, 160))
    m[0, 0] = m[15, 15] = 0.6  # both in the top-left 16 x 16 block
    assert spatial_entropy(m) == 0.0
    assert shannon_entropy(m) == pytest.approx(math.log(2))


def test_block_sums_partition_the_map():
    m = np.arange(37 * 23, dtype=float).reshape(37, 23)
    sums = block_sums(m, grid=10)
    assert sums.shape == (10, 10)
    assert sums.sum() == pytest.approx(m.sum())


def test_entropy_of_empty_map_is_an_error():
    with pytest.raises(ValueError, match="sums to zero"):
        shannon_entropy(np.zeros((4, 4)))


def test_point_is_mean_of_pixels_above_half():
    m = np.zeros((10, 10))
    m[2, 3] = m[4, 5] = 0.51
    m[9, 9] = 0.5  # not above the threshold
    assert level_point(m) == (4.0, 3.0)


def test_study_metrics_checks_shape_and_keys():
    probs = np.full((6, 16, 16), 1 / 6)
    out = study_metrics(probs)
    assert list(out) == ["l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"]
    with pytest.raises(ValueError, match="shape"):
        study_metrics(probs[:5])


@pytest.mark.parametrize(
    ("entropy", "expected"),
    [(6.0, "High"), (5.5, "Medium"), (4.0, "Medium"), (4.7, "Medium"), (3.99, "Low")],
)
def test_risk_bands(entropy, expected):
    assert risk_level(entropy) == expected


def test_risk_bands_are_configurable_and_checked():
    assert risk_level(3.0, RiskThresholds(high_entropy=2.5, medium_entropy=1.0)) == "High"
    with pytest.raises(ValueError):
        RiskThresholds(high_entropy=3.0, medium_entropy=4.0)


def test_mutual_information_zero_when_views_agree_and_positive_when_not():
    base = np.zeros((6, 20, 20))
    base[0] = 1.0
    a, b = base.copy(), base.copy()
    a[5, 2, 2], b[5, 17, 17] = 0.9, 0.9
    same = mutual_information(np.stack([a, a, a]))
    differ = mutual_information(np.stack([a, b]))
    assert np.allclose(same, 0.0)
    assert differ[4] == pytest.approx(math.log(2))  # two disjoint deltas, equal weight


def test_resolve_thresholds_layers_flags_over_a_base():
    from lstv.uncertainty import resolve_thresholds

    assert resolve_thresholds() == RiskThresholds()
    base = {"flag_entropy": 9.0, "high_entropy": 9.5, "medium_entropy": 8.0, "other": 1}
    assert resolve_thresholds(base) == RiskThresholds(9.0, 9.5, 8.0)
    assert resolve_thresholds(base, flag_entropy=8.5, high_entropy=None) == RiskThresholds(
        8.5, 9.5, 8.0
    )


def test_bands_calibrated_on_normals():
    from lstv.uncertainty import normal_calibrated_thresholds

    normals = np.linspace(9.0, 9.6, 61)  # 95th percentile 9.57, maximum 9.6
    bands = normal_calibrated_thresholds(normals)
    assert bands.medium_entropy == pytest.approx(9.57)
    assert bands.high_entropy == pytest.approx(9.6)
    assert bands.flag_entropy == pytest.approx(9.585)
    assert risk_level(9.3, bands) == "Low" and risk_level(10.0, bands) == "High"

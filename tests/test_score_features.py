"""A row's score features (lstv.score_features): the map features from the CSV's cells, the
geometry of the five predicted points."""

import math

import numpy as np
import pytest

from helpers import normal_features, rows_from
from lstv.score_features import FEATURES, feature_matrix, geometry_features, required_columns


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


def test_parasagittal_features_read_their_columns_and_flip_the_lowest_peak():
    """A reference may name the parasagittal columns (lstv infer --parasagittal): the lowest
    peak is read as 1 - value, as the centre's confidence is; a run without the columns (0, or
    an older run) is a clear error naming the column."""
    from lstv.score_features import PARASAGITTAL_FEATURES

    rows = [{"l5_s1_para_min_confidence": "0.75", "l5_s1_para_mean_peak2": "0.3",
             "l5_s1_para_shift_mm": "", "l4_l5_para_min_confidence": "0.5",
             "l4_l5_para_mean_peak2": "0.1"}]
    x = feature_matrix(rows, PARASAGITTAL_FEATURES)
    assert x[0, :4].tolist() == pytest.approx([0.5, 0.1, 0.25, 0.3]) and math.isnan(x[0, 4])
    assert required_columns(PARASAGITTAL_FEATURES)[2] == "l5_s1_para_min_confidence"
    with pytest.raises(ValueError, match="l5_s1_para_mean_peak2"):
        feature_matrix([{"l5_s1_confidence": "0.9"}], ("l5_s1_para_mean_peak2",), "old.csv")

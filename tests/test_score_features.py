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

    rows = [
        {
            "l5_s1_para_min_confidence": "0.75",
            "l5_s1_para_mean_peak2": "0.3",
            "l5_s1_para_shift_mm": "",
            "l4_l5_para_min_confidence": "0.5",
            "l4_l5_para_mean_peak2": "0.1",
        }
    ]
    x = feature_matrix(rows, PARASAGITTAL_FEATURES)
    assert x[0, :4].tolist() == pytest.approx([0.5, 0.1, 0.25, 0.3]) and math.isnan(x[0, 4])
    assert required_columns(PARASAGITTAL_FEATURES)[2] == "l5_s1_para_min_confidence"
    with pytest.raises(ValueError, match="l5_s1_para_mean_peak2"):
        feature_matrix([{"l5_s1_confidence": "0.9"}], ("l5_s1_para_mean_peak2",), "old.csv")


# --- issue 20: mutation survivors of lstv.score_features -------------------------------------

# A column on the slice plane (y posterior, z up): three 10 mm steps straight down, then a
# 5 mm step 3 mm posterior and 4 mm down.
COLUMN = {
    "l1_l2": (1.0, 0.0, 0.0),
    "l2_l3": (1.0, 0.0, -10.0),
    "l3_l4": (1.0, 0.0, -20.0),
    "l4_l5": (1.0, 0.0, -30.0),
    "l5_s1": (1.0, 3.0, -34.0),
}
COLUMN_FEATURES = {
    "l5_s1_spacing_ratio": 0.5,  # 5 mm against a mean of 10
    "l4_l5_bend_deg": math.degrees(math.atan2(3, 4)),  # 36.9 degrees posteriorly
    "l5_s1_along": 0.4,  # 4 mm down the line, in L3/L4 -> L4/L5 spacings
    "l5_s1_across": 0.3,  # 3 mm posterior
}


def test_geometry_features_word_for_word():
    assert geometry_features(COLUMN) == pytest.approx(COLUMN_FEATURES)
    anterior = {**COLUMN, "l5_s1": (1.0, -3.0, -34.0)}
    assert geometry_features(anterior)["l5_s1_across"] == pytest.approx(-0.3)
    # Millimetres or micrometres: the features are ratios and angles.
    tiny = {k: tuple(c / 100 for c in p) for k, p in COLUMN.items()}
    assert geometry_features(tiny) == pytest.approx(COLUMN_FEATURES)
    # L5/S1 on L4/L5 is a real finding (a spacing of 0), not a broken geometry ...
    fused = geometry_features({**COLUMN, "l5_s1": COLUMN["l4_l5"]})
    assert fused == pytest.approx(
        {"l5_s1_spacing_ratio": 0, "l4_l5_bend_deg": 0, "l5_s1_along": 0, "l5_s1_across": 0}
    )
    # ... but two upper points on one spot give no scale: NaN.
    for k in ("l2_l3", "l3_l4", "l4_l5"):
        keys = list(COLUMN)
        above = keys[keys.index(k) - 1]
        broken = geometry_features({**COLUMN, k: COLUMN[above]})
        assert all(math.isnan(v) for v in broken.values()), k


def test_geometry_features_are_computed_from_the_points_of_an_older_run():
    """A run written before the geometry columns: feature_matrix computes them from the points'
    patient coordinates; a point without z gives NaN."""
    from lstv.score_features import GEOMETRY_FEATURES

    row = {}
    for key, (x, y, z) in COLUMN.items():
        row |= {f"{key}_x_mm": str(x), f"{key}_y_mm": str(y), f"{key}_z_mm": str(z)}
    got = feature_matrix([row], GEOMETRY_FEATURES)[0]
    assert got.tolist() == pytest.approx([COLUMN_FEATURES[f] for f in GEOMETRY_FEATURES])
    row["l3_l4_z_mm"] = ""
    assert np.isnan(feature_matrix([row], GEOMETRY_FEATURES)).all()


def test_geometry_columns_are_read_when_written_and_named_when_missing():
    from lstv.errors import UsageError
    from lstv.score_features import GEOMETRY_FEATURES

    row = {f"{k}_{a}_mm": str(v) for k, p in COLUMN.items() for a, v in zip("xyz", p, strict=True)}
    written = {**row, "l5_s1_spacing_ratio": "0.7"}  # a written column wins over the points
    assert feature_matrix([written], GEOMETRY_FEATURES)[0, 0] == 0.7
    with pytest.raises(UsageError) as caught:
        feature_matrix([{"l5_s1_peak2": "0.1"}], GEOMETRY_FEATURES, "run.csv")
    assert str(caught.value) == (
        "run.csv has no column 'l5_s1_spacing_ratio' nor the points' *_y_mm"
    )
    with pytest.raises(UsageError) as caught:
        feature_matrix([{}])
    assert str(caught.value) == (
        "metrics CSV has no column 'l4_l5_entropy' (needed for l4_l5_entropy)"
    )
    assert feature_matrix([row], GEOMETRY_FEATURES).dtype == np.float64


def test_required_columns_of_the_geometry_are_the_points_y_and_z():
    from lstv.levels import LEVEL_KEYS

    points = [f"{k}_{a}_mm" for k in LEVEL_KEYS for a in ("y", "z")]
    assert required_columns(("l5_s1_peak2", "l5_s1_spacing_ratio", "l4_l5_bend_deg")) == [
        "l5_s1_peak2",
        *points,
    ]


def test_the_bend_is_wrapped_into_plus_minus_180_degrees():
    # Segments at 170 and -170 degrees from straight down: a 20 degree bend, not -340.
    bent = geometry_features(_column_points(tilts=(170.0, 170.0, 170.0, -170.0)))
    assert bent["l4_l5_bend_deg"] == pytest.approx(20.0)


def test_a_column_tilted_as_a_whole_is_straight():
    """The frame turns with the L3/L4 -> L4/L5 segment: a straight column at 30 degrees has
    L5/S1 one spacing along its line, nothing across, no bend."""
    tilted = geometry_features(_column_points(tilts=(30.0, 30.0, 30.0, 30.0)))
    assert tilted == pytest.approx(
        {"l5_s1_spacing_ratio": 1, "l4_l5_bend_deg": 0, "l5_s1_along": 1, "l5_s1_across": 0},
        abs=1e-9,
    )


@pytest.mark.parametrize("name", ["l5_s1_", "l5_s1", "l5_s1xpeak2", "l6_s1_peak2"])
def test_a_name_that_is_not_a_level_feature_is_refused(name):
    from lstv.score_features import split_feature

    with pytest.raises(ValueError) as caught:
        split_feature(name)
    assert str(caught.value) == f"{name!r} is not a per-level feature name like 'l5_s1_peak2'"

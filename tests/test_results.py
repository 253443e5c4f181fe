import numpy as np
import pytest

from lstv.results import METRIC_COLUMNS, SEED_COLUMNS, StudyResult, metrics_row
from lstv.sample import Sample
from lstv.studies import StudyTask
from lstv.uncertainty import RiskThresholds


def make_sample(height=400, width=320):
    return Sample(
        task=StudyTask(1, 2, "Sagittal T2/STIR"),
        image=np.zeros((160, 160), np.uint8),
        slice_pixels=np.zeros((height, width), np.uint8),
        slice_index=8,
        n_slices=17,
        position=np.array([5.0, -100.0, 80.0]),
        orientation=np.array([0, 1, 0, 0, 0, -1], dtype=float),
        pixel_spacing=np.array([0.5, 0.8]),  # between rows, between columns
    )


def test_seed_columns_come_first_in_their_order():
    assert SEED_COLUMNS[:5] == [
        "study_id",
        "series_id",
        "l1_l2_confidence",
        "l1_l2_entropy",
        "l1_l2_spatial_entropy",
    ]
    assert METRIC_COLUMNS[: len(SEED_COLUMNS)] == SEED_COLUMNS
    assert len(SEED_COLUMNS) == 17


def test_row_maps_points_to_original_pixels_and_patient_mm():
    probs = np.full((6, 160, 160), 0.01)
    probs[5, 80, 40] = 0.9  # L5/S1 at model pixel x=40, y=80
    sample = make_sample()
    result = StudyResult.from_maps(probs, sample.slice_shape)
    row = metrics_row(result, sample, RiskThresholds())
    assert row["l5_s1_x"] == pytest.approx(40 * 320 / 160)
    assert row["l5_s1_y"] == pytest.approx(80 * 400 / 160)
    # x moves along the row cosine (+y) by the column spacing, y along -z by the row spacing
    assert row["l5_s1_x_mm"] == pytest.approx(5.0)
    assert row["l5_s1_y_mm"] == pytest.approx(-100.0 + 80 * 0.8)
    assert row["l5_s1_z_mm"] == pytest.approx(80.0 - 200 * 0.5)
    assert row["l1_l2_x"] == ""  # no pixel above 0.5
    assert row["risk_level"] == "High" and row["lstv_flag"] is True  # near-uniform map
    assert set(row) == set(METRIC_COLUMNS)




def test_row_writes_the_samples_acquisition_and_leaves_unknown_ones_empty():
    from dataclasses import replace

    from lstv.acquisition import DESCRIPTORS

    probs = np.full((6, 160, 160), 0.01)
    values = dict(zip(DESCRIPTORS, [0.0512345678, 2.7, 0.2, -0.1, 0.7, float("nan")], strict=True))
    sample = replace(make_sample(), acquisition=values)
    row = metrics_row(StudyResult.from_maps(probs, sample.slice_shape), sample, RiskThresholds())
    assert [row[n] for n in DESCRIPTORS] == [0.051235, 2.7, 0.2, -0.1, 0.7, ""]
    bare = metrics_row(StudyResult.from_maps(probs, (400, 320)), make_sample(), RiskThresholds())
    assert all(bare[n] == "" for n in DESCRIPTORS)

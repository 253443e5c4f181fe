"""The study view (lstv.study_view): what the review page, the demo and the report show."""

import math

import numpy as np
import pydicom
import pytest

from lstv.dicom import read_series
from lstv.levels import LEVEL_KEYS
from lstv.study_view import build_view, overlay_alpha, presets, thumbnail_png
from lstv.uncertainty import RiskThresholds


@pytest.fixture(scope="module")
def series(series_files):
    return read_series(series_files)


def row_with_points(series, **extra):
    _, h, w = series.volume.shape
    row = {"study_id": "1", "series_id": "2", "series_description": "Sagittal T2/STIR",
           "selection_rule": "description", "l5_s1_entropy": 9.0}  # fmt: skip
    for i, key in enumerate(LEVEL_KEYS):
        row[f"{key}_x"], row[f"{key}_y"] = 0.2 * w + i, (0.2 + 0.1 * i) * h
    return row | extra


def test_every_slice_is_the_stored_16_bit_data_in_volume_order(series):
    view = build_view(row_with_points(series), RiskThresholds(), series)
    assert view.volume.dtype == np.uint16 and view.volume.shape == series.volume.shape
    for i, path in enumerate(series.paths):
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array.astype(float) * float(ds.get("RescaleSlope", 1)) + float(
            ds.get("RescaleIntercept", 0)
        )
        np.testing.assert_array_equal(view.volume[i] + view.info["offset"], stored)
        # slice numbers are the InstanceNumber and the position along the slice normal
        assert view.info["slices"][i]["instance"] == int(ds.InstanceNumber)
    positions = [s["position_mm"] for s in view.info["slices"]]
    assert positions == sorted(positions)
    assert view.info["model_slice"] == series.centre_index
    assert len(view.volume_bytes()) == 2 * view.volume.size


def test_points_stay_in_original_pixels_and_the_rule_is_explained(series):
    reason = "L5/S1 disc space 41% of L4/L5 (normal 80-120%)"
    row = row_with_points(
        series, lstv_score="3.5", lstv_score_flag="True", lstv_score_reason=reason
    )
    view = build_view(row, RiskThresholds(), series, score_threshold=3.0)
    for level in view.info["levels"]:
        key = level["key"]
        assert level["point"] == [round(row[f"{key}_x"], 1), round(row[f"{key}_y"], 1)]
    assert view.info["selection_why"].startswith("its description")
    assert view.info["primary"]["score"] == 3.5 and view.info["primary"]["flag"] is True
    assert view.info["primary"]["reason"].endswith("(normal 80-120%)")
    assert view.info["seed"]["label"] == "Seed's entropy rule (secondary)"
    assert view.info["seed"]["risk"] == "High"


def test_without_a_score_the_seed_rule_is_the_verdict_and_nan_is_null(series):
    view = build_view(row_with_points(series, l5_s1_entropy=math.nan), RiskThresholds(), series)
    assert view.info["primary"] is None
    assert view.info["seed"] == view.info["seed"] | {"risk": "Unknown", "entropy": None}


def test_window_presets_come_from_the_dicom_tags_first():
    volume = np.arange(1000, dtype=np.uint16).reshape(10, 10, 10)
    dicom = [{"name": "soft", "center": 400.0, "width": 800.0}]
    out = presets(volume, -100.0, dicom)
    assert [p["name"] for p in out] == ["soft", "auto (0.5-99.5 %)", "full range"]
    assert out[2] == {"name": "full range", "center": 399.5, "width": 999.0}


def test_heatmaps_and_the_thumbnail(series):
    probs = np.full((6, 160, 160), 0.01, np.float32)
    probs[5, 80, 40] = 1.0  # L5/S1 localised; the others flat
    view = build_view(row_with_points(series), RiskThresholds(), series, probs)
    assert view.heatmaps.shape == (5, 160, 160) and view.heatmaps[4].max() == 255
    assert not view.heatmaps[:4].any()
    assert view.notes == ["flat map, nothing localised: L1/L2, L2/L3, L3/L4, L4/L5"]
    np.testing.assert_array_equal(view.heatmaps[4], np.rint(overlay_alpha(probs[5]) * 255))
    png = thumbnail_png(view)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_dicom_the_model_input_is_shown_with_points_scaled(series):
    image = np.zeros((160, 160), np.uint8)
    _, h, w = series.volume.shape
    row = row_with_points(series, image_height=h, image_width=w)
    view = build_view(row, RiskThresholds(), None, None, image)
    assert view.volume.shape == (1, 160, 160) and view.info["source"] == "model input"
    x, y = view.info["levels"][4]["point"]
    assert x == pytest.approx(row["l5_s1_x"] * 160 / w, abs=0.06)
    assert y == pytest.approx(row["l5_s1_y"] * 160 / h, abs=0.06)

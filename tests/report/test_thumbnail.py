"""The report's thumbnails (lstv.report.thumbnail): the study view's picture, with its note."""

import base64
import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from lstv.levels import DEFAULT_IMAGE_SIZE
from lstv.report.thumbnail import thumbnail
from lstv.study_view import LEVEL_COLOURS

S = DEFAULT_IMAGE_SIZE


def test_thumbnail_points_land_where_the_csv_says(tmp_path):
    """A point at (224, 384) of a 448 x 512 slice is drawn at (80, 120) of the 160 model input."""
    (tmp_path / "heatmaps").mkdir()
    probs = np.zeros((6, S, S), np.float32)
    probs[0] = 1.0
    np.savez(
        tmp_path / "heatmaps" / "1.npz",
        probs=probs,
        image=np.zeros((S, S), np.uint8),
        slice_index=np.int64(3),
        original_shape=np.array([512, 448]),
        series_id=np.array("2"),
    )
    row = pd.Series(
        {
            "study_id": "1",
            "series_id": "2",
            "image_width": 448.0,
            "image_height": 512.0,
            "slice_index": 3,
            "n_slices": 7,
            "l5_s1_x": 224.0,
            "l5_s1_y": 384.0,
            "l4_l5_x": np.nan,
            "l4_l5_y": np.nan,
        }
    )
    uri, note = thumbnail(row, tmp_path / "heatmaps", None)
    assert "model input (160 × 160) of slice 4/7" in note
    img = imread(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])), format="png")[..., :3]
    target = np.array([int(LEVEL_COLOURS[4][i : i + 2], 16) / 255 for i in (1, 3, 5)])
    ys, xs = np.nonzero(np.abs(img - target).sum(-1) < 0.15)
    assert xs.size > 10
    h, w = img.shape[:2]
    assert (xs.mean() + 0.5) * S / w == pytest.approx(80.5, abs=1.5)
    assert (ys.mean() + 0.5) * S / h == pytest.approx(120.5, abs=1.5)

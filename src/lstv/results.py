"""What one row of ``lstv_uncertainty_metrics.csv`` holds: its columns and how a study becomes one.

Where rows are stored (file names, appending, the manifest) is :mod:`lstv.rundir`'s business.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lstv.levels import LEVEL_KEYS
from lstv.rundir import RunDir, atomic_file
from lstv.score import SCORE_COLUMNS
from lstv.uncertainty import SHAPE_FEATURES, RiskThresholds

SEED_COLUMNS = ["study_id", "series_id"] + [
    f"{k}_{m}" for k in LEVEL_KEYS for m in ("confidence", "entropy", "spatial_entropy")
]
LEVEL_EXTRA_COLUMNS = ("normalized_entropy", "x", "y", "x_mm", "y_mm", "z_mm", "tta_mi")
METRIC_COLUMNS = (
    SEED_COLUMNS
    + [f"{k}_{m}" for k in LEVEL_KEYS for m in LEVEL_EXTRA_COLUMNS]
    + [
        "series_description",
        "n_slices",
        "slice_index",
        "image_height",
        "image_width",
        "lstv_flag",
        "risk_level",
    ]
    # Shape features of every level map and the calibrated score (lstv.score); appended
    # after the round-1 columns so readers of those keep working.
    + [f"{k}_{m}" for k in LEVEL_KEYS for m in SHAPE_FEATURES]
    + list(SCORE_COLUMNS)
    # Why this series was run (lstv.studies: description, description_pattern or headers).
    + ["selection_rule"]
)


def metrics_row(
    study_id: int,
    series_id: int,
    series_description: str,
    metrics: dict[str, dict],
    sample,
    thresholds: RiskThresholds,
    tta_mi: np.ndarray | None = None,
) -> dict:
    """One CSV row from per-level metrics (model-pixel points) and the slice's geometry.

    ``sample`` is a :class:`lstv.sample.Sample`: it gives the original slice size and the
    pixel-to-patient mapping of the slice the model read.
    """
    height, width = sample.slice_shape
    row: dict = {"study_id": study_id, "series_id": series_id}
    for i, key in enumerate(LEVEL_KEYS):
        m = metrics[key]
        row[f"{key}_confidence"] = m["confidence"]
        row[f"{key}_entropy"] = m["entropy"]
        row[f"{key}_spatial_entropy"] = m["spatial_entropy"]
        row[f"{key}_normalized_entropy"] = m["normalized_entropy"]
        point = m["point"]
        if point is None:
            coords = [""] * 5
        else:
            x, y = sample.to_original(point)
            coords = [x, y, *sample.pixel_to_patient(x, y)]
        for name, value in zip(("x", "y", "x_mm", "y_mm", "z_mm"), coords, strict=True):
            row[f"{key}_{name}"] = value
        row[f"{key}_tta_mi"] = "" if tta_mi is None else float(tta_mi[i])
        for name in SHAPE_FEATURES:  # measured only when the caller gave the pixel size
            value = m.get(name)
            row[f"{key}_{name}"] = "" if value is None or not np.isfinite(value) else value
    l5_s1_entropy = metrics["l5_s1"]["entropy"]
    row.update(
        series_description=series_description,
        n_slices=sample.n_slices,
        slice_index=sample.slice_index,
        image_height=height,
        image_width=width,
        lstv_flag=thresholds.flag(l5_s1_entropy),
        risk_level=thresholds.risk(l5_s1_entropy),
    )
    row.update(dict.fromkeys(SCORE_COLUMNS, ""))  # filled by lstv.score with a reference
    row["selection_rule"] = getattr(sample.task, "selection_rule", "")
    return row


def save_heatmaps(
    run_dir: RunDir, study_id: int, series_id: int, probs: np.ndarray, sample
) -> Path:
    """``heatmaps/{study_id}.npz``: the maps, the model input and where it came from."""
    path = run_dir.heatmap(study_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, binary=True) as f:
        np.savez_compressed(
            f,
            probs=probs.astype(np.float32),
            image=sample.image,
            slice_index=np.int64(sample.slice_index),
            original_shape=np.asarray(sample.slice_shape, dtype=np.int64),
            series_id=np.int64(series_id),
        )
    return path

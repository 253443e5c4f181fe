"""How a study becomes one row of ``lstv_uncertainty_metrics.csv`` (its columns are declared in
:mod:`lstv.columns`).

Where rows are stored (file names, appending, the manifest) is :mod:`lstv.rundir`'s business.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lstv.columns import METRIC_COLUMNS, SCORE_COLUMNS, SEED_COLUMNS, SHAPE_FEATURES
from lstv.levels import LEVEL_KEYS
from lstv.rundir import RunDir, atomic_file
from lstv.uncertainty import RiskThresholds

__all__ = ["METRIC_COLUMNS", "SEED_COLUMNS", "metrics_row", "save_heatmaps"]


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

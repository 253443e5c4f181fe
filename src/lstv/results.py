"""One study's result, from the model's maps to its row of ``lstv_uncertainty_metrics.csv``
(whose columns are declared in :mod:`lstv.columns`).

:class:`StudyResult` is the one shape a study's result has: ``lstv infer`` makes one per study
and writes it as a row, the Python API (``lstv.analyse_volume``) returns it, and the web demo
shows it.

Where rows are stored (file names, appending, the manifest) is :mod:`lstv.rundir`'s business.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lstv.atomic import atomic_file
from lstv.columns import (
    ACQUISITION_COLUMNS,
    METRIC_COLUMNS,
    PARASAGITTAL_COLUMNS,
    SCORE_COLUMNS,
    SEED_COLUMNS,
    SHAPE_FEATURES,
)
from lstv.levels import LEVEL_KEYS
from lstv.rundir import RunDir
from lstv.sample import model_to_original
from lstv.score import score_rows
from lstv.score_features import geometry_features
from lstv.uncertainty import (
    RiskThresholds,
    model_pixel_mm,
    parasagittal_features,
    study_metrics,
)

__all__ = ["METRIC_COLUMNS", "SEED_COLUMNS", "StudyResult", "metrics_row", "save_heatmaps"]


@dataclass(frozen=True, eq=False)
class StudyResult(Mapping):
    """One study's maps and what was measured on them.

    As a mapping it is what the notebook API has always returned: level key (``l5_s1``) ->
    that level's metrics with ``point`` as (x, y) in the original slice's pixels (or None), and
    ``"probs"`` -> the maps.
    """

    probs: np.ndarray  # (6, S, S) softmax maps, class 0 background
    levels: dict[str, dict]  # level key -> lstv.uncertainty.level_metrics; points in map pixels
    slice_shape: tuple[int, int]  # (H, W) of the original slice the maps were made from
    score: dict = field(default_factory=lambda: dict.fromkeys(SCORE_COLUMNS, ""))
    tta_mi: np.ndarray | None = None  # (5,) mutual information of shifted views, with --tta
    # the maps of the slices beside the centre (lstv.uncertainty.parasagittal_features)
    parasagittal: dict = field(default_factory=lambda: parasagittal_features(None, {}))

    @classmethod
    def from_maps(
        cls,
        probs: np.ndarray,
        slice_shape: tuple[int, int],
        pixel_spacing=None,
        reference=None,
        tta_mi: np.ndarray | None = None,
        source: str = "study metrics",
        side_probs: np.ndarray | None = None,
    ) -> StudyResult:
        """Measure the maps: the metrics of every level, with the shape features when the
        slice's ``pixel_spacing`` is known, the parasagittal features when the (N, 6, S, S)
        maps of the slices beside the centre, ``side_probs``, are given, and the score when a
        ``reference`` (:class:`lstv.score.Reference`) is given."""
        shape = (int(slice_shape[0]), int(slice_shape[1]))
        pixel_mm = None
        if pixel_spacing is not None:
            pixel_mm = model_pixel_mm(pixel_spacing, shape, probs.shape[-2:])
        levels = study_metrics(probs, pixel_mm)
        para = parasagittal_features(side_probs, levels, pixel_mm)
        result = cls(probs, levels, shape, tta_mi=tta_mi, parasagittal=para)
        if reference is None:
            return result
        score = score_rows([result.features()], reference, source)[0]
        return cls(probs, levels, shape, score, tta_mi, para)

    def features(self) -> dict:
        """The numbers measured, flat as the CSV names them (``l5_s1_peak2``,
        ``l5_s1_para_min_confidence``)."""
        return {
            **{
                f"{key}_{name}": value
                for key, m in self.levels.items()
                for name, value in m.items()
                if isinstance(value, int | float)
            },
            **self.parasagittal,
        }

    def point(self, key: str) -> tuple[float, float] | None:
        """The level's point in the original slice's pixels, or None when none was found."""
        p = self.levels[key]["point"]
        return None if p is None else model_to_original(p, self.probs.shape[-1], self.slice_shape)

    def __getitem__(self, key: str):
        if key == "probs":
            return self.probs
        return {**self.levels[key], "point": self.point(key)}

    def __iter__(self) -> Iterator[str]:
        yield from self.levels
        yield "probs"

    def __len__(self) -> int:
        return len(self.levels) + 1


def metrics_row(result: StudyResult, sample, thresholds: RiskThresholds) -> dict:
    """One CSV row of a study's result and the slice it was read from.

    ``sample`` is a :class:`lstv.sample.Sample`: it names the study and series, and gives the
    original slice size and the pixel-to-patient mapping of the slice the model read.
    """
    task, tta_mi = sample.task, result.tta_mi
    height, width = sample.slice_shape
    row: dict = {"study_id": task.study_id, "series_id": task.series_id}
    points = {}
    for i, key in enumerate(LEVEL_KEYS):
        m = result.levels[key]
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
            points[key] = coords[2:]
        for name, value in zip(("x", "y", "x_mm", "y_mm", "z_mm"), coords, strict=True):
            row[f"{key}_{name}"] = value
        row[f"{key}_tta_mi"] = "" if tta_mi is None else float(tta_mi[i])
        for name in SHAPE_FEATURES:  # measured only when the caller gave the pixel size
            value = m.get(name)
            row[f"{key}_{name}"] = "" if value is None or not np.isfinite(value) else value
    l5_s1_entropy = result.levels["l5_s1"]["entropy"]
    row.update(
        series_description=task.series_description,
        n_slices=sample.n_slices,
        slice_index=sample.slice_index,
        image_height=height,
        image_width=width,
        lstv_flag=thresholds.flag(l5_s1_entropy),
        risk_level=thresholds.risk(l5_s1_entropy),
    )
    row.update({c: result.score[c] for c in SCORE_COLUMNS})  # '' without a reference
    row["selection_rule"] = getattr(sample.task, "selection_rule", "")
    for name, value in geometry_features(points).items():
        row[name] = round(value, 6) if np.isfinite(value) else ""
    for name in PARASAGITTAL_COLUMNS:
        value = result.parasagittal[name]
        row[name] = value if np.isfinite(value) else ""
    acquisition = getattr(sample, "acquisition", None) or {}
    for name in ACQUISITION_COLUMNS:
        value = acquisition.get(name, np.nan)
        row[name] = round(value, 6) if np.isfinite(value) else ""
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

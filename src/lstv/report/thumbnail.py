"""A study's thumbnail in the report: the study view's picture of the model's slice with the
L4/L5 and L5/S1 maps and points, read from the saved heatmaps or the DICOM series, and a short
note on what it shows (or why there is none)."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lstv.study_view import SeriesLocator, number, safe_name
from lstv.uncertainty import RiskThresholds

logger = logging.getLogger(__name__)

MISSING_MAPS = "No heatmaps saved for this study (run lstv infer with --save_heatmaps)."


def thumbnail(
    row: pd.Series,
    heatmap_dir: Path,
    locate: SeriesLocator | None,
    thresholds: RiskThresholds | None = None,
) -> tuple[str | None, str]:
    """Data URI of the study's thumbnail (:func:`lstv.study_view.thumbnail_png`: the model's
    slice with the L4/L5 and L5/S1 maps and points) and a short note on what it shows, with
    the slice named as the study view names it (or why there is no picture)."""
    from lstv.study_view import build_view, load_heatmaps, slice_label, thumbnail_png

    study_id, series_id = str(row["study_id"]), str(row["series_id"])
    if not safe_name(study_id):
        return None, MISSING_MAPS
    probs, image, heat_note = load_heatmaps(heatmap_dir / f"{study_id}.npz")
    if heat_note and not heat_note.startswith("no heatmaps"):
        return None, heat_note[0].upper() + heat_note[1:]
    series, why = None, ""
    if locate is not None:
        series, why = _dicom_series(locate, study_id, series_id)
    if series is None and image is None:
        return None, MISSING_MAPS + (f" {why}." if why else "")
    view = build_view(row.to_dict(), thresholds or RiskThresholds(), series, probs, image)
    index = view.info["model_slice"]
    if series is not None:
        _, h, w = view.volume.shape
        note = f"DICOM {slice_label(view, index)}, {w} × {h}"
        if probs is None:
            note += "; points from the CSV; no heatmaps saved (lstv infer --save_heatmaps)"
    else:
        _, h, w = view.volume.shape
        k, n = number(row.get("slice_index")), number(row.get("n_slices"))
        of = f" of slice {int(k) + 1}/{int(n)}" if np.isfinite(k) and np.isfinite(n) else ""
        note = f"{why}; " if why else ""
        note += f"model input ({w} × {h}){of}"
    flat = [n for n in view.notes if n.startswith("flat map")]
    if flat:
        note += "; " + flat[0]
    return "data:image/png;base64," + base64.b64encode(thumbnail_png(view)).decode(), note


def _dicom_series(locate: SeriesLocator, study_id: str, series_id: str):
    """The study's series read from DICOM, or None and why not."""
    try:
        source = locate(study_id, series_id)
    except (OSError, ValueError) as exc:  # a listed folder that is gone or empty
        return None, f"DICOM series not found ({exc})"
    if source is None:
        return None, "DICOM series not found"
    from lstv.dicom import read_series
    from lstv.errors import SeriesReadError

    try:
        return read_series(source), ""
    except SeriesReadError as exc:  # says what is wrong with which file, in one line
        logger.warning("thumbnail of study %s: %s", study_id, exc)
        return None, f"DICOM unreadable ({exc})"
    except Exception as exc:  # noqa: BLE001 - a bad file must not stop the whole report
        logger.warning("thumbnail of study %s: DICOM unreadable: %s", study_id, exc)
        return None, f"DICOM unreadable ({type(exc).__name__})"
